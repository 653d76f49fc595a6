"""End to end through nnU-Net's real console commands on a tiny generated 2D dataset.

convert (synthetic, S_E noise, clean labels kept) → nnUNetv2_plan_and_preprocess →
nnUNetv2_train -tr nnUNetTrainerGSD_tiny (past the warm-up, so SGLR and KT run) → continue with --c →
nnUNetv2_predict → nnUNetv2_evaluate_folder; and every ablation trainer trains and predicts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from helpers import clean_env, run, run_failing

pytestmark = pytest.mark.e2e
DATASET_ID = 901


@pytest.fixture(scope="module")
def dataset(nnunet_root: Path) -> dict:
    env = clean_env(nnunet_root)
    run(["nnunet_gsd", "convert", "synthetic", "--id", str(DATASET_ID), "--num-train", "12", "--num-test", "4",
         "--size", "48", "--noise", "S_E", "--seed", "0"], env)
    raw = next((nnunet_root / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*"))
    assert (raw / "labelsTr_clean").is_dir()
    run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1",
         "--verify_dataset_integrity"], env)
    return {"raw": raw, "name": raw.name}


def train_env(root: Path, **extra: str) -> dict:
    # 0 workers is fastest for tiny runs (it would crash planning, which is why only training uses it)
    return clean_env(root, nnUNet_n_proc_DA="0", **extra)


def test_gsd_trains_continues_predicts_and_evaluates(dataset, nnunet_root: Path, tmp_path: Path):
    env = train_env(nnunet_root)
    run(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", "nnUNetTrainerGSD_tiny", "-device", "cpu"], env)
    fold = nnunet_root / "nnUNet_results" / dataset["name"] / "nnUNetTrainerGSD_tiny__nnUNetPlans__2d" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerGSD_tiny"
    keys = checkpoint["network_weights"].keys()
    assert any(k.startswith("net1.") for k in keys) and any(k.startswith("net2.") for k in keys)
    assert len([k for k in keys if k.startswith("net1.")]) == len([k for k in keys if k.startswith("net2.")])
    assert checkpoint["current_epoch"] == 4
    assert not [p.name for p in fold.iterdir() if ".tmp" in p.name]  # atomic writes left no temporary file
    assert (fold / "progress.png").is_file() and (fold / "progress_gsd.png").is_file()
    logged = checkpoint["logging"]
    # warm-up is 1 of 4 epochs: SGLR runs afterwards (τ from the converter) and, KT being off by default, its refined
    # labels supervise the unmixed passes in L_KT's form, so that term is logged as non-zero
    assert len(logged["gsd_loss_kt"]) == 4
    assert logged["gsd_loss_kt"][0] == 0.0 and all(v != 0.0 for v in logged["gsd_loss_kt"][1:])
    # clean labels exist, so the truth diagnostics are logged every epoch, as fractions
    assert len(logged["gsd_selection_precision"]) == 4
    assert all(0.0 <= v <= 1.0 for v in logged["gsd_selection_precision"])
    # do no harm: refinement leaves the training labels at least as accurate as the noisy ones
    assert logged["gsd_refined_accuracy"][-1] >= logged["gsd_noisy_accuracy"][-1]
    assert len(logged["gsd_tau"]) == 4 and 0 <= logged["gsd_tau"][-1] <= 0.5
    record = json.loads((fold / "gsd_settings.json").read_text())
    assert record["trainer"] == "nnUNetTrainerGSD_tiny"
    # the converter stored the simulated noise rate as τ; nnU-Net trains from the preprocessed copy, named exactly
    preprocessed_json = nnunet_root / "nnUNet_preprocessed" / dataset["name"] / "dataset.json"
    tau = json.loads(preprocessed_json.read_text())["gsd"]["tau"]
    assert record["settings"]["tau"] == {"value": tau, "source": f'dataset.json {preprocessed_json} "gsd": {{"tau"}}'}
    assert record["settings"]["num_epochs"] == {"value": 4,
                                                "source": "class attribute nnUNetTrainerGSD_tiny.budget_num_epochs"}

    # both caches were built, and the log says what was computed
    log = next(fold.glob("training_log_*.txt")).read_text()
    for cache in ("SLIC superpixels", "clean labels"):
        line = next(line for line in log.splitlines() if f"GSD {cache} (" in line)
        assert "computed 12 new" in line or "12 up to date" in line, line

    # --c with a changed method setting stops with one line naming it, and leaves the fold as it was
    logs = sorted(fold.glob("training_log_*.txt"))
    proc = run_failing(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", "nnUNetTrainerGSD_tiny", "-device", "cpu",
                        "--c"], train_env(nnunet_root, nnUNet_GSD_TAU="0.2"))
    assert f"tau {tau!r} (dataset.json {preprocessed_json}" in proc.stderr
    assert "→ 0.2 (environment variable nnUNet_GSD_TAU)" in proc.stderr
    assert "nnUNet_GSD_ALLOW_SETTINGS_CHANGE=1" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((fold / "gsd_settings.json").read_text()) == record
    assert sorted(fold.glob("training_log_*.txt")) == logs  # no new, near-empty training log

    # --c restores both networks, the optimizer and the epoch; a larger budget trains one more epoch
    run(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", "nnUNetTrainerGSD_tiny", "-device", "cpu", "--c"],
        train_env(nnunet_root, nnUNet_GSD_NUM_EPOCHS="5"))
    continued = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert continued["current_epoch"] == 5
    # one more epoch appended to the restored record (a restart would have rewritten epochs 0-3)
    assert continued["logging"]["gsd_loss_kt"][:4] == logged["gsd_loss_kt"]
    assert len(continued["logging"]["gsd_loss_kt"]) == 5
    assert continued["network_weights"]["net1.encoder.stages.0.0.convs.0.conv.weight"].ne(
        checkpoint["network_weights"]["net1.encoder.stages.0.0.convs.0.conv.weight"]).any()
    history = json.loads((fold / "gsd_settings.json").read_text())["history"]
    assert [(h["epoch"], list(h["changed"])) for h in history] == [(4, ["num_epochs"])]

    predictions = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", str(dataset["raw"] / "imagesTs"), "-o", str(predictions), "-d", str(DATASET_ID),
         "-c", "2d", "-tr", "nnUNetTrainerGSD_tiny", "-f", "0", "-device", "cpu", "--save_probabilities"], env)
    assert len(list(predictions.glob("*.png"))) == 4 and len(list(predictions.glob("*.npz"))) == 4
    run(["nnUNetv2_evaluate_folder", str(dataset["raw"] / "labelsTs"), str(predictions),
         "-djfile", str(predictions / "dataset.json"), "-pfile", str(predictions / "plans.json")], env)
    dice = json.loads((predictions / "summary.json").read_text())["foreground_mean"]["Dice"]
    assert dice > 0.5, f"Dice {dice} against clean test labels after a tiny run is implausibly low"


@pytest.mark.parametrize("trainer", ["nnUNetTrainerJoCoR", "nnUNetTrainerJoCoRGDA", "nnUNetTrainerJoCoRGDALR",
                                     "nnUNetTrainerJoCoRGDASGLR", "nnUNetTrainerJoCoRGDALRKT",
                                     "nnUNetTrainerGSDFaithful"])
def test_ablation_trainers_train_and_predict(trainer: str, dataset, nnunet_root: Path, tmp_path: Path):
    env = train_env(nnunet_root, nnUNet_GSD_NUM_EPOCHS="2", nnUNet_GSD_NUM_ITERATIONS="2",
                    nnUNet_GSD_NUM_VAL_ITERATIONS="1", nnUNet_GSD_WARMUP="0.5")
    run(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", trainer, "-device", "cpu"], env)
    fold = nnunet_root / "nnUNet_results" / dataset["name"] / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == trainer and checkpoint["current_epoch"] == 2
    run(["nnUNetv2_predict", "-i", str(dataset["raw"] / "imagesTs"), "-o", str(tmp_path), "-d", str(DATASET_ID),
         "-c", "2d", "-tr", trainer, "-f", "0", "-device", "cpu"], env)
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_bad_setting_stops_before_training(dataset, nnunet_root: Path):
    env = train_env(nnunet_root, nnUNet_GSD_TAU="1.5")
    proc = run_failing(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", "nnUNetTrainerGSD_tiny", "-device", "cpu"],
                       env)
    assert "nnUNet_GSD_TAU" in proc.stderr and "[0, 1)" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("offset", ["default", "-1"])
def test_boundary_calibration_runs_through_nnunet(offset: str, dataset, nnunet_root: Path):
    given = {} if offset == "default" else {"nnUNet_GSD_BOUNDARY_OFFSET": offset}
    env = train_env(nnunet_root, nnUNet_GSD_NUM_EPOCHS="1", nnUNet_GSD_NUM_ITERATIONS="2",
                    nnUNet_GSD_NUM_VAL_ITERATIONS="1", **given)
    fold_id = "1" if offset == "default" else "2"  # a fold of its own: no record of the other run in it
    run(["nnUNetv2_train", str(DATASET_ID), "2d", fold_id, "-tr", "nnUNetTrainerGSD_tiny", "-device", "cpu"], env)
    fold = (nnunet_root / "nnUNet_results" / dataset["name"] / "nnUNetTrainerGSD_tiny__nnUNetPlans__2d"
            / f"fold_{fold_id}")
    logged = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    setting = json.loads((fold / "gsd_settings.json").read_text())["settings"]["boundary_offset"]
    if offset == "default":
        # the default estimates (auto); the 9 or 10 training cases of fold 1 are too few outlines to move any label
        # (20 needed), and the record says so
        assert setting == {"value": "auto", "source": "default"}
        record = json.loads((fold / "gsd_boundary_offsets.json").read_text())["classes"]
        assert list(record) == ["1"]
        for v in record.values():
            assert v["estimate"] is None and v["offset"] == 0 and 0 < v["cases"] < 20
            assert v["abstained"] == f"too few outlines ({v['cases']} < 20)"
        assert logged["gsd_calibrated_accuracy"][-1] == logged["gsd_noisy_accuracy"][-1]
    else:
        # a given offset is used as it is, not estimated: no estimate is recorded beside the run
        assert setting == {"value": offset, "source": "environment variable nnUNet_GSD_BOUNDARY_OFFSET"}
        assert not (fold / "gsd_boundary_offsets.json").exists()
        # S_E labels are too large: shrinking every class by a voxel changes the labels the step learns from
        assert logged["gsd_calibrated_accuracy"][-1] != logged["gsd_noisy_accuracy"][-1]


def test_stock_trainer_on_calibrated_labels_runs_through_nnunet(dataset, nnunet_root: Path):
    env = train_env(nnunet_root, nnUNet_GSD_NUM_EPOCHS="1", nnUNet_GSD_NUM_ITERATIONS="2",
                    nnUNet_GSD_NUM_VAL_ITERATIONS="1")
    run(["nnUNetv2_train", str(DATASET_ID), "2d", "1", "-tr", "nnUNetTrainerBudgetCalibrated", "-device", "cpu"], env)
    results = nnunet_root / "nnUNet_results" / dataset["name"]
    fold = results / "nnUNetTrainerBudgetCalibrated__nnUNetPlans__2d" / "fold_1"
    assert (fold / "checkpoint_final.pth").is_file()
    # the same estimate as GSD's, recorded beside the run; too few outlines here, so no label moves
    record = json.loads((fold / "gsd_boundary_offsets.json").read_text())["classes"]
    assert record and all(v["offset"] == 0 and v["cases"] < 20 for v in record.values())
    assert "GSD boundary calibration, label 1," in "".join(p.read_text() for p in fold.glob("training_log_*.txt"))


def test_boundary_offset_command(dataset, nnunet_root: Path, tmp_path: Path):
    env = train_env(nnunet_root)
    out = run(["nnunet_gsd", "boundary-offset", "-d", str(DATASET_ID), "--png", str(tmp_path / "p.png")], env)
    # 12 generated cases: fewer than the 20 outlines the estimate needs
    assert re.search(r"label 1 \(lesion\), (\d+) outlines: no estimate, too few outlines \(\1 < 20\) -> auto moves it "
                     r"by 0", out)
    assert (tmp_path / "p.png").stat().st_size > 0
    proc = run_failing(["nnunet_gsd", "boundary-offset", "-d", str(DATASET_ID), "-c", "3d_fullres"], env)
    assert "configuration '3d_fullres' is not in nnUNetPlans.json" in proc.stderr and "Traceback" not in proc.stderr
