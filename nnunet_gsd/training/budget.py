"""Training budget (epochs × iterations) from class attributes or the environment.

nnU-Net's variants fix the budget in code (``nnUNetTrainer_5epochs``). Benchmarks need the same
budget for every arm without a class per budget, so these trainers also read
``nnUNet_GSD_NUM_EPOCHS``, ``nnUNet_GSD_NUM_ITERATIONS`` and ``nnUNet_GSD_NUM_VAL_ITERATIONS``
(the environment wins over the class attributes; unset keeps nnU-Net's 1000 × 250 / 50).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

BUDGET_ENVIRONMENT = {
    "num_epochs": "nnUNet_GSD_NUM_EPOCHS",
    "num_iterations_per_epoch": "nnUNet_GSD_NUM_ITERATIONS",
    "num_val_iterations_per_epoch": "nnUNet_GSD_NUM_VAL_ITERATIONS",
}


class BudgetMixin:
    """Put before the nnU-Net trainer class in the bases: ``class T(BudgetMixin, nnUNetTrainer)``."""

    budget_num_epochs: Optional[int] = None
    budget_num_iterations_per_epoch: Optional[int] = None
    budget_num_val_iterations_per_epoch: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        budget = {}
        for attribute, var in BUDGET_ENVIRONMENT.items():
            value = getattr(self, "budget_" + attribute)
            raw = os.environ.get(var, "").strip()
            if raw:
                if not raw.isdigit() or int(raw) < 1:
                    raise SystemExit(f"{self.__class__.__name__}: environment variable {var}={raw!r} must be a "
                                     f"positive integer; fix or unset it")
                value = int(raw)
            budget[attribute] = value
        super().__init__(plans, configuration, fold, dataset_json, device)
        for attribute, value in budget.items():
            if value is not None:
                setattr(self, attribute, value)
