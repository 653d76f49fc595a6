"""DDP on CPU with a 2-process gloo group: the GSD step's two backward passes and the logged reductions.

nnU-Net's own DDP path needs CUDA (NCCL); what GSD adds is checked here: both networks live in one
DDP-wrapped module, the first backward runs in ``no_sync`` and the second all-reduces, which must give
every rank the cross-rank mean of the gradient of L_GDA + L_KT (the single-backward reference).
"""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_gsd.dual_network import DualNetwork
from nnunet_gsd.training.distributed import all_ranks_nanmean

WORLD = 2


def make_network() -> DualNetwork:
    torch.manual_seed(0)
    return DualNetwork(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1))


def rank_batch(rank: int):
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(2, 1, 8, 8, generator=g)
    return x, x + 0.1 * torch.randn(2, 1, 8, 8, generator=g), torch.randint(0, 2, (2, 8, 8), generator=g)


def two_part_losses(net, x, view, y):
    """Part 1 (passes 1–2) and part 2 (passes 3–4 on a mix) joined only through detached tensors."""
    l1, l2 = net(x, view)
    part1 = nn.functional.cross_entropy(l1, y) + nn.functional.cross_entropy(l2, y)
    refined = (l1.detach() + l2.detach()).argmax(1)
    m1, m2 = net(x.flip(0), view.flip(0))
    part2 = nn.functional.cross_entropy(m1, refined.flip(0)) + nn.functional.cross_entropy(m2, refined.flip(0))
    return part1, part2


def grads(net) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        net = DDP(make_network())
        x, view, y = rank_batch(rank)
        with net.no_sync():
            l1, l2 = net(x, view)
            part1 = nn.functional.cross_entropy(l1, y) + nn.functional.cross_entropy(l2, y)
            part1.backward()
        refined = (l1.detach() + l2.detach()).argmax(1)
        m1, m2 = net(x.flip(0), view.flip(0))
        (nn.functional.cross_entropy(m1, refined.flip(0)) + nn.functional.cross_entropy(m2, refined.flip(0))).backward()
        mean = all_ranks_nanmean(np.array([1.0, np.nan]) if rank == 0 else np.array([3.0, 5.0]))
        queue.put((rank, grads(net.module).numpy(), mean))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_backward_ddp_step_matches_single_backward_reference():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = dict((rank, (g, m)) for rank, g, m in (queue.get(timeout=150) for _ in range(WORLD)))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    reference = []
    for rank in range(WORLD):
        net = make_network()
        part1, part2 = two_part_losses(net, *rank_batch(rank))
        (part1 + part2).backward()  # one backward of the summed loss, per rank
        reference.append(grads(net).numpy())
    expected = np.mean(reference, axis=0)  # DDP averages gradients over ranks
    for rank in range(WORLD):
        np.testing.assert_allclose(results[rank][0], expected, rtol=1e-5, atol=1e-6)
        assert results[rank][1] == pytest.approx(3.0)  # nanmean of [1, nan, 3, 5]
