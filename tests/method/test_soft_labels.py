"""Soft labels from several raters: hand-computed targets and losses, and nnU-Net's own loss when raters agree."""
from __future__ import annotations

import math

import pytest
import torch

from nnunet_gsd.method.soft_labels import SemimetricSoftDiceLoss, SoftDCandCELoss, rater_fractions, soft_cross_entropy

DICE = {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}   # nnU-Net's trainer, one process


def test_rater_fractions_by_hand():
    """Three raters on two pixels: pixel 0 gets labels (0, 1, 0), pixel 1 gets (1, 1, 2)."""
    maps = torch.tensor([[[0, 1], [1, 1], [0, 2]]])           # (B=1, R=3, W=2)
    t = rater_fractions(maps, 3)
    assert t.shape == (1, 3, 2)
    torch.testing.assert_close(t[0], torch.tensor([[2 / 3, 0], [1 / 3, 2 / 3], [0, 1 / 3]]))
    with pytest.raises(ValueError, match=r"0 … 2"):
        rater_fractions(maps + 1, 3)


def test_soft_ce_and_dice_by_hand():
    """Pixel 1: logits (0, ln 3) → softmax (1/4, 3/4), target (1/2, 1/2): CE = ½ ln 4 + ½ ln 4/3 = ½ ln 16/3.
    Pixel 2: logits (0, 0) → (1/2, 1/2), target (1, 0): CE = ln 2. Mean CE = (½ ln 16/3 + ln 2) / 2.
    Foreground Dice (no background, batch Dice, smooth 0), semimetric intersection Σ min(x, y):
    2 · (min(3/4, 1/2) + min(1/2, 0)) / ((3/4 + 1/2) + (1/2 + 0)) = 1 / (7/4) = 4/7 (nnU-Net's Σ x·y: 3/7)."""
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0]]])    # (B=1, C=2, W=2)
    target = torch.tensor([[[0.5, 1.0], [0.5, 0.0]]])
    ce = (0.5 * math.log(16 / 3) + math.log(2)) / 2
    assert soft_cross_entropy(logits, target).item() == pytest.approx(ce)
    loss = SoftDCandCELoss({**DICE, "smooth": 0.0})
    assert loss(logits, target).item() == pytest.approx(ce - 4 / 7)
    assert SoftDCandCELoss({**DICE, "smooth": 0.0}, weight_ce=0)(logits, target).item() == pytest.approx(-4 / 7)


def test_semimetric_dice_is_best_at_the_target_where_nnunets_sharpens_it():
    """One foreground pixel that half the raters marked (y = ½). Semimetric Dice 2·min(x, ½) / (x + ½): 1 at x = ½,
    2/3 at x = 1. nnU-Net's 2·x·½ / (x + ½): 1/2 at x = ½, 2/3 at x = 1 — it prefers the sharpened prediction."""
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    y = torch.tensor([[[0.5], [0.5]]])                              # (B=1, C=2, W=1): background ½, foreground ½
    half, sure = torch.tensor([[[0.5], [0.5]]]), torch.tensor([[[0.0], [1.0]]])
    ours, nnunet = (cls(apply_nonlin=None, **{**DICE, "smooth": 0.0}) for cls in
                    (SemimetricSoftDiceLoss, MemoryEfficientSoftDiceLoss))
    assert (ours(half, y).item(), ours(sure, y).item()) == (pytest.approx(-1.0), pytest.approx(-2 / 3))
    assert (nnunet(half, y).item(), nnunet(sure, y).item()) == (pytest.approx(-0.5), pytest.approx(-2 / 3))


@pytest.mark.parametrize("batch_dice", [True, False])
def test_semimetric_dice_is_nnunets_on_labels_with_a_mask(batch_dice):
    """Integer targets (B, 1, *spatial) and a loss mask, as GSD's step calls it: value and gradient are nnU-Net's."""
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (2, 1, 6, 6), generator=g)
    mask = (torch.rand(2, 1, 6, 6, generator=g) > 0.3).float()
    kw = {**DICE, "batch_dice": batch_dice, "apply_nonlin": softmax_helper_dim1}
    a = torch.randn(2, 3, 6, 6, generator=g).requires_grad_()
    b = a.detach().clone().requires_grad_()
    va, vb = SemimetricSoftDiceLoss(**kw)(a, labels, mask), MemoryEfficientSoftDiceLoss(**kw)(b, labels, mask)
    torch.testing.assert_close(va, vb)
    va.backward()
    vb.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_equals_nnunets_loss_when_every_rater_agrees():
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 8, 8), generator=g)
    target = rater_fractions(labels.repeat(1, 4, 1, 1), 3)      # four raters, all the same: one-hot
    ours, theirs = (torch.randn(2, 3, 8, 8, generator=g).requires_grad_() for _ in range(2))
    with torch.no_grad():
        theirs.copy_(ours)
    a = SoftDCandCELoss(DICE)(ours, target)
    b = DC_and_CE_loss(DICE, {}, weight_ce=1, weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)(theirs, labels)
    torch.testing.assert_close(a, b)
    a.backward()
    b.backward()
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_bad_targets_are_value_errors():
    with pytest.raises(ValueError, match="logits' shape"):
        soft_cross_entropy(torch.zeros(1, 2, 4), torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="no CE options"):
        SoftDCandCELoss(DICE, {"ignore_index": 2})
