"""Converters on tiny fixtures that mimic each dataset's real source tree (generated in tmp_path).

The real Kvasir fidelity check (Table 3) lives in bench/noise_fidelity.py, not here.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    make_brats,
    make_bu_suc,
    make_kvasir,
    make_lidc,
    make_mmis,
    make_shenzhen,
)
from nnunet_gsd.dataset_conversion import (
    brats2020,
    bu_suc,
    kvasir,
    lidc,
    mmis2024,
    shenzhen,
    synthetic,
)
from nnunet_gsd.dataset_conversion.convert import convert
from nnunet_gsd.dataset_conversion.model import ConvertOptions
from nnunet_gsd.dataset_conversion.resizing import resize_label
from nnunet_gsd.dataset_conversion.splitting import TAG_NOISE, rng_for
from PIL import Image

from nnunet_gsd import cli as umbrella
from nnunet_gsd.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _gsd(ds: Path) -> dict:
    return json.loads((ds / "dataset.json").read_text())["gsd"]


def _read(path: Path) -> np.ndarray:
    if path.name.endswith(".nii.gz"):
        import SimpleITK as sitk
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return np.asarray(Image.open(path))


def _cli(*argv: str) -> int:
    return umbrella.main(list(argv))


# ----------------------------------------------------------------------------------------------
# One test per converter
# ----------------------------------------------------------------------------------------------
def test_kvasir_noisy_conversion_layout_and_provenance(tmp_path):
    src = make_kvasir(tmp_path / "src")
    raw = tmp_path / "raw"
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "11", "--size", "32", "--noise", "S_R",
                "--out", str(raw)) == 0
    ds = raw / "Dataset011_KvasirSEG"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["file_ending"] == ".png"
    assert meta["numTraining"] == 7
    gsd = meta["gsd"]
    assert len(gsd["split"]["train"]) == 7 and len(gsd["split"]["test"]) == 3
    assert not set(gsd["split"]["train"]) & set(gsd["split"]["test"])
    assert gsd["noise"]["preset"] == "S_R" and gsd["noise"]["noise_at"] == "source"
    assert gsd["noise"]["notation"] == "M(200, 0.2, 0.05)"
    assert 0 < gsd["noise"]["dice_vs_clean"] < 1 and 0 < gsd["noise"]["pixel_noise_rate"] < 1
    assert gsd["tau"] == gsd["noise"]["pixel_noise_rate"] and gsd["clean_labels"] == "labelsTr_clean"
    assert gsd["size"] == [32, 32] and gsd["seed"] == 0
    for cid in gsd["split"]["train"]:
        img = _read(ds / "imagesTr" / f"{cid}_0000.png")
        assert img.shape == (32, 32, 3)
        noisy, clean = _read(ds / "labelsTr" / f"{cid}.png"), _read(ds / "labelsTr_clean" / f"{cid}.png")
        assert noisy.shape == clean.shape == (32, 32) and set(np.unique(noisy)) <= {0, 1}
    for cid in gsd["split"]["test"]:
        assert (ds / "imagesTs" / f"{cid}_0000.png").is_file() and (ds / "labelsTs" / f"{cid}.png").is_file()
    # Recorded numbers are those of the files.
    from nnunet_gsd.dataset_conversion.noise import dice
    d = np.mean([dice(_read(ds / "labelsTr" / f"{c}.png"), _read(ds / "labelsTr_clean" / f"{c}.png"))
                 for c in gsd["split"]["train"]])
    assert d == pytest.approx(gsd["noise"]["dice_vs_clean"])
    assert not list(raw.glob(".*"))  # no temporary folder left


def test_kvasir_same_seed_same_dataset_other_seed_other_split(tmp_path):
    src = make_kvasir(tmp_path / "src")
    a = convert(kvasir.discover(src), ConvertOptions(11, out=tmp_path / "a", noise="S_E", seed=3))
    b = convert(kvasir.discover(src), ConvertOptions(11, out=tmp_path / "b", noise="S_E", seed=3))
    c = convert(kvasir.discover(src), ConvertOptions(11, out=tmp_path / "c", noise="S_E", seed=4))
    assert _gsd(a)["split"] == _gsd(b)["split"] != _gsd(c)["split"]
    for cid in _gsd(a)["split"]["train"]:
        np.testing.assert_array_equal(_read(a / "labelsTr" / f"{cid}.png"), _read(b / "labelsTr" / f"{cid}.png"))
    # Native size is kept by default.
    cid = _gsd(a)["split"]["train"][0]
    assert _read(a / "labelsTr" / f"{cid}.png").shape == _read(a / "imagesTr" / f"{cid}_0000.png").shape[:2]
    assert _gsd(a)["size"] is None


def test_noise_at_output_is_recorded_and_differs(tmp_path):
    src = make_kvasir(tmp_path / "src")
    a = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "a", noise="S_R", size=24))
    b = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "b", noise="S_R", size=24, noise_at="output"))
    assert _gsd(a)["noise"]["noise_at"] == "source" and _gsd(b)["noise"]["noise_at"] == "output"
    assert _gsd(a)["noise"]["dice_vs_clean"] != _gsd(b)["noise"]["dice_vs_clean"]


def _labels(ds: Path, folder: str) -> dict[str, np.ndarray]:
    return {c: _read(ds / folder / f"{c}.png") for c in _gsd(ds)["split"]["train"]}


def test_noise_at_the_output_size_in_pixels_is_the_output_mode(tmp_path):
    src = make_kvasir(tmp_path / "src")
    a = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "a", noise="S_R", size=24, noise_at="output"))
    b = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "b", noise="S_R", size=24, noise_at=24))
    for cid, noisy in _labels(a, "labelsTr").items():
        np.testing.assert_array_equal(noisy, _labels(b, "labelsTr")[cid])
    na, nb = _gsd(a)["noise"], _gsd(b)["noise"]
    assert nb["noise_at"] == 24 and na["noise_at"] == "output"
    assert na["steps"] == nb["steps"] == round(200 * 24 / 256) and nb["scaled_by"] == 24 / 256
    assert na["dice_vs_clean"] == nb["dice_vs_clean"]


def test_noise_at_a_larger_size_perturbs_there_then_resizes(tmp_path):
    """--noise-at 32 --size 24: clean mask → 32² (nearest), M(25, …) (200 scaled by 32/256), → 24²."""
    from nnunet_gsd.dataset_conversion import noise
    src = make_kvasir(tmp_path / "src")
    ds = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "a", noise="S_R", size=24, noise_at=32))
    plain = convert(kvasir.discover(src), ConvertOptions(2, out=tmp_path / "p", size=24))
    preset = noise.NoisePreset(name="S_R", kind="markov", steps=25, theta1=0.2, theta2=0.05)
    cases = {c.case_id: c for c in kvasir.discover(src).cases}
    for cid, noisy in _labels(ds, "labelsTr").items():
        clean_src = cases[cid].load().label
        at32 = resize_label(clean_src, (32, 32))
        expected = resize_label(noise.apply_noise(at32, preset, rng_for(0, TAG_NOISE, cid)), (24, 24))
        np.testing.assert_array_equal(noisy, expected)
        # the clean labels do not depend on where the noise is applied
        np.testing.assert_array_equal(_labels(ds, "labelsTr_clean")[cid], _labels(plain, "labelsTr")[cid])
    n = _gsd(ds)["noise"]
    assert (n["noise_at"], n["steps"], n["scaled_by"], n["notation"]) == (32, 25, 0.125, "M(25, 0.2, 0.05)")
    assert _gsd(ds)["seed"] == 0 and "seed" in n["rng"]


def test_custom_markov_is_the_preset_with_the_same_parameters(tmp_path):
    """The lead's heavy regime, M(200, 0.2, 0.05) at 256² then 64², spelled both ways (here 32² → 24²)."""
    src = make_kvasir(tmp_path / "src")
    raw = tmp_path / "raw"
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "3", "--out", str(raw), "--size", "24",
                "--noise", "markov", "--markov-steps", "25", "--markov-p", "0.2", "--markov-v", "0.05",
                "--noise-at", "32") == 0
    custom = raw / "Dataset003_KvasirSEG"
    named = convert(kvasir.discover(src), ConvertOptions(4, out=raw, noise="S_R", size=24, noise_at=32))
    for cid, noisy in _labels(custom, "labelsTr").items():
        np.testing.assert_array_equal(noisy, _labels(named, "labelsTr")[cid])
    n = _gsd(custom)["noise"]
    assert (n["preset"], n["notation"], n["noise_at"], n["scaled_by"]) == ("markov", "M(25, 0.2, 0.05)", 32, 1.0)
    assert (n["steps"], n["theta1"], n["theta2"]) == (25, 0.2, 0.05)
    # a custom M(T, P, V) is never rescaled: at the output size too, T stays as given
    out = convert(kvasir.discover(src), ConvertOptions(5, out=raw, noise="markov", markov=(7, 0.8, 0.1), size=24))
    assert _gsd(out)["noise"]["steps"] == 7 and _gsd(out)["noise"]["noise_at"] == "output"


def test_markov_and_noise_at_mistakes_are_one_line_errors(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=3)
    with pytest.raises(UserError, match="--markov-p is a probability"):
        convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path, noise="markov", markov=(10, 1.5, 0.05)))
    with pytest.raises(UserError, match="need --noise markov"):
        convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path, noise="S_R", markov=(10, 0.5, 0.05)))
    with pytest.raises(SystemExit):
        _cli("convert", "kvasir", "--source", str(src), "--id", "1", "--noise-at", "big")
    assert "must be source, output or a size in pixels, got 'big'" in capsys.readouterr().err


def test_shenzhen_skips_unmasked_and_montgomery_images(tmp_path):
    make_shenzhen(tmp_path / "src")
    ds = convert(shenzhen.discover(tmp_path / "src"), ConvertOptions(12, out=tmp_path / "raw", noise="S_DE"))
    gsd = _gsd(ds)
    ids = gsd["split"]["train"] + gsd["split"]["test"]
    assert len(ids) == 6 and all(i.startswith("CHNCXR_") for i in ids)
    assert any("without a lung mask" in n for n in gsd["notes"])
    assert json.loads((ds / "dataset.json").read_text())["channel_names"] == {"0": "X-ray"}
    assert _read(ds / "imagesTr" / f"{gsd['split']['train'][0]}_0000.png").ndim == 2
    assert gsd["noise"]["notation"] == "K(8-10)" and gsd["noise"]["noise_at"] == "output"


def test_bu_suc_merges_classes_and_keeps_equal_names_apart(tmp_path):
    make_bu_suc(tmp_path / "src")
    ds = convert(bu_suc.discover(tmp_path / "src"), ConvertOptions(13, out=tmp_path / "raw"))
    gsd = _gsd(ds)
    ids = sorted(gsd["split"]["train"] + gsd["split"]["test"])
    assert len(ids) == 8 and "benign_1" in ids and "malignant_1" in ids
    assert gsd["noise"] is None and gsd["tau"] == 0.0 and "clean_labels" not in gsd
    assert not (ds / "labelsTr_clean").exists()
    assert json.loads((ds / "dataset.json").read_text())["labels"] == {"background": 0, "tumour": 1}


def test_brats_3d_four_channels_merged_labels_and_case_355_name(tmp_path):
    make_brats(tmp_path / "src")
    ds = convert(brats2020.discover(tmp_path / "src"), ConvertOptions(14, out=tmp_path / "raw", noise="S_E"))
    gsd = _gsd(ds)
    assert len(gsd["split"]["train"]) == 4 and len(gsd["split"]["test"]) == 1
    assert gsd["noise"]["notation"] == "M(50, 0.6, 0.05)"
    cid = gsd["split"]["train"][0]
    assert sorted(p.name for p in (ds / "imagesTr").glob(f"{cid}_*")) == [f"{cid}_000{i}.nii.gz" for i in range(4)]
    clean = _read(ds / "labelsTr_clean" / f"{cid}.nii.gz")
    assert clean.shape == (10, 12, 14) and set(np.unique(clean)) == {0, 1}
    assert clean.sum() == 4 * 5 * 6  # labels 1, 2 and 4 merged into one tumour
    assert "BraTS20_Training_002" in gsd["split"]["train"] + gsd["split"]["test"]


def test_brats_resize_3d(tmp_path):
    make_brats(tmp_path / "src", n=2)
    ds = convert(brats2020.discover(tmp_path / "src"), ConvertOptions(14, out=tmp_path / "raw", size=8))
    import SimpleITK as sitk
    cid = _gsd(ds)["split"]["train"][0]
    img = sitk.ReadImage(str(ds / "imagesTr" / f"{cid}_0000.nii.gz"))
    assert img.GetSize() == (8, 8, 8)
    assert img.GetSpacing() == pytest.approx((14 / 8, 12 / 8, 10 / 8))


def test_lidc_patient_split_rater_modes_and_test_folders(tmp_path):
    pkl = make_lidc(tmp_path)
    ds = convert(lidc.discover(pkl), ConvertOptions(15, out=tmp_path / "raw", raters="A2"))
    gsd = _gsd(ds)
    train_p = {c.split("_slice")[0] for c in gsd["split"]["train"]}
    test_p = {c.split("_slice")[0] for c in gsd["split"]["test"]}
    assert train_p and test_p and not train_p & test_p  # patients never straddle the split
    assert gsd["split"]["method"] == "seeded_by_patient"
    data = pickle.loads(pkl.read_bytes())
    cid = gsd["split"]["train"][0]
    np.testing.assert_array_equal(_read(ds / "labelsTr" / f"{cid}.nii.gz"), data[cid]["masks"][1])
    assert set(gsd["raters"]["assignment"].values()) == {"A2"}
    assert gsd["raters"]["available"] == ["A1", "A2", "A3", "A4"]
    for r in ("A1", "A2", "A3", "A4"):
        assert len(list((ds / f"labelsTs_{r}").glob("*.nii.gz"))) == len(gsd["split"]["test"])
    t = gsd["split"]["test"][0]
    votes = np.stack(data[t]["masks"]).sum(0)
    np.testing.assert_array_equal(_read(ds / "labelsTs" / f"{t}.nii.gz"), (votes >= 2).astype(np.uint8))
    assert gsd["tau"] == pytest.approx(0.15 * gsd["foreground_fraction"])
    assert _read(ds / "imagesTr" / f"{cid}_0000.nii.gz").dtype == np.float32
    assert gsd["empty_masks"] == []


def test_lidc_sample_mode_is_seeded_and_uses_several_raters(tmp_path):
    pkl = make_lidc(tmp_path, patients=10)
    a = _gsd(convert(lidc.discover(pkl), ConvertOptions(15, out=tmp_path / "a", seed=1)))
    b = _gsd(convert(lidc.discover(pkl), ConvertOptions(15, out=tmp_path / "b", seed=1)))
    assert a["raters"]["mode"] == "sample" and a["raters"] == b["raters"]
    assert len(set(a["raters"]["assignment"].values())) > 1
    with pytest.raises(UserError, match="A1, A2, A3, A4"):
        convert(lidc.discover(pkl), ConvertOptions(16, out=tmp_path / "c", raters="A7"))
    with pytest.raises(UserError, match="multi-rater"):
        convert(lidc.discover(pkl), ConvertOptions(16, out=tmp_path / "c", noise="S_R"))


def test_mmis_slices_for_training_volumes_for_testing_any_number_of_raters(tmp_path):
    make_mmis(tmp_path / "src")
    ds = convert(mmis2024.discover(tmp_path / "src"), ConvertOptions(16, out=tmp_path / "raw", raters="A3"))
    gsd = _gsd(ds)
    assert gsd["split"]["method"] == "predefined"
    assert len(gsd["split"]["train"]) == 4 and gsd["split"]["test"] == ["npc_100", "npc_101"]
    assert gsd["raters"]["available"] == ["A1", "A2", "A3"]
    assert sorted(p.name for p in ds.glob("labelsTs_*")) == ["labelsTs_A1", "labelsTs_A2", "labelsTs_A3"]
    cid = gsd["split"]["train"][0]
    assert len(list((ds / "imagesTr").glob(f"{cid}_*.nii.gz"))) == 3
    assert _read(ds / "labelsTr" / f"{cid}.nii.gz").shape == (16, 16)
    assert _read(ds / "labelsTr" / f"{cid}.nii.gz").sum() == 9 * 6  # rater 3: rows 4..12, columns 5..10
    assert _read(ds / "labelsTs" / "npc_100.nii.gz").shape == (3, 16, 16)
    both = mmis2024.discover(tmp_path / "src", test_split="both")
    assert sum(c.role == "test" for c in both.cases) == 3


def test_synthetic_generate_variants(tmp_path):
    ds = synthetic.generate(tmp_path / "raw", dataset_id=901, num_train=4, num_test=2, size=32, noise="S_E")
    gsd = _gsd(ds)
    assert (ds / "labelsTr_clean").is_dir() and len(list((ds / "labelsTr").glob("*.png"))) == 4
    fg = np.mean([_read(p).mean() for p in (ds / "labelsTr_clean").glob("*.png")])
    assert 0.08 < fg < 0.35
    assert gsd["noise"]["notation"] == "M(25, 0.8, 0.05)"
    # The folder itself may be given; a multi-class RGB and a 3D variant.
    mc = synthetic.generate(tmp_path / "raw" / "Dataset902_Synthetic", dataset_id=902, num_train=3, num_test=1,
                            size=24, classes=2, channels=3, noise="S_DE")
    assert json.loads((mc / "dataset.json").read_text())["labels"] == {"background": 0, "lesion_1": 1, "lesion_2": 2}
    assert _read(next((mc / "imagesTr").glob("*.png"))).shape == (24, 24, 3)
    assert set(np.unique(np.concatenate([_read(p).ravel() for p in (mc / "labelsTr").glob("*.png")]))) <= {0, 1, 2}
    d3 = synthetic.generate(tmp_path / "raw", dataset_id=903, num_train=2, num_test=1, size=16, dim=3, noise="S_R")
    assert _read(next((d3 / "labelsTr").glob("*.nii.gz"))).shape == (16, 16, 16)


# ----------------------------------------------------------------------------------------------
# Options and robustness
# ----------------------------------------------------------------------------------------------
def test_subsets_are_nested_and_leave_the_test_set_alone(tmp_path):
    src = make_kvasir(tmp_path / "src", n=20)
    full = _gsd(convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "f")))
    half = _gsd(convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "h", subset=0.5)))
    quarter = _gsd(convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "q", subset=0.25)))
    assert [len(s["split"]["train"]) for s in (full, half, quarter)] == [14, 7, 4]
    assert set(quarter["split"]["train"]) <= set(half["split"]["train"]) <= set(full["split"]["train"])
    assert full["split"]["test"] == half["split"]["test"] == quarter["split"]["test"]
    assert half["split"]["n_train_available"] == 14


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_conversion_leaves_nothing_and_says_one_line(tmp_path, capsys, monkeypatch, how):
    import signal

    from nnunet_gsd.dataset_conversion import convert as convert_mod
    src = make_kvasir(tmp_path / "src", n=6)
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            if how == "sigterm":
                signal.raise_signal(signal.SIGTERM)
            raise KeyboardInterrupt

    monkeypatch.setattr(convert_mod, "write_label", interrupt)
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "7", "--out", str(tmp_path / "raw")) == 130
    err = capsys.readouterr().err
    assert "interrupted; nothing was written" in err and "Traceback" not in err
    assert list((tmp_path / "raw").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the CLI restored the previous handler


def test_leftover_partial_of_a_dead_process_is_removed_with_a_note(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=4)
    raw = tmp_path / "raw"
    dead = raw / ".Dataset009_Other.partial-999999999"     # no such pid
    live = raw / f".Dataset008_Other.partial-{os.getppid()}"  # a running process: left alone
    for d in (dead, live):
        d.mkdir(parents=True)
        (d / "imagesTr").mkdir()
    convert(kvasir.discover(src), ConvertOptions(5, out=raw))
    assert not dead.exists() and live.is_dir()
    assert f"removed {dead.name}" in capsys.readouterr().err


def _break_kvasir(src: Path) -> None:
    """Five defects and one repairable mask in a make_kvasir(n=10) tree."""
    (src / "masks" / "orphan.jpg").write_bytes((src / "masks" / "cju000.jpg").read_bytes())  # missing partner
    (src / "masks" / "cju001.jpg").unlink()                                                   # missing partner
    (src / "images" / "cju002.jpg").write_bytes(b"not a jpeg")                                # unreadable file
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(src / "masks" / "cju003.jpg")          # size mismatch
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(src / "masks" / "cju004.png")          # empty mask
    (src / "masks" / "cju004.jpg").unlink()
    m = np.zeros((49, 48), np.uint8)  # cju005's image is 50×48: one row short → resized, recorded
    m[10:30, 10:30] = 255
    Image.fromarray(m).save(src / "masks" / "cju005.png")
    (src / "masks" / "cju005.jpg").unlink()


def test_every_problem_is_reported_at_once_and_skipped_by_default(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=10)
    _break_kvasir(src)
    ds = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "raw"))
    err = capsys.readouterr().err
    assert "5 of 11 source case(s) cannot be converted: skipped" in err
    for kind, n in (("missing partner", 2), ("unreadable file", 1), ("size mismatch", 1), ("empty mask", 1)):
        assert f"  {kind} ({n}):" in err
    assert "orphan.jpg" in err and "cju001.jpg" in err and "10×10" in err
    gsd = _gsd(ds)
    assert {(x["case"], x["problem"]) for x in gsd["skipped"]} == {
        ("orphan", "missing partner"), ("cju001", "missing partner"), ("cju002", "unreadable file"),
        ("cju003", "size mismatch"), ("cju004", "empty mask")}
    assert gsd["repaired"] == [{"case": "cju005", "repair": "mask cju005.png resized from 48×49 to its image's 48×50"}]
    assert len(gsd["split"]["train"]) + len(gsd["split"]["test"]) == 6
    assert gsd["release_count"] == {"expected": 1000, "found": 11}
    assert "the full kvasir release has 1000" in err
    # nearest-neighbour 49 → 50 rows repeats one row: the 20×20 square gains at most one row
    folder = "labelsTr" if "cju005" in gsd["split"]["train"] else "labelsTs"
    lab = _read(ds / folder / "cju005.png")
    assert lab.shape == (50, 48) and lab.sum() in (400, 420)


def test_strict_refuses_and_lists_every_problem(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=10)
    _break_kvasir(src)
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "1", "--out", str(tmp_path / "raw"),
                "--strict") == 2
    err = capsys.readouterr().err
    assert "5 of 11 source case(s) cannot be converted: (--strict: nothing written" in err
    assert all(name in err for name in ("orphan", "cju001", "cju002", "cju003", "cju004")) and "Traceback" not in err
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_brats_unexpected_label_values_and_missing_sequence_are_problems(tmp_path):
    import SimpleITK as sitk
    root = make_brats(tmp_path / "src", n=4)
    cases = root / "MICCAI_BraTS2020_TrainingData"
    seg = np.zeros((10, 12, 14), np.uint8)
    seg[4, 4, 4] = 3
    seg_path = cases / "BraTS20_Training_003" / "BraTS20_Training_003_seg.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(seg), str(seg_path))
    (cases / "BraTS20_Training_004" / "BraTS20_Training_004_t2.nii.gz").unlink()
    ds = convert(brats2020.discover(root), ConvertOptions(1, out=tmp_path / "raw"))
    skipped = {x["case"]: (x["problem"], x["detail"]) for x in _gsd(ds)["skipped"]}
    assert skipped["BraTS20_Training_003"][0] == "unexpected values" and "[3]" in skipped["BraTS20_Training_003"][1]
    assert skipped["BraTS20_Training_004"][0] == "missing partner" and "t2" in skipped["BraTS20_Training_004"][1]


def test_wrong_tree_shows_the_expected_tree(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _cli("convert", "shenzhen", "--source", str(tmp_path / "empty"), "--id", "3", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "Expected a tree like" in err and "CXR_png/" in err


def test_masks_of_every_mode_are_binarised_and_soft_pixels_counted(tmp_path):
    """Grey 0/255, grey 0/1, RGB, RGBA and palette masks; each but the 0/1 one has two soft pixels."""
    src = make_kvasir(tmp_path / "src", n=5)
    for i, mode in enumerate(("L", "L01", "RGB", "RGBA", "P")):
        m = np.zeros((40 + 2 * i, 48), np.uint8)
        m[5:15, 5:15] = 255
        if mode != "L01":
            m[5, 16], m[6, 16] = 200, 100      # anti-aliased edge: > 127 → foreground, ≤ 127 → background
        img = Image.fromarray((m > 127).astype(np.uint8) if mode == "L01" else m)
        (src / "masks" / f"cju{i:03d}.jpg").unlink()
        (img.convert(mode) if mode not in ("L", "L01") else img).save(src / "masks" / f"cju{i:03d}.png")
    ds = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "raw"))
    gsd = _gsd(ds)
    assert gsd["skipped"] == [] and gsd["mask_values"]["soft_masks"] == 4
    assert gsd["mask_values"]["soft_pixels"] == 8
    for i in range(5):
        cid = f"cju{i:03d}"
        folder = "labelsTr" if cid in gsd["split"]["train"] else "labelsTs"
        assert _read(ds / folder / f"{cid}.png").sum() == (100 if i == 1 else 101), cid


def test_empty_masks_are_skipped_where_they_are_defects_and_kept_where_normal(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=5, empty=2)
    ds = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "raw", noise="S_R"))
    assert [x["case"] for x in _gsd(ds)["skipped"]] == ["cju002"] and _gsd(ds)["empty_masks"] == []
    pkl = make_lidc(tmp_path, patients=3)   # one rater of every crop saw nothing: normal for LIDC
    ds = convert(lidc.discover(pkl), ConvertOptions(2, out=tmp_path / "raw2", raters="A4"))
    assert _gsd(ds)["skipped"] == [] and len(_gsd(ds)["empty_masks"]) == 6


def test_unknown_preset_is_rejected_by_the_cli(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cli("convert", "kvasir", "--source", str(tmp_path), "--id", "1", "--noise", "S_X")
    assert "invalid choice: 'S_X'" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        _cli("convert", "kvasir", "--help")
    out = capsys.readouterr().out
    for opt in ("--source", "--id", "--noise", "--noise-at", "--markov-steps", "--markov-p", "--markov-v", "--seed",
                "--size", "--subset", "--out", "--overwrite"):
        assert opt in out
    assert "masks/" in out and "M(200, 0.2, 0.05)" in out and "[source]" in out
    with pytest.raises(SystemExit):
        _cli("convert", "lidc", "--help")
    assert "--raters" in capsys.readouterr().out


def test_preview_grid(tmp_path):
    ds = synthetic.generate(tmp_path, dataset_id=904, num_train=3, num_test=1, size=24, noise="S_R")
    assert _cli("preview", str(ds), "-n", "2", "-o", str(tmp_path / "p.png")) == 0
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert img.shape[0] > 100 and img.shape[1] > 300


# ----------------------------------------------------------------------------------------------
# nnU-Net accepts every converter's output
# ----------------------------------------------------------------------------------------------
_NAMES = {201: "KvasirSEG", 202: "ShenzhenCXR", 203: "BUSUC", 204: "BraTS2020", 205: "LIDC", 206: "MMIS2024NPC",
          207: "Synthetic"}

# nnU-Net's own integrity check, run in one interpreter: its worker pool is replaced by a serial map,
# because every spawned worker re-imports torch (seconds each, on 2 shared cores).
_VERIFY_ALL = """
import sys, multiprocessing
from nnunetv2.experiment_planning import verify_dataset_integrity as v

class SerialPool:
    def __init__(self, *a, **k): pass
    def __enter__(self): return self
    def __exit__(self, *a): return False
    def starmap(self, f, args): return [f(*x) for x in args]

class Ctx:
    Pool = SerialPool

v.multiprocessing = type("M", (), {"get_context": staticmethod(lambda *_: Ctx)})
for folder in sys.argv[1:]:
    v.verify_dataset_integrity(folder, 1)
"""


@pytest.fixture(scope="module")
def all_converted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    raw = root / "nnUNet_raw"
    src = root / "src"
    src.mkdir()
    convert(kvasir.discover(make_kvasir(src)), ConvertOptions(201, out=raw, noise="S_R", size=32))
    convert(shenzhen.discover(make_shenzhen(src)), ConvertOptions(202, out=raw, noise="S_E"))
    convert(bu_suc.discover(make_bu_suc(src)), ConvertOptions(203, out=raw, noise="S_DE"))
    convert(brats2020.discover(make_brats(src)), ConvertOptions(204, out=raw, noise="S_R"))
    convert(lidc.discover(make_lidc(src)), ConvertOptions(205, out=raw))
    convert(mmis2024.discover(make_mmis(src)), ConvertOptions(206, out=raw))
    synthetic.generate(raw, dataset_id=207, num_train=4, num_test=1, size=32, classes=2, channels=3, noise="S_E")
    return root


def _nnunet_env(root: Path) -> dict[str, str]:
    return {**os.environ, "nnUNet_raw": str(root / "nnUNet_raw"), "nnUNet_preprocessed": str(root / "pre"),
            "nnUNet_results": str(root / "res"), "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1"}


@pytest.mark.e2e
def test_nnunet_verify_dataset_integrity_on_all_converters(all_converted):
    folders = [str(all_converted / "nnUNet_raw" / f"Dataset{i}_{n}") for i, n in _NAMES.items()]
    res = subprocess.run([sys.executable, "-c", _VERIFY_ALL, *folders], check=False, env=_nnunet_env(all_converted),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("verify_dataset_integrity Done") == 7
    assert "Error" not in res.stdout


@pytest.mark.e2e
def test_nnunet_extract_fingerprint_command(all_converted):
    """The real console command, on a PNG (RGB) and a NIfTI (3D, 4 channels) dataset."""
    exe = Path(sys.executable).parent / "nnUNetv2_extract_fingerprint"
    cmd = [str(exe) if exe.exists() else "nnUNetv2_extract_fingerprint", "-d", "201", "204",
           "--verify_dataset_integrity", "-np", "1"]
    res = subprocess.run(cmd, check=False, env=_nnunet_env(all_converted), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("verify_dataset_integrity Done") == 2
    for i in (201, 204):
        fp = json.loads((all_converted / "pre" / f"Dataset{i}_{_NAMES[i]}" / "dataset_fingerprint.json").read_text())
        assert len(fp["shapes_after_crop"]) == (7 if i == 201 else 4)


def test_cli_dataset_specific_and_percent_options(tmp_path):
    make_mmis(tmp_path / "src")
    assert _cli("convert", "mmis2024", "--source", str(tmp_path / "src"), "--id", "8", "--out", str(tmp_path / "raw"),
                "--test-split", "both", "--raters", "A1", "--subset", "50%", "--preview") == 0
    ds = tmp_path / "raw" / "Dataset008_MMIS2024NPC"
    gsd = _gsd(ds)
    assert len(gsd["split"]["test"]) == 3 and len(gsd["split"]["train"]) == 2 and gsd["subset"] == 0.5
    assert (ds / "gsd_preview.png").is_file()


def test_lidc_masks_that_are_not_a_list_name_the_crop(tmp_path):
    pkl = make_lidc(tmp_path, patients=2)
    data = pickle.loads(pkl.read_bytes())
    name = sorted(data)[1]
    data[name]["masks"] = np.stack(data[name]["masks"])          # one (raters, H, W) array: accepted
    other = sorted(data)[2]
    data[other]["masks"] = 7                                      # nonsense: one line naming the crop
    pkl.write_bytes(pickle.dumps(data))
    with pytest.raises(UserError, match=rf"\['{other}'\]\['masks'\] is a int, not a list of rater masks"):
        lidc.discover(pkl)
    del data[other]
    pkl.write_bytes(pickle.dumps(data))
    ds = convert(lidc.discover(pkl), ConvertOptions(1, out=tmp_path / "raw"))
    assert len(_gsd(ds)["split"]["train"]) + len(_gsd(ds)["split"]["test"]) == 3
