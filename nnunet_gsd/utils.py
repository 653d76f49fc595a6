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
        raise UserError(f"dataset {dataset!r}: {e}. Check $nnUNet_raw / $nnUNet_preprocessed or the id") from None


def is_rgb(channel_names: Mapping[str, str]) -> bool:
    """True for a dataset whose channels are exactly R, G, B (one RGB PNG per case, e.g. Kvasir).

    The one rule used everywhere: SLIC in Lab space, colour overlays, previews.
    """
    names = [str(v).lower() for _, v in sorted(channel_names.items(), key=lambda kv: int(kv[0]))]
    return names in (["r", "g", "b"], ["red", "green", "blue"])
