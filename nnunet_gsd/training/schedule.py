"""The epoch's :class:`~nnunet_gsd.method.step.StepSchedule` from a run's settings: the method layer takes plain
values, never the settings module."""
from __future__ import annotations

import dataclasses

from nnunet_gsd.method.selection import retention_rate
from nnunet_gsd.method.step import StepSchedule
from nnunet_gsd.settings import GSDSettings, effective_tau


def step_schedule(settings: GSDSettings, epoch: int, num_epochs: int, threshold: float, warmup_epochs: int,
                  kt_warmup_epochs: int) -> StepSchedule:
    """The schedule of ``epoch``: every field named like a setting takes its value, then R(e) (Eq. 6, with
    :func:`effective_tau`), the epoch, T, SGLR only after ``warmup_epochs`` and KT only after ``kt_warmup_epochs``."""
    from_settings = {f.name: settings.values[f.name] for f in dataclasses.fields(StepSchedule)
                     if f.name in settings.values}
    return StepSchedule(**{
        **from_settings,
        "keep": retention_rate(epoch, num_epochs, effective_tau(settings), settings.ramp_fraction),
        "epoch": epoch, "num_epochs": num_epochs, "threshold": threshold,
        "refinement": settings.refinement if epoch >= warmup_epochs else "none",
        "use_kt": settings.use_kt and epoch >= kt_warmup_epochs,
    })
