"""Small-loss clean-pixel selection (paper Eq. 1–6, docs/method.md §2).

Every tensor function here is dimension-agnostic: logits ``(B, C, *spatial)``, integer label maps
``(B, *spatial)``, per-pixel maps ``(B, *spatial)``. None of them synchronises host and device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cross_entropy_map", "symmetric_kl", "pick_loss", "retention_rate", "small_loss_mask",
           "class_balanced_small_loss_mask"]


def cross_entropy_map(logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel cross-entropy ``(B, *spatial)`` against integer labels ``(B, *spatial)`` or, for soft rater labels,
    class probabilities of the logits' shape ``(B, C, *spatial)`` (``-Σ_c t_c log softmax(x)_c``; a one-hot target
    gives the integer labels' CE)."""
    if target.ndim == logits.ndim:
        return F.cross_entropy(logits, target.to(logits.dtype), reduction="none")
    return F.cross_entropy(logits, target.long(), reduction="none")


def symmetric_kl(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Per-pixel symmetric KL divergence ``KL(σb‖σa) + KL(σa‖σb)`` (Eq. 3–4, the L_con term).

    Args:
        logits_a, logits_b: ``(B, C, *spatial)`` logits of the two networks.

    Returns:
        ``(B, *spatial)``, summed over classes, ≥ 0.

    Both KL terms are written with ``log_softmax``: their sum collapses to
    ``Σ_c (p_b − p_a)(log p_b − log p_a)``, which never forms ``log(softmax)`` of a saturated
    probability and so stays finite for large logits.
    """
    log_a = F.log_softmax(logits_a, dim=1)
    log_b = F.log_softmax(logits_b, dim=1)
    return ((log_b.exp() - log_a.exp()) * (log_b - log_a)).sum(dim=1)


def pick_loss(logits1: Tensor, logits2: Tensor, target: Tensor, lam: float = 0.5) -> Tensor:
    """Per-pixel selection loss ``L_sup ⊕ L_con`` (Eq. 1–4, docs/method.md §2).

    ``CE(p1, nGT) + CE(p2, nGT) + lam · [KL(σp2‖σp1) + KL(σp1‖σp2)]``.

    Args:
        logits1: ``(B, C, *spatial)`` logits of f1 on x.
        logits2: ``(B, C, *spatial)`` logits of f2 on x' (pixel-aligned with x).
        target: ``(B, *spatial)`` long, the noisy label nGT; or ``(B, C, *spatial)`` class probabilities (soft rater
            labels: the CE terms are then soft CE, docs/decisions.md §14).
        lam: weight λ of the consistency term (paper: 0.5).

    Returns:
        ``(B, *spatial)`` loss per pixel (differentiable; selection uses it detached).
    """
    ce = cross_entropy_map(logits1, target) + cross_entropy_map(logits2, target)
    return ce + lam * symmetric_kl(logits1, logits2)


def retention_rate(epoch: int, num_epochs: int, tau: float, ramp_fraction: float = 0.1) -> float:
    """Fraction of pixels kept as clean, ``R(e) = 1 − τ·min(e / e_ramp, 1)`` (Eq. 6, docs/method.md §2).

    ``e_ramp = max(1, ramp_fraction · num_epochs)``: the paper ramps over 10 of 100 epochs, which
    we keep as a fraction so nnU-Net's 1000-epoch schedule ramps over 100 epochs.
    Plain Python arithmetic: it is evaluated once per iteration on the host.
    """
    e_ramp = max(1.0, float(ramp_fraction) * float(num_epochs))
    return 1.0 - float(tau) * min(float(epoch) / e_ramp, 1.0)


def _num_kept(keep_fraction: float, n: int) -> int:
    # Round half up (Python's round() rounds half to even, which makes k depend on parity).
    return int(min(max(math.floor(float(keep_fraction) * n + 0.5), 1), n))


def small_loss_mask(loss: Tensor, keep_fraction: float) -> Tensor:
    """Batch-pooled small-loss criterion (Eq. 5, docs/method.md §2).

    Exactly ``k = clamp(round(keep_fraction · N), 1, N)`` pixels of the whole batch (N = all
    pixels of all samples) are True: those with the smallest loss. Ties are broken arbitrarily,
    but the count is always exact, so ``|D_clean| ≥ 1``.

    Args:
        loss: ``(B, *spatial)`` per-pixel loss (gradient is ignored).
        keep_fraction: R(e) from :func:`retention_rate`.

    Returns:
        Bool tensor shaped like ``loss``.

    ``k`` is computed from the shape on the host, so there is no synchronisation. Since R(e) is
    close to 1, we select the ``N − k`` *largest* losses with ``topk`` and clear them: a top-k of
    a few percent is much cheaper than one of ~95 % of the pixels.
    """
    flat = loss.detach().reshape(-1)
    n = flat.numel()
    k = _num_kept(keep_fraction, n)
    if k <= n - k:
        idx = torch.topk(flat, k, largest=False, sorted=False).indices
        mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
        mask.index_fill_(0, idx, True)
    else:
        mask = torch.ones(n, dtype=torch.bool, device=flat.device)
        if n - k > 0:
            idx = torch.topk(flat, n - k, largest=True, sorted=False).indices
            mask.index_fill_(0, idx, False)
    return mask.view(loss.shape)


def class_balanced_small_loss_mask(loss: Tensor, labels: Tensor, keep_fraction: float, num_classes: int) -> Tensor:
    """Eq. 5 applied within each nGT class: of the ``n_c`` pixels labelled c in the batch, the
    ``k_c = clamp(round(keep_fraction · n_c), 1, n_c)`` with the smallest loss are kept.

    Why: pooled over the batch, the ranking rejects a class that the networks have not learnt yet as a
    whole (a thin or small class has the highest losses early on), so it never enters L_GDA and the
    superpixel vote then hands it to its neighbours (measured: docs/benchmarks.md). Ranked within
    each class, every class keeps the same share of its pixels, and the high-loss outliers of each class
    are still the ones rejected. Identical to :func:`small_loss_mask` when the batch has one class.

    Args:
        loss: ``(B, *spatial)`` per-pixel loss (gradient ignored).
        labels: ``(B, *spatial)`` integer nGT in ``[0, num_classes)``.
        keep_fraction: R(e).
        num_classes: C (host value: keeps every shape host-known, so nothing synchronises).

    Returns:
        Bool tensor shaped like ``loss``.

    Method: one sort by the key ``class · (span + 1) + (loss − min)`` (float64, span = max − min of the
    losses) groups the pixels by class, each group ordered by loss; a pixel's rank in its class is its
    position minus the group's start (from per-class counts). Nothing leaves the device.
    """
    flat = loss.detach().reshape(-1)
    lab = labels.reshape(-1).long().clamp(0, num_classes - 1)
    n = flat.numel()
    shifted = flat.double() - flat.min().double()
    order = torch.sort(lab.double() * (shifted.max() + 1.0) + shifted).indices   # grouped by class, loss ascending
    grouped = lab[order]
    counts = torch.zeros(num_classes, dtype=torch.long, device=flat.device).scatter_add_(
        0, lab, torch.ones_like(lab))
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=flat.device) - starts[grouped]
    k = torch.floor(counts.double() * float(keep_fraction) + 0.5).long().clamp_min(1)
    k = torch.minimum(k, counts)
    mask = torch.empty(n, dtype=torch.bool, device=flat.device)
    mask[order] = rank < k[grouped]
    return mask.view(loss.shape)
