"""Reading source files into arrays, and validating them: what real releases hold, made uniform.

* Images: RGBA → RGB (alpha dropped), palette → RGB, LA → L, 16-bit → full 8-bit range, as nnU-Net's
  PNG reader expects one grey or one RGB image per file.
* 2D masks: whatever their mode (grey, RGB, RGBA, palette) they are reduced to one channel and
  binarised by :func:`binarise`: 0/1 and 0/255 masks as they are; a *label map* (a few distinct
  values, each but 0 and 255 filling a region, e.g. 0/1/2/255) keeps every non-zero pixel and is
  reported per case; any other mask is anti-aliased or JPEG-compressed (BUS_UC, downscaled
  Shenzhen, Kvasir): its edge pixels, neither 0 nor 255, are cut at > 127, counted and recorded.
* A mask a few pixels off its image's size (BUS_UC ``Benign/0319``: 257×256 for 256×256) is resized
  to the image (nearest neighbour) and the repair is recorded; a larger difference is a problem.

Every failure is a :class:`~dataset_conversion.model.CaseProblem` naming the file, so that the scan
can report all of a download's defects at once.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from .model import Case, CaseProblem, CaseReport, Sample
from .resizing import resize_label

#: a mask this many pixels (per axis) off its image's size is resized to it instead of refused
SIZE_REPAIR_TOLERANCE = 2


#: at most this many distinct values (0 included) for a mask to be read as a label map. JPEG masks can hold
#: flat areas off by one (value 1 over the whole background), which fill regions like labels do, but
#: they hold dozens of distinct values (37 or more in 600 generated ones); label maps hold a few.
LABEL_MAP_MAX_VALUES = 16


def _pil_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for missing, truncated, corrupt or absurdly large files (a decompression bomb is
    not an OSError)."""
    from PIL import Image
    return OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError


def read_2d(path: Path | str, what: str = "image") -> np.ndarray:
    """A 2D image file as (H, W) or (H, W, 3); an ``unreadable file`` problem naming it as ``what``
    (image or mask) if it cannot be decoded."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX"):
                im = im.convert("RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            elif im.mode.startswith("I;16"):
                im = im.convert("I")
            return np.asarray(im)
    except _pil_errors() as e:
        raise CaseProblem("unreadable file", [path], f"cannot read {what} {path}: {e}") from None


def image_size_2d(path: Path | str, what: str = "image") -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels. PNGs are also verified
    (chunk checksums, no decoding), so a truncated one is found by the scan, not half-way through
    writing."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            size = im.size[1], im.size[0]
            if im.format == "PNG":
                im.verify()
            return size
    except _pil_errors() as e:
        raise CaseProblem("unreadable file", [path], f"cannot read {what} {path}: {e}") from None


def read_nifti(path: Path | str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI volume as an array in SimpleITK's (z, y, x) order, with its spacing in that order."""
    import SimpleITK as sitk
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise CaseProblem("unreadable file", [path],
                          f"cannot read NIfTI file {path}: {str(e).strip().splitlines()[-1]}") from None
    return sitk.GetArrayFromImage(img), tuple(float(s) for s in reversed(img.GetSpacing()))


def nifti_shape(path: Path | str) -> tuple[int, ...]:
    """A NIfTI volume's array shape (z, y, x) from its header."""
    import SimpleITK as sitk
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise CaseProblem("unreadable file", [path],
                          f"cannot read NIfTI file {path}: {str(e).strip().splitlines()[-1]}") from None
    return tuple(reversed(reader.GetSize()))


def to_grey(arr: np.ndarray) -> np.ndarray:
    """(H, W[, 3]) → (H, W): grey images stored as RGB keep their exact values."""
    if arr.ndim == 2:
        return arr
    if arr.shape[-1] >= 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return arr[..., 0]
    rgb = arr[..., :3].astype(np.float32)
    return np.clip(np.rint(rgb @ np.array([0.299, 0.587, 0.114], np.float32)), 0, 255).astype(np.uint8)


def binarise(mask: np.ndarray) -> tuple[np.ndarray, int, dict[int, int]]:
    """One-channel mask → ({0, 1} uint8, edge pixels cut at half scale, {value: pixels} of a label map).

    ``full`` is 255, or 65535 for a 16-bit mask holding values above 255. In order:

    * values all 0/1, or all 0/``full``: binary as they are (> 127 would empty a 0/1 mask);
    * a label map (at most :data:`LABEL_MAP_MAX_VALUES` distinct values): every value other than 0 and
      ``full`` that fills a region (some 3×3 block holds only it) is a label, kept as foreground
      whatever its size: 0/1/2/255 keeps all three, 0/1/2 is not empty. The counts of all non-zero
      values come back, for the per-case report;
    * every other value is an anti-aliased or JPEG edge pixel: foreground when > ``full`` // 2 (127).
    """
    values, counts = np.unique(mask, return_counts=True)
    if values.size == 0 or values[-1] <= 1:
        return mask.astype(np.uint8), 0, {}
    full = 255 if values[-1] <= 255 else 65535
    foreground = mask > full // 2
    soft = (values != 0) & (values != full)
    labels = _region_values(mask, values[soft]) if values.size <= LABEL_MAP_MAX_VALUES else []
    if not labels:
        return foreground.astype(np.uint8), int(counts[soft].sum()), {}
    foreground |= np.isin(mask, labels)
    edge = soft & ~np.isin(values, labels)
    return foreground.astype(np.uint8), int(counts[edge].sum()), \
        {int(v): int(n) for v, n in zip(values, counts) if v != 0}


def _region_values(mask: np.ndarray, candidates: np.ndarray) -> list[int]:
    """The ``candidates`` that fill at least one 3×3 block: the values of regions, not of edges (an
    anti-aliased or JPEG edge changes value from pixel to pixel)."""
    if candidates.size == 0 or min(mask.shape) < 3:
        return []
    centre = mask[1:-1, 1:-1]
    uniform = np.ones(centre.shape, bool)
    h, w = mask.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            uniform &= mask[dy:h - 2 + dy, dx:w - 2 + dx] == centre
    return [int(v) for v in np.intersect1d(np.unique(centre[uniform]), candidates)]


def describe_values(values: dict[int, int]) -> str:
    """``1: 100 px, 2: 100 px, 255: 100 px`` (the per-case report of a label map)."""
    return ", ".join(f"{v}: {n} px" for v, n in sorted(values.items()))


def strict_binary(arr: np.ndarray, where: str) -> np.ndarray:
    """A mask that must already be {0, 1} or {0, 255} (arrays in pickles/HDF5, not images)."""
    values = np.unique(arr)
    if np.all(np.isin(values, (0, 1))):
        return arr.astype(np.uint8)
    if np.all(np.isin(values, (0, 255))):
        return (arr > 0).astype(np.uint8)
    raise CaseProblem("unexpected values", [where], f"mask {where} has values {values[:8].tolist()}"
                      f"{' …' if values.size > 8 else ''}; expected {{0, 1}} or {{0, 255}}")


def check_values(label: np.ndarray, allowed: Sequence[int], path: Path | str) -> None:
    values = np.unique(label)
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        raise CaseProblem("unexpected values", [path],
                          f"label {path} has values {bad[:8].tolist()}; expected a subset of {list(allowed)}")


def check_same_shape(image_shape: Sequence[int], mask_shape: Sequence[int], image: Path | str,
                     mask: Path | str) -> None:
    if tuple(image_shape) != tuple(mask_shape):
        raise CaseProblem("size mismatch", [image, mask],
                          f"mask {mask} is {_fmt(mask_shape)} but its image {image} is {_fmt(image_shape)}")


def fit_mask(mask: np.ndarray, image_shape: Sequence[int], image: Path | str, mask_path: Path | str,
             ) -> tuple[np.ndarray, list[str]]:
    """The mask at the image's shape: itself, resized when off by ≤ :data:`SIZE_REPAIR_TOLERANCE`
    pixels per axis (recorded), else a ``size mismatch`` problem."""
    if tuple(mask.shape) == tuple(image_shape):
        return mask, []
    if all(abs(a - b) <= SIZE_REPAIR_TOLERANCE for a, b in zip(mask.shape, image_shape)):
        repair = f"mask {Path(mask_path).name} resized from {_fmt(mask.shape)} to its image's {_fmt(image_shape)}"
        return resize_label(mask, image_shape), [repair]
    check_same_shape(image_shape, mask.shape, image, mask_path)
    raise AssertionError("unreachable")


def _fmt(shape: Sequence[int]) -> str:
    """2D as width×height (as image viewers and the releases' documentation say it), 3D as z×y×x."""
    dims = [int(n) for n in shape]
    return "×".join(map(str, dims[::-1] if len(dims) == 2 else dims))


def read_mask_2d(mask_path: Path, image_shape: Sequence[int], image_path: Path) -> tuple[np.ndarray, CaseReport]:
    """A 2D mask file → ({0, 1} mask at the image's shape, what was repaired/counted)."""
    mask, soft, label_values = binarise(to_grey(read_2d(mask_path, "mask")))
    mask, repairs = fit_mask(mask, image_shape, image_path, mask_path)
    return mask, CaseReport(repairs=repairs, soft_pixels=soft, label_values=label_values, empty=not mask.any())


def paired_2d_case(case_id: str, image: Path, mask: Path, channels: Literal[1, 3]) -> Case:
    """A :class:`Case` reading an image file (as grey or RGB) and its binary mask file.

    Its ``check`` reads the image's header and the mask only.
    """

    def check() -> CaseReport:
        return read_mask_2d(mask, image_size_2d(image), image)[1]

    def load() -> Sample:
        img = read_2d(image)
        msk, report = read_mask_2d(mask, img.shape[:2], image)
        if channels == 1:
            arr = to_grey(img)[None]
        else:
            arr = np.moveaxis(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3], -1, 0)
        if arr.dtype != np.uint8:  # 16-bit PNGs: PNG output is 8-bit, keep the full range
            arr = np.rint(arr.astype(np.float32) * (255.0 / max(float(arr.max()), 1.0))).astype(np.uint8)
        return Sample(image=np.ascontiguousarray(arr), label=msk, report=report)

    return Case(case_id=case_id, load=load, source=str(image), check=check, label_source=str(mask))
