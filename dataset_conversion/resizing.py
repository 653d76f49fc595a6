"""Resizing images and label maps to ``--size`` (or to the size the noise is applied at)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: the smallest --size (and generated edge): nnU-Net's 2D U-Net needs a few pooling steps, and the noise
#: presets' radii a margin
MIN_SIZE = 8


def target_shape(size: int | None, spatial: Sequence[int], dim: int) -> tuple[int, ...]:
    """``size`` per axis for the last ``dim`` axes; a leading slice axis (test volumes) is kept."""
    if size is None:
        return tuple(spatial)
    return tuple(spatial[: len(spatial) - dim]) + (size,) * dim


def resize_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(C, *spatial) → (C, *shape), bilinear/trilinear (order 1), float32; no anti-aliasing, like
    the resizing of the paper's pipelines."""
    from skimage.transform import resize
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    return np.stack([resize(c.astype(np.float32), shape, order=1, mode="edge", anti_aliasing=False,
                            preserve_range=True).astype(np.float32) for c in image])


def resize_label(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (never invents labels)."""
    if tuple(label.shape) == tuple(shape):
        return label
    idx = np.ix_(*[np.minimum(((np.arange(n) + 0.5) * (s / n)).astype(np.int64), s - 1)
                   for n, s in zip(shape, label.shape)])
    return label[idx]


def resized_spacing(spacing: tuple[float, ...] | None, old: Sequence[int], new: Sequence[int],
                    ) -> tuple[float, ...] | None:
    """Voxel spacing after resizing ``old`` → ``new`` (the physical extent is kept)."""
    if spacing is None:
        return None
    return tuple(float(s) * o / n for s, o, n in zip(spacing, old, new))
