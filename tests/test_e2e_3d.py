"""3D end to end (3d_fullres) through the real console commands on tiny synthetic volumes.

A 3-channel, 2-class 32³ dataset with S_R noise: plan → train nnUNetTrainerGSD_tiny past the warm-up with
Knowledge Transfer switched on (off by default; 3D SLIC, 3D KT masks with the prior correction, multi-class
refinement, deep supervision by default) → predict → evaluate.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import clean_env, run

pytestmark = pytest.mark.e2e
DATASET_ID = 903


def test_gsd_3d_fullres_multiclass(nnunet_root: Path, tmp_path: Path):
    env = clean_env(nnunet_root)
    run(["nnunet_gsd", "convert", "synthetic", "--id", str(DATASET_ID), "--dim", "3", "--size", "32",
         "--channels", "3", "--classes", "2", "--num-train", "6", "--num-test", "2", "--noise", "S_R", "--seed", "1"],
        env)
    raw = next((nnunet_root / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*"))
    run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1",
         "--verify_dataset_integrity"], env)
    train_env = clean_env(nnunet_root, nnUNet_n_proc_DA="0", nnUNet_GSD_USE_KT="1", nnUNet_GSD_KT_PRIOR_CORRECTION="1")
    run(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "0", "-tr", "nnUNetTrainerGSD_tiny", "-device", "cpu"],
        train_env)
    fold = nnunet_root / "nnUNet_results" / raw.name / "nnUNetTrainerGSD_tiny__nnUNetPlans__3d_fullres" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerGSD_tiny"
    kt = checkpoint["logging"]["gsd_loss_kt"]
    assert len(kt) == 4 and kt[0] == 0.0 and all(v != 0.0 for v in kt[1:])
    assert all(v != 0.0 for v in checkpoint["logging"]["gsd_loss_ds"])  # the lower decoder outputs learnt (CE − Dice)
    superpixels = nnunet_root / "nnUNet_preprocessed" / raw.name / "gsd_superpixels_nnUNetPlans_3d_fullres"
    assert len(list(superpixels.glob("*.npy"))) == 6

    predictions = tmp_path / "pred"
    run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d", str(DATASET_ID),
         "-c", "3d_fullres", "-tr", "nnUNetTrainerGSD_tiny", "-f", "0", "-device", "cpu"], train_env)
    assert len(list(predictions.glob("*.nii.gz"))) == 2
    run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(predictions),
         "-djfile", str(predictions / "dataset.json"), "-pfile", str(predictions / "plans.json")], env)
    summary = json.loads((predictions / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}  # both foreground classes evaluated
