"""One helper per shared job: atomic writes, NaN-aware means, dataset lookup, RGB detection.

Kept free of torch and nnU-Net imports at module level (the conversion package and the start-up hook's
neighbours import it cheaply).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np

from nnunet_gsd.errors import UserError

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted run never leaves half a file behind (resumable state, caches and checkpoints rely on
    it). The temporary name keeps ``path``'s suffix so writers that append one (``np.save``) or pick a
    format from it behave as they would on ``path``.
    """
    path = os.fspath(path)
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".{tail}.tmp-{os.getpid()}{os.path.splitext(tail)[1]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: PathLike, content: object, indent: int = 2) -> None:
    """Write JSON through :func:`atomic_path` (creating the parent folder)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(content, f, indent=indent, allow_nan=True)


def nanmean_or_nan(values: Union[Sequence[float], np.ndarray]) -> float:
    """Mean of the finite values; NaN (without numpy's "mean of empty slice" warning) when there are none."""
    arr = np.asarray(values, dtype=float)
    finite = np.isfinite(arr)
    return float(arr[finite].mean()) if finite.any() else float("nan")


def dataset_name(dataset: Union[str, int]) -> str:
    """``DatasetNNN_Name`` from an id or a name (nnU-Net's lookup), or a one-line :class:`UserError`."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    try:
        return maybe_convert_to_dataset_name(str(dataset))
    except (RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split())  # nnU-Net's message lists its folders on separate lines: keep one line
        raise UserError(f"dataset {dataset!r}: {reason.rstrip('.')}. Check $nnUNet_raw / $nnUNet_preprocessed or "
                        f"the id") from None


def raw_dataset_folder(dataset: PathLike) -> Path:
    """A raw dataset folder given as a path, or as an id or ``DatasetNNN_Name`` in ``$nnUNet_raw`` (looked up by
    :func:`dataset_name`): what every command that reads a raw dataset accepts."""
    path = Path(dataset)
    if path.is_dir():
        return path
    text = os.fspath(dataset)
    if not (text.isdigit() or (text.startswith("Dataset") and os.sep not in text)):
        raise UserError(f"{text} is neither a folder nor a dataset id or name: pass the raw dataset folder (the one "
                        f"holding dataset.json), its id or its DatasetNNN_Name")
    from nnunetv2.paths import nnUNet_raw
    if not nnUNet_raw.is_set():
        raise UserError(f"dataset {text}: nnUNet_raw is not set, so the id cannot be looked up: export it to the "
                        f"folder of your raw datasets, or pass the dataset folder itself")
    folder = Path(os.fspath(nnUNet_raw)) / dataset_name(text)
    if not folder.is_dir():
        raise UserError(f"dataset {text}: {folder} does not exist (only preprocessed or trained?): pass the raw "
                        f"dataset folder itself")
    return folder


def is_rgb(channel_names: Mapping[str, str]) -> bool:
    """True for a dataset whose channels are exactly R, G, B (one RGB PNG per case, e.g. Kvasir).

    The one rule used everywhere: SLIC in Lab space, colour overlays, previews.
    """
    names = [str(v).lower() for _, v in sorted(channel_names.items(), key=lambda kv: int(kv[0]))]
    return names in (["r", "g", "b"], ["red", "green", "blue"])
