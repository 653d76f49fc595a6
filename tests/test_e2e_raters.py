"""End to end: training from every rater (issue 23, item 2) through nnU-Net's real console commands.

convert lidc (a tiny fixture in the release's pickle layout: four raters, labelsTr_A1 … labelsTr_A4) →
nnUNetv2_plan_and_preprocess → nnUNetv2_train with rater sampling and soft labels, stock nnU-Net and GSD.
Without rater folders a rater mode stops with one line naming the dataset folder and the fix.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import clean_env, make_lidc, run, run_failing

pytestmark = pytest.mark.e2e
DATASET_ID = 907
TINY = {"nnUNet_GSD_NUM_EPOCHS": "1", "nnUNet_GSD_NUM_ITERATIONS": "2", "nnUNet_GSD_NUM_VAL_ITERATIONS": "1"}


@pytest.fixture(scope="module")
def dataset(nnunet_root: Path, tmp_path_factory) -> dict:
    env = clean_env(nnunet_root)
    source = make_lidc(tmp_path_factory.mktemp("lidc"))
    run(["nnunet_gsd", "convert", "lidc", "--source", str(source), "--id", str(DATASET_ID)], env)
    raw = next((nnunet_root / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*"))
    assert sorted(p.name for p in raw.glob("labelsTr_A*")) == ["labelsTr_A1", "labelsTr_A2", "labelsTr_A3",
                                                                "labelsTr_A4"]
    run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1",
         "--verify_dataset_integrity"], env)
    return {"raw": raw, "name": raw.name, "train": json.loads((raw / "dataset.json").read_text())["numTraining"]}


def train_env(root: Path, **extra: str) -> dict:
    return clean_env(root, nnUNet_n_proc_DA="0", **TINY, **extra)


def fold_of(root: Path, dataset: dict, trainer: str, fold: int) -> Path:
    return root / "nnUNet_results" / dataset["name"] / f"{trainer}__nnUNetPlans__2d" / f"fold_{fold}"


def log_of(fold: Path) -> str:
    return "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))


def test_without_rater_folders_a_rater_mode_is_one_line(dataset, nnunet_root: Path, tmp_path: Path):
    raw = dataset["raw"]
    for folder in raw.glob("labelsTr_A*"):
        shutil.move(str(folder), str(tmp_path / folder.name))
    try:
        for trainer, extra in (("nnUNetTrainerSoftRaters", {}), ("nnUNetTrainerGSD", {"nnUNet_GSD_RATERS": "sample"})):
            proc = run_failing(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", trainer, "-device", "cpu"],
                               train_env(nnunet_root, **extra))
            assert "Traceback" not in proc.stderr
            line = proc.stderr.strip().splitlines()[-1]
            assert line.startswith(f"{trainer}: ") and f"{raw} has no rater folders" in line
            assert "nnunet_gsd convert lidc" in line
            assert not fold_of(nnunet_root, dataset, trainer, 0).exists()
    finally:
        for folder in tmp_path.glob("labelsTr_A*"):
            shutil.move(str(folder), str(raw / folder.name))


@pytest.mark.parametrize("trainer, fold, extra, mode", [
    ("nnUNetTrainerRaterSampling", 0, {}, "sample"),
    ("nnUNetTrainerSoftRaters", 0, {}, "soft"),
    ("nnUNetTrainerGSD", 0, {"nnUNet_GSD_RATERS": "sample"}, "sample"),
    ("nnUNetTrainerGSD", 1, {"nnUNet_GSD_RATERS": "soft"}, "soft"),
])
def test_trains_from_every_rater(trainer: str, fold: int, extra: dict, mode: str, dataset, nnunet_root: Path):
    run(["nnUNetv2_train", str(DATASET_ID), "2d", str(fold), "-tr", trainer, "-device", "cpu"],
        train_env(nnunet_root, **extra))
    folder = fold_of(nnunet_root, dataset, trainer, fold)
    checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == trainer and checkpoint["current_epoch"] == 1
    assert (folder / "validation" / "summary.json").is_file()  # nnU-Net's final validation ran (on labelsTr)
    log = log_of(folder)
    assert f"{mode} over 4 raters (labelsTr_A1, labelsTr_A2, labelsTr_A3, labelsTr_A4 of {dataset['raw']})" in log
    line = next(line for line in log.splitlines() if "GSD rater labels (" in line)
    assert f"computed {dataset['train']} new" in line or f"{dataset['train']} up to date" in line, line
    if trainer == "nnUNetTrainerGSD":
        setting = json.loads((folder / "gsd_settings.json").read_text())["settings"]["raters"]
        assert setting == {"value": mode, "source": "environment variable nnUNet_GSD_RATERS"}
        assert all(v == v for v in checkpoint["logging"]["gsd_loss_gda"])  # finite, not NaN
    else:
        assert all(v == v for v in checkpoint["logging"]["train_losses"])
