"""The whole GSD step (method/step.py) on CPU with two stand-in networks and hand-made batches."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from nnunet_gsd.method.losses import kt_loss
from nnunet_gsd.method.step import (StepFigures, StepSchedule, deep_supervision_loss, deep_supervision_weights,
                                    selection_half, split_scales, step_figures, transfer_inputs, transfer_losses)


def dice(logits, target, loss_mask=None):
    """nnU-Net's soft Dice (no background, batch Dice), as the trainer configures it."""
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1
    return MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=True, do_bg=False, smooth=1e-5,
                                       ddp=False)(logits, target, loss_mask=loss_mask)


def nets(num_classes: int, dim: int, seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    return [nn.Sequential(conv(1, 6, 3, padding=1), nn.ReLU(), conv(6, num_classes, 1)) for _ in range(2)]


def batch(b: int, spatial, num_classes: int, boundary: bool = True):
    """Images brighter inside a centred box of class 1 (class 2, if any, a thin bar); superpixels = 4×4 tiles."""
    x = torch.randn(b, 1, *spatial) * 0.1
    y = torch.zeros(b, *spatial, dtype=torch.long)
    if boundary:
        box = tuple(slice(s // 4, 3 * s // 4) for s in spatial)
        y[(slice(None),) + box] = 1
        if num_classes == 3:
            y[(slice(None),) + tuple(slice(1, 2) if i == 0 else slice(None) for i in range(len(spatial)))] = 2
    x[:, 0] += y.float()
    grids = torch.meshgrid(*[torch.arange(s) // 4 for s in spatial], indexing="ij")
    ids = sum(g * (10 ** i) for i, g in enumerate(grids)) + 1
    return x, y, ids.expand(b, *spatial).clone()


def schedule(after_warmup: bool, refinement="superpixel", use_kt=True, **kw) -> StepSchedule:
    base = dict(keep=0.9, epoch=5, num_epochs=10, threshold=2.0, use_gda=True, gda_dice=True, lam=0.5,
                selection="per_class", refinement=refinement if after_warmup else "none", refine_confidence=0.8,
                refine_majority=True, ignore_unrefined=True, use_kt=after_warmup and use_kt, kt_prior_correction=False,
                rho=0.5)
    base.update(kw)
    return StepSchedule(**base)


def full_step(f1, f2, x, y, ids, sched, alpha=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    view = x * 1.1
    l1, l2 = f1(x), f2(view)
    half = selection_half(l1, l2, y, ids, sched, dice, alpha=torch.tensor(alpha))
    kt = cor = half.loss.new_zeros(())
    if sched.use_kt:
        mixed = transfer_inputs(x, view, half, l1.shape[1], sched.rho, generator=gen)
        kt, cor = transfer_losses(f1(mixed.data), f2(mixed.view), mixed, dice)
    return half, kt, cor, step_figures(half, kt, cor, kt.new_zeros(()), half.loss + kt + cor, y, clean=y,
                                       logits=(l1, l2))


@pytest.mark.parametrize("after_warmup,refinement,use_kt", [
    (False, "superpixel", True), (True, "superpixel", True), (True, "pixel", True), (True, "none", True),
    (True, "superpixel", False), (True, "pixel", False)])
def test_step_paths(after_warmup, refinement, use_kt):
    f1, f2 = nets(2, 2)
    x, y, ids = batch(2, (16, 16), 2)
    sched = schedule(after_warmup, refinement, use_kt)
    half, kt, cor, figs = full_step(f1, f2, x, y, ids, sched)
    values = figs.values()
    assert all(torch.isfinite(v) for v in values.values())
    assert tuple(values) == StepFigures.names(search=True, truth=True)
    assert half.clean_mask.float().mean().item() == pytest.approx(0.9, abs=0.01)
    if not after_warmup or refinement == "none":
        assert torch.equal(half.refined, y) and values["refined_fraction"] == 0
    assert (kt > 0) if sched.use_kt else (kt == 0)
    if refinement != "none" and after_warmup and not use_kt:
        assert half.loss_kt_unmixed > 0 and torch.allclose(half.loss, half.loss_gda + half.loss_kt_unmixed)


def test_warmup_loss_is_gda_with_dice():
    """Before refinement L = Σ_{D_clean} W·L_pick / |D_clean| + Dice of both networks on D_clean."""
    from nnunet_gsd.method.gda import clipped_boundary_distance, gda_loss, gda_weights
    from nnunet_gsd.method.selection import class_balanced_small_loss_mask, pick_loss
    f1, f2 = nets(2, 2)
    x, y, ids = batch(2, (16, 16), 2)
    sched = schedule(False)
    l1, l2 = f1(x), f2(x * 1.1)
    half = selection_half(l1, l2, y, ids, sched, dice)
    pick = pick_loss(l1, l2, y)
    mask = class_balanced_small_loss_mask(pick, y, 0.9, 2)
    w = gda_weights(clipped_boundary_distance(y, 2.0), 5, 10, 2.0)
    m = mask[:, None].float()
    expected = gda_loss(pick, mask, w) + dice(l1, y[:, None], loss_mask=m) + dice(l2, y[:, None], loss_mask=m)
    assert torch.allclose(half.loss, expected)
    no_dice = selection_half(l1, l2, y, ids, dataclasses.replace(sched, gda_dice=False), dice)
    assert torch.allclose(no_dice.loss, gda_loss(pick, mask, w))


@pytest.mark.parametrize("b,spatial,num_classes,boundary", [
    (1, (16, 16), 2, True), (2, (16, 16), 2, False), (3, (16, 16), 3, True), (2, (8, 8, 8), 2, True),
    (2, (8, 8, 8), 3, True)])
def test_step_edge_cases(b, spatial, num_classes, boundary):
    f1, f2 = nets(num_classes, len(spatial))
    x, y, ids = batch(b, spatial, num_classes, boundary)
    half, kt, cor, figs = full_step(f1, f2, x, y, ids, schedule(True))
    assert all(torch.isfinite(v) for v in figs.values().values())
    assert half.refined.shape == y.shape and half.weights.min() >= 1
    if not boundary:  # no boundary: W = max(T − e/E·T, 1) everywhere
        assert torch.allclose(half.weights, torch.full_like(half.weights, 1.0))
    if b == 1:  # the only sample is its own partner: KT mixes nothing
        mixed = transfer_inputs(x, x, half, num_classes, 0.5)
        assert torch.equal(mixed.data, x) and torch.equal(mixed.labels, half.refined)


def test_two_part_backward_equals_single_backward():
    """The trainer's two backward passes give the gradient of L_GDA + L_KT + L_cor."""
    x, y, ids = batch(2, (16, 16), 2)
    sched = schedule(True)
    grads = []
    for split in (True, False):
        f1, f2 = nets(2, 2, seed=1)
        half, kt, cor, _ = full_step(f1, f2, x, y, ids, sched, seed=3)
        if split:
            half.loss.backward()
            (kt + cor).backward()
        else:
            (half.loss + kt + cor).backward()
        grads.append(torch.cat([p.grad.flatten() for f in (f1, f2) for p in f.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_figure_names_follow_the_result_type():
    assert StepFigures.names(search=False, truth=False) == (
        "loss", "loss_gda", "loss_kt", "loss_cor", "loss_ds", "mean_weight", "kept_fraction", "refined_fraction",
        "disagreement")
    assert StepFigures.names(search=True, truth=True)[-8:] == ("search_loss",) + StepFigures.TRUTH


class DeepNet(nn.Module):
    """A stand-in for nnU-Net's network under deep supervision: logits at full, 1/2 and 1/4 resolution."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.body = nn.Conv2d(1, 6, 3, padding=1)
        self.heads = nn.ModuleList(nn.Conv2d(6, num_classes, 1) for _ in range(3))

    def forward(self, x):
        h = torch.relu(self.body(x))
        return [head(nn.functional.avg_pool2d(h, 2 ** i) if i else h) for i, head in enumerate(self.heads)]


def test_split_scales():
    t = torch.zeros(1, 2, 4, 4)
    assert split_scales(t)[0] is t and split_scales(t)[1] == ()
    full, lower = split_scales([t, t[..., :2, :2], t[..., :1, :1]])
    assert full is t and [o.shape[-1] for o in lower] == [2, 1]


def test_deep_supervision_loss_weights_and_resizing():
    """Output i weighs 2^-i, the lowest 0; labels/W/mask are sampled as nnU-Net's nearest-exact resize does (the
    centre-right pixel of each 2×2 block: index 2j + 1)."""
    torch.manual_seed(0)
    x, y, _ = batch(2, (16, 16), 2)
    w = torch.rand(2, 16, 16) + 1
    mask = torch.rand(2, 16, 16) > 0.3
    f1, f2 = DeepNet(), DeepNet()
    (_, low1), (_, low2) = split_scales(f1(x)), split_scales(f2(x))
    got = deep_supervision_loss(low1, low2, y, w, mask, dice)
    ys, ws, ms = y[:, 1::2, 1::2], w[:, 1::2, 1::2], mask[:, 1::2, 1::2]
    expected = 0.5 * (kt_loss(low1[0], ys, ws, dice, ms) + kt_loss(low2[0], ys, ws, dice, ms))
    assert torch.allclose(got, expected)
    got.backward()
    assert f1.heads[2].weight.grad is not None and torch.count_nonzero(f1.heads[2].weight.grad) == 0
    assert torch.count_nonzero(f1.heads[1].weight.grad) > 0
    assert deep_supervision_loss((), (), y, w, mask, dice) == 0


def test_deep_supervision_weights_are_nnunets_unnormalised():
    """nnU-Net's weights for n outputs (nnUNetTrainer._build_loss): 2^-i, the lowest 0, here relative to full
    resolution (not divided by their sum)."""
    assert deep_supervision_weights(3) == [0.5, 0.25, 0.0]
    assert deep_supervision_weights(1) == [0.0]
    assert deep_supervision_weights(0) == []


def test_deep_supervision_step_two_part_backward_equals_single_backward():
    """With lists of outputs (deep supervision) the trainer's split backward still gives the summed gradient."""
    x, y, ids = batch(2, (16, 16), 2)
    sched = schedule(True)
    grads = []
    for split in (True, False):
        torch.manual_seed(1)
        f1, f2 = DeepNet(), DeepNet()
        gen = torch.Generator().manual_seed(3)
        (l1, low1), (l2, low2) = split_scales(f1(x)), split_scales(f2(x * 1.1))
        half = selection_half(l1, l2, y, ids, sched, dice, alpha=torch.tensor(0.5))
        first = half.loss + deep_supervision_loss(low1, low2, half.refined, half.weights, half.supervised, dice)
        mixed = transfer_inputs(x, x * 1.1, half, 2, sched.rho, generator=gen)
        (m1, mlow1), (m2, mlow2) = split_scales(f1(mixed.data)), split_scales(f2(mixed.view))
        kt, cor = transfer_losses(m1, m2, mixed, dice)
        second = kt + cor + deep_supervision_loss(mlow1, mlow2, mixed.labels, mixed.weights, mixed.trusted, dice)
        if split:
            first.backward()
            second.backward()
        else:
            (first + second).backward()
        grads.append(torch.cat([p.grad.flatten() for f in (f1, f2) for p in f.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_prior_correction_shifts_the_logits_l_kt_sees():
    """With the correction on, L_KT is kt_loss on logits + log(π_mix/π); L_cor and the mixes are unchanged."""
    x, y, ids = batch(4, (16, 16), 2)
    f1, f2 = nets(2, 2)
    sched = schedule(True, refinement="none")
    half = selection_half(f1(x), f2(x), y, ids, sched, dice, alpha=torch.tensor(0.5))
    plain = transfer_inputs(x, x, half, 2, sched.rho, generator=torch.Generator().manual_seed(0))
    fixed = transfer_inputs(x, x, half, 2, sched.rho, generator=torch.Generator().manual_seed(0), prior_correction=True)
    assert plain.logit_shift is None and torch.equal(plain.labels, fixed.labels)
    # every sample is a 8×8 box in 16×16 (π_fg = 1/4) pasted onto a partner with the same box: π_mix = π
    assert torch.allclose(fixed.logit_shift, torch.zeros(2))
    shift = torch.tensor([-0.5, 1.0])
    fixed = dataclasses.replace(fixed, logit_shift=shift)
    m1, m2 = f1(fixed.data), f2(fixed.view)
    kt, cor = transfer_losses(m1, m2, fixed, dice)
    expected = sum(kt_loss(m + shift.view(1, 2, 1, 1), fixed.labels, fixed.weights, dice, fixed.trusted)
                   for m in (m1, m2))
    assert torch.allclose(kt, expected)
    assert torch.allclose(cor, transfer_losses(m1, m2, plain, dice)[1])


@pytest.mark.parametrize("refinement", ["superpixel", "pixel"])
def test_keep_one_needs_no_superpixels_and_changes_no_loss(refinement):
    """The default path (τ = 0, so R(e) = 1): every pixel is in D_clean, nothing is refined, and the step runs
    without superpixel ids — the trainer builds no SLIC cache then — with the loss it has when ids are given."""
    f1, f2 = nets(2, 2)
    x, y, ids = batch(2, (16, 16), 2)
    sched = schedule(True, refinement, use_kt=False, keep=1.0, refine_confidence=0.0)
    with_ids = selection_half(f1(x), f2(x * 1.1), y, ids, sched, dice, alpha=torch.tensor(0.5))
    without = selection_half(f1(x), f2(x * 1.1), y, None, sched, dice, alpha=torch.tensor(0.5))
    assert bool(without.clean_mask.all()) and torch.equal(without.refined, y)
    assert without.refined_fraction.item() == 0.0
    # so every pixel is supervised: by L_GDA, the L_KT-form term and deep supervision (their mask)
    assert bool(without.supervised.all()) and bool(without.trusted.all())
    # the refinement's L_KT-form term on the unmixed passes stays (it supervises with nGT when nothing is refined)
    assert without.loss_kt_unmixed.item() > 0
    assert without.loss.item() == pytest.approx(with_ids.loss.item(), rel=1e-6)
    expected = (without.loss_gda + kt_loss(f1(x), y, without.weights, dice, without.trusted)
                + kt_loss(f2(x * 1.1), y, without.weights, dice, without.trusted))
    assert without.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_paper_steps_by_hand():
    """select_clean, distance_weights and refine on a 1×4 row: the paper's rules and our additions apart."""
    from nnunet_gsd.method.step import distance_weights, refine, select_clean
    labels = torch.tensor([[0, 0, 1, 1]])
    pick = torch.tensor([[0.1, 0.9, 0.2, 0.3]])
    paper = schedule(True, refinement="pixel", use_kt=False, keep=0.5, selection="pooled", use_gda=False,
                     refine_majority=False, refine_confidence=0.0)
    # Eq. 5 over the batch: the two smallest L_pick (pixels 0 and 2); per class (ours): the smaller of each class
    assert select_clean(pick, labels, paper, 2).tolist() == [[True, False, True, False]]
    ours = dataclasses.replace(paper, selection="per_class")
    assert select_clean(pick, labels, ours, 2).tolist() == [[True, False, True, False]]
    pick_fg = torch.tensor([[0.1, 0.2, 0.3, 0.9]])
    assert select_clean(pick_fg, labels, paper, 2).tolist() == [[True, True, False, False]]
    assert select_clean(pick_fg, labels, ours, 2).tolist() == [[True, False, True, False]]
    assert torch.equal(distance_weights(labels, paper, pick), torch.ones(1, 4))   # GDA off: W ≡ 1
    # LR (Eq. 14 per pixel): rejected pixels 1 and 3 take the fused argmax; D_clean keeps nGT
    logits = torch.tensor([[[0.0, 0.0, 5.0, 0.0], [1.0, 3.0, 0.0, -2.0]]])     # argmax 1, 1, 0, 0
    clean = torch.tensor([[True, False, True, False]])
    assert refine(logits, logits, labels, clean, None, paper, torch.tensor(0.5)).tolist() == [[0, 1, 1, 0]]
    # κ (ours): pixel 3's vote has p = 1/(1 + e^-2) ≈ 0.88 and pixel 1's ≈ 0.95; κ = 0.9 keeps pixel 3's nGT
    gated = dataclasses.replace(paper, refine_confidence=0.9)
    assert refine(logits, logits, labels, clean, None, gated, torch.tensor(0.5)).tolist() == [[0, 1, 1, 1]]
