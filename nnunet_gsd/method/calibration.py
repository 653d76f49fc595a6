"""Boundary calibration (ours, beyond the paper; docs/decisions.md §13): find a systematic displacement of the
noisy outlines from the images, and move every label's outline back by it.

Small-loss selection, GDA and SGLR are blind to the *direction* of the noise: when every annotator draws inside
(under-annotation) or outside (over-annotation) the object, networks learn that outline as the object and
the selection finds nothing wrong with it. The image does know where the object ends, but too weakly per pixel
to relabel one (``bench/results/image-prior-audit-*.md``); pooled over every outline of a dataset it says
where the outlines sit relative to the intensity edge. :func:`ring_profile` measures, for one case and one
class, how object-like the image is in one-voxel rings inside and outside the label — as many rings as
:func:`ring_count` gives for the class's object size, so that the same relative displacement is measured at
every resolution;
:func:`estimate_offset` finds where the median profile over the cases falls fastest — that is where the
object ends, relative to the label's outline; :func:`shift_labels` grows (offset > 0) or shrinks (offset < 0)
the class by that many voxels.

Distances are in voxels of the finest axis (``spacing`` scales the others), so anisotropic 3D data is handled.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

__all__ = ["ring_profile", "median_profile", "estimate_offset", "calibration_offset", "shift_labels",
           "equivalent_radius", "ring_count", "RINGS", "RING_FRACTION"]

#: the fewest rings examined on each side of the outline; with ``rings`` rings offsets of up to rings − 1 voxels
#: can be found
RINGS = 6
#: rings per side as a fraction of the labelled objects' median equivalent radius (:func:`ring_count`): they
#: reach 0.4 of the way to the median object's centre, so an outline displaced by up to about a third of its
#: radius still has its true edge and a ring beyond it inside the rings, and the inner 0.6 of the radius remains
#: as the object's reference; on objects as small as Kvasir-SEG's polyps at 64² this is the RINGS floor the gate
#: below was chosen with, and at higher resolutions the rings grow with the objects
RING_FRACTION = 0.4
#: a case's profile needs this many voxels in each reference region (deep inside, far outside)
MIN_REFERENCE_VOXELS = 8
#: the median profile's innermost ring must be this object-like, its outermost this close to the background
#: (:func:`median_profile`): between the profiles that misled the estimate (chest X-rays, ultrasound with
#: shadowing, Kvasir-SEG at 256² seen through six rings) and those it reads right; chosen on
#: bench/results/calibration-survey.md
STEP_INNER, STEP_OUTER = 0.7, 0.35
#: edges measured within this many voxels of the outline move nothing when measured with :data:`RINGS` rings;
#: with more rings the dead zone grows in proportion (:func:`calibration_offset`)
DEAD_ZONE = 1.5

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _relative_spacing(spacing: Optional[Sequence[float]], ndim: int) -> np.ndarray:
    s = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=float)
    if s.shape != (ndim,) or not np.all(s > 0):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {spacing}")
    return s / s.min()


def equivalent_radius(mask: np.ndarray, spacing: Optional[Sequence[float]] = None) -> float:
    """The radius of the disk (2D) or ball (3D) with the mask's area or volume, in voxels of the finest axis
    (``spacing`` scales the others; None: isotropic); 0 for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    n = mask.ndim
    size = float(mask.sum()) * float(np.prod(_relative_spacing(spacing, n)))
    unit_ball = math.pi ** (n / 2) / math.gamma(n / 2 + 1)
    return (size / unit_ball) ** (1 / n)


def ring_count(radii: Sequence[float]) -> int:
    """Rings per side for a class whose outlines have these :func:`equivalent_radius` values:
    :data:`RING_FRACTION` of their median, rounded, and never fewer than :data:`RINGS` (also for no radii).

    The rings then span the same fraction of every object at every resolution: an outline displaced by a fixed
    fraction of the object's size (a noise preset scaled with the image) stays within them, and the innermost
    ring sits as deep in the object's interior as at low resolution. Empty masks (radius 0) do not count.
    """
    sizes = [float(r) for r in radii if r > 0]
    if not sizes:
        return RINGS
    return max(RINGS, int(np.round(RING_FRACTION * float(np.median(sizes)))))


def ring_profile(image: np.ndarray, mask: np.ndarray, rings: int = RINGS,
                 spacing: Optional[Sequence[float]] = None, valid: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """How object-like the image is in each ring around one label's outline.

    The object's and the background's mean intensity vectors, μ_in and μ_out, are taken from the voxels
    deeper than ``rings`` inside the label and farther than ``rings`` outside it (so that an outline displaced
    by fewer voxels leaves both references clean). Every voxel's intensity x is projected on the line between
    them, t(x) = (x − μ_out)·(μ_in − μ_out) / |μ_in − μ_out|² (1 = like the object, 0 = like the background),
    and t is averaged over each ring.

    Args:
        image: ``(C, *spatial)`` intensities (any per-channel affine normalisation).
        mask: ``(*spatial)`` bool, the label of one class.
        rings: rings per side (:func:`ring_count`).
        spacing: voxel spacing per spatial axis (None: isotropic).
        valid: ``(*spatial)`` bool, the voxels to measure (None: all); nnU-Net marks the voxels outside the
            cropped body with label −1, which are neither object nor background.

    Returns:
        float array of ``2·rings`` ring means, from the innermost ring inside (distance rings−1 … rings to the
        outline) to the outermost outside; NaN for an empty ring. None when a reference region has fewer than
        :data:`MIN_REFERENCE_VOXELS` voxels or the two references have the same mean (nothing to measure).
    """
    mask = np.asarray(mask, dtype=bool)
    if image.shape[1:] != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in their spatial shape")
    if not mask.any():
        return None
    sampling = _relative_spacing(spacing, mask.ndim)
    inside, outside = _outline_distances(mask, sampling, rings)
    valid = np.ones_like(mask) if valid is None else np.asarray(valid, dtype=bool)
    deep, far = valid & mask & (inside > rings), valid & ~mask & (outside > rings)
    if deep.sum() < MIN_REFERENCE_VOXELS or far.sum() < MIN_REFERENCE_VOXELS:
        return None
    x = image.reshape(image.shape[0], -1)
    mu_in = x[:, deep.ravel()].mean(1, dtype=np.float64)
    mu_out = x[:, far.ravel()].mean(1, dtype=np.float64)
    axis = mu_in - mu_out
    if not np.dot(axis, axis) > 0:
        return None
    # ring k ≥ 1 holds distances (k − 1, k]; inside rings get negative positions
    ring = np.where(valid, np.where(mask, -np.ceil(inside), np.ceil(outside)), 0).ravel()
    near = (ring != 0) & (np.abs(ring) <= rings)
    ring = ring[near].astype(int)
    t = ((x[:, near].astype(np.float64) - mu_out[:, None]) * axis[:, None]).sum(0) / np.dot(axis, axis)
    profile = np.full(2 * rings, np.nan)
    for slot, k in enumerate(list(range(-rings, 0)) + list(range(1, rings + 1))):
        sel = ring == k
        if sel.any():
            profile[slot] = t[sel].mean()
    return profile


def _outline_distances(mask: np.ndarray, sampling: np.ndarray, rings: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each voxel's distance to the nearest voxel on the other side of the outline (1 for both sides' first
    ring), inside the mask and outside it; outside distances beyond ``rings`` are only known to be beyond (inf).

    Both transforms run on crops around the mask, exactly: inside, its bounding box plus one background layer
    (for an inside voxel the nearest background voxel beyond a face is never nearer than the face's layer);
    outside, the box grown by more than ``rings`` (every voxel beyond it is farther than ``rings``). A 3D case
    costs a fraction of a whole-volume transform.
    """
    box = [(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(mask)]

    def crop(margin):
        return tuple(slice(max(lo - m, 0), min(hi + m, n)) for (lo, hi), m, n in zip(box, margin, mask.shape))

    inside = np.zeros(mask.shape)
    core = crop([1] * mask.ndim)
    inside[core] = ndimage.distance_transform_edt(mask[core], sampling=sampling)
    outside = np.full(mask.shape, np.inf)
    ring_box = crop([int(np.ceil((rings + 1) / s)) for s in sampling])
    outside[ring_box] = ndimage.distance_transform_edt(~mask[ring_box], sampling=sampling)
    return inside, outside


def median_profile(profiles: Sequence[Optional[np.ndarray]], min_cases: int = 20) -> Tuple[Optional[np.ndarray], str]:
    """The per-ring median of the cases' :func:`ring_profile` (None without any), and why it cannot place an
    edge ("" when it can).

    It cannot when fewer than ``min_cases`` profiles are given (``None`` entries do not count) or when the curve
    is not one step from the object's appearance to the background's: its innermost ring must be at least
    :data:`STEP_INNER` object-like and its outermost within :data:`STEP_OUTER` of the background. A displaced
    outline leaves both ends at their references; ends that are not there mean the rings see anatomy, not one
    edge (a background of dark air and bright body around lungs, shadowing below a lesion, an edge too soft
    or an outline too far off for the rings).
    """
    valid = [p for p in profiles if p is not None]
    if not valid:
        return None, f"too few outlines (0 < {min_cases})"
    curve = np.nanmedian(np.stack(valid), axis=0)
    if len(valid) < min_cases:
        return curve, f"too few outlines ({len(valid)} < {min_cases})"
    if not (curve[0] >= STEP_INNER and abs(curve[-1]) <= STEP_OUTER):
        return curve, (f"not one edge (innermost ring {curve[0]:.2f}, needs ≥ {STEP_INNER}; outermost "
                       f"{curve[-1]:.2f}, needs within ±{STEP_OUTER})")
    return curve, ""


def estimate_offset(profiles: Sequence[Optional[np.ndarray]], min_cases: int = 20) -> Optional[float]:
    """Where the image's edge lies relative to the labels' outline, in voxels (sub-voxel): > 0 outside (labels
    too small), < 0 inside (labels too large).

    The :func:`median_profile` falls from ≈ 1 (object) to ≈ 0 (background); its steepest fall between two
    neighbouring rings is the edge. Ring k's outer border lies at distance k from the outline (inside rings:
    −k + 1), so the fall between rings k and k + 1 sits at k, the one between the first inside and the first
    outside ring at 0; a parabola through the largest fall and its neighbours places the edge between rings.

    Returns None when the median profile cannot place an edge (too few outlines, not one step) or never falls.
    """
    curve, why = median_profile(profiles, min_cases)
    if why:
        return None
    falls = curve[:-1] - curve[1:]
    if not np.any(falls > 0):
        return None
    k = int(np.nanargmax(falls))
    shift = 0.0
    if 0 < k < len(falls) - 1:
        curvature = falls[k - 1] - 2 * falls[k] + falls[k + 1]
        if curvature < 0:
            shift = 0.5 * (falls[k - 1] - falls[k + 1]) / curvature
    return k - (len(curve) // 2 - 1) + float(shift)


def calibration_offset(estimate: Optional[float], rings: int = RINGS) -> int:
    """The whole-voxel offset :func:`shift_labels` applies for an :func:`estimate_offset` measured with
    ``rings`` rings per side (None: 0).

    An edge measured within the dead zone — :data:`DEAD_ZONE` voxels of the outline, times ``rings`` /
    :data:`RINGS` when more rings were measured (a tenth of the objects' radius with :func:`ring_count`'s) —
    moves nothing. With six rings correctly drawn outlines measure within about a voxel of the edge (experts
    draw just outside soft rims), and a one-voxel error costs a small object much of its Dice; on larger
    objects, measured with more rings, the spread of correct expert outlines grows with them (the survey in
    docs/benchmarks.md). Beyond it, half a voxel is added before rounding, for that same inward pull of the
    measured edge (docs/decisions.md §13).
    """
    if estimate is None or abs(estimate) < DEAD_ZONE * max(int(rings), RINGS) / RINGS:
        return 0
    return int(np.round(estimate + 0.5))


@functools.lru_cache(maxsize=32)
def _ball(radius: int, spacing: tuple, device: torch.device) -> Tensor:
    """Voxels within Euclidean distance ``radius`` (finest-axis units) of the centre, as a conv kernel (built
    once per radius, spacing and device: the training step calls this every iteration)."""
    half = [int(np.floor(radius / s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    ball = (sum(g ** 2 for g in grids) <= radius ** 2 + 1e-9).astype(np.float32)
    return torch.from_numpy(ball).to(device)[None, None]


def _within(region: Tensor, radius: int, spacing: np.ndarray) -> Tensor:
    """``(B, *spatial)`` bool: voxels within ``radius`` of ``region`` (outside the patch counts as not region)."""
    kernel = _ball(radius, tuple(float(v) for v in spacing), region.device)
    pad = [k // 2 for k in kernel.shape[2:]]
    hits = _CONV[region.ndim - 1](region[:, None].float(), kernel, padding=pad)[:, 0]
    return hits > 0.5


def shift_labels(labels: Tensor, offsets: Sequence[int], spacing: Optional[Sequence[float]] = None) -> Tensor:
    """Move every class's outline by its offset: grow it into the background (offset > 0) or give its outermost
    voxels to the background (offset < 0).

    Args:
        labels: ``(B, *spatial)`` integer labels, 0 = background.
        offsets: one integer per label value (index 0, the background, is ignored), in finest-axis voxels.
        spacing: voxel spacing per spatial axis (None: isotropic).

    Growing never overwrites another foreground class. Shrinking never removes a class from a sample
    altogether: a sample where the class would vanish (a thin or small structure) keeps its label.
    """
    nd = labels.ndim - 1
    if nd not in _CONV:
        raise ValueError(f"labels must be (B, *spatial) with 1-3 spatial axes, got shape {tuple(labels.shape)}")
    sampling = _relative_spacing(spacing, nd)
    out = labels.clone()
    for c, r in enumerate(offsets):
        if c == 0 or r == 0:
            continue
        cls = labels == c
        if r > 0:
            out[(out == 0) & _within(cls, r, sampling)] = c
        else:
            # a voxel of c within |r| of a non-c voxel is within |r| of the outline
            shrunk = cls & ~_within(~cls, -r, sampling)
            keeps = shrunk.flatten(1).any(1).view(-1, *([1] * nd))
            out[cls & ~shrunk & keeps] = 0
    return out
