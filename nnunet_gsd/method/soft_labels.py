"""Soft labels from several raters: the per-class fraction of raters as the target, with soft cross-entropy and
soft Dice (issue 23, item 2).

nnU-Net's ``DC_and_CE_loss`` cannot take such targets: its ``RobustCrossEntropyLoss`` casts the target to
integers. Its Dice (``MemoryEfficientSoftDiceLoss``) accepts a soft target of the output's shape, but its
intersection ``Σ x·y`` is not maximal where the prediction equals the target: for a pixel half the raters
marked, ``2·x·½ / (x + ½)`` grows until ``x = 1``, so it teaches the network to turn every majority into
certainty. The soft Dice here is the Dice semimetric loss (Wang et al., "Dice Semimetric Losses: Optimizing
the Dice Score with Soft Labels", MICCAI 2023): intersection ``Σ min(x, y) = ½ (‖x‖₁ + ‖y‖₁ − ‖x − y‖₁)``,
whose Dice is 1 exactly at ``x = y`` and which equals nnU-Net's, value and gradient, on one-hot targets.
The cross-entropy is torch's with class probabilities, ``-Σ_c t_c log softmax(x)_c``, averaged over pixels
as nnU-Net's CE is. When every rater agrees the target is one-hot and the loss is nnU-Net's
``DC_and_CE_loss`` exactly.

Plugging it into a trainer (rater maps as extra segmentation channels through nnU-Net's augmentation, deep
supervision targets) is the data-pipeline part of item 2 and lives elsewhere.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rater_fractions", "soft_cross_entropy", "SemimetricSoftDiceLoss", "SoftDCandCELoss"]


def rater_fractions(rater_maps: Tensor, num_classes: int) -> Tensor:
    """The soft target of integer rater maps.

    Args:
        rater_maps: ``(B, R, *spatial)`` integer labels, one channel per rater (labels ``0 … num_classes-1``).
        num_classes: the network's output channels (background included).

    Returns:
        ``(B, num_classes, *spatial)`` float32: the fraction of the R raters who gave each pixel each class
        (sums to 1 over classes).
    """
    if rater_maps.ndim < 3:
        raise ValueError(f"rater maps must be (B, R, *spatial), got shape {tuple(rater_maps.shape)}")
    labels = rater_maps.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"rater labels must be in 0 … {num_classes - 1}, got {labels.min()} … {labels.max()}")
    one_hot = F.one_hot(labels, num_classes)                    # (B, R, *spatial, C)
    fractions = one_hot.to(torch.float32).mean(1)               # (B, *spatial, C)
    return fractions.movedim(-1, 1).contiguous()


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over pixels of ``-Σ_c target_c · log softmax(logits)_c``; ``target`` has the logits' shape
    ``(B, C, *spatial)``, with class probabilities (a one-hot target gives nnU-Net's CE)."""
    if logits.shape != target.shape:
        raise ValueError(f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}")
    return F.cross_entropy(logits, target.to(logits.dtype))


class SemimetricSoftDiceLoss(nn.Module):
    """Negative soft Dice with the semimetric intersection ``Σ min(x, y)`` (Wang et al. 2023, their DML), in
    the form and with the arguments of nnU-Net's ``MemoryEfficientSoftDiceLoss``, which it replaces wherever a
    target may be soft. On a one-hot target ``min(x, y) = x·y`` for x in (0, 1) (and the gradient is y in both),
    so it is nnU-Net's loss there; on a soft target it is minimal (−1 without smoothing) only at ``x = y``.

    ``y``: integer labels ``(B, 1, *spatial)`` or ``(B, *spatial)``, or class probabilities of ``x``'s shape.
    ``loss_mask``: ``(B, 1, *spatial)``, 1 where a pixel counts (as nnU-Net's).
    """

    def __init__(self, apply_nonlin: Optional[Callable[[Tensor], Tensor]] = None, batch_dice: bool = False,
                 do_bg: bool = True, smooth: float = 1.0, ddp: bool = True) -> None:
        super().__init__()
        self.apply_nonlin, self.batch_dice, self.do_bg, self.smooth, self.ddp = (apply_nonlin, batch_dice, do_bg,
                                                                                 smooth, ddp)

    def forward(self, x: Tensor, y: Tensor, loss_mask: Optional[Tensor] = None) -> Tensor:
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)
        axes = tuple(range(2, x.ndim))
        with torch.no_grad():
            if y.shape == x.shape:
                target = y.to(torch.float32)
            else:
                labels = y.view(y.shape[0], 1, *y.shape[1:]) if y.ndim != x.ndim else y
                target = torch.zeros(x.shape, device=x.device, dtype=torch.float32).scatter_(1, labels.long(), 1)
            if not self.do_bg:
                target = target[:, 1:]
            if loss_mask is not None:
                target = target * loss_mask
        if not self.do_bg:
            x = x[:, 1:]
        if loss_mask is not None:
            x = x * loss_mask
        intersect = torch.minimum(x, target).sum(axes, dtype=torch.float32)
        sum_pred = x.sum(axes, dtype=torch.float32)
        sum_gt = target.sum(axes, dtype=torch.float32)
        if self.batch_dice:
            if self.ddp:
                from nnunetv2.utilities.ddp_allgather import AllGatherGrad
                intersect, sum_pred, sum_gt = (AllGatherGrad.apply(t).sum(0) for t in (intersect, sum_pred, sum_gt))
            intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
        dc = (2 * intersect + self.smooth) / (sum_gt + sum_pred + float(self.smooth)).clamp_min(1e-8)
        return -dc.mean()


class SoftDCandCELoss(nn.Module):
    """``weight_ce · soft CE + weight_dice · soft Dice`` of logits against class-probability targets, in the
    form of nnU-Net's ``DC_and_CE_loss`` (same arguments; the Dice is :class:`SemimetricSoftDiceLoss` with a
    softmax, nnU-Net's own on one-hot targets; it returns the negative Dice, so the loss is CE − Dice as in
    nnU-Net). No ignore label:
    a pixel no rater labelled has no fraction to learn from.
    """

    def __init__(self, soft_dice_kwargs: Dict[str, Any], ce_kwargs: Optional[Dict[str, Any]] = None,
                 weight_ce: float = 1, weight_dice: float = 1, dice_class: Optional[type] = None) -> None:
        super().__init__()
        from nnunetv2.utilities.helpers import softmax_helper_dim1
        if ce_kwargs:
            # nnU-Net's CE options (weight, ignore_index, label_smoothing) have no meaning for given probabilities
            raise ValueError(f"SoftDCandCELoss takes no CE options, got {sorted(ce_kwargs)}")
        self.weight_ce, self.weight_dice = weight_ce, weight_dice
        self.dc = (dice_class or SemimetricSoftDiceLoss)(apply_nonlin=softmax_helper_dim1, **soft_dice_kwargs)

    def forward(self, net_output: Tensor, target: Tensor) -> Tensor:
        """``net_output``: logits ``(B, C, *spatial)``; ``target``: class probabilities of the same shape
        (e.g. :func:`rater_fractions`)."""
        ce = soft_cross_entropy(net_output, target) if self.weight_ce != 0 else 0
        dc = self.dc(net_output, target) if self.weight_dice != 0 else 0
        return self.weight_ce * ce + self.weight_dice * dc
