"""Consensus of raters (dataset_conversion.consensus) with hand-computed maps, and the multi-rater converters'
labelsTr_A* folders and --raters consensus modes on the LIDC and MMIS-2024 fixtures."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import make_lidc, make_mmis
from nnunet_gsd.dataset_conversion import consensus, lidc, mmis2024
from nnunet_gsd.dataset_conversion.convert import convert
from nnunet_gsd.dataset_conversion.model import ConvertOptions

from nnunet_gsd import cli as umbrella
from nnunet_gsd.errors import UserError


def grid(*rows: str) -> np.ndarray:
    return np.array([[int(c) for c in r] for r in rows], dtype=np.uint8)


# Three raters on a 4×4 grid; per-pixel counts of foreground votes:
#   1 3 1 0
#   2 3 1 0
#   0 0 1 0
#   0 0 0 0
A1 = grid("1100", "1100", "0000", "0000")
A2 = grid("0110", "0110", "0000", "0000")
A3 = grid("0100", "1100", "0010", "0000")


def test_majority_union_intersection_by_hand():
    raters = {"A1": A1, "A2": A2, "A3": A3}
    np.testing.assert_array_equal(consensus.majority(raters), grid("0100", "1100", "0000", "0000"))   # >= 2 of 3
    np.testing.assert_array_equal(consensus.union(raters), grid("1110", "1110", "0010", "0000"))      # >= 1 of 3
    np.testing.assert_array_equal(consensus.intersection(raters), grid("0100", "0100", "0000", "0000"))  # 3 of 3
    np.testing.assert_allclose(consensus.rater_fraction([A1, A2, A3]),
                               np.array([[1, 3, 1, 0], [2, 3, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]) / 3)
    # a sequence and a mapping are the same raters
    np.testing.assert_array_equal(consensus.combine("union", [A1, A2, A3]), consensus.union(raters))


def test_majority_ties_go_to_foreground():
    r = {"A1": np.array([1, 1, 0, 0]), "A2": np.array([1, 0, 0, 1]), "A3": np.array([0, 1, 0, 0]),
         "A4": np.array([0, 0, 0, 0])}
    np.testing.assert_array_equal(consensus.majority(r), [1, 1, 0, 0])


def test_staple_on_identical_raters_is_their_map_even_when_empty_or_full():
    """ITK's STAPLE divides by a zero prior on all-empty and all-full maps (NaN); unanimity is answered directly."""
    for m in (A1, np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)):
        np.testing.assert_array_equal(consensus.staple([m, m, m]), m)


def test_staple_with_one_dissenting_rater_of_four_is_the_majority():
    """Three raters draw the central 2×2 square; the fourth the top two rows (4 of its 8 pixels dissent)."""
    square = grid("0000", "0110", "0110", "0000")
    top = grid("1111", "1111", "0000", "0000")
    raters = [square, square, square, top]
    np.testing.assert_array_equal(consensus.majority(raters), square)
    np.testing.assert_array_equal(consensus.staple(raters), square)
    # the same on a label map (MultiLabelSTAPLEImageFilter)
    np.testing.assert_array_equal(consensus.staple([2 * square] * 3 + [top]), 2 * square)


def test_bad_rater_maps_are_value_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        consensus.majority([A1, A1[:3]])
    with pytest.raises(ValueError, match="binary"):
        consensus.union([A1, 2 * A2])
    with pytest.raises(ValueError, match="unknown consensus 'mean'"):
        consensus.combine("mean", [A1])


# ---------------------------------------------------------------------------------------------- converters
def _gsd(ds: Path) -> dict:
    return json.loads((ds / "dataset.json").read_text())["gsd"]


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _ids(folder: Path) -> list[str]:
    return sorted(p.name[:-len(".nii.gz")] for p in folder.glob("*.nii.gz"))


@pytest.mark.parametrize("mode", ["majority", "staple", "union", "intersection", "A2", "sample"])
def test_lidc_keeps_every_rater_and_trains_on_the_chosen_label(tmp_path, mode):
    pkl = make_lidc(tmp_path)
    data = pickle.loads(pkl.read_bytes())
    ds = convert(lidc.discover(pkl), ConvertOptions(15, out=tmp_path / "raw", raters=mode, seed=2))
    gsd = _gsd(ds)
    raters = ["A1", "A2", "A3", "A4"]
    assert sorted(p.name for p in ds.glob("labelsTr_*")) == [f"labelsTr_{r}" for r in raters]
    train = sorted(gsd["split"]["train"])
    for r in raters:
        assert _ids(ds / f"labelsTr_{r}") == train == _ids(ds / "labelsTr")
    assert gsd["raters"]["mode"] == mode and gsd["raters"]["train_rater_folders"] == [f"labelsTr_{r}" for r in raters]
    assert gsd["seed"] == 2
    for cid in train:
        source = data[cid]["masks"]                      # no --size: the rater files are the source masks
        for k, r in enumerate(raters):
            np.testing.assert_array_equal(_read(ds / f"labelsTr_{r}" / f"{cid}.nii.gz"), source[k])
        label = _read(ds / "labelsTr" / f"{cid}.nii.gz")
        votes = np.stack(source).sum(0)
        if mode in consensus.METHODS:
            expected = {"majority": votes >= 2, "union": votes >= 1, "intersection": votes == 4,
                        "staple": consensus.staple(source)}[mode]
            np.testing.assert_array_equal(label, expected)
        else:
            np.testing.assert_array_equal(label, source[raters.index(gsd["raters"]["assignment"][cid])])
    if mode in consensus.METHODS:
        assert "assignment" not in gsd["raters"] and gsd["raters"]["consensus"] == consensus.RULES[mode]
    else:
        assert set(gsd["raters"]["assignment"]) == set(train) and "consensus" not in gsd["raters"]
    if mode == "intersection":   # the fixture's A4 saw nothing: no pixel has four votes
        assert sorted(gsd["empty_masks"]) == train


def test_mmis_consensus_of_nested_raters(tmp_path):
    """make_mmis: rater r marks rows 4 … 9+r, columns 5 … 10 (A1 42 px ⊂ A2 48 ⊂ A3 54), one slice per case.

    majority (2 of 3) = A2, union = A3, intersection = A1; STAPLE agrees with the majority here."""
    make_mmis(tmp_path / "src")
    sizes = {}
    for mode in ("majority", "staple", "union", "intersection"):
        ds = convert(mmis2024.discover(tmp_path / "src"), ConvertOptions(16, out=tmp_path / mode, raters=mode))
        gsd = _gsd(ds)
        assert sorted(p.name for p in ds.glob("labelsTr_*")) == ["labelsTr_A1", "labelsTr_A2", "labelsTr_A3"]
        assert gsd["raters"]["mode"] == mode
        sizes[mode] = {int(_read(ds / "labelsTr" / f"{c}.nii.gz").sum()) for c in gsd["split"]["train"]}
        for cid in gsd["split"]["train"]:
            assert int(_read(ds / "labelsTr_A2" / f"{cid}.nii.gz").sum()) == 48
    assert sizes == {"majority": {48}, "staple": {48}, "union": {54}, "intersection": {42}}


def test_unknown_raters_mode_is_one_line_naming_the_choices(tmp_path, capsys):
    make_mmis(tmp_path / "src")
    with pytest.raises(UserError, match="raters A1, A2, A3; or use one of sample, majority, staple, union, "
                                        "intersection"):
        convert(mmis2024.discover(tmp_path / "src"), ConvertOptions(16, out=tmp_path / "raw", raters="mean"))
    assert umbrella.main(["convert", "mmis2024", "--source", str(tmp_path / "src"), "--id", "16", "--out",
                          str(tmp_path / "raw"), "--raters", "A9"]) == 2
    err = capsys.readouterr().err
    assert "--raters A9" in err and err.count("\n") == 1 and "Traceback" not in err
