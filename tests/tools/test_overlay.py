"""overlay: PNG size = image size × scale, contour colours, worst-k choice, the 3D slice choice."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from conftest import clean_env, run, run_failing
from nnunet_gsd.tools import overlay


def test_choose_slice_is_middle_of_foreground_extent_or_of_the_volume():
    ref, pred = np.zeros((9, 4, 4)), np.zeros((9, 4, 4))
    assert overlay.choose_slice(ref, pred) == 4
    ref[2, 1, 1] = 1
    pred[6, 2, 2] = 1
    assert overlay.choose_slice(ref, pred) == 4
    pred[:] = 0
    assert overlay.choose_slice(ref, pred) == 2


def test_render_size_and_colours():
    image = np.arange(6 * 8, dtype=float).reshape(1, 6, 8)
    ref = np.zeros((6, 8), np.uint8)
    ref[1:4, 1:4] = 1
    pred = np.zeros((6, 8), np.uint8)
    pred[1:4, 4:7] = 1
    picture = overlay.render(image, ref, pred, 2, rgb=False)
    assert picture.shape == (12, 16, 3) and picture.dtype == np.uint8
    assert tuple(picture[2, 2]) == (0, 255, 0)     # reference boundary (top-left corner of its square): green
    assert tuple(picture[2, 8]) == (255, 0, 255)   # prediction boundary: magenta
    assert tuple(picture[0, 0]) == (0, 0, 0)       # darkest image pixel, no contour


def text_columns(picture: np.ndarray) -> np.ndarray:
    """Columns holding legend text: grey, not black (the font is anti-aliased; the swatches are coloured)."""
    p = picture.astype(int)
    grey = (p[..., 0] == p[..., 1]) & (p[..., 1] == p[..., 2]) & (p[..., 0] > 0)
    return np.flatnonzero(grey.any(axis=0))


def picture_width(pixels: np.ndarray, height: int) -> int:
    """Width of the overlay above the legend strip: what lies right of it is the strip's black widening."""
    return int(np.flatnonzero(pixels[:height].any(axis=(0, 2)))[-1]) + 1


def test_legend_strip_is_wide_enough_for_its_text():
    """A 10 px picture gets the strip a 1000 px one draws, cut nowhere: wider than its last text column."""
    wide = overlay.with_legend(np.zeros((5, 1000, 3), np.uint8))
    narrow = overlay.with_legend(np.zeros((5, 10, 3), np.uint8))
    assert narrow.shape[0] == 5 + overlay.LEGEND_HEIGHT
    last = int(text_columns(wide[5:])[-1])
    assert last > 100                                    # three names drawn, not one
    assert narrow.shape[1] > last
    np.testing.assert_array_equal(narrow[5:], wide[5:, :narrow.shape[1]])


def test_worst_cases_treat_empty_as_perfect():
    assert overlay.worst_cases({"a": 0.9, "b": float("nan"), "c": 0.2, "d": 0.5}, 2) == ["c", "d"]


def make_2d(tmp_path: Path) -> tuple[Path, Path]:
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    for d in (raw / "imagesTs", raw / "labelsTs", pred):
        d.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".png",
                                                  "channel_names": {"0": "grey"}, "numTraining": 0}))
    rng = np.random.default_rng(0)
    for case, shift in (("good", 0), ("bad", 6)):
        Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(raw / "imagesTs" / f"{case}_0000.png")
        gt = np.zeros((20, 30), np.uint8)
        gt[5:12, 5:15] = 1
        Image.fromarray(gt).save(raw / "labelsTs" / f"{case}.png")
        Image.fromarray(np.roll(gt, shift, axis=1)).save(pred / f"{case}.png")
    return pred, raw


@pytest.mark.e2e
def test_cli_2d_worst_case_png_of_the_right_size(tmp_path: Path):
    pred, raw = make_2d(tmp_path)
    labels = raw / "labelsTs"
    out = run(["nnunet_gsd", "overlay", str(labels), str(pred), "--worst", "1", "--scale", "3", "-o",
               str(tmp_path / "ov")], clean_env(tmp_path))
    assert [p.name for p in (tmp_path / "ov").iterdir()] == ["bad.png"]
    with Image.open(tmp_path / "ov" / "bad.png") as png:
        pixels = np.asarray(png)
    # the picture is 30·3 wide and 20·3 high; the legend strip below widens it to fit its three entries
    assert png.mode == "RGB" and pixels.shape[0] == 60 + overlay.LEGEND_HEIGHT
    assert picture_width(pixels, 60) == 90 and pixels.shape[1] > max(90, text_columns(pixels[60:])[-1])
    assert "Dice 0.4000" in out                              # 4 of 10 columns overlap: 2·28/(70+70)
    assert tuple(pixels[60 + 8, 6]) == (0, 255, 0)           # legend's first swatch: reference green
    run(["nnunet_gsd", "overlay", str(labels), str(pred), "--cases", "good"], clean_env(tmp_path))
    with Image.open(pred / "overlays" / "good.png") as png:
        assert png.size == (30 * 13, 20 * 13 + overlay.LEGEND_HEIGHT)   # default: shorter edge ≥ 256 px
    proc = run_failing(["nnunet_gsd", "overlay", str(labels), str(pred), "--cases", "nope"], clean_env(tmp_path))
    assert "nope" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_cli_3d_middle_slice_of_the_foreground(tmp_path: Path):
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    for d in (raw / "imagesTs", raw / "labelsTs", pred):
        d.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 1}, "file_ending": ".nii.gz",
                                                  "channel_names": {"0": "T1", "1": "T2"}, "numTraining": 0}))
    volume = np.zeros((7, 12, 16), np.uint8)
    volume[1:4, 3:8, 4:10] = 1           # foreground in slices 1 … 3: the middle is 2
    for c in range(2):
        sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(c).random((7, 12, 16)).astype(np.float32)),
                        str(raw / "imagesTs" / f"vol_{c:04d}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(raw / "labelsTs" / "vol.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(pred / "vol.nii.gz"))
    run(["nnunet_gsd", "overlay", str(raw / "labelsTs"), str(pred), "--scale", "2", "-o", str(tmp_path / "ov")],
        clean_env(tmp_path))
    with Image.open(tmp_path / "ov" / "vol_z002.png") as png:
        pixels = np.asarray(png)
    # 16·2 wide and 12·2 high, widened by the legend
    assert pixels.shape[0] == 24 + overlay.LEGEND_HEIGHT
    assert picture_width(pixels, 24) == 32 and pixels.shape[1] > max(32, text_columns(pixels[24:])[-1])
    assert tuple(pixels[6, 8]) == (255, 255, 0)   # GT and prediction coincide: yellow
