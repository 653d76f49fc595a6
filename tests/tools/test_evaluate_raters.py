"""evaluate-raters: Dice per rater with hand-computed values; on a converted MMIS-2024 dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from conftest import clean_env, run, run_failing
from helpers import make_mmis
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools import evaluate_raters


def write_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def dataset_json(root: Path, ending: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ending,
                                                   "channel_names": {"0": "x"}, "numTraining": 0}))


def mask(shape, *pixels) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for p in pixels:
        m[p] = 1
    return m


@pytest.fixture
def png_raters(tmp_path: Path):
    """Case c1: prediction = 6 px; A1 = the same 6 (Dice 1), A2 = 3 of them (2·3/(6+3) = 2/3), A3 = 6 others (0).
    Case c2: empty prediction; A1, A3 empty (Dice NaN, left out), A2 = 2 px (Dice 0)."""
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    dataset_json(raw, ".png")
    six = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    other = [(6, 6), (6, 7), (7, 6), (7, 7), (5, 6), (5, 7)]
    write_png(pred / "c1.png", mask((10, 10), *six))
    write_png(raw / "labelsTs_A1" / "c1.png", mask((10, 10), *six))
    write_png(raw / "labelsTs_A2" / "c1.png", mask((10, 10), *six[:3]))
    write_png(raw / "labelsTs_A3" / "c1.png", mask((10, 10), *other))
    write_png(pred / "c2.png", mask((10, 10)))
    write_png(raw / "labelsTs_A1" / "c2.png", mask((10, 10)))
    write_png(raw / "labelsTs_A2" / "c2.png", mask((10, 10), (4, 4), (4, 5)))
    write_png(raw / "labelsTs_A3" / "c2.png", mask((10, 10)))
    return pred, raw


def test_known_dice_per_rater_case_and_overall(png_raters):
    pred, raw = png_raters
    result = evaluate_raters.evaluate(raw, pred)
    assert result["raters"] == ["A1", "A2", "A3"]
    c1, c2 = result["per_case"]["c1"], result["per_case"]["c2"]
    assert (c1["A1"], c1["A2"], c1["A3"]) == pytest.approx((1.0, 2 / 3, 0.0))
    assert c1["mean"] == pytest.approx(5 / 9)
    assert np.isnan(c2["A1"]) and c2["A2"] == 0.0 and np.isnan(c2["A3"]) and c2["mean"] == 0.0
    assert result["per_rater"] == pytest.approx({"A1": 1.0, "A2": 1 / 3, "A3": 0.0})
    assert result["mean"] == pytest.approx(4 / 9)


@pytest.mark.e2e
def test_cli_writes_json_and_markdown(png_raters, tmp_path: Path):
    pred, raw = png_raters
    out = run(["nnunet_gsd", "evaluate-raters", str(raw), str(pred), "-o", str(tmp_path / "report")],
              clean_env(tmp_path))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["mean"] == pytest.approx(4 / 9)
    table = (tmp_path / "report.md").read_text()
    assert "| case | A1 | A2 | A3 | mean |" in table and "| **overall** | 1.0000 | 0.3333 | 0.0000 | 0.4444 |" in table
    assert "mean Dice over raters: 0.4444" in out


def test_the_dataset_may_be_given_by_id_or_name_as_for_preview(png_raters, tmp_path: Path, monkeypatch, capsys):
    """evaluate-raters used to take only a path where preview takes an id too."""
    import shutil

    from nnunet_gsd.cli import main
    pred, raw = png_raters
    shutil.copytree(raw, tmp_path / "nnUNet_raw" / "Dataset951_Raters")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    for name in ("nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    for given in ("951", "Dataset951_Raters"):
        assert main(["evaluate-raters", given, str(pred), "-o", str(tmp_path / given)]) == 0
        saved = json.loads((tmp_path / f"{given}.json").read_text())
        assert saved["mean"] == pytest.approx(4 / 9)
        assert saved["dataset_folder"] == str((tmp_path / "nnUNet_raw" / "Dataset951_Raters").resolve())
    capsys.readouterr()
    for given, message in (("952", "dataset '952': Could not find a dataset with the ID 952"),
                           (str(tmp_path / "nowhere"), "is neither a folder nor a dataset id or name")):
        assert main(["evaluate-raters", given, str(pred)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_raters_in_numeric_order_and_subset(png_raters):
    pred, raw = png_raters
    (raw / "labelsTs_A10").mkdir()
    assert list(evaluate_raters.rater_folders(raw)) == ["A1", "A2", "A3", "A10"]
    assert evaluate_raters.evaluate(raw, pred, ["A2"])["per_rater"] == pytest.approx({"A2": 1 / 3})
    with pytest.raises(UserError, match="A7"):
        evaluate_raters.rater_folders(raw, ["A7"])


@pytest.mark.e2e
def test_missing_prediction_and_single_rater_dataset_are_one_line_errors(png_raters, tmp_path: Path):
    pred, raw = png_raters
    (pred / "c2.png").unlink()
    proc = run_failing(["nnunet_gsd", "evaluate-raters", str(raw), str(pred)], clean_env(tmp_path))
    assert "c2.png" in proc.stderr and "Traceback" not in proc.stderr
    single = tmp_path / "single"
    dataset_json(single, ".png")
    proc = run_failing(["nnunet_gsd", "evaluate-raters", str(single), str(pred)], clean_env(tmp_path))
    assert "labelsTs_A1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_on_a_converted_mmis2024_dataset(tmp_path: Path):
    """Through `nnunet_gsd convert mmis2024`: 3D test volumes, one labelsTs_A* per rater.

    make_mmis: rater r marks rows 4 … 9+r, columns 5 … 10 of every slice.

    Prediction = rater A1 (7 rows × 6 columns per slice = 42 voxels): Dice vs A2 (48) = 84/90, vs A3 (54) = 84/96.
    """
    pytest.importorskip("h5py")
    env = clean_env(tmp_path)
    run(["nnunet_gsd", "convert", "mmis2024", "--source", str(make_mmis(tmp_path / "src", n_test=1)), "--id", "950",
         "--out", str(tmp_path / "raw")], env)
    raw = next((tmp_path / "raw").glob("Dataset950_*"))
    pred = tmp_path / "pred"
    pred.mkdir()
    a1 = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTs_A1" / "npc_100.nii.gz")))
    assert a1.shape == (3, 16, 16)
    (pred / "npc_100.nii.gz").write_bytes((raw / "labelsTs_A1" / "npc_100.nii.gz").read_bytes())
    result = evaluate_raters.evaluate(raw, pred)
    assert result["per_rater"] == pytest.approx({"A1": 1.0, "A2": 84 / 90, "A3": 84 / 96})
