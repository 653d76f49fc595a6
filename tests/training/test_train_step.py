"""nnUNetTrainerGSD.train_step on a real trainer object (tiny plans, no nnUNetv2_train) with stand-in networks.

What the trainer adds to the step functions of nnunet_gsd.method.step (tested there): the batch's channels
(nGT, clean labels, superpixel ids), the boundary calibration, which network sees which input, the two backward
passes and the optimizer step of both networks, and the figures it returns to nnU-Net's logger.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from nnunet_gsd.method.step import (deep_supervision_loss, selection_half, split_scales, transfer_inputs,
                                    transfer_losses)
from nnunet_gsd.method.views import weak_intensity_view
from nnunet_gsd.training.variants import nnUNetTrainerGSD_tiny
from stand_ins import TrainerWithKT, make_batch, nnunet_folders, parameters, set_tau, stepping_trainer

FIGURES = ["loss", "loss_gda", "loss_kt", "loss_cor", "loss_ds", "mean_weight", "kept_fraction", "refined_fraction",
           "disagreement", "selection_precision", "noise_rate_selected", "noise_rate_rejected", "noise_rate",
           "refined_accuracy", "noisy_accuracy", "calibrated_accuracy"]


@pytest.fixture(autouse=True)
def folders(tmp_path, monkeypatch) -> dict:
    """nnU-Net's folders in tmp_path, no nnUNet_GSD_* variable, τ = 0.25 in the preprocessed dataset.json."""
    for key in list(os.environ):
        if key.startswith("nnUNet_GSD_"):
            monkeypatch.delenv(key)
    roots = nnunet_folders(tmp_path, monkeypatch.setenv)
    set_tau(0.25)
    return roots


def test_returns_the_figures_of_the_step_as_host_numbers():
    trainer = stepping_trainer()
    out = trainer.train_step(make_batch())
    assert list(out) == FIGURES
    assert all(isinstance(v, np.float32) for v in out.values())  # one device→host transfer, numbers for the logger
    # τ = 0.25 after the one-epoch ramp: R = 0.75 of each class (96 of 128 box, 288 of 384 background pixels)
    assert float(out["kept_fraction"]) == pytest.approx(0.75)
    # nGT is the clean label here: everything kept is correct, the selection found no noise
    assert float(out["selection_precision"]) == 1.0 and float(out["noise_rate"]) == 0.0
    assert float(out["noisy_accuracy"]) == 1.0 and float(out["calibrated_accuracy"]) == 1.0


def test_the_step_learns_from_the_boundary_calibrated_labels():
    """nGT is a 10×10 box around the clean 8×8 one (one pixel too large, as S_E noise makes it); offset −1 gives
    its outline ring, 36 of 256 pixels, to the background, which leaves the clean label: nGT is 220/256 right, the
    calibrated labels 256/256. With τ = 0 nothing is rejected or refined, so the labels the step learnt from (its
    refined labels) are the calibrated ones, all right."""
    set_tau(0.0)
    trainer = stepping_trainer(offsets=(0, -1), superpixels=False)
    out = trainer.train_step(make_batch(superpixels=False, label_box=10))
    assert float(out["noisy_accuracy"]) == pytest.approx(220 / 256)
    assert float(out["noise_rate"]) == pytest.approx(36 / 256)
    assert float(out["calibrated_accuracy"]) == 1.0
    assert float(out["refined_accuracy"]) == 1.0
    assert float(out["kept_fraction"]) == 1.0


def test_network_1_sees_x_network_2_a_weak_view_and_kt_two_mixes():
    trainer = stepping_trainer(TrainerWithKT)
    batch = make_batch()
    out = trainer.train_step(batch)
    net1, net2 = trainer.network.net1, trainer.network.net2
    assert len(net1.inputs) == len(net2.inputs) == 2        # passes 1-2, then 3-4 on the mixed batch
    assert torch.equal(net1.inputs[0], batch["data"])
    view = net2.inputs[0]
    assert view.shape == batch["data"].shape and not torch.equal(view, batch["data"])
    assert torch.corrcoef(torch.stack([view.flatten(), batch["data"].flatten()]))[0, 1] > 0.9  # the same image
    # Eq. 15 with two samples: each one's partner is the other; sample i keeps its label-1 region and takes the
    # rest from its partner. The 4×4 superpixel tiles follow the box, so the majority gate refines no pixel and
    # the region is the 8×8 box: mix 0 = sample 0 inside the box, sample 1 outside
    assert float(out["refined_fraction"]) == 0.0
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:12, 4:12] = True
    for mixed, seen_by in ((net1.inputs[1], batch["data"]), (net2.inputs[1], view)):
        assert torch.equal(mixed[0, 0][inside], seen_by[0, 0][inside])
        assert torch.equal(mixed[0, 0][~inside], seen_by[1, 0][~inside])
        assert torch.equal(mixed[1, 0][inside], seen_by[1, 0][inside])


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerGSD_tiny, TrainerWithKT])
def test_both_networks_step_by_the_gradient_of_the_whole_loss(trainer_class):
    """The two backward passes and the optimizer step: with SGD (lr 1, no momentum) every parameter moves by minus
    the gradient of L_GDA + L_KT + L_cor + deep supervision taken in one backward pass (the same random draws:
    the weak view, α, the KT partner and masks), and the returned loss is that sum."""
    trainer = stepping_trainer(trainer_class)
    batch = make_batch()
    before = parameters(trainer.network)
    torch.manual_seed(5)
    out = trainer.train_step(batch)
    moved = [b - a for a, b in zip(parameters(trainer.network), before)]

    reference = stepping_trainer(trainer_class)
    net = reference.network
    data, target = batch["data"], batch["target"]
    y, ids = target[:, 0].long(), target[:, 2].long() * 32768 + target[:, 3].long()
    torch.manual_seed(5)
    view = weak_intensity_view(data)
    (l1, low1), (l2, low2) = split_scales(net.net1(data)), split_scales(net.net2(view))
    schedule = reference._schedule()
    half = selection_half(l1, l2, y, ids, schedule, reference._dice)
    total = half.loss + deep_supervision_loss(low1, low2, half.refined, half.weights, half.supervised, reference._dice)
    if schedule.use_kt:
        mixed = transfer_inputs(data, view, half, 2, schedule.rho)
        (m1, mlow1), (m2, mlow2) = split_scales(net.net1(mixed.data)), split_scales(net.net2(mixed.view))
        kt, cor = transfer_losses(m1, m2, mixed, reference._dice)
        total = total + kt + cor + deep_supervision_loss([mixed.adjust(x) for x in mlow1],
                                                          [mixed.adjust(x) for x in mlow2], mixed.labels,
                                                          mixed.weights, mixed.trusted, reference._dice)
    grads = torch.autograd.grad(total, list(net.parameters()))
    assert all(torch.linalg.vector_norm(g) < 12 for g in grads)   # nnU-Net's clipping at 12 does not act
    assert float(out["loss"]) == pytest.approx(total.item(), rel=1e-5)
    for step, grad in zip(moved, grads):
        torch.testing.assert_close(step, grad, rtol=1e-4, atol=1e-6)
    assert float(out["loss_kt"]) > 0 and float(out["loss_ds"]) > 0
    assert (float(out["loss_cor"]) > 0) == schedule.use_kt


def test_default_path_keeps_every_pixel_without_superpixel_channels():
    """Defaults (no τ: R = 1): the trainer builds no SLIC cache, so the batch carries nGT and the clean label only;
    the step keeps every pixel, refines none, and both networks still learn."""
    set_tau(None)
    trainer = stepping_trainer(superpixels=False)
    before = parameters(trainer.network)
    out = trainer.train_step(make_batch(superpixels=False))
    assert float(out["kept_fraction"]) == 1.0 and float(out["refined_fraction"]) == 0.0
    assert float(out["refined_accuracy"]) == 1.0
    names = [n for n, _ in trainer.network.named_parameters()]
    changed = {n for n, a, b in zip(names, before, parameters(trainer.network)) if not torch.equal(a, b)}
    # every parameter but the lowest output's head (deep supervision weighs it 0, as nnU-Net does)
    assert changed == {n for n in names if ".heads.2." not in n}
