"""Geometric Distance-Aware weighting, GDA (paper Eq. 7–10, docs/method.md §3).

Label maps are ``(B, *spatial)`` integer tensors with 1, 2 or 3 spatial axes. Nothing here
synchronises host and device.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["boundary_mask", "clipped_boundary_distance", "gda_weights", "gda_loss", "default_threshold"]

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def boundary_mask(labels: Tensor) -> Tensor:
    """Boundary set ∂_nGT (Eq. 7): pixels with a differently-labelled neighbour.

    The neighbourhood is the full 3^d block (8-connected in 2D, 26-connected in 3D). Any two
    different labels form a boundary, so it works for multi-class maps. The image border is not
    a boundary: outside pixels repeat their neighbour (replicate padding).

    Args:
        labels: ``(B, *spatial)`` integer labels, 1 ≤ len(spatial) ≤ 3.

    Returns:
        Bool tensor shaped like ``labels``.

    The block contains the centre, so ``max ≠ min`` over it holds exactly when some neighbour
    differs from the centre; both come from one max-pool each (min = −max(−x)).
    """
    nd = labels.ndim - 1
    if nd not in _MAX_POOL:
        raise ValueError(f"labels must be (B, *spatial) with 1-3 spatial axes, got shape {tuple(labels.shape)}")
    # float32 represents every label < 2^24 exactly; pooling kernels are float-only.
    x = labels.to(torch.float32).unsqueeze(1)
    x = F.pad(x, (1, 1) * nd, mode="replicate")
    pool = _MAX_POOL[nd]
    hi = pool(x, kernel_size=3, stride=1)
    lo = -pool(-x, kernel_size=3, stride=1)
    return (hi != lo).squeeze(1)


def clipped_boundary_distance(labels: Tensor, threshold: float) -> Tensor:
    """``min(W_raw, T)``: Euclidean distance to the nearest boundary pixel, clipped at T (Eq. 8).

    Args:
        labels: ``(B, *spatial)`` integer labels (the noisy label nGT).
        threshold: T > 0, in voxel units.

    Returns:
        float32 ``(B, *spatial)``: the exact distance (voxel units, isotropic) wherever it is
        ≤ T, and T elsewhere. Boundary pixels get 0 (W is floored at 1 by :func:`gda_weights`).
        Samples without any boundary (empty or full masks) get T everywhere (docs/decisions.md §4).

    Method: a separable squared-distance transform restricted to a window of ``K = ceil(T)``
    offsets per axis. Starting from ``f_0 = 0`` on ∂ and ``+inf`` elsewhere, axis d computes
    ``f_d(x) = min_{|k| ≤ K} k² + f_{d−1}(x + k·e_d)`` (``+inf`` outside the image), which costs
    O(N·(2K+1)·ndim) with no data-dependent control flow.

    Why this is exact up to T: every value produced is ``|x − b|²`` for a real boundary pixel b,
    so the result is never below the true squared distance D². Conversely, if D ≤ T, the nearest
    boundary pixel b satisfies ``|b_d − x_d| ≤ D ≤ T ≤ K`` on every axis, so the nested minima
    visit exactly the path x → … → b and reach D². Hence the result equals D² whenever D ≤ T,
    and is > T² (or inf) whenever D > T — clipping at T then gives ``min(D, T)`` everywhere.
    """
    t = float(threshold)
    if not t > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    k_max = int(math.ceil(t))
    boundary = boundary_mask(labels)
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=labels.device)
    f = torch.where(boundary, torch.zeros((), dtype=torch.float32, device=labels.device), inf)
    for axis in range(1, f.ndim):
        size = f.shape[axis]
        kk = min(k_max, size - 1)  # offsets beyond the image only ever see +inf
        if kk <= 0:
            continue
        pad = [0, 0] * (f.ndim - 1 - axis) + [kk, kk]
        # constant padding with +inf; F.pad's constant mode accepts any rank
        fp = F.pad(f, pad, mode="constant", value=float("inf"))
        out = f.clone()
        for k in range(-kk, kk + 1):
            if k == 0:
                continue
            shifted = fp.narrow(axis, kk + k, size)
            torch.minimum(out, shifted + float(k * k), out=out)
        f = out
    # Values above T² are exactly the ones we clip, so clamp before sqrt (also removes inf).
    return f.clamp_max_(t * t).sqrt_()


def gda_weights(clipped_distance: Tensor, epoch: int, num_epochs: int, threshold: float) -> Tensor:
    """Time-decaying GDA weight ``W(e) = max(min(W_raw, T) − (e/E)·T, 1)`` (Eq. 9).

    Args:
        clipped_distance: ``min(W_raw, T)`` from :func:`clipped_boundary_distance` (clipping
            again is harmless, so raw distances work too).
        epoch: current epoch e (0-based, as nnU-Net counts).
        num_epochs: total epochs E.
        threshold: T.

    Returns:
        Weights ≥ 1, same shape as ``clipped_distance``.
    """
    t = float(threshold)
    shift = float(epoch) / max(float(num_epochs), 1.0) * t
    return (clipped_distance.clamp_max(t) - shift).clamp_min(1.0)


def gda_loss(pick: Tensor, clean_mask: Tensor, weights: Tensor) -> Tensor:
    """``L_GDA = Σ_{D_clean} L_pick · W / |D_clean|`` (Eq. 10, docs/method.md §3).

    Args:
        pick: ``(B, *spatial)`` per-pixel loss from :func:`~nnunet_gsd.method.selection.pick_loss`.
        clean_mask: ``(B, *spatial)`` bool, D_clean.
        weights: ``(B, *spatial)`` GDA weights W(e).

    Returns:
        Scalar tensor. The denominator is clamped at 1 (``small_loss_mask`` already keeps ≥ 1).
    """
    # where() rather than multiplying by the mask so a non-finite loss on a rejected pixel
    # cannot leak into the sum (inf·0 = nan).
    num = torch.where(clean_mask, pick * weights, torch.zeros((), dtype=pick.dtype, device=pick.device)).sum()
    den = clean_mask.sum().clamp_min(1).to(num.dtype)
    return num / den


def default_threshold(patch_size: Sequence[int]) -> float:
    """Default T: ``max(2, 10 · edge / 256)`` with edge the smaller of the last two patch axes.

    docs/decisions.md §4: T = 10 for 256-px patches, 5 for 128-px, scaled with the in-plane edge (nnU-Net's
    patch axes end with the in-plane ones, also for anisotropic 3D patches), at least 2.
    E.g. 256 → 10, 128 → 5, 64 → 2.5, 32 → 2.
    """
    dims = [int(s) for s in patch_size]
    if not dims:
        raise ValueError("patch_size must not be empty")
    edge = min(dims[-2:])
    return max(2.0, 10.0 * edge / 256.0)
