"""Issue 26, converter half: every mask value accounted for, patient-grouped folds, the ``sample`` rater,
``--overwrite`` and option checks, duplicate and unreadable files, and a fuzz test over broken files.

Every source tree is hand-made in tmp_path (PIL/numpy), with expectations computed by hand.
"""
from __future__ import annotations

import json
import pickle
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import make_kvasir, make_lidc, make_mmis
from nnunet_gsd.dataset_conversion import kvasir, lidc, mmis2024
from nnunet_gsd.dataset_conversion.convert import convert
from nnunet_gsd.dataset_conversion.model import Case, ConvertOptions, Sample
from nnunet_gsd.dataset_conversion.reading import binarise
from nnunet_gsd.dataset_conversion.sources import safe_case_id
from nnunet_gsd.dataset_conversion.splitting import grouped_folds
from PIL import Image

from nnunet_gsd import cli as umbrella


def _gsd(ds: Path) -> dict:
    return json.loads((ds / "dataset.json").read_text())["gsd"]


def _cli(*argv: str) -> int:
    return umbrella.main(list(argv))


def _label(ds: Path, cid: str) -> np.ndarray:
    folder = "labelsTr" if cid in _gsd(ds)["split"]["train"] else "labelsTs"
    return np.asarray(Image.open(ds / folder / f"{cid}.png"))


def _squares(shape: tuple[int, int], values: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """One 10×10 square (100 px) per value, side by side from (5, 5), on a 0 background."""
    m = np.zeros(shape, dtype)
    for k, v in enumerate(values):
        m[5:15, 5 + 12 * k:15 + 12 * k] = v
    return m


def _replace_mask(src: Path, cid: str, mask: np.ndarray) -> Path:
    (src / "masks" / f"{cid}.jpg").unlink()
    path = src / "masks" / f"{cid}.png"
    Image.fromarray(mask).save(path)
    return path


# ----------------------------------------------------------------------------------------------
# 1. Mask values: label maps keep every labelled pixel, and are reported per case
# ----------------------------------------------------------------------------------------------
def test_binarise_rule_on_hand_made_masks():
    anti = np.zeros((20, 20), np.uint8)
    anti[5:15, 5:15] = 255
    anti[5, 15], anti[6, 15] = 200, 100            # anti-aliased edge: one pixel each side of 127
    mask, soft, values = binarise(anti)
    assert (mask.sum(), soft, values) == (101, 2, {})
    mask, soft, values = binarise((anti == 255).astype(np.uint8))          # 0/1: as is
    assert (mask.sum(), soft, values) == (100, 0, {})
    mask, soft, values = binarise(_squares((20, 60), (1, 2, 255)))         # 0/1/2/255: a label map
    assert (mask.sum(), soft, values) == (300, 0, {1: 100, 2: 100, 255: 100})
    mask, soft, values = binarise(_squares((20, 60), (1, 2)))              # 0/1/2: not empty
    assert (mask.sum(), soft, values) == (200, 0, {1: 100, 2: 100})
    mask, soft, values = binarise(_squares((20, 60), (65535,), np.uint16))  # 16-bit 0/65535: binary
    assert (mask.sum(), soft, values) == (100, 0, {})
    mask, soft, values = binarise(_squares((20, 60), (257, 65535), np.uint16))
    assert (mask.sum(), soft, values) == (200, 0, {257: 100, 65535: 100})


def test_a_jpeg_like_mask_with_a_flat_offset_background_is_thresholded_not_a_label_map():
    """JPEG can leave the whole background at 1 (a flat offset that fills 3×3 blocks like a label would),
    but its edges hold dozens of distinct values: more than a label map's 16, so > 127 applies."""
    m = np.ones((40, 60), np.uint8)                # background 1 everywhere
    m[10:30, 10:30] = 255
    m[9, 10:30] = np.arange(20) * 6 + 3            # 20 distinct ramp values above the square
    m[30, 10:30] = np.arange(20) * 6 + 130         # 20 more below it, all > 127
    mask, soft, values = binarise(m)
    assert values == {} and mask.sum() == 400 + 20
    assert soft == m.size - 400                    # every pixel neither 0 nor 255


def test_label_value_masks_keep_every_labelled_pixel_and_are_reported_per_case(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=4)
    shape = (40, 48)                                # cju000's image size in make_kvasir
    p0 = _replace_mask(src, "cju000", _squares(shape, (1, 2, 255)))
    p1 = _replace_mask(src, "cju001", _squares((42, 48), (1, 2)))
    ds = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "raw"))
    err = capsys.readouterr().err
    gsd = _gsd(ds)
    assert gsd["skipped"] == []                     # 0/1/2 is not "empty"
    assert _label(ds, "cju000").sum() == 300 and _label(ds, "cju001").sum() == 200
    assert "2 mask(s) hold label values" in err
    assert f"cju000: {p0}: 1: 100 px, 2: 100 px, 255: 100 px" in err
    assert f"cju001: {p1}: 1: 100 px, 2: 100 px" in err
    assert gsd["mask_values"]["label_value_masks"] == [
        {"case": "cju000", "file": str(p0), "values": {"1": 100, "2": 100, "255": 100}},
        {"case": "cju001", "file": str(p1), "values": {"1": 100, "2": 100}}]
    # make_kvasir's other masks are JPEG (quality 90): edge pixels, thresholded, not label maps
    assert gsd["mask_values"]["soft_masks"] == 2


# ----------------------------------------------------------------------------------------------
# 2. Patient-grouped folds: splits_final.json, where nnU-Net's planner finds it
# ----------------------------------------------------------------------------------------------
def _assert_grouped(folds: list[dict], patient_of: dict[str, str], train: list[str]) -> None:
    assert sorted(c for f in folds for c in f["val"]) == sorted(train)       # each case validated once
    for f in folds:
        assert sorted(f["train"] + f["val"]) == sorted(train)
        assert not {patient_of[c] for c in f["train"]} & {patient_of[c] for c in f["val"]}


def test_grouped_folds_hand_made():
    def case(cid: str, group: str | None) -> Case:
        return Case(case_id=cid, load=lambda: Sample(image=np.zeros((1, 2, 2))), source=cid, group=group)
    cases = [case(f"p{p}_s{s}", f"p{p}") for p in range(6) for s in range(p % 3 + 1)] + [case("lone", None)]
    folds = grouped_folds(cases, seed=0)
    # 13 cases of 7 patients, sizes 3, 3, 2, 2, 1, 1, 1 (the lone case is one) into 5 folds, largest first:
    # 3 | 3 | 2 | 2 | 1, then a 1 onto the 1 (→ 2) and the last 1 onto the first 2 (→ 3)
    assert len(folds) == 5 and sorted(len(f["val"]) for f in folds) == [2, 2, 3, 3, 3]
    _assert_grouped(folds, {c.case_id: c.group or c.case_id for c in cases}, [c.case_id for c in cases])
    assert grouped_folds(cases, seed=0) == folds and grouped_folds(cases, seed=1) != folds
    # fewer patients than folds: one fold per patient
    assert [f["val"] for f in grouped_folds(cases[:3], seed=0)] in (
        [["p0_s0"], ["p1_s0", "p1_s1"]], [["p1_s0", "p1_s1"], ["p0_s0"]])


def test_lidc_writes_folds_with_no_patient_on_both_sides(tmp_path):
    # 6 patients × 2 crops: the 80 % split takes 5 patients (10 crops), so each of the 5 folds validates
    # exactly one patient's 2 crops
    ds = convert(lidc.discover(make_lidc(tmp_path, patients=6)), ConvertOptions(15, out=tmp_path / "raw"))
    gsd = _gsd(ds)
    folds = json.loads((ds / "splits_final.json").read_text())
    train = gsd["split"]["train"]
    patient_of = {c: c.split("_slice")[0] for c in train}
    assert len(folds) == 5 and [len(f["val"]) for f in folds] == [2] * 5
    assert len({patient_of[f["val"][0]] for f in folds}) == 5
    _assert_grouped(folds, patient_of, train)
    assert gsd["folds"]["file"] == "splits_final.json" and gsd["folds"]["n_folds"] == 5
    assert gsd["folds"]["grouped_by"] == "patient" and gsd["folds"]["n_patients"] == 5
    assert gsd["folds"]["patients"] == {p: sorted(c for c in train if patient_of[c] == p)
                                        for p in sorted(set(patient_of.values()))}


def test_fewer_patients_than_folds_give_one_fold_each_and_a_warning(tmp_path, capsys):
    # 5 patients × 2 crops: the 80 % split takes 4 patients (8 crops) → 4 folds of one patient each
    ds = convert(lidc.discover(make_lidc(tmp_path, patients=5)), ConvertOptions(15, out=tmp_path / "raw"))
    folds = json.loads((ds / "splits_final.json").read_text())
    assert [len(f["val"]) for f in folds] == [2] * 4
    assert "only 4 patient(s) in training: splits_final.json has 4 fold(s); nnUNetv2_train folds 4..4" in \
        capsys.readouterr().err


def test_mmis_slices_of_one_patient_share_a_fold(tmp_path):
    root = make_mmis(tmp_path / "src", n_train=10)
    slices = root / "NPC" / "training_2d"
    for i in range(10):   # 5 patients of 2 slices: npc_000_slice_0 and npc_000_slice_1, …
        (slices / f"npc_{i:03d}_slice_{i % 3}.h5").rename(slices / f"npc_{i // 2:03d}_slice_{i % 2}.h5")
    ds = convert(mmis2024.discover(root), ConvertOptions(16, out=tmp_path / "raw"))
    folds = json.loads((ds / "splits_final.json").read_text())
    train = _gsd(ds)["split"]["train"]
    assert len(train) == 10 and len(folds) == 5
    assert sorted(f["val"] for f in folds) == [[f"npc_{p:03d}_slice_0", f"npc_{p:03d}_slice_1"] for p in range(5)]
    _assert_grouped(folds, {c: c[:7] for c in train}, train)
    assert mmis2024.patient_of("npc_012_slice_3") == "npc_012" and mmis2024.patient_of("npc_012") is None


def test_folds_replace_a_stale_copy_in_nnunet_preprocessed_that_the_planner_would_refuse(tmp_path, monkeypatch,
                                                                                         capsys):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import _maybe_copy_splits_file
    raw, pre = tmp_path / "nnUNet_raw", tmp_path / "nnUNet_preprocessed"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    stale = pre / "Dataset015_LIDC" / "splits_final.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps([{"train": ["x"], "val": ["y"]}]))   # e.g. nnU-Net's folds of an older conversion
    ds = convert(lidc.discover(make_lidc(tmp_path, patients=6)), ConvertOptions(15))
    assert ds == raw / "Dataset015_LIDC"
    assert json.loads(stale.read_text()) == json.loads((ds / "splits_final.json").read_text())
    assert f"replaced {stale}" in capsys.readouterr().err
    _maybe_copy_splits_file(str(ds / "splits_final.json"), str(stale))   # nnU-Net's planner: no AssertionError


# ----------------------------------------------------------------------------------------------
# 3. `sample` draws among the raters who drew something
# ----------------------------------------------------------------------------------------------
def test_sample_never_draws_an_empty_rater_while_another_drew(tmp_path):
    pkl = make_lidc(tmp_path, patients=10)           # A4 saw nothing in every crop
    data = pickle.loads(pkl.read_bytes())
    only_a2, nobody = sorted(data)[0], sorted(data)[1]
    for r in (0, 2):
        data[only_a2]["masks"][r][:] = 0             # only A2 drew on this crop
    for m in data[nobody]["masks"]:
        m[:] = 0                                     # nobody drew on this one
    pkl.write_bytes(pickle.dumps(data))
    gsd = _gsd(convert(lidc.discover(pkl), ConvertOptions(15, out=tmp_path / "raw")))
    assignment = gsd["raters"]["assignment"]
    assert only_a2 in assignment and nobody in assignment      # patient 1 is on the training side
    assert assignment[only_a2] == "A2"
    assert "A4" not in {r for c, r in assignment.items() if c != nobody}
    assert gsd["empty_masks"] == [nobody]
    assert "not empty" in gsd["raters"]["sample_among"]


# ----------------------------------------------------------------------------------------------
# 4. --overwrite replaces only the same dataset, and says what it removed
# ----------------------------------------------------------------------------------------------
def test_overwrite_refuses_a_dataset_of_another_name_and_names_what_it_replaces(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=4)
    raw = tmp_path / "raw"
    other = raw / "Dataset005_Other"
    other.mkdir(parents=True)
    (other / "dataset.json").write_text("{}")
    for flag in ((), ("--overwrite",)):
        assert _cli("convert", "kvasir", "--source", str(src), "--id", "5", "--out", str(raw), *flag) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"dataset id 5 is taken by {other} (another dataset)" in err and "nothing was removed" in err
        assert "Choose another --id" in err
        assert ("--overwrite replaces only Dataset005_KvasirSEG" in err) == bool(flag)
    assert (other / "dataset.json").is_file() and sorted(p.name for p in raw.iterdir()) == ["Dataset005_Other"]
    shutil.rmtree(other)
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "5", "--out", str(raw)) == 0
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "5", "--out", str(raw)) == 2
    assert "Dataset005_KvasirSEG already exists (use --overwrite to replace it)" in capsys.readouterr().err
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "5", "--out", str(raw), "--overwrite") == 0
    assert f"--overwrite: removed the previous {raw / 'Dataset005_KvasirSEG'}" in capsys.readouterr().err
    assert [p.name for p in raw.iterdir()] == ["Dataset005_KvasirSEG"]


# ----------------------------------------------------------------------------------------------
# 5. Option values: one argparse line naming the option, the bound and an example
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["kvasir", "--source", "SRC", "--seed", "-1"], "argument --seed: must be at least 0, got -1 (e.g. --seed 0)"),
    (["synthetic", "--seed", "-1"], "argument --seed: must be at least 0, got -1 (e.g. --seed 0)"),
    (["synthetic", "--size", "-5"], "argument --size: must be at least 8, got -5 (e.g. --size 64)"),
    (["synthetic", "--size", "4"], "argument --size: must be at least 8, got 4 (e.g. --size 64)"),
    (["kvasir", "--source", "SRC", "--size", "4"], "argument --size: must be at least 8, got 4 (e.g. --size 64)"),
    (["synthetic", "--num-train", "0"], "argument --num-train: must be at least 1, got 0 (e.g. --num-train 8)"),
    (["synthetic", "--num-test", "0"], "argument --num-test: must be at least 1, got 0 (e.g. --num-test 4)"),
    (["synthetic", "--num-test", "two"], "argument --num-test: not a whole number: 'two' (e.g. --num-test 4)"),
])
def test_bad_option_values_are_one_argparse_line(tmp_path, capsys, argv, message):
    argv = [str(tmp_path) if a == "SRC" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        _cli("convert", *argv, "--id", "9", "--out", str(tmp_path / "raw"))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(message) and "Traceback" not in err
    assert not (tmp_path / "raw").exists()


# ----------------------------------------------------------------------------------------------
# 6. Duplicate names and unreadable masks
# ----------------------------------------------------------------------------------------------
def test_duplicate_stems_and_ids_are_reported_as_duplicates_and_kept_out(tmp_path, capsys):
    src = make_kvasir(tmp_path / "src", n=6)
    img, msk = src / "images", src / "masks"
    Image.open(img / "cju001.jpg").save(img / "cju001.png")           # 0002.jpg and 0002.png, one mask
    (img / "cju002.jpg").rename(img / "a b.jpg")                       # "a b" and "a_b" → case id a_b
    (msk / "cju002.jpg").rename(msk / "a b.jpg")
    (img / "cju003.jpg").rename(img / "a_b.jpg")
    (msk / "cju003.jpg").rename(msk / "a_b.jpg")
    ds = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "raw"))
    err = capsys.readouterr().err
    gsd = _gsd(ds)
    skipped = {x["case"]: x for x in gsd["skipped"]}
    assert set(skipped) == {"cju001", "a_b"} and {x["problem"] for x in skipped.values()} == {"duplicate name"}
    assert skipped["cju001"]["files"] == [str(img / "cju001.jpg"), str(img / "cju001.png"), str(msk / "cju001.jpg")]
    assert f"{img / 'cju001.jpg'}, {img / 'cju001.png'} and {msk / 'cju001.jpg'} have the same name 'cju001'" in err
    assert "have the same case id 'a_b'" in skipped["a_b"]["detail"]
    assert "has no mask" not in err
    ids = gsd["split"]["train"] + gsd["split"]["test"]
    assert sorted(ids) == ["cju000", "cju004", "cju005"]


def test_a_corrupt_mask_is_reported_as_a_mask(tmp_path):
    src = make_kvasir(tmp_path / "src", n=4)
    (src / "masks" / "cju002.jpg").write_bytes(b"not a jpeg")
    gsd = _gsd(convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "raw")))
    [x] = gsd["skipped"]
    assert x["problem"] == "unreadable file" and x["files"] == [str(src / "masks" / "cju002.jpg")]
    assert x["detail"].startswith(f"cannot read mask {src / 'masks' / 'cju002.jpg'}: ")


def test_an_image_truncated_after_its_header_is_skipped_not_fatal(tmp_path, capsys):
    """The scan reads only JPEG headers (cheap on 1000 large images): a JPEG cut short is found while
    writing, and is then skipped and recorded like the scan's problems, or refused with --strict."""
    src = make_kvasir(tmp_path / "src", n=6)
    jpg = src / "images" / "cju004.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    ds = convert(kvasir.discover(src), ConvertOptions(1, out=tmp_path / "raw"))
    gsd = _gsd(ds)
    assert [(x["case"], x["problem"]) for x in gsd["skipped"]] == [("cju004", "unreadable file")]
    assert "cju004" not in gsd["split"]["train"] + gsd["split"]["test"]
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == len(gsd["split"]["train"])
    assert not list(ds.glob("*/cju004*"))
    assert f"cju004: unreadable file: cannot read image {jpg}" in capsys.readouterr().err
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "2", "--out", str(tmp_path / "s"), "--strict") == 2
    assert "--strict: nothing written" in capsys.readouterr().err and list((tmp_path / "s").iterdir()) == []


# ----------------------------------------------------------------------------------------------
# 7. Fuzz: a folder of randomly broken files
# ----------------------------------------------------------------------------------------------
def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels and that holds none (a decompression bomb to PIL)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _truncate(path: Path, rng: np.random.Generator) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * rng.uniform(0.1, 0.6))])   # into the pixel data, not just IEND


def _fuzz_tree(root: Path, seed: int) -> Path:
    """One case per kind of defect (and a few good ones), with seeded sizes, values and cut points."""
    rng = np.random.default_rng(seed)
    img_dir, msk_dir = root / "images", root / "masks"
    img_dir.mkdir(parents=True)
    msk_dir.mkdir()

    def shape() -> tuple[int, int]:
        return int(rng.integers(16, 48)), int(rng.integers(16, 48))

    def image(hw: tuple[int, int]) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))

    def mask(hw: tuple[int, int], high: int = 255, dtype: type = np.uint8) -> np.ndarray:
        m = np.zeros(hw, dtype)
        y, x = int(rng.integers(0, hw[0] // 2)), int(rng.integers(0, hw[1] // 2))
        m[y:y + hw[0] // 2, x:x + hw[1] // 2] = high
        return m

    def pair(name: str, img: Image.Image, msk: Image.Image | np.ndarray, img_ext: str = "png") -> tuple[Path, Path]:
        ip, mp = img_dir / f"{name}.{img_ext}", msk_dir / f"{name}.png"
        img.save(ip)
        (msk if isinstance(msk, Image.Image) else Image.fromarray(msk)).save(mp)
        return ip, mp

    for k in range(3):
        hw = shape()
        pair(f"good{k}", image(hw), mask(hw), img_ext="jpg")
    hw = shape()
    _truncate(pair("trunc_image_png", image(hw), mask(hw))[0], rng)
    hw = shape()
    _truncate(pair("trunc_image_jpg", image(hw), mask(hw), img_ext="jpg")[0], rng)
    hw = shape()
    _truncate(pair("trunc_mask", image(hw), mask(hw))[1], rng)
    hw = shape()
    ip, mp = pair("zero_bytes", image(hw), mask(hw))
    (ip if rng.random() < 0.5 else mp).write_bytes(b"")
    hw = shape()
    pair("text_as_png", image(hw), mask(hw))[0].write_text("this is not an image\n")
    (img_dir / "bomb.png").write_bytes(_png_claiming(200_000, 200_000))
    Image.fromarray(mask((8, 8))).save(msk_dir / "bomb.png")
    for mode in ("RGBA", "P", "LA", "L", "1", "I;16"):
        hw = shape()
        base = image(hw).convert("L") if mode in ("LA", "L", "1", "I;16") else image(hw)
        pair(f"image_{mode.replace(';', '')}", base.convert(mode) if mode != "I;16" else
             Image.fromarray(np.asarray(base).astype(np.uint16) * 257), mask(hw))
    for mode in ("RGBA", "P", "LA", "1"):
        hw = shape()
        pair(f"mask_{mode}", image(hw), Image.fromarray(mask(hw)).convert(mode))
    hw = shape()
    pair("mask_16bit", image(hw), mask(hw, 65535, np.uint16))
    hw = shape()
    pair("mask_16bit_labels", image(hw), mask(hw, int(rng.integers(2, 5)), np.uint16))   # 0/1 would be binary
    hw = shape()
    labels = mask(hw)
    labels[: hw[0] // 3, : hw[1] // 3] = int(rng.integers(1, 5))
    pair("mask_label_map", image(hw), labels)
    for name, hw in (("one_pixel", (1, 1)), ("one_row", (1, int(rng.integers(2, 60)))),
                     ("thin", (int(rng.integers(2, 60)), 2))):
        m = np.zeros(hw, np.uint8)
        m[0, 0] = 255
        pair(name, image(hw), m)
    hw = shape()
    pair("off_by_one", image(hw), mask((hw[0] + 1, hw[1])))
    hw = shape()
    pair("size_mismatch", image(hw), mask((hw[0] + int(rng.integers(3, 20)), hw[1])))
    hw = shape()
    pair("empty_mask", image(hw), np.zeros(hw, np.uint8))
    hw = shape()
    image(hw).save(img_dir / "no_mask.png")
    Image.fromarray(mask(shape())).save(msk_dir / "no_image.png")
    hw = shape()
    pair("dup", image(hw), mask(hw))
    image(hw).save(img_dir / "dup.jpg")
    for stray in (img_dir / "README.txt", img_dir / ".DS_Store", msk_dir / "Thumbs.db", root / "kavsir_bboxes.json"):
        stray.write_bytes(rng.bytes(int(rng.integers(0, 64))))
    (img_dir / "folder.png").mkdir()
    return root


def _source_ids(root: Path) -> set[str]:
    """The case id of every file the converter should account for (what kvasir reads: .jpg/.jpeg/.png)."""
    return {safe_case_id(p.stem) for d in ("images", "masks") for p in (root / d).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".jpg", ".jpeg", ".png")}


@pytest.mark.parametrize("seed, size", [(0, None), (1, "32"), (2, None)])
def test_fuzz_broken_files_are_converted_or_reported_never_a_traceback(tmp_path, capsys, seed, size):
    src = _fuzz_tree(tmp_path / "src" / "Kvasir-SEG", seed)
    raw = tmp_path / "raw"
    argv = ["convert", "kvasir", "--source", str(src), "--id", "7", "--out", str(raw), "--seed", str(seed)]
    assert _cli(*argv, *(["--size", size] if size else [])) == 0     # no exception escapes either
    err = capsys.readouterr().err
    assert "Traceback" not in err
    ds = raw / "Dataset007_KvasirSEG"
    assert sorted(p.name for p in raw.iterdir()) == [ds.name]           # nothing else, nothing hidden
    gsd = _gsd(ds)
    converted = set(gsd["split"]["train"]) | set(gsd["split"]["test"])
    skipped = {x["case"]: x for x in gsd["skipped"]}
    assert converted | set(skipped) == _source_ids(src) and not converted & set(skipped)
    assert all(x["detail"] and x["files"] for x in skipped.values())
    expected = {"trunc_image_png": "unreadable file", "trunc_image_jpg": "unreadable file",
                "trunc_mask": "unreadable file", "zero_bytes": "unreadable file", "text_as_png": "unreadable file",
                "bomb": "unreadable file", "size_mismatch": "size mismatch", "empty_mask": "empty mask",
                "no_mask": "missing partner", "no_image": "missing partner", "dup": "duplicate name"}
    assert {c: x["problem"] for c, x in skipped.items()} == expected
    assert "cannot read mask" in skipped["trunc_mask"]["detail"]
    assert {"good0", "image_I16", "mask_16bit", "mask_16bit_labels", "mask_label_map", "one_pixel",
            "off_by_one"} <= converted
    for cid in converted:
        folder = "Tr" if cid in gsd["split"]["train"] else "Ts"
        img = np.asarray(Image.open(ds / f"images{folder}" / f"{cid}_0000.png"))
        lab = np.asarray(Image.open(ds / f"labels{folder}" / f"{cid}.png"))
        assert img.ndim == 3 and img.shape[2] == 3 and img.shape[:2] == lab.shape, cid
        assert set(np.unique(lab)) <= {0, 1} and lab.any(), cid
        assert size is None or lab.shape == (32, 32)
    label_maps = {x["case"] for x in gsd["mask_values"]["label_value_masks"]}
    assert label_maps == {"mask_16bit_labels", "mask_label_map"}


def test_fuzz_with_strict_or_nothing_convertible_writes_nothing(tmp_path, capsys):
    src = _fuzz_tree(tmp_path / "src" / "Kvasir-SEG", seed=3)
    raw = tmp_path / "raw"
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "7", "--out", str(raw), "--strict") == 2
    err = capsys.readouterr().err
    assert "--strict: nothing written" in err and "Traceback" not in err
    for good in src.glob("*/good*"):
        good.unlink()
    for cid in ("image_", "mask_", "one_", "thin", "off_by_one"):
        for p in src.glob(f"*/{cid}*"):
            p.unlink()
    assert _cli("convert", "kvasir", "--source", str(src), "--id", "7", "--out", str(raw)) == 2
    err = capsys.readouterr().err
    # the scan passes the truncated JPEG (headers only), which then fails while writing: no training case
    assert err.splitlines()[-1].startswith("nnunet_gsd convert: error: no training case of")
    assert err.splitlines()[-1].endswith("could be converted (see the problems above)")
    assert "Traceback" not in err
    assert not raw.exists() or list(raw.iterdir()) == []
