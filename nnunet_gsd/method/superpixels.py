"""The superpixels SGLR refines within (docs/method.md §4, docs/decisions.md §5), on the host.

:func:`slic_superpixels` and :func:`encode_ids` run in NumPy, once per case when the cache is built; the ids
travel through nnU-Net's data pipeline as two int16 segmentation channels, which :func:`decode_ids` joins again
on the training device. The refinement that uses them is :mod:`.refinement`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from torch import Tensor

__all__ = ["slic_superpixels", "encode_ids", "decode_ids", "ID_BASE"]

#: ids are split as ``id = hi · ID_BASE + lo`` so both parts fit nnU-Net's int16 segmentation.
ID_BASE = 32768


def slic_superpixels(
    image: np.ndarray,
    n_segments_per_256sq: int = 1024,
    compactness: float = 10.0,
    sigma: float = 1.0,
    spacing: Sequence[float] | None = None,
    convert2lab: bool | None = None,
    intensity_range: float = 100.0,
) -> np.ndarray:
    """SLIC superpixels S of one image (docs/method.md §4, docs/decisions.md §5; Eq. 12's Ω_s).

    Args:
        image: ``(C, *spatial)`` float array, spatial ``(H, W)`` or ``(X, Y, Z)``. nnU-Net's 2D
            data ``(C, 1, H, W)`` is accepted: the singleton axis is dropped for SLIC (2D
            superpixels) and restored in the output.
        n_segments_per_256sq: superpixels per 256² pixels (paper: 1024 at 256²); the count scales
            with the number of pixels (voxels in 3D): ``round(n · n_pixels / 65536)``, ≥ 1.
        compactness, sigma: SLIC parameters (paper: 10 and 1).
        spacing: voxel spacing per spatial axis (of the input, including a singleton axis), or
            None for isotropic.
        convert2lab: passed to skimage. The default (None) converts 3-channel images to Lab as
            skimage does for RGB; pass False for 3-channel non-RGB data (e.g. three MRI
            sequences).
        intensity_range: the intensity span that ``compactness`` refers to for images that are
            not converted to Lab. skimage rescales every image to [0, 1] before SLIC, while a
            Lab image (RGB, or grayscale loaded as RGB as in typical 2D pipelines) spans
            L* ∈ [0, 100]; at compactness 10 a [0, 1] image gives an almost regular grid that
            ignores edges. The default 100 makes compactness 10 mean for grayscale / multi-modal
            data what it means for RGB (effective compactness ``compactness / 100``); we
            checked that grayscale-as-RGB through Lab at 10 and grayscale at 0.1 give the same
            superpixel statistics. Pass 1 for skimage's raw behaviour.

    Returns:
        int32 ids ≥ 1, shaped like ``image.shape[1:]``. 0 is reserved for "no superpixel"
        (padding added later by the data loader).

    Each channel is min–max rescaled to [0, 1] first (constant channels become 0) because
    nnU-Net's inputs are z-scored per channel; skimage then rescales the whole array to [0, 1]
    again, so ``compactness`` has its usual skimage meaning.
    """
    from skimage.segmentation import slic  # local: skimage import is slow, and host-only

    img = np.asarray(image, dtype=np.float32)
    if img.ndim not in (3, 4):
        raise ValueError(f"image must be (C, H, W) or (C, X, Y, Z), got shape {img.shape}")
    out_shape = img.shape[1:]
    squeezed = img.ndim == 4 and img.shape[1] == 1
    sp = None if spacing is None else [float(s) for s in spacing]
    if squeezed:
        img = img[:, 0]
        if sp is not None and len(sp) == 3:
            sp = sp[1:]
    lo = img.reshape(img.shape[0], -1).min(axis=1)
    hi = img.reshape(img.shape[0], -1).max(axis=1)
    rng = hi - lo
    bshape = (-1,) + (1,) * (img.ndim - 1)
    scaled = np.where(rng.reshape(bshape) > 0,
                      (img - lo.reshape(bshape)) / np.where(rng > 0, rng, 1).reshape(bshape), 0.0)
    n_pixels = int(np.prod(img.shape[1:]))
    n_segments = max(1, int(round(n_segments_per_256sq * n_pixels / 65536.0)))
    use_lab = scaled.shape[0] == 3 and convert2lab is not False
    kwargs = dict(
        n_segments=n_segments,
        compactness=float(compactness) if use_lab else float(compactness) / float(intensity_range),
        sigma=float(sigma),
        start_label=1,
        enforce_connectivity=True,
        channel_axis=-1,
        convert2lab=use_lab,
    )
    if sp is not None:
        kwargs["spacing"] = np.asarray(sp, dtype=np.float64)
    seg = slic(np.moveaxis(scaled, 0, -1), **kwargs).astype(np.int32)
    if squeezed:
        seg = seg[None]
    assert seg.shape == out_shape
    return seg


def encode_ids(ids: np.ndarray) -> np.ndarray:
    """Split superpixel ids into two int16 channels ``(hi, lo)`` with ``id = hi·32768 + lo``.

    nnU-Net casts segmentation arrays to int16 and 3D volumes can hold more than 32767
    superpixels, so the ids ride through the data loader as two extra segmentation channels.
    Both channels are transformed with the same nearest-neighbour spatial transform, so they
    stay consistent. nnU-Net pads segmentations with −1 and maps −1 → 0 afterwards; (0, 0)
    decodes to id 0 ("no superpixel"), and every real id ≥ 1 has (hi, lo) ≠ (0, 0).

    Args:
        ids: integer array of ids in ``[0, 32768² − 1]``, any shape.

    Returns:
        int16 array ``(2, *ids.shape)``.
    """
    a = np.asarray(ids).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= ID_BASE * ID_BASE):
        raise ValueError("superpixel ids must lie in [0, 2^30)")
    return np.stack([a // ID_BASE, a % ID_BASE]).astype(np.int16)


def decode_ids(encoded: Tensor) -> Tensor:
    """Inverse of :func:`encode_ids` for a batch: ``(B, 2, *spatial)`` → long ``(B, *spatial)``.

    Negative values (nnU-Net's −1 padding, if not yet mapped to 0) are treated as 0.
    """
    enc = encoded.long().clamp_min(0)
    return enc[:, 0] * ID_BASE + enc[:, 1]
