import math

import pytest
import torch

from nnunet_gsd.method.losses import correlation_loss, kt_loss, weighted_ce
from nnunet_gsd.method.selection import symmetric_kl


def test_weighted_ce_hand_value():
    # pixel 0: p = (0.5, 0.5), target 1 → CE = log 2, W = 1
    # pixel 1: p = (0.25, 0.75), target 1 → CE = −log 0.75, W = 3
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)]]]).view(1, 2, 2).transpose(1, 2).reshape(1, 2, 1, 2)
    target = torch.tensor([[[1, 1]]])
    w = torch.tensor([[[1.0, 3.0]]])
    expected = (math.log(2.0) + 3 * -math.log(0.75)) / 4
    assert weighted_ce(logits, target, w).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_uniform_weights_is_mean_ce():
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    ref = torch.nn.functional.cross_entropy(logits, target)
    assert weighted_ce(logits, target, torch.full((2, 5, 6), 2.5)).item() == pytest.approx(ref.item(), rel=1e-5)


def test_kt_loss_adds_nnunet_dice():
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1

    dice = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=True, do_bg=False, smooth=1e-5,
                                       ddp=False)
    logits = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5, 6))
    w = torch.rand(2, 4, 5, 6) + 1
    out = kt_loss(logits, target, w, dice)
    ref = weighted_ce(logits, target, w) + dice(logits, target[:, None])
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    out.backward()
    assert logits.grad is not None
    # a perfect prediction gives Dice ≈ −1 and tiny CE
    perfect = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 50
    assert kt_loss(perfect, target, w, dice).item() == pytest.approx(-1.0, abs=1e-4)


def test_correlation_loss_weighted_mean():
    a = torch.randn(2, 2, 3, 3)
    b = torch.randn(2, 2, 3, 3)
    w = torch.rand(2, 3, 3) + 1
    kl = symmetric_kl(a, b)
    assert correlation_loss(a, b, w).item() == pytest.approx(((w * kl).sum() / w.sum()).item(), rel=1e-6)
    assert correlation_loss(a, a, w).item() == pytest.approx(0.0, abs=1e-7)


def test_kt_loss_mask_leaves_untrusted_pixels_out():
    """With a mask, a pixel outside it changes neither term: its label may be anything."""
    from nnunet_gsd.method.losses import kt_loss
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 4, 4)
    target = torch.randint(0, 2, (2, 4, 4))
    weights = torch.ones(2, 4, 4)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = False

    def dice(x, y, loss_mask=None):
        p = x.softmax(1)[:, 1:]
        y1 = (y == 1).float()
        m = torch.ones_like(y1) if loss_mask is None else loss_mask
        return -(2 * (p * y1 * m).sum() + 1e-5) / ((p * m).sum() + (y1 * m).sum() + 1e-5)

    flipped = target.clone()
    flipped[0, 0, 0] = 1 - flipped[0, 0, 0]
    assert torch.allclose(kt_loss(logits, target, weights, dice, mask), kt_loss(logits, flipped, weights, dice, mask))
    assert not torch.allclose(kt_loss(logits, target, weights, dice), kt_loss(logits, flipped, weights, dice))
