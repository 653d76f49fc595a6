"""Knowledge-transfer and correlation losses (paper Eq. 16–19, docs/method.md §5–6)."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

from .selection import cross_entropy_map, symmetric_kl

__all__ = ["weighted_ce", "kt_loss", "correlation_loss"]

_EPS = 1e-8


def weighted_ce(logits: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """W-weighted mean cross-entropy ``Σ W·CE / Σ W`` (the CE part of Eq. 17).

    Args:
        logits: ``(B, C, *spatial)`` (raw logits: softmax is applied once, inside CE — the
            authors' code applied it twice, docs/decisions.md §11).
        target: ``(B, *spatial)`` long (mixed refined labels y_mix), or ``(B, C, *spatial)`` class probabilities
            (soft rater labels).
        weights: ``(B, *spatial)`` (mixed GDA weights W_mix, ≥ 1).

    Returns:
        Scalar; the denominator is clamped at 1e-8.
    """
    ce = cross_entropy_map(logits, target)
    w = weights.to(ce.dtype)
    return (w * ce).sum() / w.sum().clamp_min(_EPS)


def kt_loss(logits: Tensor, target: Tensor, weights: Tensor, dice: Callable[..., Tensor],
            mask: Optional[Tensor] = None) -> Tensor:
    """One network's KT loss: weighted CE + soft Dice on the mixed batch (Eq. 17).

    Args:
        logits, target, weights: as in :func:`weighted_ce`.
        dice: nnU-Net's ``MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1,
            batch_dice=..., do_bg=False, smooth=1e-5)``; it returns the negative Dice, as in nnU-Net's
            DC_and_CE_loss. Called as ``dice(logits, target[:, None], loss_mask=...)``.
        mask: optional bool ``(B, *spatial)``: only these pixels are supervised (both terms). Ours: the
            pixels whose label is trusted (selected or confidently refined), so that KT does not put back the
            noisy labels that selection took out of L_GDA.

    Returns:
        Scalar.
    """
    # nnU-Net's Dice one-hot encodes integer labels and takes a target of the logits' shape (soft labels) as it is
    dice_target = target if target.ndim == logits.ndim else target.long()[:, None]
    if mask is None:
        return weighted_ce(logits, target, weights) + dice(logits, dice_target)
    m = mask.to(weights.dtype)
    return weighted_ce(logits, target, weights * m) + dice(logits, dice_target, loss_mask=m[:, None])


def correlation_loss(logits1: Tensor, logits2: Tensor, weights: Tensor) -> Tensor:
    """W-weighted mean symmetric KL between the two networks on the mixes (Eq. 18).

    Args:
        logits1: f1 on the x-mixes, ``(B, C, *spatial)``.
        logits2: f2 on the x'-mixes (same masks and partners).
        weights: ``(B, *spatial)`` W_mix.
    """
    kl = symmetric_kl(logits1, logits2)
    w = weights.to(kl.dtype)
    return (w * kl).sum() / w.sum().clamp_min(_EPS)
