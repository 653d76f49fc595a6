"""Knowledge transfer by label-shaped region mixing, KT (paper Eq. 15, docs/method.md §5).

Random draws (partner derangement, class choice) use a *CPU* generator: they are B- or
B×C-sized and start on the host, so moving them to the device is an asynchronous copy, not a
synchronisation, and one CPU generator makes a training run reproducible on any device.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["derangement", "transfer_masks", "mix", "prior_logit_shift"]


def derangement(batch_size: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Uniformly random permutation without fixed points (partner j = out[i] ≠ i), docs/decisions.md §6.

    Rejection sampling of ``torch.randperm`` on the host (acceptance ≈ 1/e, so ~2.7 draws on
    average); ``B = 1`` returns ``[0]`` (the only sample is paired with itself, so KT is a no-op
    on it), ``B = 0`` an empty tensor.

    Args:
        batch_size: B.
        generator: a CPU ``torch.Generator`` or None (global RNG).
        device: where the result should live; copied with ``non_blocking=True``.
    """
    b = int(batch_size)
    if b < 2:
        perm = torch.arange(b, dtype=torch.long)
    else:
        ar = torch.arange(b)
        while True:
            perm = torch.randperm(b, generator=generator)
            # CPU tensors: this check never touches the accelerator.
            if not bool((perm == ar).any()):
                break
    return perm.to(device, non_blocking=True) if device is not None else perm


def transfer_masks(y: Tensor, num_classes: int, rho: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Label-shaped regions M_i (docs/method.md §5).

    For each sample a foreground class k is chosen: class 1 when ``num_classes == 2``; otherwise
    uniformly among the foreground classes present in y_i (class 1 if none is present, whose
    region is then empty). Let F = {y_i == k}; ``M_i = F`` if ``|F| / N ≤ rho`` else the
    complement of F (so the pasted region is the smaller side, as in the paper's KT).

    Args:
        y: ``(B, *spatial)`` long refined labels.
        num_classes: C (including background 0).
        rho: foreground-fraction threshold ρ (default 0.5).
        generator: CPU generator for the class choice (ignored for binary labels).

    Returns:
        float ``(B, 1, *spatial)`` of 0/1, dtype float32, on y's device.

    Sync-free: the class is chosen as the argmax of a random score per (sample, class) with
    absent classes scored −1.
    """
    b = y.shape[0]
    y = y.long()
    if num_classes <= 2:
        fg = y == 1
    else:
        flat = y.reshape(b, -1).clamp(0, num_classes - 1)
        present = torch.zeros(b, num_classes, dtype=torch.bool, device=y.device)
        present.scatter_(1, flat, True)
        scores = torch.rand(b, num_classes - 1, generator=generator).to(y.device, non_blocking=True)
        scores = torch.where(present[:, 1:], scores, torch.full_like(scores, -1.0))
        # if no foreground class is present, all scores are −1 and argmax picks index 0 → class 1
        chosen = scores.argmax(dim=1) + 1
        fg = y == chosen.view(b, *([1] * (y.ndim - 1)))
    frac = fg.reshape(b, -1).float().mean(dim=1).view(b, *([1] * (y.ndim - 1)))
    m = torch.where(frac <= rho, fg, ~fg)
    return m.unsqueeze(1).to(torch.float32)


def mix(tensor_own: Tensor, masks: Tensor, partner: Tensor) -> Tensor:
    """Paste region M_i of sample i onto its partner j = partner[i] (Eq. 15).

    ``out_i = t_j · (1 − M_i) + t_i · M_i``.

    Args:
        tensor_own: ``(B, C, *spatial)`` (images, one-hot, probabilities) or ``(B, *spatial)``
            (float weights, integer labels).
        masks: ``(B, 1, *spatial)`` from :func:`transfer_masks`.
        partner: ``(B,)`` long, e.g. from :func:`derangement`, on the same device.

    Returns:
        Same shape and dtype as ``tensor_own``. Integer and bool inputs are selected with
        ``where`` (exact); floating inputs follow Eq. 15 arithmetically (differentiable, and
        identical to selection for 0/1 masks).
    """
    m = masks
    if tensor_own.ndim == masks.ndim - 1:
        m = masks[:, 0]
    other = tensor_own.index_select(0, partner)
    if tensor_own.is_floating_point() or tensor_own.is_complex():
        m = m.to(tensor_own.dtype)
        return other * (1 - m) + tensor_own * m
    return torch.where(m > 0.5, tensor_own, other)


def prior_logit_shift(mixed_labels: Tensor, labels: Tensor, num_classes: int, mixed_mask: Tensor | None = None,
                      mask: Tensor | None = None) -> Tensor:
    """``log(π_mix / π)`` per class: the logit offset that turns a network calibrated to the label prior π of
    the unmixed batch into one that fits the mixed batch's prior π_mix (ours, docs/decisions.md §6).

    Pasting sample i's foreground onto a partner that keeps its own roughly doubles the foreground share of
    the mixed labels (Eq. 15 with ρ = 0.5), and a network trained on them to fit that prior over-segments
    real images. Adding this shift to the logits inside L_KT (logit adjustment, Menon et al., ICLR 2021)
    lets the mixed batch teach shapes without teaching its prior.

    Args:
        mixed_labels: ``(B, *spatial)`` long, the mixed labels y_mix.
        labels: ``(B, *spatial)`` long, the unmixed labels y of the same batch.
        num_classes: C.
        mixed_mask, mask: optional bool ``(B, *spatial)``: count only these pixels (the supervised ones).

    Returns:
        ``(C,)`` float; 0 for a class absent from either batch (no evidence to shift it by).
    """
    def prior(y: Tensor, m: Tensor | None) -> Tensor:
        classes = torch.arange(num_classes, device=y.device).view(1, -1, *([1] * (y.ndim - 1)))
        hits = (y[:, None] == classes).float()
        if m is not None:
            hits = hits * m[:, None].float()
        return hits.transpose(0, 1).reshape(num_classes, -1).sum(dim=1)

    counts_mix, counts = prior(mixed_labels, mixed_mask), prior(labels, mask)
    present = (counts_mix > 0) & (counts > 0)
    ratio = (counts_mix / counts_mix.sum().clamp_min(1)) / (counts / counts.sum().clamp_min(1)).clamp_min(1e-12)
    return torch.where(present, ratio.clamp_min(1e-12).log(), torch.zeros_like(ratio))
