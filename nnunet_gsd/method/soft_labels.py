"""Soft labels from several raters: the per-class fraction of raters as the target, with soft cross-entropy and
soft Dice (issue 23, item 2).

nnU-Net's ``DC_and_CE_loss`` cannot take such targets: its ``RobustCrossEntropyLoss`` casts the target to
integers. Its Dice (``MemoryEfficientSoftDiceLoss``) already can: a target of the network output's shape is
used as the (one-hot) encoding as it is, so a soft one enters its sums unchanged; that loss is reused here.
The cross-entropy is torch's with class probabilities, ``-Σ_c t_c log softmax(x)_c``, averaged over pixels
as nnU-Net's CE is. When every rater agrees the target is one-hot and the loss is nnU-Net's
``DC_and_CE_loss`` exactly.

Plugging it into a trainer (rater maps as extra segmentation channels through nnU-Net's augmentation, deep
supervision targets) is the data-pipeline part of item 2 and lives elsewhere.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rater_fractions", "soft_cross_entropy", "SoftDCandCELoss"]


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


class SoftDCandCELoss(nn.Module):
    """``weight_ce · soft CE + weight_dice · soft Dice`` of logits against class-probability targets, in the
    form of nnU-Net's ``DC_and_CE_loss`` (same arguments, same Dice: nnU-Net's ``MemoryEfficientSoftDiceLoss``
    with a softmax; it returns the negative Dice, so the loss is CE − Dice as in nnU-Net). No ignore label:
    a pixel no rater labelled has no fraction to learn from.
    """

    def __init__(self, soft_dice_kwargs: Dict[str, Any], ce_kwargs: Optional[Dict[str, Any]] = None,
                 weight_ce: float = 1, weight_dice: float = 1, dice_class: Optional[type] = None) -> None:
        super().__init__()
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
        from nnunetv2.utilities.helpers import softmax_helper_dim1
        if ce_kwargs:
            # nnU-Net's CE options (weight, ignore_index, label_smoothing) have no meaning for given probabilities
            raise ValueError(f"SoftDCandCELoss takes no CE options, got {sorted(ce_kwargs)}")
        self.weight_ce, self.weight_dice = weight_ce, weight_dice
        self.dc = (dice_class or MemoryEfficientSoftDiceLoss)(apply_nonlin=softmax_helper_dim1, **soft_dice_kwargs)

    def forward(self, net_output: Tensor, target: Tensor) -> Tensor:
        """``net_output``: logits ``(B, C, *spatial)``; ``target``: class probabilities of the same shape
        (e.g. :func:`rater_fractions`)."""
        ce = soft_cross_entropy(net_output, target) if self.weight_ce != 0 else 0
        dc = self.dc(net_output, target) if self.weight_dice != 0 else 0
        return self.weight_ce * ce + self.weight_dice * dc
