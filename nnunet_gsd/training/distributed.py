"""The few cross-rank reductions GSD adds under DDP (``nnUNetv2_train ... -num_gpus N``).

Decided per rank, without collectives, as nnU-Net decides its own batch content per rank: the
small-loss threshold (each rank keeps the fraction R(e) of its own pixels) and the KT pairing (a
derangement within the rank's batch). A global threshold would need an all-gather of every pixel's
loss per step. Reduced across ranks, like nnU-Net's train loss: the per-epoch figures that are logged.
"""
from __future__ import annotations

import numpy as np
import torch.distributed as dist

from nnunet_gsd.utils import nanmean_or_nan


def all_ranks_nanmean(values: np.ndarray) -> float:
    """Mean over the values of every rank, ignoring NaN (a figure undefined for some batches)."""
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if dist.is_available() and dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, values)
        values = np.concatenate(gathered)
    return nanmean_or_nan(values)
