"""Trainer variants: the paper's ablation family (Table 7), budgets, and the benchmark baselines.

Each GSD variant only sets class attributes of :class:`nnUNetTrainerGSD` (``gsd_*``, ``budget_*``: the
settings of :mod:`nnunet_gsd.settings`); the training step is shared. The baselines are stock nnU-Net
trainers with the budget settings (one of them on boundary-calibrated labels). Table 7 rows (Kvasir, S_R):
JoCoR 71.05 → +GDA 76.76 → +LR 78.74 → +SGLR 78.84 → +KT (= GSD) 80.04.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.loss.nnUNetTrainerCELoss import nnUNetTrainerCELoss
from nnunetv2.training.nnUNetTrainer.variants.network_architecture.nnUNetTrainerNoDeepSupervision import \
    nnUNetTrainerNoDeepSupervision

from nnunet_gsd.settings import paper_attributes
from nnunet_gsd.training.calibration import calibrated_targets, run_boundary_offsets
from nnunet_gsd.training.raters import RaterTrainerMixin
from nnunet_gsd.training.settings_mixin import SettingsMixin
from nnunet_gsd.training.trainer import nnUNetTrainerGSD


def with_paper_settings(cls: type) -> type:
    """``cls`` with every method setting at the paper's value (``Setting.paper``, :func:`paper_attributes`)."""
    for attribute, value in paper_attributes().items():
        setattr(cls, attribute, value)
    return cls


@with_paper_settings
class nnUNetTrainerGSDFaithful(nnUNetTrainerGSD):
    """GSD-Net exactly as the paper states it: every setting at its paper value (the settings table's ``paper``
    column, docs/decisions.md §12) — L_GDA without a Dice term, selection pooled over the batch (Eq. 5), every
    rejected pixel refined by the superpixel vote (Eq. 14), GDA weights, Knowledge Transfer, the given τ or the
    paper's 0.05, no deep supervision, no boundary calibration."""


# --- ablation family (paper Table 7), on the paper's rules --------------------------------------------
class nnUNetTrainerJoCoR(nnUNetTrainerGSDFaithful):
    """Table 7 row 1: two networks, small-loss selection, co-regularisation (L_pick) only."""
    gsd_use_gda = False
    gsd_refinement = "none"
    gsd_use_kt = False


class nnUNetTrainerJoCoRGDA(nnUNetTrainerJoCoR):
    """Table 7 row 2: + Geometric Distance-Aware weights."""
    gsd_use_gda = True


class nnUNetTrainerJoCoRGDALR(nnUNetTrainerJoCoRGDA):
    """Table 7 row 3: + label refinement per pixel (no superpixels)."""
    gsd_refinement = "pixel"


class nnUNetTrainerJoCoRGDASGLR(nnUNetTrainerJoCoRGDA):
    """Table 7 row 4: + superpixel-guided label refinement."""
    gsd_refinement = "superpixel"


class nnUNetTrainerJoCoRGDALRKT(nnUNetTrainerJoCoRGDALR):
    """+GDA +LR +KT: Knowledge Transfer with per-pixel refinement (full GSD is +SGLR +KT)."""
    gsd_use_kt = True


# --- budgets, in nnU-Net's style --------------------------------------------------------------------
class nnUNetTrainerGSD_5epochs(nnUNetTrainerGSD):
    budget_num_epochs = 5


class nnUNetTrainerGSD_50epochs(nnUNetTrainerGSD):
    budget_num_epochs = 50


class nnUNetTrainerGSD_100epochs(nnUNetTrainerGSD):
    """The paper's 100 epochs (with nnU-Net's 250 iterations per epoch and optimiser)."""
    budget_num_epochs = 100


class nnUNetTrainerGSD_paper(nnUNetTrainerGSD_100epochs):
    """The paper's optimisation (docs/decisions.md §1): SGD lr 5e-3, weight decay 1e-5, 100 epochs.

    The paper's batch size 16 is a plans choice: set ``batch_size`` in a plans variant.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 5e-3
        self.weight_decay = 1e-5


class nnUNetTrainerGSD_tiny(nnUNetTrainerGSD):
    """For tests and the demo: 4 epochs of 4 iterations, SGLR and KT from epoch 1 on."""
    budget_num_epochs = 4
    budget_num_iterations_per_epoch = 4
    budget_num_val_iterations_per_epoch = 2
    gsd_warmup_fraction = 0.25


# --- benchmark baselines -------------------------------------------------------------------------------
class nnUNetTrainerBudget(SettingsMixin, nnUNetTrainer):
    """Stock nnU-Net (Dice + CE, deep supervision) with the budget environment variables: the baseline users
    compare with, trained exactly as long as the GSD arms."""


class nnUNetTrainerCalibrated(nnUNetTrainerBudget):
    """Stock nnU-Net (one network, Dice + CE, deep supervision, nnU-Net's own budget unless the budget variables
    say otherwise) trained on boundary-calibrated labels — GSD's default ``boundary_offset="auto"``
    (docs/decisions.md §13) without the rest of GSD, at one network's cost. Where the labels' outlines sit
    systematically inside or outside the objects, this is what buys most of GSD's gain (docs/benchmarks.md)."""

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        self._offsets = run_boundary_offsets(self, "auto")
        super().on_train_start()

    def train_step(self, batch: dict) -> dict:
        if any(self._offsets):
            batch = dict(batch, target=calibrated_targets(batch["target"], self._offsets,
                                                          self.configuration_manager.spacing, self.device))
        return super().train_step(batch)


class nnUNetTrainerBudgetCalibrated(nnUNetTrainerCalibrated):
    """:class:`nnUNetTrainerCalibrated` under the name the benchmarks and their results use (the ablation of GSD's
    two networks)."""


class nnUNetTrainerRaterSampling(RaterTrainerMixin, nnUNetTrainerBudget):
    """Stock nnU-Net (as :class:`nnUNetTrainerBudget`) on a multi-rater set (labelsTr_A1 … labelsTr_An): each time
    a case is loaded, one of its raters is drawn and is the label (:mod:`nnunet_gsd.training.raters`)."""
    rater_mode = "sample"


class nnUNetTrainerSoftRaters(RaterTrainerMixin, nnUNetTrainerBudget):
    """Stock nnU-Net (as :class:`nnUNetTrainerBudget`) learning the fraction of raters per class of a multi-rater
    set: soft CE + soft Dice, deep supervision on area-averaged fractions (:mod:`nnunet_gsd.training.raters`)."""
    rater_mode = "soft"


class nnUNetTrainerSoftRatersCE(nnUNetTrainerSoftRaters):
    """:class:`nnUNetTrainerSoftRaters` with soft CE alone (no soft Dice): its optimum is the fraction of raters.
    Measured worse than Dice + CE (it under-segments; docs/benchmarks.md, Multi-rater training): a comparison,
    not a recommendation."""
    soft_dice_weight = 0.0


class nnUNetTrainerNoDeepSupervisionBudget(SettingsMixin, nnUNetTrainerNoDeepSupervision):
    """nnU-Net's nnUNetTrainerNoDeepSupervision (Dice + CE, one network) with the budget environment
    variables, so benchmark baselines train exactly as long as the GSD arms."""


class nnUNetTrainerCELossBudget(SettingsMixin, nnUNetTrainerCELoss):
    """nnU-Net's cross-entropy-only trainer without deep supervision, with the budget variables: the
    loss of the paper's "CE" baseline rows (one network, plain CE)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
