"""The second, weak view x' = A(x) (docs/decisions.md §2)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["weak_intensity_view"]


def weak_intensity_view(
    x: Tensor,
    generator: torch.Generator | None = None,
    brightness: float = 0.2,
    contrast: float = 0.2,
    gamma: Sequence[float] = (0.8, 1.25),
    noise_std: float = 0.05,
) -> Tensor:
    """Pixel-aligned, intensity-only weak augmentation ``x' = A(x)``.

    Per sample (shared by its channels, so multi-modal relations survive):
    multiplicative brightness ``b ~ U(1 − brightness, 1 + brightness)``; contrast
    ``c ~ U(1 − contrast, 1 + contrast)`` around each channel's mean; gamma ``γ`` log-uniform in
    ``gamma`` applied to the channel's min–max range, which is restored afterwards; then additive
    Gaussian noise ``N(0, noise_std²)``. No spatial change, so per-pixel terms of f1(x) and f2(x')
    compare the same location.

    nnU-Net's inputs are z-scored (≈ zero mean, unit variance), not in [0, 1]: brightness
    therefore scales the z-scores (a contrast change around 0), and ``noise_std`` is in units of
    the channel's standard deviation.

    Args:
        x: ``(B, C, *spatial)`` float.
        generator: a generator on ``x.device`` (or None); all random numbers are drawn there, so
            the function never synchronises.

    Returns:
        Tensor like ``x`` (no gradient).
    """
    with torch.no_grad():
        b = x.shape[0]
        dev, dt = x.device, x.dtype if x.is_floating_point() else torch.float32
        xf = x.to(dt)
        bshape = (b,) + (1,) * (x.ndim - 1)
        spatial = tuple(range(2, x.ndim))

        def unif(lo: float, hi: float) -> Tensor:
            return (torch.rand(bshape, generator=generator, device=dev, dtype=dt) * (hi - lo) + lo)

        out = xf * unif(1 - brightness, 1 + brightness)
        mean = out.mean(dim=spatial, keepdim=True)
        out = (out - mean) * unif(1 - contrast, 1 + contrast) + mean

        g_lo, g_hi = float(gamma[0]), float(gamma[1])
        g = torch.exp(unif(math.log(g_lo), math.log(g_hi)))
        lo = out.amin(dim=spatial, keepdim=True)
        rng = out.amax(dim=spatial, keepdim=True) - lo
        # constant channels: rng = 0 → normalised value 0 → unchanged after restoring
        safe = torch.where(rng > 0, rng, torch.ones_like(rng))
        out = ((out - lo) / safe).clamp_(0, 1).pow(g) * rng + lo

        if noise_std > 0:
            out = out + torch.randn(out.shape, generator=generator, device=dev, dtype=dt) * noise_std
        return out.to(x.dtype) if x.is_floating_point() else out
