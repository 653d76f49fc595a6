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
    assert "| case | A1 | A2 | A3 | mean | majority | STAPLE | QUBIQ | soft Dice |" in table
    # majority and STAPLE: see test_dice_against_the_consensus; no npz files: the soft metrics are missing
    assert "| **overall** | 1.0000 | 0.3333 | 0.0000 | 0.4444 | 0.6667 | 1.0000 | – | – |" in table
    missing = ("soft metrics (QUBIQ score, soft Dice) missing: "
               f"{pred} holds no CASE.npz probabilities; rerun nnUNetv2_predict with --save_probabilities into it")
    assert missing in table and missing in out and out.count("soft metrics") == 1
    assert "mean Dice over raters: 0.4444" in out and "Dice vs majority: 0.6667  vs STAPLE: 1.0000" in out
    assert saved["overall"]["qubiq_score"] is None and saved["per_case"]["c1"]["soft_dice"] is None


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


def test_dice_against_the_consensus(png_raters):
    """c1: majority (2 of 3) = the 3 pixels A1 and A2 share: Dice 2·3/(6+3) = 2/3 with the 6-pixel prediction.
    STAPLE trusts A1 and A2, who agree, over A3, who marks 6 pixels nobody else does, and keeps A1's 6 pixels:
    Dice 1. c2: majority and STAPLE are empty like the prediction (NaN, left out)."""
    pred, raw = png_raters
    result = evaluate_raters.evaluate(raw, pred)
    c1, c2 = result["per_case"]["c1"], result["per_case"]["c2"]
    assert (c1["majority"], c1["staple"]) == pytest.approx((2 / 3, 1.0))
    assert np.isnan(c2["majority"]) and np.isnan(c2["staple"])
    assert (result["overall"]["majority"], result["overall"]["staple"]) == pytest.approx((2 / 3, 1.0))
    assert result["overall"]["mean"] == result["mean"] and result["soft_metrics"] is None


def write_npz(path: Path, foreground: np.ndarray) -> None:
    """nnUNetv2_predict --save_probabilities' file of a binary task: softmax channels (background, foreground)."""
    fg = foreground.astype(np.float32)
    np.savez_compressed(path, probabilities=np.stack([1 - fg, fg]))


@pytest.fixture
def soft_case(tmp_path: Path):
    """One 2×2 PNG case, three raters: fraction of raters f = [[1, 2/3], [1/3, 0]]; predicted foreground
    probability p = [[0.95, 0.45], [0.15, 0]] (no value on a threshold: float32 0.15 is not 0.15), segmentation
    = p > 0.5. nnU-Net reads a 2D PNG as (1, H, W): the npz is (C, 1, H, W)."""
    raw, pred = tmp_path / "raw", tmp_path / "pred"
    dataset_json(raw, ".png")
    for rater, m in (("A1", [[1, 1], [1, 0]]), ("A2", [[1, 1], [0, 0]]), ("A3", [[1, 0], [0, 0]])):
        write_png(raw / f"labelsTs_{rater}" / "c1.png", np.array(m))
    p = np.array([[0.95, 0.45], [0.15, 0.0]])
    write_png(pred / "c1.png", p > 0.5)
    write_npz(pred / "c1.npz", p[None])
    return pred, raw


def test_qubiq_score_and_soft_dice_by_hand(soft_case):
    """Thresholds t:         0.1  0.2  0.3  0.4  0.5  0.6  0.7  0.8  0.9
    pixels with f > t:         3    3    3    2    2    2    1    1    1
    pixels with p > t:         3    2    2    2    1    1    1    1    1   (nested: the overlap is the smaller)
    Dice:                      1   4/5  4/5   1   2/3  2/3   1    1    1   → QUBIQ = (5 + 8/5 + 4/3) / 9 = 119/135.
    Soft Dice: Σ f·p = 0.95 + 2/3·0.45 + 1/3·0.15 = 1.3; Σ f = 2, Σ p = 1.55 → 2.6 / 3.55 = 52/71.
    Dice of the segmentation (1 pixel) vs A1 (3 px) 1/2, A2 (2) 2/3, A3 (1) 1; majority = STAPLE = top row: 2/3."""
    pred, raw = soft_case
    result = evaluate_raters.evaluate(raw, pred)
    c1 = result["per_case"]["c1"]
    assert c1["qubiq_score"] == pytest.approx(119 / 135) and c1["soft_dice"] == pytest.approx(52 / 71)
    dice = (c1["A1"], c1["A2"], c1["A3"], c1["majority"], c1["staple"])
    assert dice == pytest.approx((1 / 2, 2 / 3, 1, 2 / 3, 2 / 3))
    assert result["overall"]["qubiq_score"] == pytest.approx(119 / 135) and "soft_missing" not in result
    assert "QUBIQ" in evaluate_raters.to_markdown(result) and "–" not in evaluate_raters.to_markdown(result)


def test_qubiq_counts_a_threshold_where_both_are_empty_as_agreement():
    """Raters who all saw nothing and a model nowhere above 0.1: QUBIQ 1 at every threshold. The soft Dice of
    p = 0.05 against an all-zero fraction is 2·0 / (0 + 0.2) = 0; the fraction of one rater's 2×2 mask vs p = it: 1."""
    from nnunet_gsd.tools.common import qubiq_score, soft_dice
    assert qubiq_score(np.zeros((2, 2)), np.full((2, 2), 0.05)) == 1.0
    assert soft_dice(np.zeros((2, 2)), np.full((2, 2), 0.05)) == 0.0
    assert np.isnan(soft_dice(np.zeros((2, 2)), np.zeros((2, 2))))
    assert soft_dice(np.eye(2), np.eye(2)) == 1.0


def test_bad_probability_files_are_one_line_errors(soft_case, tmp_path: Path):
    pred, raw = soft_case
    write_npz(pred / "c1.npz", np.zeros((2, 2)))          # (2, 2, 2): the (1, H, W) axis of a 2D case is missing
    with pytest.raises(UserError, match=r"c1.npz holds probabilities of shape \(2, 2, 2\), but the segmentation "
                                        r"beside it needs \(2, 1, 2, 2\)"):
        evaluate_raters.evaluate(raw, pred)
    np.savez_compressed(pred / "c1.npz", softmax=np.zeros((2, 1, 2, 2)))
    with pytest.raises(UserError, match="no 'probabilities' array"):
        evaluate_raters.evaluate(raw, pred)
    (pred / "c1.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read .*c1.npz"):
        evaluate_raters.evaluate(raw, pred)
    # probabilities for some cases only: a mean over them would not compare with another run's
    write_npz(pred / "c1.npz", np.zeros((1, 2, 2)))
    for rater in ("A1", "A2", "A3"):
        write_png(raw / f"labelsTs_{rater}" / "c2.png", np.zeros((2, 2)))
    write_png(pred / "c2.png", np.zeros((2, 2)))
    proc = run_failing(["nnunet_gsd", "evaluate-raters", str(raw), str(pred)], clean_env(tmp_path))
    assert "1 of 2 test case(s) have no probabilities" in proc.stderr and "c2.npz" in proc.stderr
    assert "--save_probabilities" in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


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
    assert result["overall"]["majority"] == pytest.approx(84 / 90)   # 2 of 3 raters: A2's rows


def test_soft_metrics_of_a_converted_mmis2024_volume(tmp_path: Path):
    """A 3D test volume (3 × 16 × 16) and its (C, 3, 16, 16) probabilities: p = rater A1's mask (one-hot).

    Per slice, A1 (42 px) ⊂ A2 (48) ⊂ A3 (54): the fraction of raters is 1 on A1, 2/3 on A2's extra row, 1/3 on
    A3's. f > t is A3 for t ≤ 0.3, A2 for 0.4 … 0.6, A1 for 0.7 … 0.9; p > t is always A1:
    QUBIQ = (3·84/96 + 3·84/90 + 3·1) / 9. Soft Dice = 2·42 / ((42 + 6·2/3 + 6·1/3) + 42) = 84/90."""
    pytest.importorskip("h5py")
    run(["nnunet_gsd", "convert", "mmis2024", "--source", str(make_mmis(tmp_path / "src", n_test=1)), "--id", "950",
         "--out", str(tmp_path / "raw"), "--raters", "staple"], clean_env(tmp_path))
    raw = next((tmp_path / "raw").glob("Dataset950_*"))
    pred = tmp_path / "pred"
    pred.mkdir()
    a1 = raw / "labelsTs_A1" / "npc_100.nii.gz"
    (pred / "npc_100.nii.gz").write_bytes(a1.read_bytes())
    write_npz(pred / "npc_100.npz", sitk.GetArrayFromImage(sitk.ReadImage(str(a1))))
    result = evaluate_raters.evaluate(raw, pred)
    assert result["overall"]["qubiq_score"] == pytest.approx((84 / 96 + 84 / 90 + 1) / 3)
    assert result["overall"]["soft_dice"] == pytest.approx(84 / 90)
