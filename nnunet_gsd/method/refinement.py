"""Superpixel-guided label refinement, SGLR (paper Eq. 11–14, docs/method.md §4, docs/decisions.md §5), on the
training device: the fused probabilities, the per-superpixel (or per-pixel) vote, and the refined labels. Every
function runs per training step without host-device synchronisation and without gradient; the superpixel ids
come from :mod:`.superpixels`.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fuse_probabilities", "superpixel_argmax", "superpixel_vote", "pixel_argmax", "refine_labels",
           "confident_refinement", "superpixel_majority"]


def fuse_probabilities(logits1: Tensor, logits2: Tensor, alpha: float | Tensor) -> Tensor:
    """``p̂ = α·σ(p1) + (1 − α)·σ(p2)`` (Eq. 11).

    Args:
        logits1, logits2: ``(B, C, *spatial)`` logits of f1 (on x) and f2 (on x').
        alpha: α ∈ [0, 1], a float, a 0-d tensor, or a ``(B,)`` tensor (one α per sample).

    Returns:
        ``(B, C, *spatial)`` probabilities (no gradient).
    """
    with torch.no_grad():
        p1 = torch.softmax(logits1.float(), dim=1)
        p2 = torch.softmax(logits2.float(), dim=1)
        if isinstance(alpha, Tensor):
            a = alpha.to(device=p1.device, dtype=p1.dtype)
            if a.ndim == 1:
                a = a.view(-1, *([1] * (p1.ndim - 1)))
        else:
            a = float(alpha)
        return a * p1 + (1 - a) * p2


def _class_argmax(t: Tensor, dim: int) -> Tensor:
    """``t.argmax(dim)`` over a short class axis (first maximum wins, as in ``argmax``).

    On CPU, ``argmax`` over a non-innermost axis is very slow (timed in docs/benchmarks.md, Cost), so
    for the usual handful of classes a running comparison over the class axis is used; it is also fine
    on CUDA.
    """
    n = t.shape[dim]
    if n > 32:
        return t.argmax(dim=dim)
    best = t.select(dim, 0)
    idx = torch.zeros(best.shape, dtype=torch.long, device=t.device)
    for c in range(1, n):
        cur = t.select(dim, c)
        better = cur > best
        idx = better.long() if c == 1 else idx.masked_fill(better, c)
        if c < n - 1:
            best = torch.maximum(best, cur)
    return idx


def _compact_ids(ids: Tensor) -> Tensor:
    """Relabel (sample, id) pairs to dense indices in ``[0, B·N)`` without synchronisation.

    ``torch.unique(return_inverse=True)`` would sync on CUDA (its output size is data
    dependent). Instead each sample's ids are sorted; a flag marks every position whose id differs
    from its predecessor and the first position of every sample (so equal ids of two samples stay
    apart); the cumulative sum of the flags over the flattened ``(B, N)`` array, minus 1, is the
    dense index, scattered back through the sort permutation. Every shape is B·N, known from the
    input shape, so nothing waits on the device.
    """
    b = ids.shape[0]
    flat = ids.reshape(b, -1)
    sorted_ids, perm = torch.sort(flat, dim=1)
    new = torch.ones(flat.shape, dtype=torch.long, device=flat.device)
    new[:, 1:] = (sorted_ids[:, 1:] != sorted_ids[:, :-1]).long()
    dense_sorted = (torch.cumsum(new.view(-1), dim=0) - 1).view(flat.shape)
    return torch.empty_like(dense_sorted).scatter_(1, perm, dense_sorted)


def _superpixel_sums(probs: Tensor, ids: Tensor, max_id: int | None, with_counts: bool) -> tuple[Tensor, Tensor]:
    """Per-(sample, superpixel) sums of ``probs`` (and, if asked, a last row of pixel counts).

    Returns ``(sums (C[+1], n_slots), dense (B, N))`` with ``dense`` the slot of every pixel. Ids after
    cropping can be anything up to ~2^30, so by default they are first compacted to dense indices < B·N
    (see :func:`_compact_ids`) — sync-free, buffer size B·N. With a host-known ``max_id`` the ids index a
    ``B·(max_id+1)`` buffer directly (ids above it are clamped, i.e. merged).
    """
    b, c = probs.shape[:2]
    spatial = probs.shape[2:]
    if tuple(ids.shape) != (b, *spatial):
        raise ValueError(f"ids shape {tuple(ids.shape)} does not match probs {tuple(probs.shape)}")
    ids = ids.long().clamp_min(0)
    n = ids[0].numel()
    if max_id is None:
        dense = _compact_ids(ids)  # (B, N), values < B·N
        n_slots = b * n
    else:
        per = int(max_id) + 1
        flat = ids.reshape(b, n).clamp_max(per - 1)  # never index past this sample's slots
        dense = flat + torch.arange(b, device=ids.device).unsqueeze(1) * per
        n_slots = b * per
    # class-major layout: index_add_ along the last axis is markedly faster on CPU than adding C-wide rows
    p = probs.reshape(b, c, n).float().transpose(0, 1).reshape(c, b * n)
    if with_counts:
        p = torch.cat([p, torch.ones_like(p[:1])])
    sums = torch.zeros(p.shape[0], n_slots, dtype=p.dtype, device=p.device)
    sums.index_add_(1, dense.reshape(-1), p)
    return sums, dense


def superpixel_argmax(probs: Tensor, ids: Tensor, max_id: int | None = None) -> Tensor:
    """Superpixel-level pseudo-label ŷ (Eq. 12–13).

    Per sample and superpixel s, ``p̄_s`` = mean of ``probs`` over s (Eq. 12); every pixel of s gets
    ``argmax_c p̄_s`` (Eq. 13). Pixels with id 0 ("no superpixel", e.g. padding) get their own
    per-pixel argmax.

    Args:
        probs: ``(B, C, *spatial)`` fused probabilities p̂.
        ids: ``(B, *spatial)`` integer superpixel ids, per sample (the same id in two samples
            denotes two different superpixels), id ≥ 0.
        max_id: optional host-known upper bound on the ids (e.g. the case's superpixel count
            stored at preprocessing), which skips the sort; pass it only when it is a true bound.

    Returns:
        long ``(B, *spatial)``.

    The argmax of a mean equals the argmax of the sum (one count per superpixel for all
    classes), so one ``index_add_`` of the probabilities into a per-(sample, superpixel) buffer
    suffices.
    """
    with torch.no_grad():
        sums, dense = _superpixel_sums(probs, ids, max_id, with_counts=False)
        out = _class_argmax(sums, 0).gather(0, dense.reshape(-1)).view(ids.shape)
        return torch.where(ids.long() <= 0, _class_argmax(probs, 1), out)


def superpixel_vote(probs: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """ŷ of :func:`superpixel_argmax` with its strength: the superpixel's mean probability of ŷ.

    ``conf_s = max_c p̄_s`` ∈ [1/C, 1] (Eq. 12's mean, Eq. 13's winner). Pixels with id 0 get their own
    argmax and probability.

    Returns:
        ``(proposal long (B, *spatial), confidence float (B, *spatial))``.
    """
    with torch.no_grad():
        sums, dense = _superpixel_sums(probs, ids, None, with_counts=True)
        means = sums[:-1] / sums[-1:].clamp_min(1.0)
        label = _class_argmax(means, 0)  # the fast class-axis argmax (see its docstring)
        best = means.gather(0, label[None])[0]
        flat = dense.reshape(-1)
        proposal = label.gather(0, flat).view(ids.shape)
        confidence = best.gather(0, flat).view(ids.shape)
        own = ids.long() <= 0
        own_label = _class_argmax(probs, 1)
        own_conf = probs.float().gather(1, own_label[:, None])[:, 0]
        return torch.where(own, own_label, proposal), torch.where(own, own_conf, confidence)


def pixel_argmax(probs: Tensor) -> Tensor:
    """Per-pixel pseudo-label ``argmax_c p̂`` — the "LR" ablation of Table 7 (no superpixels)."""
    with torch.no_grad():
        return _class_argmax(probs, 1)


def refine_labels(noisy: Tensor, clean_mask: Tensor, proposal: Tensor) -> Tensor:
    """Refined label ``y = D_clean ⊙ nGT + (1 − D_clean) ⊙ ŷ`` (Eq. 14).

    Args:
        noisy: ``(B, *spatial)`` nGT.
        clean_mask: ``(B, *spatial)`` bool D_clean.
        proposal: ``(B, *spatial)`` ŷ from :func:`superpixel_argmax` or :func:`pixel_argmax`.

    Returns:
        long ``(B, *spatial)``, without gradient.
    """
    with torch.no_grad():
        return torch.where(clean_mask, noisy.long(), proposal.long())


def confident_refinement(noisy: Tensor, clean_mask: Tensor, proposal: Tensor, confidence: Tensor,
                         min_confidence: float, gate: Tensor | None = None) -> Tensor:
    """Eq. 14, replacing a rejected pixel's label only where the evidence for ŷ is strong.

    ``y = nGT`` on D_clean, wherever ``confidence < min_confidence``, and (with ``gate``) wherever the gate
    is False; ``y = ŷ`` elsewhere. With ``min_confidence = 0`` and no gate this is exactly
    :func:`refine_labels` (the paper's rule). Why: a pixel is rejected for its loss, which under-trained
    networks also produce on *correct* labels; overwriting every rejected pixel turns more right labels
    wrong than wrong ones right (bench/results/refinement-audit-64.md).

    Args:
        noisy, clean_mask, proposal: as in :func:`refine_labels`.
        confidence: ``(B, *spatial)`` strength of ŷ (e.g. from :func:`superpixel_vote`).
        min_confidence: κ ∈ [0, 1].
        gate: optional bool ``(B, *spatial)``, e.g. ``ŷ == superpixel_majority(nGT)``.
    """
    with torch.no_grad():
        keep = clean_mask | (confidence < min_confidence)
        if gate is not None:
            keep = keep | ~gate
        return torch.where(keep, noisy.long(), proposal.long())


def superpixel_majority(labels: Tensor, ids: Tensor, num_classes: int) -> Tensor:
    """Each pixel's superpixel's most frequent label (ties: the lower class), ``(B, *spatial)`` long.

    The labels' own superpixel vote. Used as SGLR's gate (ours): a rejected pixel takes the networks'
    vote ŷ only where ŷ is also what most of its superpixel is labelled — the pixel contradicts both the
    networks and its own region's labels. Pixels with id 0 keep their own label.
    """
    with torch.no_grad():
        onehot = torch.nn.functional.one_hot(labels.long().clamp(0, num_classes - 1), num_classes)
        sums, dense = _superpixel_sums(onehot.movedim(-1, 1).float(), ids, None, with_counts=False)
        out = _class_argmax(sums, 0).gather(0, dense.reshape(-1)).view(labels.shape)
        return torch.where(ids.long() <= 0, labels.long(), out)
