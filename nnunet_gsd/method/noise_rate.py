"""Loss for the τ search (paper Eq. 20, docs/decisions.md §8)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["search_loss", "not_label_ce", "confident_disagreement"]


def not_label_ce(logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel CE toward "not the given label": ``−log(1 − p_target)``.

    For two classes this is exactly ``CE(logits, 1 − target)``. It is computed as
    ``logsumexp(all logits) − logsumexp(logits except the target's)``, which stays finite when
    ``p_target`` rounds to 1.

    Args:
        logits: ``(B, C, *spatial)``, C ≥ 2.
        target: ``(B, *spatial)`` long.
    """
    target = target.long().unsqueeze(1)
    lse_all = torch.logsumexp(logits, dim=1)
    others = logits.scatter(1, target, float("-inf"))
    return lse_all - torch.logsumexp(others, dim=1)


def search_loss(logits1: Tensor, logits2: Tensor, noisy: Tensor, clean_mask: Tensor) -> Tensor:
    """``L_search = [Σ_{D_clean} L_sup(nGT) + Σ_{¬D_clean} L_sup(¬nGT)] / |D|`` (Eq. 20).

    ``L_sup(·) = CE(p1, ·) + CE(p2, ·)`` (Eq. 2). On the rejected pixels the target is the
    inverted label: ``1 − nGT`` for binary labels. Multi-class generalisation (our decision,
    documented in the README): CE toward "not nGT", ``−log(1 − p_nGT)``, which equals the binary
    case exactly.

    Args:
        logits1, logits2: ``(B, C, *spatial)``.
        noisy: ``(B, *spatial)`` long nGT.
        clean_mask: ``(B, *spatial)`` bool D_clean for the τ under test.

    Returns:
        Scalar, averaged over all pixels |D| of the batch.
    """
    noisy = noisy.long()
    sup = F.cross_entropy(logits1, noisy, reduction="none") + F.cross_entropy(logits2, noisy, reduction="none")
    inv = not_label_ce(logits1, noisy) + not_label_ce(logits2, noisy)
    return torch.where(clean_mask, sup, inv).mean()


def confident_disagreement(logits1: Tensor, logits2: Tensor, noisy: Tensor, max_probability: float = 0.2) -> Tensor:
    """Share of pixels where *both* networks give nGT a probability below ``max_probability``.

    Logged every epoch as an upper bound on the label-noise rate (ours, not the paper's; the paper searches
    τ with Eq. 20). It is not used as τ: with networks trained briefly it counts their own errors as much as
    label noise (docs/decisions.md §8; the measurements: docs/benchmarks.md).

    Returns:
        0-d float tensor in [0, 1].
    """
    with torch.no_grad():
        idx = noisy.long().unsqueeze(1)
        p1 = torch.softmax(logits1.float(), dim=1).gather(1, idx)
        p2 = torch.softmax(logits2.float(), dim=1).gather(1, idx)
        return ((p1 < max_probability) & (p2 < max_probability)).float().mean()
