"""DDP on CPU with a 2-process gloo group: nnUNetTrainerGSD.train_step itself, and the logged reductions.

nnU-Net's own DDP path needs CUDA (NCCL); what GSD adds is checked here with the trainer's own step: both networks
live in one DDP-wrapped module, with Knowledge Transfer the first backward pass runs in ``no_sync`` and the second
all-reduces, and every rank must end with the cross-rank mean of the update each rank's batch gives on one
process (the step without DDP, itself checked against one backward pass of the whole loss in test_train_step.py).
The Dice term is the one ``initialize()`` builds without a process group (batch Dice per rank).
"""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_gsd.training.distributed import all_ranks_nanmean
from nnunet_gsd.training.variants import nnUNetTrainerGSD_tiny
from stand_ins import TrainerWithKT, make_batch, nnunet_folders, parameters, set_tau, stepping_trainer

WORLD = 2
TRAINERS = {"no KT (one backward pass)": nnUNetTrainerGSD_tiny, "KT (two backward passes)": TrainerWithKT}


def step_update(trainer, rank: int) -> tuple[np.ndarray, float]:
    """(minus the change of every parameter, the returned loss) of one train_step on rank ``rank``'s batch."""
    before = parameters(trainer.network)
    torch.manual_seed(10 + rank)  # the weak view, α, the KT partner: as on one process with the same seed
    out = trainer.train_step(make_batch(seed=rank))
    moved = [b - a for a, b in zip(parameters(trainer.network), before)]
    return torch.cat([m.flatten() for m in moved]).numpy(), float(out["loss"])


def worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # built before the process group, on a fold of its own: nnU-Net's __init__ would pick a CUDA device under DDP
    trainers = {name: stepping_trainer(cls, fold=rank) for name, cls in TRAINERS.items()}
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, trainer in trainers.items():
            trainer.is_ddp = True
            trainer.network = DDP(trainer.network)
            trainer.optimizer = torch.optim.SGD(trainer.network.parameters(), lr=1.0)
            results[name] = step_update(trainer, rank)
        mean = all_ranks_nanmean(np.array([1.0, np.nan]) if rank == 0 else np.array([3.0, 5.0]))
        queue.put((rank, results, mean))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_train_step_gives_every_rank_the_mean_update(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("nnUNet_GSD_"):
            monkeypatch.delenv(key)
    nnunet_folders(tmp_path, monkeypatch.setenv)  # the spawned ranks inherit the environment
    set_tau(0.25)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = dict((rank, (r, m)) for rank, r, m in (queue.get(timeout=600) for _ in range(WORLD)))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    for name, cls in TRAINERS.items():
        single = [step_update(stepping_trainer(cls), rank) for rank in range(WORLD)]
        assert not np.allclose(single[0][0], single[1][0])  # the ranks' batches differ: averaging is visible
        expected = np.mean([update for update, _ in single], axis=0)  # DDP averages the gradients over ranks
        for rank in range(WORLD):
            update, loss = results[rank][0][name]
            np.testing.assert_allclose(update, expected, rtol=1e-4, atol=1e-6, err_msg=f"{name}, rank {rank}")
            assert loss == pytest.approx(single[rank][1], rel=1e-5)  # each rank logs its own batch's loss
    for rank in range(WORLD):
        assert results[rank][1] == pytest.approx(3.0)  # nanmean of [1, nan, 3, 5]
