"""Synthetic dataset generator for the demo and the tests: smooth blob-like "lesions" on textured
backgrounds, binary or multi-class, 2D (PNG) or 3D (NIfTI), any size, 1 or 3 channels.

Lesions are thresholded Gaussian-filtered noise (several smooth blobs, 10–30 % foreground in all),
and the image is brighter inside them (class c: +c·0.9 background standard deviations) under a
texture and a slow shading, so a tiny network learns the task in a few epochs but not trivially.

Noise presets are the paper's 2D presets (3D: the BraTS presets) with the step count and the S_DE
radii scaled linearly with the image edge (edge/256 in 2D, edge/240 in 3D): 200 Markov steps or a
radius-10 erosion would wipe out the lesions of a 48-pixel image. At 64 px: S_R = M(50, 0.2, 0.05),
S_E = M(50, 0.8, 0.05), S_DE = K(2–3).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from .cli import int_at_least
from .convert import convert
from .model import Case, ConvertOptions, DatasetSpec, Discovery, Sample
from .splitting import TAG_SYNTHETIC, rng_for

EXPECTED_TREE = "(none: the synthetic data are generated, --source is not used)\n"

#: generated, not read: the command takes no --source and --size is the generated edge
GENERATED = True


def make_spec(dim: int, classes: int, channels: int) -> DatasetSpec:
    if dim == 2 and channels == 3:
        names = {"0": "R", "1": "G", "2": "B"}
    else:
        names = {str(i): f"synthetic{i}" for i in range(channels)}
    labels = {"background": 0, **({"lesion": 1} if classes == 1 else {f"lesion_{c}": c for c in range(1, classes + 1)})}
    return DatasetSpec(key="synthetic", name="Synthetic", dim=dim, file_ending=".png" if dim == 2 else ".nii.gz",
                       paper_split=None, channel_names=names, labels=labels,
                       description=f"synthetic blobs, {dim}D, {classes} class(es), {channels} channel(s)",
                       reference="nnunet_gsd dataset_conversion.synthetic", licence="public domain",
                       noise_presets="brats2020" if dim == 3 else "2d", allow_empty=True)


def _blobs(rng: np.random.Generator, shape: tuple[int, ...], fraction: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=max(shape) / 10,
                                    mode="wrap")
    return field > np.quantile(field, 1.0 - fraction)


def _thin_lines(rng: np.random.Generator, shape: tuple[int, ...], width: int = 2) -> np.ndarray:
    """Curved lines ``width`` pixels wide: the rims of a few smooth blobs (a thin class, like clavicles or
    vessels, whose pixels a batch-pooled small-loss selection rejects first)."""
    blob = _blobs(rng, shape, rng.uniform(0.15, 0.25))
    return blob & ~ndimage.binary_erosion(blob, iterations=width)


def make_sample(rng: np.random.Generator, size: int, dim: int, classes: int, channels: int,
                thin: bool = False) -> Sample:
    """One synthetic case: (C, *spatial) image (uint8 in 2D, float32 in 3D) and its label map.

    ``thin``: the last foreground class is drawn as thin lines instead of a blob.
    """
    shape = (size,) * dim
    total = rng.uniform(0.10, 0.30)
    label = np.zeros(shape, np.uint8)
    for c in range(1, classes + 1):
        region = _thin_lines(rng, shape) if thin and c == classes else _blobs(rng, shape, total / classes)
        label[region & (label == 0)] = c
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
    texture /= texture.std() + 1e-6
    grid = np.meshgrid(*[np.linspace(-1, 1, size, dtype=np.float32)] * dim, indexing="ij")
    shading = sum(rng.uniform(-0.5, 0.5) * g for g in grid)
    signal = ndimage.gaussian_filter(label.astype(np.float32) * 0.9, 0.7)  # soft edges, like real lesions
    chans = []
    for k in range(channels):
        gain = 1.0 if k == 0 else rng.uniform(0.5, 1.0)
        chans.append(texture * 0.5 + shading + gain * signal * 2.0 + rng.normal(0, 0.2, shape).astype(np.float32))
    image = np.stack(chans)
    if dim == 2:
        image = np.clip(np.rint(96 + 28 * image), 0, 255).astype(np.uint8)
    return Sample(image=image.astype(np.float32) if dim == 3 else image, label=label)


def discover(num_train: int = 8, num_test: int = 4, size: int = 64, dim: int = 2, classes: int = 1,
             channels: int = 1, seed: int = 0, thin: bool = False) -> Discovery:
    spec = make_spec(dim, classes, channels)
    cases = []
    for i in range(num_train + num_test):
        cid = f"synth_{i:04d}"

        def load(cid: str = cid) -> Sample:
            return make_sample(rng_for(seed, TAG_SYNTHETIC, cid), size, dim, classes, channels, thin)

        cases.append(Case(case_id=cid, load=load, source=f"synthetic case {cid}",
                          role="train" if i < num_train else "test"))
    return Discovery(spec=spec, cases=cases, source=None, native_edge=size,
                     notes=[(f"synthetic: {num_train} train / {num_test} test, {size}px, {dim}D, "
                             f"{classes} class(es), {channels} channel(s)" + (", last class thin" if thin else ""))])


def generate(out_dir: Path, dataset_id: int = 901, num_train: int = 8, num_test: int = 4, size: int = 64,
             dim: int = 2, classes: int = 1, channels: int = 1, noise: str = "none", seed: int = 0,
             overwrite: bool = False, noise_at: str | None = None, preview: bool = False) -> Path:
    """Write a synthetic nnU-Net raw dataset; returns its folder.

    ``out_dir`` is a raw root (``DatasetNNN_Synthetic`` is created in it) or, if its name already
    is ``DatasetNNN_…``, the dataset folder itself. With ``noise`` other than "none" the clean
    training labels go to ``labelsTr_clean/``.
    """
    disc = discover(num_train, num_test, size, dim, classes, channels, seed)
    opts = ConvertOptions(dataset_id=dataset_id, out=Path(out_dir), noise=noise, noise_at=noise_at, seed=seed,
                          overwrite=overwrite, preview=preview)
    return convert(disc, opts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # nnU-Net needs training cases, and the demo and the tests predict on at least one test case
    parser.add_argument("--num-train", type=int_at_least(1, "--num-train 8"), default=8,
                        help="training cases, >= 1 (default 8)")
    parser.add_argument("--num-test", type=int_at_least(1, "--num-test 4"), default=4,
                        help="test cases, >= 1 (default 4)")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=2, help="2D (PNG) or 3D (NIfTI) (default 2)")
    parser.add_argument("--classes", type=int, choices=(1, 2, 3), default=1, help="foreground classes (default 1)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1,
                        help="image channels; 3 in 2D gives an RGB PNG (default 1)")
    parser.add_argument("--thin", action="store_true",
                        help="draw the last foreground class as thin lines (2 px) instead of a blob")
