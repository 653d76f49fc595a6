"""Combining several raters' label maps of one case into one: majority vote, STAPLE, union, intersection,
and the fraction of raters per pixel (the "mean-rater map" of soft-label metrics).

Pure functions of integer label maps of equal shape (background 0). The converters use them for
``--raters majority|staple|union|intersection`` (training labels) and the majority vote of the test
labels; ``nnunet_gsd evaluate-raters`` for its Dice against the consensus and its soft metrics, so the
labels a model is trained on and scored against come from one implementation.

STAPLE (Warfield et al. 2004) is SimpleITK's (``STAPLEImageFilter`` for binary masks,
``MultiLabelSTAPLEImageFilter`` for label maps), estimated per case.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Union

import numpy as np

#: raters of one case: a sequence of label maps, or {rater name: label map}
Raters = Union[Sequence[np.ndarray], Mapping[str, np.ndarray]]

#: the threshold on STAPLE's foreground probability that makes a binary consensus; a pixel at exactly
#: 0.5 is foreground, as a tied majority vote is
STAPLE_THRESHOLD = 0.5


def stack(raters: Raters) -> np.ndarray:
    """``(n_raters, *spatial)`` array of the raters' maps; ``ValueError`` when there are none or their shapes
    differ (callers that know the files check shapes first and name them)."""
    maps = list(raters.values()) if isinstance(raters, Mapping) else list(raters)
    if not maps:
        raise ValueError("no rater maps to combine")
    shapes = {np.shape(m) for m in maps}
    if len(shapes) > 1:
        raise ValueError(f"rater maps differ in shape: {sorted(shapes)}")
    return np.stack([np.asarray(m) for m in maps])


def _binary(stacked: np.ndarray, what: str) -> np.ndarray:
    if stacked.size and (stacked.min() < 0 or stacked.max() > 1):
        raise ValueError(f"{what} is defined here for binary masks (0/1); got values {np.unique(stacked)[:8].tolist()}")
    return stacked.astype(bool)


def majority(raters: Raters) -> np.ndarray:
    """Pixel-wise most frequent label (uint8). Ties go to the highest label, so for binary masks a pixel is
    foreground when at least half of the raters marked it (2 of 4: an outline two raters drew is kept)."""
    stacked = stack(raters)
    labels = np.unique(stacked)
    counts = np.stack([(stacked == v).sum(0) for v in labels])
    # argmax returns the first maximum: scanning from the highest label down gives ties to it
    return labels[::-1][np.argmax(counts[::-1], axis=0)].astype(np.uint8)


def union(raters: Raters) -> np.ndarray:
    """Foreground (1) wherever any rater marked foreground; binary masks only (uint8)."""
    return _binary(stack(raters), "the union").any(0).astype(np.uint8)


def intersection(raters: Raters) -> np.ndarray:
    """Foreground (1) only where every rater marked foreground; binary masks only (uint8)."""
    return _binary(stack(raters), "the intersection").all(0).astype(np.uint8)


def staple(raters: Raters, threshold: float = STAPLE_THRESHOLD) -> np.ndarray:
    """STAPLE consensus (uint8), computed by SimpleITK on this case's maps.

    Binary masks: ``STAPLEImageFilter``'s foreground probability, foreground where it is ``>= threshold``.
    Label maps: ``MultiLabelSTAPLEImageFilter``; the pixels it leaves undecided (a tie of the posterior)
    take the majority vote. Unanimous raters are returned as they are: STAPLE's estimate is then that map,
    but ITK divides by a zero prior (all-empty or all-full maps) and returns NaN.
    """
    import SimpleITK as sitk
    stacked = stack(raters)
    if (stacked == stacked[0]).all():
        return stacked[0].astype(np.uint8)
    if stacked.min() >= 0 and stacked.max() <= 1:
        f = sitk.STAPLEImageFilter()
        f.SetForegroundValue(1)
        probability = sitk.GetArrayFromImage(f.Execute(_images(stacked, np.uint8)))
        return (probability >= threshold).astype(np.uint8)
    undecided = int(stacked.max()) + 1   # a value no rater uses (uint16 below: room above a uint8 label)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(undecided)
    out = sitk.GetArrayFromImage(f.Execute(_images(stacked, np.uint16)))
    tie = out == undecided
    if tie.any():
        out[tie] = majority(stacked)[tie]
    return out.astype(np.uint8)


def _images(stacked: np.ndarray, dtype: type) -> list:
    import SimpleITK as sitk
    return [sitk.GetImageFromArray(np.ascontiguousarray(m, dtype=dtype)) for m in stacked]


#: ``--raters`` modes that combine all raters, and the function of each
METHODS: dict[str, Callable[[Raters], np.ndarray]] = {
    "majority": majority, "staple": staple, "union": union, "intersection": intersection}

#: one line per method, for the provenance and the docs
RULES: dict[str, str] = {
    "majority": "pixel-wise majority vote; ties (2 of 4) are foreground",
    "staple": f"SimpleITK STAPLEImageFilter per case, foreground where its probability >= {STAPLE_THRESHOLD}",
    "union": "foreground where any rater marked foreground",
    "intersection": "foreground where every rater marked foreground",
}


def combine(method: str, raters: Raters) -> np.ndarray:
    """The consensus of ``raters`` by ``method`` (a key of :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown consensus {method!r}; one of {', '.join(METHODS)}")
    return METHODS[method](raters)


def rater_fraction(raters: Raters, label: int | tuple[int, ...] = 1) -> np.ndarray:
    """The fraction of raters (float64 in [0, 1]) who gave each pixel ``label`` (or any label of a region
    tuple): the mean-rater map the soft metrics compare a predicted probability with."""
    stacked = stack(raters)
    labels = label if isinstance(label, tuple) else (label,)
    return np.isin(stacked, labels).mean(0)
