"""Trainer checks that run before any training: unsupported label definitions stop with a clear message."""
from __future__ import annotations

import pytest
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_gsd.errors import UserError
from nnunet_gsd.training.trainer import nnUNetTrainerGSD


def make_trainer(tmp_path, monkeypatch, labels: dict):
    """nnUNetTrainerGSD_tiny on tiny plans for a dataset with ``labels``; returns (trainer or the SystemExit, fold)."""
    import json

    import torch

    from helpers import tiny_2d_plans
    from nnunet_gsd.training.variants import nnUNetTrainerGSD_tiny
    from stand_ins import NAME, nnunet_folders
    roots = nnunet_folders(tmp_path, monkeypatch.setenv)
    dataset_json = {"channel_names": {"0": "grey"}, "labels": labels, "numTraining": 2, "file_ending": ".png"}
    (roots["nnUNet_preprocessed"] / NAME / "dataset.json").write_text(json.dumps(dataset_json))
    fold = roots["nnUNet_results"] / NAME / "nnUNetTrainerGSD_tiny__nnUNetPlans__2d" / "fold_0"
    try:
        return nnUNetTrainerGSD_tiny(dict(tiny_2d_plans(NAME), continue_training=False), "2d", 0, dataset_json,
                                     torch.device("cpu")), fold
    except SystemExit as e:
        return e, fold


@pytest.mark.parametrize("labels, outputs", [({"background": 0, "lesion": 1}, 2),
                                             ({"background": 0, "a": 1, "b": 2}, 3)])
def test_plain_binary_and_multiclass_labels_are_accepted(labels, outputs, tmp_path, monkeypatch):
    """The trainer is built (nnU-Net's __init__ ran: its training log is in the fold), one output per label."""
    trainer, fold = make_trainer(tmp_path, monkeypatch, labels)
    assert not isinstance(trainer, SystemExit), trainer
    assert trainer.label_manager.num_segmentation_heads == outputs
    assert len(list(fold.glob("training_log_*.txt"))) == 1


def test_refused_labels_stop_before_nnunet_creates_the_fold(tmp_path, monkeypatch):
    """One line naming the trainer and the problem, and no fold folder or training log left behind."""
    stopped, fold = make_trainer(tmp_path, monkeypatch, {"background": 0, "lesion": 1, "ignore": 2})
    assert isinstance(stopped, SystemExit)
    assert str(stopped.code).startswith("nnUNetTrainerGSD_tiny: datasets with an 'ignore' label are not supported")
    assert not fold.parent.exists()


def test_region_labels_are_refused():
    regions = LabelManager({"background": 0, "whole": (1, 2), "core": 2}, regions_class_order=[1, 2])
    with pytest.raises(UserError, match="region-based"):
        nnUNetTrainerGSD._check_labels(regions)


def test_ignore_label_is_refused():
    with pytest.raises(UserError, match="'ignore' label"):
        nnUNetTrainerGSD._check_labels(LabelManager({"background": 0, "lesion": 1, "ignore": 2}, None))


def test_each_network_is_clipped_at_12_as_nnunet_clips_one():
    """Gradient norms 9 and 9 (joint 12.7): neither is clipped; 30 and 0: the first is scaled to 12."""
    import types

    import torch

    from nnunet_gsd.dual_network import DualNetwork

    def with_grad_norm(norm: float) -> torch.nn.Linear:
        lin = torch.nn.Linear(1, 1, bias=False)
        lin.weight.grad = torch.full_like(lin.weight, norm)
        return lin

    for norms, expected in (((9.0, 9.0), (9.0, 9.0)), ((30.0, 0.0), (12.0, 0.0))):
        dual = DualNetwork(with_grad_norm(norms[0]), with_grad_norm(norms[1]))
        fake = types.SimpleNamespace(grad_scaler=None, optimizer=types.SimpleNamespace(step=lambda: None),
                                     _unwrapped_network=lambda d=dual: d)
        nnUNetTrainerGSD._optimizer_step(fake)
        got = (dual.net1.weight.grad.norm().item(), dual.net2.weight.grad.norm().item())
        assert got == pytest.approx(expected, rel=1e-5)


def test_slic_cache_only_where_sglr_can_refine():
    """Defaults (τ unset, fallback 0): R(e) = 1, nothing is rejected, no SLIC cache. A given τ, or the Faithful
    trainer's fallback, needs it after the warm-up; pixel refinement and a warm-up covering the run never do."""
    from tests.training.test_settings import resolve
    from nnunet_gsd.training.trainer import uses_superpixels
    assert not uses_superpixels(resolve(), 3, 10)
    assert uses_superpixels(resolve({"gsd": {"tau": 0.1}}), 3, 10)
    assert uses_superpixels(resolve(fallback_tau=0.05), 3, 10)
    assert not uses_superpixels(resolve({"gsd": {"tau": 0.1}}, refinement="pixel"), 3, 10)
    assert not uses_superpixels(resolve({"gsd": {"tau": 0.1}}), 10, 10)
