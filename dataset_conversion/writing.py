"""Writing the nnU-Net raw dataset: image and label files, the target folder, and the atomic install.

A conversion writes into a hidden ``.DatasetNNN_Name.partial-PID`` folder beside the target and
renames it into place only when everything is written, so an interrupted run never leaves half a
dataset. A run killed outright (SIGKILL, power loss) cannot clean up after itself: the next
conversion into the same raw folder removes such leftovers once their process is gone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnunet_gsd.errors import UserError

from .model import DatasetSpec

_PARTIAL = re.compile(r"\.(Dataset\d{3}_.+)\.partial-(\d+)")


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


def write_json_atomic(path: Path, content: object) -> None:
    """``path`` holds either its old content or all of the new, never half (a reader such as nnU-Net's
    planner may look at it at any time)."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(content, indent=2))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def partial_folder(target: Path) -> Path:
    """The hidden folder this process writes ``target`` into."""
    return target.parent / f".{target.name}.partial-{os.getpid()}"


def remove_stale_partials(root: Path) -> list[Path]:
    """Remove every ``.DatasetNNN_….partial-PID`` in ``root`` whose process is gone; returns them.

    Folders of live processes (a conversion running in parallel) are left alone.
    """
    removed = []
    for p in sorted(root.glob(".Dataset*.partial-*")):
        m = _PARTIAL.fullmatch(p.name)
        if not m or not p.is_dir():
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def install(tmp: Path, target: Path, replaced: list[Path]) -> None:
    """Swap the finished folder in; the old dataset(s) of this id go only after the rename succeeded."""
    trash = []
    for i, old in enumerate(replaced):
        t = old.parent / f".{old.name}.old-{os.getpid()}-{i}"
        os.replace(old, t)
        trash.append(t)
    os.replace(tmp, target)
    for t in trash:
        shutil.rmtree(t, ignore_errors=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)
