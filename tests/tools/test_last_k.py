"""last-k: the paper's last-K-epochs protocol (mean ± std) beside nnU-Net's final checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import clean_env, run, run_failing
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools import last_k


def test_summary_is_mean_and_population_std():
    s = last_k.summarise({"checkpoint_epoch_0008.pth": 0.7, "checkpoint_epoch_0009.pth": 0.8}, final=0.8)
    assert s["k"] == 2 and s["mean"] == pytest.approx(0.75) and s["std"] == pytest.approx(0.05)
    assert "0.7500 ± 0.0500" in last_k.to_markdown(s) and "checkpoint_final.pth" in last_k.to_markdown(s)


def test_kept_checkpoints_sorted_and_limited(tmp_path: Path):
    (tmp_path / "last_k").mkdir()
    for epoch in (12, 9, 10, 11):
        (tmp_path / "last_k" / f"checkpoint_epoch_{epoch:04d}.pth").touch()
    assert [p.name for p in last_k.kept_checkpoints(tmp_path)][0] == "checkpoint_epoch_0009.pth"
    assert [p.name for p in last_k.kept_checkpoints(tmp_path, 2)] == ["checkpoint_epoch_0011.pth",
                                                                    "checkpoint_epoch_0012.pth"]
    with pytest.raises(UserError, match="nnUNet_GSD_KEEP_LAST"):
        last_k.kept_checkpoints(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="nnUNet_GSD_SNAPSHOT_EVERY"):
        last_k.kept_checkpoints(tmp_path, kind="snapshots")


def train_tiny(tiny_preprocessed, nnunet_root: Path, trainer: str, epochs: int, **settings: str):
    """``nnUNetv2_train`` fold 0 for ``epochs`` × 2 iterations with these settings; the env and the fold folder."""
    env = clean_env(nnunet_root, nnUNet_n_proc_DA="0", nnUNet_GSD_NUM_EPOCHS=str(epochs),
                    nnUNet_GSD_NUM_ITERATIONS="2", nnUNet_GSD_NUM_VAL_ITERATIONS="1", **settings)
    run(["nnUNetv2_train", tiny_preprocessed["id"], "2d", "0", "-tr", trainer, "-device", "cpu"], env)
    return env, nnunet_root / "nnUNet_results" / tiny_preprocessed["name"] / f"{trainer}__nnUNetPlans__2d" / "fold_0"


@pytest.mark.e2e
def test_last_k_protocol_on_a_tiny_run(tiny_preprocessed, nnunet_root: Path, tmp_path: Path):
    """Train 3 epochs keeping the last K = 2, then predict with each kept checkpoint and the final one."""
    trainer = "nnUNetTrainerGSD_tiny"
    env, fold = train_tiny(tiny_preprocessed, nnunet_root, trainer, 3, nnUNet_GSD_KEEP_LAST="2")
    kept = sorted(p.name for p in (fold / "last_k").iterdir())
    assert kept == ["checkpoint_epoch_0001.pth", "checkpoint_epoch_0002.pth"]
    weights_only = torch.load(fold / "last_k" / kept[0], map_location="cpu", weights_only=False)
    assert "optimizer_state" not in weights_only  # cheap: no K optimizer states

    raw = tiny_preprocessed["raw"]
    out = tmp_path / "eval"
    log = run(["nnunet_gsd", "last-k", "-d", tiny_preprocessed["id"], "-c", "2d", "-tr", trainer, "-f", "0",
               "-i", str(raw / "imagesTs"), "-r", str(raw / "labelsTs"), "-o", str(out), "-device", "cpu",
               "--disable_tta", "-np", "1"], env)
    summary = json.loads((out / "last_k.json").read_text())
    dice = summary["checkpoints"]
    assert list(dice) == kept and summary["k"] == 2
    assert summary["mean"] == pytest.approx(np.mean(list(dice.values())))
    assert summary["std"] == pytest.approx(np.std(list(dice.values())))
    # the last kept epoch and checkpoint_final.pth hold the same weights
    assert summary["final"] == pytest.approx(dice["checkpoint_epoch_0002.pth"])
    for name in ("checkpoint_epoch_0001", "checkpoint_epoch_0002", "checkpoint_final"):
        per_checkpoint = json.loads((out / "predictions" / name / "summary.json").read_text())
        assert len(per_checkpoint["metric_per_case"]) == 3
    assert "mean ± std over the last 2 epochs" in (out / "last_k.md").read_text()
    assert "mean ± std over the last 2 epochs" in log

    # a fold trained without kept checkpoints: one line saying how to get them
    proc = run_failing(["nnunet_gsd", "last-k", "-d", tiny_preprocessed["id"], "-c", "2d", "-tr", trainer,
                        "-f", "1", "-i", str(raw / "imagesTs"), "-r", str(raw / "labelsTs")], env)
    assert "Traceback" not in proc.stderr and "fold" in proc.stderr


@pytest.mark.e2e
def test_snapshots_of_a_stock_baseline_give_a_learning_curve(tiny_preprocessed, nnunet_root: Path, tmp_path: Path):
    """Stock nnU-Net (nnUNetTrainerBudget) keeps its weights every 2 of 5 epochs; --snapshots scores each one."""
    trainer = "nnUNetTrainerBudget"
    env, fold = train_tiny(tiny_preprocessed, nnunet_root, trainer, 5, nnUNet_GSD_SNAPSHOT_EVERY="2")
    # epochs 0..4: after the 2nd and the 4th; no last_k/ (keep_last_k is 0)
    assert sorted(p.name for p in (fold / "snapshots").iterdir()) == ["checkpoint_epoch_0001.pth",
                                                                    "checkpoint_epoch_0003.pth"]
    assert not (fold / "last_k").exists()
    snapshot = torch.load(fold / "snapshots" / "checkpoint_epoch_0003.pth", map_location="cpu", weights_only=False)
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert snapshot["current_epoch"] == 4 and snapshot["trainer_name"] == trainer
    assert snapshot["network_weights"].keys() == final["network_weights"].keys()

    raw = tiny_preprocessed["raw"]
    run(["nnunet_gsd", "last-k", "--snapshots", "-d", tiny_preprocessed["id"], "-c", "2d", "-tr", trainer, "-f", "0",
         "-i", str(raw / "imagesTs"), "-r", str(raw / "labelsTs"), "-device", "cpu", "--disable_tta", "-np", "1"], env)
    out = fold / "snapshots_eval"
    summary = json.loads((out / "snapshots.json").read_text())
    assert list(summary["checkpoints"]) == ["checkpoint_epoch_0001.pth", "checkpoint_epoch_0003.pth"]
    assert all(0.0 <= d <= 1.0 for d in summary["checkpoints"].values())
    assert "mean ± std" not in (out / "snapshots.md").read_text()
    assert (out / "snapshots.png").stat().st_size > 0
