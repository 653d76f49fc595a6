"""nnUNetTrainerGSD: GSD-Net (docs/method.md) composed from ``nnunet_gsd.method`` in nnU-Net's lifecycle.

Everything nnU-Net does stays nnU-Net's: plans, preprocessing, augmentation, data loading, the
optimizer, poly LR schedule, gradient clipping, validation, checkpoints, the logger. This class adds
the second network (:class:`DualNetwork`), the per-pixel maps the method needs (superpixels and, when
the dataset ships them, clean labels — :mod:`nnunet_gsd.training.data`), and the GSD training step.
Ablation variants switch components through the ``gsd_*`` class attributes (:mod:`.variants`); every
setting, its default and its environment variable is in :data:`nnunet_gsd.settings.SETTINGS`.
"""
from __future__ import annotations

from os.path import join
from typing import List, Optional

import torch
import torch.distributed as dist
from nnunetv2.configuration import default_num_processes
from nnunetv2.paths import nnUNet_raw
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context, softmax_helper_dim1
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import autocast

from nnunet_gsd.dual_network import DualNetwork
from nnunet_gsd.errors import UserError
from nnunet_gsd.method.calibration import shift_labels
from nnunet_gsd.method.gda import default_threshold
from nnunet_gsd.method.selection import retention_rate
from nnunet_gsd.method.soft_labels import SemimetricSoftDiceLoss
from nnunet_gsd.method.step import (StepFigures, StepSchedule, deep_supervision_loss, selection_half, split_scales,
                                    step_figures, transfer_inputs, transfer_losses)
from nnunet_gsd.method.superpixels import decode_ids
from nnunet_gsd.method.views import weak_intensity_view
from nnunet_gsd.settings import GROUPS, effective_tau
from nnunet_gsd.training.distributed import all_ranks_nanmean
from nnunet_gsd.training.calibration import run_boundary_offsets
from nnunet_gsd.training.data import (AuxChannelDataset, TargetLayout, build_clean_label_cache,
                                      build_superpixel_cache, has_clean_labels, with_aux_spatial_transform)
from nnunet_gsd.training.plots import plot_gsd_progress
from nnunet_gsd.training.schedule import step_schedule
from nnunet_gsd.training.profiling import PhaseTimer
from nnunet_gsd.training.raters import (RaterDataset, RaterPlan, build_rater_cache, majority_label,
                                        plan_training_raters, rater_cache_folder, rater_fraction_map)
from nnunet_gsd.training.settings_mixin import SettingsMixin
from nnunet_gsd.utils import is_rgb


def uses_superpixels(settings, warmup_epochs: int, num_epochs: int) -> bool:
    """Whether a run needs the SLIC cache: SGLR refines after the warm-up, and only pixels the selection rejects —
    with τ = 0 it keeps every pixel (R(e) = 1), so the cache would be built and loaded for nothing."""
    return settings.refinement == "superpixel" and warmup_epochs < num_epochs and effective_tau(settings) > 0


class nnUNetTrainerGSD(SettingsMixin, nnUNetTrainer):
    """GSD-Net: two co-trained networks, small-loss selection, GDA, SGLR and Knowledge Transfer.

    Settings (``self.gsd``): the defaults of :data:`nnunet_gsd.settings.SETTINGS`, overridden by
    ``gsd_*`` / ``budget_*`` class attributes of a variant, then by ``nnUNet_GSD_*`` variables.
    """

    settings_groups = GROUPS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # Validate before nnU-Net creates output folders and log files: an unsupported dataset (or, in
        # SettingsMixin, a bad setting) should stop the run with one line, not a traceback.
        try:
            self._check_labels(PlansManager(plans).get_label_manager(dataset_json))
        except UserError as e:
            raise SystemExit(f"{self.__class__.__name__}: {e}") from None
        super().__init__(plans, configuration, fold, dataset_json, device)
        # nnU-Net's pipeline stays at full resolution (targets, validation loss): the GSD terms are defined there
        # (docs/decisions.md §1). With the deep_supervision setting the step itself supervises the lower outputs.
        self.enable_deep_supervision = False
        self.layout: Optional[TargetLayout] = None  # self._raters: set by _check_dataset
        self._dice = None
        self._offsets: List[int] = []  # boundary calibration per label value; all 0: none
        self._timer = PhaseTimer(self.device, self.gsd.profile)

    def _check_dataset(self, plans: dict, configuration: str, dataset_json: dict) -> None:
        """The raters setting needs the raw dataset's rater folders (SettingsMixin's hook, before nnU-Net writes)."""
        self._raters: RaterPlan = plan_training_raters(self.gsd.raters, plans, configuration, dataset_json,
                                                       f"raters={self.gsd.raters!r} ({self.gsd.sources['raters']})",
                                                       'set raters to "off" to train on labelsTr')

    @staticmethod
    def _check_labels(label_manager) -> None:
        if label_manager.has_regions:
            raise UserError("region-based labels (dataset.json 'labels' with tuples) are not supported by GSD: "
                            "its per-pixel terms need one class per pixel. Use plain integer labels.")
        if label_manager.has_ignore_label:
            raise UserError("datasets with an 'ignore' label are not supported by GSD yet: remove the ignore "
                            "label from dataset.json (or map it to background) to train with nnUNetTrainerGSD.")

    # ------------------------------------------------------------------ network
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> DualNetwork:
        """Two independently initialised copies of the planned network (the predictor calls this too)."""
        nets = [nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                         num_output_channels, enable_deep_supervision)
                for _ in range(2)]
        return DualNetwork(*nets)

    def set_deep_supervision_enabled(self, enabled: bool):
        self._unwrapped_network().set_deep_supervision(enabled)

    def initialize(self):
        super().initialize()
        if self._do_i_compile():
            # nnU-Net compiles self.network, which is the DualNetwork: both networks are compiled
            self.print_to_log_file("GSD: torch.compile covers both networks (one DualNetwork module)")
        # soft rater targets need the semimetric Dice (nnU-Net's sharpens them); on hard labels the two are equal
        dice_class = SemimetricSoftDiceLoss if self._raters.mode == "soft" else MemoryEfficientSoftDiceLoss
        self._dice = dice_class(apply_nonlin=softmax_helper_dim1, batch_dice=self.configuration_manager.batch_dice,
                                do_bg=False, smooth=1e-5, ddp=self.is_ddp)

    # ------------------------------------------------------------------ data
    @property
    def _raw_dataset_folder(self) -> Optional[str]:
        return join(nnUNet_raw, self.plans_manager.dataset_name) if nnUNet_raw.is_set() else None

    def _aux_folder(self, kind: str) -> str:
        return join(self.preprocessed_dataset_folder_base,
                    f"gsd_{kind}_{self.configuration_manager.data_identifier}")

    @property
    def _threshold(self) -> float:
        return self.gsd.threshold or default_threshold(self.configuration_manager.patch_size)

    @property
    def _warmup_epochs(self) -> int:
        return int(round(self.gsd.warmup_fraction * self.num_epochs))

    @property
    def _kt_warmup_epochs(self) -> int:
        return int(round(self.gsd.kt_warmup_fraction * self.num_epochs))

    def _prepare_aux_maps(self) -> None:
        """Build (or reuse) the cached superpixels and clean labels before the data loaders start."""
        self.layout = TargetLayout(has_clean=has_clean_labels(self._raw_dataset_folder),
                                   has_superpixels=uses_superpixels(self.gsd, self._warmup_epochs, self.num_epochs),
                                   num_raters=self._raters.num_raters if self._raters.mode == "soft" else 0)
        if self.local_rank == 0:
            identifiers = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
            reports = []
            try:
                if self.layout.has_superpixels:
                    reports.append(build_superpixel_cache(
                        self.preprocessed_dataset_folder, self._aux_folder("superpixels"), self.dataset_class,
                        identifiers, {"n_segments_per_256sq": self.gsd.slic_segments_per_256sq,
                                      "compactness": self.gsd.slic_compactness, "sigma": self.gsd.slic_sigma,
                                      "convert2lab": is_rgb(self.dataset_json["channel_names"])},
                        default_num_processes))
                if self.layout.has_clean:
                    reports.append(build_clean_label_cache(
                        self._raw_dataset_folder, self._aux_folder("clean_labels"), identifiers,
                        self.plans_manager.plans, self.configuration_name, self.dataset_json, default_num_processes,
                        self.preprocessed_dataset_folder, self.dataset_class))
                if self._raters.active:
                    reports.append(build_rater_cache(
                        self._raters.raw_folder, self._raters.folders, rater_cache_folder(self), identifiers,
                        self.plans_manager.plans, self.configuration_name, self.dataset_json, default_num_processes,
                        self.preprocessed_dataset_folder, self.dataset_class))
            except UserError as e:
                raise SystemExit(f"{self.__class__.__name__}: {e}") from None
            for report in reports:  # what was reused and what computed again, and why
                self.print_to_log_file(str(report))
        if self.is_ddp:
            dist.barrier()

    def get_tr_and_val_datasets(self):
        datasets = super().get_tr_and_val_datasets()
        if self._raters.active:  # training only: validation stays on labelsTr
            datasets = (RaterDataset(datasets[0], rater_cache_folder(self), self._raters.mode), datasets[1])
        return tuple(AuxChannelDataset(d, self.layout, self._aux_folder("clean_labels"),
                                       self._aux_folder("superpixels")) for d in datasets)

    def get_training_transforms(self, *args, **kwargs):
        transforms = super().get_training_transforms(*args, **kwargs)
        return with_aux_spatial_transform(transforms, self.layout) if self.layout.has_superpixels else transforms

    # ------------------------------------------------------------------ training
    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        self._prepare_aux_maps()
        # soft rater labels: no calibration (it moves hard labels; the fractions are learnt as the raters drew them)
        self._offsets = run_boundary_offsets(self, "off" if self.layout.num_raters else self.gsd.boundary_offset)
        # only keys logged every epoch: nnU-Net's progress plot stops at the shortest logged list
        for key in ("retention", "tau") + self._step_figure_names[1:]:
            self.logger.local_logger.my_fantastic_logging.setdefault("gsd_" + key, [])
        super().on_train_start()
        self._unwrapped_network().set_deep_supervision(self.gsd.deep_supervision)  # nnU-Net's call switched it off
        self.print_to_log_file(f"GSD settings: {self.gsd.summary()}; T={self._threshold}; "
                               f"warm-up epochs={self._warmup_epochs} (SGLR), "
                               f"{self._kt_warmup_epochs if self.gsd.use_kt else 'off'} (KT) of {self.num_epochs}; "
                               f"truth diagnostics={'on' if self.layout.has_clean else 'off (no labelsTr_clean/)'}; "
                               f"raters: {self._raters.describe()}; "
                               f"batch size={self.batch_size}; patch size={self.configuration_manager.patch_size}")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._timer.reset()

    def _autocast(self):
        # nnU-Net's choice: autocast on CUDA only (slow on CPU, unsupported on MPS)
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()

    def _optimizer_step(self) -> None:
        """nnU-Net's step for each network: unscale, clip each network's gradient norm at 12, step.

        One joint norm over both networks would clip each harder than nnU-Net clips its single network (their
        gradients are independent, so the joint norm is up to √2 times each one's)."""
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
        dual = self._unwrapped_network()
        for net in (dual.net1, dual.net2):
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def train_step(self, batch: dict) -> dict:
        """One GSD iteration (Algorithm 1, :mod:`nnunet_gsd.method.step`). The halves are linked only by
        gradient-free labels and weights, so two backward passes give the gradient of L_GDA + L_KT + L_cor at
        the peak memory of two passes; under DDP the first runs in ``no_sync`` (one all-reduce per step)."""
        timer, schedule = self._timer, self._schedule()
        with timer.phase("to_device"):
            data = batch["data"].to(self.device, non_blocking=True)
            target = batch["target"].to(self.device, non_blocking=True)
        with timer.phase("inputs"):  # x', the calibrated labels and the superpixel ids: the method's, not transfer
            annotated, view = target[:, 0].long(), weak_intensity_view(data)
            soft = None
            if self.layout.num_raters:  # soft rater labels: their fractions, and the majority as nGT
                soft = rater_fraction_map(target[:, self.layout.rater_channels],
                                          self.label_manager.num_segmentation_heads)
                annotated = majority_label(soft)
            calibrated = (shift_labels(annotated, self._offsets, self.configuration_manager.spacing)
                          if any(self._offsets) else annotated)
            ids = decode_ids(target[:, self.layout.superpixel_channels]) if self.layout.has_superpixels else None
        self.optimizer.zero_grad(set_to_none=True)
        with self.network.no_sync() if (self.is_ddp and schedule.use_kt) else dummy_context():
            with self._autocast():
                with timer.phase("passes_1_2"):
                    (logits1, low1), (logits2, low2) = map(split_scales, self.network(data, view))
                with timer.phase("selection"):  # per-pixel terms in float32: fp16 CE/KL lose the small losses
                    half = selection_half(logits1.float(), logits2.float(), calibrated, ids, schedule, self._dice,
                                          soft=soft)
                    loss_ds = deep_supervision_loss(low1, low2, half.target, half.weights, half.supervised, self._dice)
                    loss_first = half.loss + loss_ds
            with timer.phase("backward_1_2"):
                self._backward(loss_first)
        loss_kt = loss_cor = mixed_ds = loss_second = half.loss.new_zeros(())
        if schedule.use_kt:
            with self._autocast():
                with timer.phase("kt_mixing"):
                    mixed = transfer_inputs(data, view, half, self.label_manager.num_segmentation_heads, schedule.rho,
                                            prior_correction=schedule.kt_prior_correction)
                with timer.phase("passes_3_4"):
                    (mixed1, low1), (mixed2, low2) = map(split_scales, self.network(mixed.data, mixed.view))
                with timer.phase("kt_losses"):
                    loss_kt, loss_cor = transfer_losses(mixed1.float(), mixed2.float(), mixed, self._dice)
                    mixed_ds = deep_supervision_loss([mixed.adjust(x) for x in low1], [mixed.adjust(x) for x in low2],
                                                     mixed.labels, mixed.weights, mixed.trusted, self._dice)
                    loss_second = loss_kt + loss_cor + mixed_ds
            with timer.phase("backward_3_4"):
                self._backward(loss_second)
        with timer.phase("optimizer"):
            self._optimizer_step()
        clean = target[:, self.layout.clean_channel].long() if self.layout.has_clean else None
        figures = step_figures(half, loss_kt, loss_cor, loss_ds + mixed_ds, loss_first + loss_second, calibrated, clean,
                               annotated, (logits1.float(), logits2.float()) if self.gsd.log_search_loss else None
                               ).values()
        # one device→host transfer per step, as in nnU-Net's own train_step
        values = torch.stack([v.detach().float() for v in figures.values()]).cpu().numpy()
        return dict(zip(figures.keys(), values))

    def _schedule(self) -> StepSchedule:
        return step_schedule(self.gsd, self.current_epoch, self.num_epochs, self._threshold, self._warmup_epochs,
                               self._kt_warmup_epochs)

    @property
    def _step_figure_names(self) -> tuple:
        return StepFigures.names(search=self.gsd.log_search_loss, truth=self.layout.has_clean)

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        epoch = self.current_epoch
        tau = effective_tau(self.gsd)
        self.logger.log("gsd_retention", retention_rate(epoch, self.num_epochs, tau, self.gsd.ramp_fraction), epoch)
        self.logger.log("gsd_tau", tau, epoch)
        for key in self._step_figure_names[1:]:
            self.logger.log("gsd_" + key, all_ranks_nanmean(outputs[key]), epoch)
        if self.gsd.tau is None and epoch == max(self._warmup_epochs - 1, 0):
            # Not used as τ: with networks this young it counts their own errors as much as label noise
            # (docs/decisions.md §8; the measurements in docs/benchmarks.md)
            self.print_to_log_file(
                f"GSD: no τ given (dataset.json \"gsd\": {{\"tau\"}} or nnUNet_GSD_TAU): training with τ = "
                f"{tau:g}. Both networks confidently contradict "
                f"{100 * self.logger.get_value('gsd_disagreement', step=-1):.1f} % of the labels this epoch (an "
                f"upper bound on the noise rate: it includes their own errors); "
                f"`nnunet_gsd search-tau` chooses τ from the data")
        names = StepFigures.names(search=self.gsd.log_search_loss, truth=False)[1:]
        line = ", ".join(f"{k}={self.logger.get_value('gsd_' + k, step=-1):.4f}" for k in ("tau", "retention") + names)
        self.print_to_log_file(f"GSD: {line}")
        if self.layout.has_clean:
            self.print_to_log_file("GSD truth: " + ", ".join(
                f"{k}={self.logger.get_value('gsd_' + k, step=-1):.4f}" for k in StepFigures.TRUTH))
        if self._timer.enabled:
            self.print_to_log_file("GSD phase ms/iteration: " + ", ".join(
                f"{k}={v:.1f}" for k, v in self._timer.mean_ms().items()))

    def validation_step(self, batch: dict) -> dict:
        # nnU-Net's validation loss and pseudo Dice use the noisy label only (channel 0)
        batch = dict(batch, target=batch["target"][:, :1])
        return super().validation_step(batch)

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0:
            plot_gsd_progress(self.logger.local_logger.my_fantastic_logging, self.output_folder)
