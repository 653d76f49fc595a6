"""Shared conversion core: everything a dataset module does not have to know.

A dataset module (``kvasir.py`` …) only finds and pairs its source files and says how to read one
case; it returns a :class:`Discovery`. :func:`convert` then splits (seeded, optionally by patient),
takes the image subset, picks rater labels, resizes, applies simulated noise, validates, writes the
nnU-Net raw dataset into a temporary folder, measures the noise, writes ``dataset.json`` with the
``"gsd"`` provenance block and renames the folder into place (atomic: an interrupted run leaves no
half dataset behind).

Output layout (nnU-Net v2 raw format)::

    DatasetNNN_Name/
        dataset.json
        imagesTr/CASE_0000.png|.nii.gz …    one file per channel (an RGB PNG is one file, 3 channels)
        labelsTr/CASE.png|.nii.gz           training labels: noisy (simulated) or the chosen rater's
        labelsTr_clean/CASE…                clean training labels, only when noise was simulated
        imagesTs/CASE_0000…
        labelsTs/CASE…                      clean test labels (multi-rater: majority vote of raters)
        labelsTs_A1/ … labelsTs_An/         multi-rater sets only: every rater's test labels

``dataset.json["gsd"]`` (provenance; the trainer reads ``tau``):

=================== ==========================================================================
key                 meaning
=================== ==========================================================================
format_version      1
dataset             converter used (``kvasir`` …)
source              absolute path of the source folder/file (``null`` for synthetic)
seed                the seed of split, subset, rater sampling and noise
size                output spatial shape (list) or ``null`` for the native size
subset              fraction of the training images kept (1.0 = all)
split               ``method`` (seeded / seeded_by_patient / predefined), ``train`` and ``test``
                    case ids, ``n_train_available`` (training cases before ``subset``)
noise               ``null``, or ``preset`` (S_R/S_E/S_DE), ``kind``, ``notation`` (e.g.
                    M(200, 0.2, 0.05)), its parameters, ``noise_at`` (source, output or
                    a size in pixels), ``scaled_by`` (factor applied to a named preset's
                    steps/radii), ``rng`` (how the per-case generator derives from ``seed``),
                    ``dice_vs_clean`` (mean Dice(nGT, GT) over training cases, fraction) and
                    ``pixel_noise_rate`` (fraction of training pixels whose label changed)
raters              ``null``, or ``mode`` (A1…An or sample), ``available`` raters,
                    ``assignment`` {case: rater}, ``test_consensus`` ("majority")
tau                 forget rate (docs/decisions.md §8): the pixel noise rate for simulated noise; 15 % of the
                    training foreground proportion for multi-rater sets; 0 for clean labels
tau_source          how ``tau`` was obtained
foreground_fraction mean fraction of foreground pixels in the training labels
clean_labels        ``"labelsTr_clean"`` when written, else absent
empty_masks         ids of cases whose clean label is empty (kept)
notes               anything the converter skipped or assumed
=================== ==========================================================================
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from nnunet_gsd.errors import UserError
from dataset_conversion import noise as noise_mod

FileEnding = Literal[".png", ".nii.gz"]
FORMAT_VERSION = 1

# Distinct sub-streams of the seed, so that e.g. changing the subset never changes the noise.
_TAG_SPLIT, _TAG_SUBSET, _TAG_RATER, _TAG_NOISE = 1, 2, 3, 4


# ----------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One case in memory. ``image`` is channels-first ``(C, *spatial)``; labels are integer maps.

    Single-annotation sets fill ``label``; multi-rater sets fill ``raters`` ({"A1": map, …}).
    ``spacing`` (array axis order) matters only for NIfTI output; ``None`` means 1 per axis.
    """

    image: np.ndarray
    label: np.ndarray | None = None
    raters: dict[str, np.ndarray] | None = None
    spacing: tuple[float, ...] | None = None


@dataclass
class Case:
    """A case found in the source: its id, how to read it, and what to name in error messages."""

    case_id: str
    load: Callable[[], Sample]
    source: str
    group: str | None = None           # patient id: cases of one group land on the same side of the split
    role: Literal["train", "test"] | None = None  # fixed by the source layout (MMIS), else None


@dataclass
class DatasetSpec:
    """What nnU-Net's dataset.json needs, plus the paper's split sizes (Table 2)."""

    key: str
    name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: FileEnding
    dim: int
    paper_split: tuple[int, int] | None
    description: str = ""
    reference: str = ""
    licence: str = "see the source dataset's terms"
    multi_rater: bool = False
    test_volumes: bool = False   # 2D training slices but (dim+1)-D test volumes (MMIS-2024)


@dataclass
class Discovery:
    """A dataset module's answer: the spec, the cases, and notes for the provenance."""

    spec: DatasetSpec
    cases: list[Case]
    raters: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    preset_size: int | None = None     # synthetic: the image edge its scaled presets are derived from


@dataclass
class ConvertOptions:
    """The user's choices (the ``convert`` command's options)."""

    dataset_id: int
    out: Path | None = None
    noise: str = "none"
    noise_at: str | int | None = None
    markov: tuple[int, float, float] | None = None   # --noise markov: (T, P, V)
    raters: str | None = None
    seed: int = 0
    size: int | None = None
    subset: float = 1.0
    overwrite: bool = False
    preview: bool = False


# ----------------------------------------------------------------------------------------------
# Source discovery helpers
# ----------------------------------------------------------------------------------------------
def missing_tree_error(what: str, source: Path, expected_tree: str) -> UserError:
    return UserError(f"{what} in {source}. Expected a tree like:\n{expected_tree.rstrip()}")


def find_dir(source: Path, candidates: Sequence[str], expected_tree: str, what: str) -> Path:
    """First existing ``source/<candidate>`` (candidates may contain ``/``; ``.`` = source)."""
    for c in candidates:
        p = source / c
        if p.is_dir():
            return p
    raise missing_tree_error(f"no {what} folder ({' or '.join(candidates)})", source, expected_tree)


def list_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    sfx = tuple(s.lower() for s in suffixes)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(sfx)
                  and not p.name.startswith("."))


def pair_by_stem(images: list[Path], masks: list[Path], mask_stem: Callable[[str], str] = lambda s: s,
                 allow_unlabelled_images: bool = False) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pair image and mask files by stem (``mask_stem`` maps a mask stem to its image stem).

    Masks without an image are always an error; images without a mask are an error unless
    ``allow_unlabelled_images`` (then they are returned separately, to be reported as skipped).
    """
    by_stem: dict[str, Path] = {}
    for m in masks:
        by_stem[mask_stem(_stem(m))] = m
    pairs, unlabelled = [], []
    for im in images:
        m = by_stem.pop(_stem(im), None)
        if m is None:
            unlabelled.append(im)
        else:
            pairs.append((im, m))
    if by_stem:
        orphans = sorted(by_stem.values())
        raise UserError(f"{len(orphans)} mask(s) have no image with the same name, e.g. {orphans[0]}"
                        + (f", {orphans[1]}" if len(orphans) > 1 else ""))
    if unlabelled and not allow_unlabelled_images:
        raise UserError(f"{len(unlabelled)} image(s) have no mask with the same name, e.g. {unlabelled[0]}"
                        + (f", {unlabelled[1]}" if len(unlabelled) > 1 else ""))
    return pairs, unlabelled


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return p.stem


def safe_case_id(name: str) -> str:
    """nnU-Net case ids must not confuse its ``_0000`` channel suffix or the file system."""
    cid = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return cid or "case"


# ----------------------------------------------------------------------------------------------
# Reading and validation
# ----------------------------------------------------------------------------------------------
def read_2d(path: Path | str) -> np.ndarray:
    """A 2D image file as (H, W) or (H, W, 3); a clear error naming the file if it is unreadable."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            elif im.mode == "I;16" or im.mode.startswith("I;16"):
                im = im.convert("I")
            arr = np.asarray(im)
    except Exception as e:  # PIL raises many types for corrupt files
        raise UserError(f"cannot read image {path}: {e}") from None
    return arr


def read_nifti(path: Path | str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI volume as an array in SimpleITK's (z, y, x) order, with its spacing in that order."""
    import SimpleITK as sitk
    try:
        img = sitk.ReadImage(str(path))
    except Exception as e:
        raise UserError(f"cannot read NIfTI file {path}: {str(e).strip().splitlines()[-1]}") from None
    return sitk.GetArrayFromImage(img), tuple(float(s) for s in reversed(img.GetSpacing()))


def to_grey(arr: np.ndarray) -> np.ndarray:
    """(H, W[, 3]) → (H, W): grey images stored as RGB keep their exact values."""
    if arr.ndim == 2:
        return arr
    if arr.shape[-1] >= 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return arr[..., 0]
    rgb = arr[..., :3].astype(np.float32)
    return np.clip(np.rint(rgb @ np.array([0.299, 0.587, 0.114], np.float32)), 0, 255).astype(np.uint8)


def binary_mask(arr: np.ndarray, path: Path | str, rule: Literal["strict", "threshold"]) -> np.ndarray:
    """A mask array (already single-channel: 2D or 3D) → {0, 1} uint8.

    ``threshold``: > 127 (JPEG masks, whose edges hold compression noise). ``strict``: values must
    be {0, 1} or {0, 255} (lossless masks: anything else means a wrong file, which we report).
    """
    if rule == "threshold":
        return (arr > 127).astype(np.uint8)
    values = np.unique(arr)
    if np.all(np.isin(values, (0, 1))):
        return arr.astype(np.uint8)
    if np.all(np.isin(values, (0, 255))):
        return (arr > 0).astype(np.uint8)
    raise UserError(f"mask {path} has unexpected values {values[:8].tolist()}"
                    f"{' …' if values.size > 8 else ''}; expected {{0, 1}} or {{0, 255}}")


def check_values(label: np.ndarray, allowed: Sequence[int], path: Path | str) -> None:
    values = np.unique(label)
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        raise UserError(f"label {path} has unexpected values {bad[:8].tolist()}; expected a subset of {list(allowed)}")


def check_same_shape(image_shape: Sequence[int], mask_shape: Sequence[int], image: Path | str,
                     mask: Path | str) -> None:
    if tuple(image_shape) != tuple(mask_shape):
        raise UserError(f"mask {mask} is {tuple(mask_shape)} but its image {image} is {tuple(image_shape)}")


# ----------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Split, subset, raters
# ----------------------------------------------------------------------------------------------
def rng_for(seed: int, tag: int, case_id: str = "") -> np.random.Generator:
    """A generator that depends only on (seed, purpose, case): order- and subset-independent."""
    return np.random.default_rng([seed, tag, zlib.crc32(case_id.encode())])


def seeded_split(cases: list[Case], train_fraction: float, seed: int) -> tuple[list[Case], list[Case], str]:
    """Seeded train/test split. Cases with a ``group`` (patient) stay together."""
    rng = rng_for(seed, _TAG_SPLIT)
    if any(c.group for c in cases):
        groups = sorted({c.group or c.case_id for c in cases})
        order = [groups[i] for i in rng.permutation(len(groups))]
        target = round(len(cases) * train_fraction)
        sizes: dict[str, int] = {}
        for c in cases:
            sizes[c.group or c.case_id] = sizes.get(c.group or c.case_id, 0) + 1
        train_groups: set[str] = set()
        n = 0
        for g in order:
            if n >= target:
                break
            train_groups.add(g)
            n += sizes[g]
        train = [c for c in cases if (c.group or c.case_id) in train_groups]
        test = [c for c in cases if (c.group or c.case_id) not in train_groups]
        return train, test, "seeded_by_patient"
    perm = rng.permutation(len(cases))
    n_train = round(len(cases) * train_fraction)
    train_idx = set(perm[:n_train].tolist())
    train = [c for i, c in enumerate(cases) if i in train_idx]
    test = [c for i, c in enumerate(cases) if i not in train_idx]
    return train, test, "seeded"


def take_subset(train: list[Case], fraction: float, seed: int) -> list[Case]:
    """The first ``fraction`` of one seeded permutation: 25 % ⊂ 50 % ⊂ 100 % for a given seed."""
    if not 0 < fraction <= 1:
        raise UserError(f"--subset must be in (0, 1], got {fraction}")
    if fraction == 1:
        return train
    n = max(1, round(len(train) * fraction))
    keep = set(rng_for(seed, _TAG_SUBSET).permutation(len(train))[:n].tolist())
    return [c for i, c in enumerate(train) if i in keep]


def choose_rater(mode: str, available: Sequence[str], case_id: str, seed: int) -> str:
    if mode == "sample":
        return available[int(rng_for(seed, _TAG_RATER, case_id).integers(len(available)))]
    return mode


def majority_vote(raters: dict[str, np.ndarray]) -> np.ndarray:
    """Pixel-wise most frequent label; ties go to the highest label, so for binary masks a pixel is
    foreground when at least half of the raters marked it."""
    stack = np.stack(list(raters.values()))
    labels = np.unique(stack)
    counts = np.stack([(stack == v).sum(0) for v in labels])
    # argmax returns the first maximum: scan from the highest label down.
    return labels[::-1][np.argmax(counts[::-1], axis=0)].astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
def _as_uint8_image(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_image(folder: Path, case_id: str, image: np.ndarray, spec: DatasetSpec,
                spacing: Sequence[float] | None) -> None:
    """Channels-first image → nnU-Net files: one RGB/grey PNG, or one NIfTI per channel."""
    if spec.file_ending == ".png":
        from PIL import Image
        img = _as_uint8_image(image)
        arr = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
        Image.fromarray(arr).save(folder / f"{case_id}_0000.png")
        return
    for c, chan in enumerate(image):
        _write_nifti(folder / f"{case_id}_{c:04d}.nii.gz", chan.astype(np.float32, copy=False)
                     if chan.dtype.kind == "f" else chan, spacing)


def write_label(path_no_ext: Path, label: np.ndarray, spec: DatasetSpec, spacing: Sequence[float] | None) -> None:
    label = label.astype(np.uint8, copy=False)
    if spec.file_ending == ".png":
        from PIL import Image
        Image.fromarray(label).save(path_no_ext.with_name(path_no_ext.name + ".png"))
    else:
        _write_nifti(path_no_ext.with_name(path_no_ext.name + ".nii.gz"), label, spacing)


def _write_nifti(path: Path, arr: np.ndarray, spacing: Sequence[float] | None) -> None:
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in reversed(spacing)] if spacing else [1.0] * arr.ndim)
    sitk.WriteImage(img, str(path), useCompression=True)


def resolve_target(out: Path | None, dataset_id: int, name: str) -> Path:
    """Where the dataset goes: ``$nnUNet_raw/DatasetNNN_Name`` or under ``--out``.

    ``--out`` is a raw root (like ``$nnUNet_raw``) in which ``DatasetNNN_Name`` is created; a path
    that already ends in ``DatasetNNN_Something`` is taken as the dataset folder itself.
    """
    if not 1 <= dataset_id <= 999:
        raise UserError(f"--id must be between 1 and 999 (nnU-Net dataset ids have three digits), got {dataset_id}")
    folder = f"Dataset{dataset_id:03d}_{name}"
    if out is None:
        root = os.environ.get("nnUNet_raw")
        if not root:
            raise UserError("nnUNet_raw is not set: export nnUNet_raw=/path/to/nnUNet_raw or pass --out DIR")
        return Path(root).absolute() / folder
    out = Path(out).absolute()
    m = re.fullmatch(r"Dataset(\d{3})_.+", out.name)
    if m:
        if int(m.group(1)) != dataset_id:
            raise UserError(f"--out {out} names dataset {m.group(1)} but --id is {dataset_id}")
        return out
    return out / folder


# ----------------------------------------------------------------------------------------------
# The conversion
# ----------------------------------------------------------------------------------------------
def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _target_shape(size: int | None, spatial: Sequence[int], dim: int) -> tuple[int, ...]:
    """``--size`` applies to the last ``dim`` axes; a leading slice axis (test volumes) is kept."""
    if size is None:
        return tuple(spatial)
    return tuple(spatial[: len(spatial) - dim]) + (size,) * dim


def convert(discovery: Discovery, opts: ConvertOptions, dataset_key: str | None = None) -> Path:
    """Write the nnU-Net raw dataset described by ``discovery`` with ``opts``; returns its folder."""
    from tqdm import tqdm

    spec = discovery.spec
    key = dataset_key or spec.key
    target = resolve_target(opts.out, opts.dataset_id, spec.name)
    root = target.parent
    same_id = sorted(p for p in root.glob(f"Dataset{opts.dataset_id:03d}_*") if p.is_dir()) if root.is_dir() else []
    if same_id and not opts.overwrite:
        raise UserError(f"dataset id {opts.dataset_id} already exists: {same_id[0]} (use --overwrite to replace it)")
    if not discovery.cases:
        raise UserError(f"no cases found in {discovery.source}")

    # ---- options that depend on the dataset
    preset = None
    if opts.markov is not None and opts.noise != "markov":
        raise UserError(f"--markov-steps/--markov-p/--markov-v need --noise markov (got --noise {opts.noise})")
    if opts.noise != "none" and spec.multi_rater:
        raise UserError(f"{key} has real multi-rater noise; simulated --noise is not offered for it (use --raters)")
    if opts.noise == "markov":
        preset = noise_mod.custom_markov(*(opts.markov or noise_mod.MARKOV_DEFAULTS))
    elif opts.noise != "none":
        preset = noise_mod.get_preset(key, opts.noise, size=discovery.preset_size, dim=spec.dim)
    noise_at = noise_mod.parse_noise_at(str(opts.noise_at)) if opts.noise_at is not None else \
        (preset.noise_at if preset else "output")
    scaled_by = 1.0
    noise_edge = noise_at if isinstance(noise_at, int) else (opts.size if noise_at == "output" else None)
    if preset and preset.name in noise_mod.PRESET_NAMES and noise_edge and key != "synthetic":
        # the paper's presets are in pixels of 256² images (BraTS: 128³); other sizes scale them
        scaled_by = noise_edge / noise_mod.REFERENCE_EDGE[spec.dim]
        preset = noise_mod.scale_preset(preset, scaled_by)
    rater_mode = None
    if spec.multi_rater:
        rater_mode = opts.raters or "sample"
        if rater_mode != "sample" and rater_mode not in discovery.raters:
            raise UserError(f"--raters {rater_mode}: this dataset has raters {', '.join(discovery.raters)} "
                            f"(or use sample)")
    elif opts.raters:
        raise UserError(f"--raters applies to multi-rater datasets (lidc, mmis2024), not {key}")
    if opts.size is not None and opts.size < 8:
        raise UserError(f"--size must be at least 8 pixels, got {opts.size}")

    # ---- split and subset
    if any(c.role for c in discovery.cases):
        train = [c for c in discovery.cases if c.role == "train"]
        test = [c for c in discovery.cases if c.role == "test"]
        split_method = "predefined"
    else:
        frac = spec.paper_split[0] / sum(spec.paper_split) if spec.paper_split else 0.8
        train, test, split_method = seeded_split(discovery.cases, frac, opts.seed)
    n_available = len(train)
    train = take_subset(train, opts.subset, opts.seed)
    ids = [c.case_id for c in train + test]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"two source files map to the same case id {dup!r}")

    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(root, target.name)
    tmp = root / f".{target.name}.partial-{os.getpid()}"
    try:
        dirs = {n: tmp / n for n in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
        if preset:
            dirs["labelsTr_clean"] = tmp / "labelsTr_clean"
        for r in discovery.raters:
            dirs[f"labelsTs_{r}"] = tmp / f"labelsTs_{r}"
        for d in dirs.values():
            d.mkdir(parents=True)

        dices: list[float] = []
        changed = total = fg = 0
        empty: list[str] = []
        assignment: dict[str, str] = {}
        bar = tqdm(total=len(train) + len(test), desc=f"convert {key}", unit="case", disable=None, file=sys.stderr)
        for role, cases in (("train", train), ("test", test)):
            for case in cases:
                s = case.load()
                _check_image(s, spec, case, role)
                shape = _target_shape(opts.size, s.image.shape[1:], spec.dim)
                spacing = _resized_spacing(s.spacing, s.image.shape[1:], shape)
                write_image(dirs["imagesTr" if role == "train" else "imagesTs"], case.case_id,
                            resize_image(s.image, shape), spec, spacing)
                if role == "train":
                    if s.raters is not None:
                        rater = choose_rater(rater_mode or "sample", discovery.raters, case.case_id, opts.seed)
                        assignment[case.case_id] = rater
                        lab = resize_label(s.raters[rater], shape)
                        if not np.any(lab):
                            empty.append(case.case_id)
                    else:
                        assert s.label is not None
                        if not np.any(s.label):
                            empty.append(case.case_id)
                        lab = resize_label(s.label, shape)
                        if preset:
                            rng = rng_for(opts.seed, _TAG_NOISE, case.case_id)
                            if noise_at == "source":
                                noisy = resize_label(noise_mod.apply_noise(s.label, preset, rng), shape)
                            elif isinstance(noise_at, int):
                                at = _target_shape(noise_at, s.label.shape, spec.dim)
                                noisy = resize_label(noise_mod.apply_noise(resize_label(s.label, at), preset, rng),
                                                     shape)
                            else:
                                noisy = noise_mod.apply_noise(lab, preset, rng)
                            write_label(dirs["labelsTr_clean"] / case.case_id, lab, spec, spacing)
                            dices.append(noise_mod.dice(noisy, lab))
                            changed += int(np.count_nonzero(noisy != lab))
                            lab = noisy
                    total += lab.size
                    fg += int(np.count_nonzero(lab))
                    write_label(dirs["labelsTr"] / case.case_id, lab, spec, spacing)
                else:
                    if s.raters is not None:
                        for r, m in s.raters.items():
                            write_label(dirs[f"labelsTs_{r}"] / case.case_id, resize_label(m, shape), spec, spacing)
                        clean = majority_vote(s.raters)
                    else:
                        assert s.label is not None
                        clean = s.label
                    if not np.any(clean):
                        empty.append(case.case_id)
                    write_label(dirs["labelsTs"] / case.case_id, resize_label(clean, shape), spec, spacing)
                bar.update(1)
        bar.close()

        if empty:
            more = " …" if len(empty) > 5 else ""
            warn(f"{len(empty)} case(s) have an empty mask (kept): {', '.join(empty[:5])}{more}")
        fg_frac = fg / total if total else 0.0
        gsd: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "dataset": key,
            "source": discovery.source,
            "seed": opts.seed,
            "size": [opts.size] * spec.dim if opts.size else None,
            "subset": opts.subset,
            "split": {"method": split_method, "n_train_available": n_available,
                      "train": [c.case_id for c in train], "test": [c.case_id for c in test]},
            "noise": None,
            "raters": None,
            "foreground_fraction": fg_frac,
        }
        if preset:
            noise_rate = changed / total if total else 0.0
            gsd["noise"] = {**preset.params(), "noise_at": noise_at, "scaled_by": scaled_by,
                            "rng": f"numpy default_rng([seed, {_TAG_NOISE}, crc32(case_id)]) per case",
                            "dice_vs_clean": float(np.mean(dices)) if dices else 1.0,
                            "pixel_noise_rate": noise_rate}
            gsd["tau"], gsd["tau_source"] = noise_rate, "pixel_noise_rate (docs/decisions.md §8)"
            gsd["clean_labels"] = "labelsTr_clean"
        elif spec.multi_rater:
            gsd["raters"] = {"mode": rater_mode, "available": discovery.raters, "assignment": assignment,
                             "test_consensus": "majority",
                             "test_rater_folders": [f"labelsTs_{r}" for r in discovery.raters]}
            gsd["tau"], gsd["tau_source"] = 0.15 * fg_frac, "0.15 x training foreground fraction (docs/decisions.md §8)"
        else:
            gsd["tau"], gsd["tau_source"] = 0.0, "clean labels"
        gsd["empty_masks"] = empty
        gsd["notes"] = discovery.notes
        dataset_json = {
            "name": spec.name,
            "description": spec.description,
            "reference": spec.reference,
            "licence": spec.licence,
            "channel_names": spec.channel_names,
            "labels": spec.labels,
            "numTraining": len(train),
            "file_ending": spec.file_ending,
            "gsd": gsd,
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        if opts.preview:
            from dataset_conversion.preview import write_preview
            write_preview(tmp, tmp / "gsd_preview.png", n_cases=4, seed=opts.seed)
        _install(tmp, target, same_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_image(s: Sample, spec: DatasetSpec, case: Case, role: str) -> None:
    n = s.image.shape[0]
    dims = {spec.dim, spec.dim + 1} if (spec.test_volumes and role == "test") else {spec.dim}
    if s.image.ndim - 1 not in dims:
        raise UserError(f"{case.source}: expected a {spec.dim}D image, got shape {s.image.shape[1:]}")
    if n != len(spec.channel_names):
        raise UserError(f"{case.source}: {n} channel(s), but this dataset has {len(spec.channel_names)} "
                        f"({', '.join(spec.channel_names.values())})")


def _resized_spacing(spacing: tuple[float, ...] | None, old: Sequence[int],
                     new: Sequence[int]) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    return tuple(float(s) * o / n for s, o, n in zip(spacing, old, new))


def _remove_stale_partials(root: Path, name: str) -> None:
    """Drop hidden leftovers of killed runs (SIGKILL skips our clean-up); live runs' folders stay."""
    for p in root.glob(f".{name}.partial-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            if pid != os.getpid():
                os.kill(pid, 0)
                continue
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        shutil.rmtree(p, ignore_errors=True)


def _install(tmp: Path, target: Path, replaced: list[Path]) -> None:
    """Swap the finished folder in; the old dataset(s) of this id go only after the rename succeeded."""
    trash = []
    for i, old in enumerate(replaced):
        t = old.parent / f".{old.name}.old-{os.getpid()}-{i}"
        os.replace(old, t)
        trash.append(t)
    os.replace(tmp, target)
    for t in trash:
        shutil.rmtree(t, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The common 2D case: one image file and one binary mask file
# ----------------------------------------------------------------------------------------------
def paired_2d_case(case_id: str, image: Path, mask: Path, channels: Literal[1, 3],
                   mask_rule: Literal["strict", "threshold"]) -> Case:
    """A :class:`Case` reading an image file (as grey or RGB) and its binary mask file."""

    def load() -> Sample:
        img = read_2d(image)
        msk = binary_mask(to_grey(read_2d(mask)), mask, mask_rule)
        check_same_shape(img.shape[:2], msk.shape, image, mask)
        if channels == 1:
            arr = to_grey(img)[None]
        else:
            arr = np.moveaxis(np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3], -1, 0)
        if arr.dtype != np.uint8:  # 16-bit PNGs: PNG output is 8-bit, keep the full range
            arr = np.rint(arr.astype(np.float32) * (255.0 / max(float(arr.max()), 1.0))).astype(np.uint8)
        return Sample(image=np.ascontiguousarray(arr), label=msk)

    return Case(case_id=case_id, load=load, source=str(image))
