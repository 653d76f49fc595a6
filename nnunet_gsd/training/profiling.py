"""Optional per-phase timing of the training step (setting ``profile``, ``nnUNet_GSD_PROFILE=1``).

Off by default: timing a GPU phase needs a device synchronisation, which the training step must not
pay otherwise. With profiling on, each phase is bracketed by ``torch.cuda.synchronize`` (CUDA) so the
figures are real, and the trainer logs the mean milliseconds per phase at the end of each epoch.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator

import torch


class PhaseTimer:
    def __init__(self, device: torch.device, enabled: bool):
        self.device = device
        self.enabled = enabled
        self.totals: Dict[str, float] = defaultdict(float)
        self.counts: Dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.totals[name] += time.perf_counter() - start
        self.counts[name] += 1

    def mean_ms(self) -> Dict[str, float]:
        return {k: 1000 * self.totals[k] / self.counts[k] for k in self.totals}

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()
