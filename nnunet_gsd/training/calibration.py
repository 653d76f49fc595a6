"""Boundary calibration of a training run: the per-class outline offsets of :mod:`nnunet_gsd.method.calibration`,
estimated once from the preprocessed training cases (docs/decisions.md §13) and recorded beside the run."""
from __future__ import annotations

import hashlib
import json
import os
from os.path import isfile, join
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from nnunet_gsd.method.calibration import (calibration_offset, equivalent_radius, estimate_offset, median_profile,
                                           ring_count, ring_profile, shift_labels)
from nnunet_gsd.method.step import resize_nearest
from nnunet_gsd.training.data import case_files, file_stamps
from nnunet_gsd.utils import write_json_atomic

#: cases read to estimate the offsets (a seeded sample of the training cases): the median over this many
#: outlines is stable to a tenth of a voxel on Kvasir-SEG, and 3D datasets stay quick
MAX_CASES = 200
SLICES_PER_CASE = 10
#: outlines the median needs before it may move a label
MIN_CASES = 20
OFFSETS_FILE = "gsd_boundary_offsets.json"


def parse_offset_setting(value: str) -> Optional[int]:
    """The ``boundary_offset`` setting: "auto" → None (estimate it), "off" → 0, an integer → that offset."""
    if value == "auto":
        return None
    return 0 if value == "off" else int(value)  # validated by the settings table


def estimate_class_offsets(dataset, identifiers: Sequence[str], labels: Sequence[int],
                           spacing: Optional[Sequence[float]], seed: int = 0,
                           min_cases: int = MIN_CASES, rings: Optional[int] = None) -> Dict[int, dict]:
    """``{label: {"estimate": voxels or None, "offset": int, "abstained": why there is no estimate or None,
    "cases": n, "rings": rings per side, "radius": median equivalent radius, "profile": median ring profile or
    None}}`` over a seeded sample of the cases (the profile's rings as in :func:`ring_profile`).

    ``dataset`` is nnU-Net's dataset object (``load_case(identifier)`` → data, seg, …) of the preprocessed
    training cases, so the offsets are in the voxels the network trains on. A first pass reads only the labels
    and sets each class's ring count from its outlines' median :func:`equivalent_radius`
    (:func:`~nnunet_gsd.method.calibration.ring_count`); the second measures the profiles with it.
    ``min_cases``: outlines needed (:func:`~nnunet_gsd.method.calibration.median_profile`); only surveys of
    small extracts lower it. ``rings``: measure every class with this many rings instead (surveys comparing
    the fixed-ring rule; training never sets it).
    """
    rng = np.random.default_rng(seed)
    chosen = sorted(identifiers)
    if len(chosen) > MAX_CASES:
        chosen = sorted(rng.choice(chosen, MAX_CASES, replace=False).tolist())
    radii: Dict[int, List[float]] = {c: [] for c in labels}
    for identifier in chosen:
        seg = np.asarray(dataset.load_case(identifier)[1])[0]
        for c in labels:
            radii[c] += [equivalent_radius(seg[plane] == c, spacing) for plane in _planes(seg, c, len(spacing))]
    rings = {c: ring_count(radii[c]) if rings is None else int(rings) for c in labels}
    profiles: Dict[int, List] = {c: [] for c in labels}
    for identifier in tqdm(chosen, desc="GSD: boundary calibration", unit="case"):
        data, seg = dataset.load_case(identifier)[:2]
        data, seg = np.asarray(data, dtype=np.float32), np.asarray(seg)[0]
        for c in labels:
            for plane in _planes(seg, c, len(spacing)):
                labelled = seg[plane]
                valid = labelled >= 0  # nnU-Net's −1: outside the cropped body
                profiles[c].append(ring_profile(data[(slice(None),) + plane], labelled == c, rings[c], spacing,
                                                valid))
    out = {}
    for c in labels:
        estimate = estimate_offset(profiles[c], min_cases)
        median, why = median_profile(profiles[c], min_cases)
        sizes = [r for r in radii[c] if r > 0]
        out[c] = {"estimate": None if estimate is None else round(estimate, 3),
                  "offset": calibration_offset(estimate, rings[c]), "abstained": why or None,
                  "cases": sum(p is not None for p in profiles[c]), "rings": rings[c],
                  "radius": round(float(np.median(sizes)), 2) if sizes else None,
                  "profile": None if median is None else [None if np.isnan(v) else round(float(v), 4) for v in median]}
    return out


def _planes(seg: np.ndarray, label: int, ndim: int) -> List[tuple]:
    """Indices into ``seg`` (and, after the channel axis, into the image) of the planes the network sees that
    contain ``label``: the case itself, or for a 2D configuration of 3D data (one spatial axis more than the
    spacing; nnU-Net stores 2D images as one slice) up to :data:`SLICES_PER_CASE` evenly spaced slices."""
    if seg.ndim == ndim:
        return [()] if (seg == label).any() else []
    slices = np.flatnonzero((seg == label).reshape(seg.shape[0], -1).any(1))
    if not len(slices):
        return []
    chosen = slices[np.linspace(0, len(slices) - 1, min(len(slices), SLICES_PER_CASE)).astype(int)]
    return [(int(z),) for z in chosen]


def load_or_estimate(folder: str, key: dict, compute, log=None) -> Dict[int, dict]:
    """The offsets recorded in ``folder`` for the same ``key`` (cases, their files, spacing, labels), else
    ``compute()``'s, written atomically — a resumed run (``--c``) trains with the offsets it started with, unless
    the data they were estimated from changed (then ``log`` is told which part of the key differs)."""
    path = join(folder, OFFSETS_FILE)
    if isfile(path):
        with open(path) as fh:
            saved = json.load(fh)
        if saved.get("key") == key:
            return {int(c): v for c, v in saved["classes"].items()}
        if log is not None:
            old = saved.get("key") or {}
            changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            log(f"GSD boundary calibration: {path} was estimated with other {', '.join(changed)} "
                f"({'the preprocessed cases changed' if 'data' in changed else 'other cases or settings'}): "
                f"estimated again")
    classes = compute()
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(path, {"key": key, "classes": {str(c): v for c, v in classes.items()}})
    return classes


def run_boundary_offsets(trainer, setting: str) -> List[int]:
    """Per label value, the voxels boundary calibration moves that class's outline in an nnU-Net training run:
    ``setting``'s (the ``boundary_offset`` setting), or for "auto" estimated from the fold's training cases once,
    recorded in the output folder and logged with the reason when no label moves."""
    labels = [int(c) for c in trainer.label_manager.foreground_labels]
    given = parse_offset_setting(setting)
    if given is not None:
        return [0] + [given] * len(labels)
    tr_keys, _ = trainer.do_split()
    spacing = [float(s) for s in trainer.configuration_manager.spacing]
    # keyed to the training cases' files too: a fresh training after preprocessing other images must not reuse
    # the fold's old estimate (stamps only: estimating again from unchanged data gives the same offsets)
    stamps = [file_stamps(case_files(trainer.preprocessed_dataset_folder, i, with_segmentation=True))
              for i in sorted(tr_keys)]
    key = {"cases": len(tr_keys), "first": sorted(tr_keys)[:3], "spacing": spacing, "labels": labels,
           "data": hashlib.sha256(json.dumps(stamps).encode()).hexdigest()}
    if trainer.local_rank == 0:
        classes = load_or_estimate(trainer.output_folder, key, lambda: estimate_class_offsets(
            trainer.dataset_class(trainer.preprocessed_dataset_folder, tr_keys), tr_keys, labels, spacing),
            log=trainer.print_to_log_file)
    if trainer.is_ddp:
        torch.distributed.barrier()
        if trainer.local_rank != 0:
            classes = load_or_estimate(trainer.output_folder, key, lambda: None)
    for c in labels:
        v = classes[c]
        edge = (f"edge at {v['estimate']:+.2f} voxels from the outlines" if v["estimate"] is not None
                else f"no edge estimate, {v.get('abstained')}")
        rings = f" ({v['rings']} rings per side)" if "rings" in v else ""
        trainer.print_to_log_file(f"GSD boundary calibration, label {c}, {v['cases']} outlines: {edge}, labels "
                                  f"moved by {v['offset']}{rings}")
    offsets = [0] * (max(labels) + 1)
    for c in labels:
        offsets[c] = classes[c]["offset"]
    return offsets


def calibrated_targets(target: Union[torch.Tensor, Sequence[torch.Tensor]], offsets: Sequence[int],
                       spacing: Sequence[float], device: Optional[torch.device] = None
                       ) -> Union[torch.Tensor, List[torch.Tensor]]:
    """nnU-Net's training targets (``(B, 1, *spatial)``, or one per deep-supervision output, finest first) with
    the full-resolution labels shifted by ``offsets`` (:func:`~nnunet_gsd.method.calibration.shift_labels`) and
    every lower output's labels resized from them by nearest neighbour, as nnU-Net makes them — on ``device``
    (None: where the target is), so a training step shifts on the GPU, not on the host (~1.5 s per 3D batch).

    nnU-Net's own target downsampling (``DownsampleSegForDSTransform``) runs in the data loader, before the
    shift; the shifted labels need their lower outputs made again, by the same nearest-neighbour rule."""
    levels = [target] if isinstance(target, torch.Tensor) else list(target)
    full = shift_labels(levels[0][:, 0].to(device).long(), offsets, spacing)
    out = [full[:, None].to(levels[0].dtype)] + [resize_nearest(full, t.shape[2:])[:, None].to(t.dtype)
                                                  for t in levels[1:]]
    return out[0] if isinstance(target, torch.Tensor) else out
