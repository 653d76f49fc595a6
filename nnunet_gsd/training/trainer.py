"""nnUNetTrainerGSD: GSD-Net (SPEC §2–§3) composed from ``nnunet_gsd.method`` in nnU-Net's lifecycle.

Everything nnU-Net does stays nnU-Net's: plans, preprocessing, augmentation, data loading, the
optimizer, poly LR schedule, gradient clipping, validation, checkpoints, the logger. This class adds
the second network (:class:`DualNetwork`), the per-pixel maps the method needs (superpixels and, when
the dataset ships them, clean labels — :mod:`nnunet_gsd.training.data`), and the GSD training step.
Ablation variants switch components through the ``gsd_*`` class attributes (:mod:`.variants`); every
setting, its default and its environment variable is in :data:`nnunet_gsd.settings.SETTINGS`.
"""
from __future__ import annotations

import os
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
from torch._dynamo import OptimizedModule

from nnunet_gsd.dual_network import DualNetwork
from nnunet_gsd.errors import UserError
from nnunet_gsd.method.diagnostics import truth_diagnostics
from nnunet_gsd.method.gda import clipped_boundary_distance, default_threshold, gda_loss, gda_weights
from nnunet_gsd.method.losses import correlation_loss, kt_loss
from nnunet_gsd.method.noise_rate import search_loss
from nnunet_gsd.method.selection import pick_loss, retention_rate, small_loss_mask
from nnunet_gsd.method.superpixels import (decode_ids, fuse_probabilities, pixel_argmax, refine_labels,
                                           superpixel_argmax)
from nnunet_gsd.method.transfer import derangement, mix, transfer_masks
from nnunet_gsd.method.views import weak_intensity_view
from nnunet_gsd.settings import GROUPS
from nnunet_gsd.training.distributed import all_ranks_nanmean
from nnunet_gsd.training.data import (AuxChannelDataset, TargetLayout, build_clean_label_cache,
                                      build_superpixel_cache, has_clean_labels, with_aux_spatial_transform)
from nnunet_gsd.training.plots import plot_gsd_progress
from nnunet_gsd.training.profiling import PhaseTimer
from nnunet_gsd.training.settings_mixin import SettingsMixin
from nnunet_gsd.utils import atomic_path, is_rgb

#: figures reported by every training step, in this order (one host transfer per step)
STEP_FIGURES = ("loss", "loss_gda", "loss_kt", "loss_cor", "mean_weight", "kept_fraction")
TRUTH_FIGURES = ("selection_precision", "noise_rate_selected", "noise_rate_rejected", "noise_rate",
                 "refined_accuracy", "noisy_accuracy")


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
        # The GSD terms are defined at full resolution (SPEC §2, deep supervision).
        self.enable_deep_supervision = False
        self.layout: Optional[TargetLayout] = None
        self._dice = None
        self._timer = PhaseTimer(self.device, self.gsd.profile)

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

    def _unwrapped_network(self) -> DualNetwork:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def set_deep_supervision_enabled(self, enabled: bool):
        self._unwrapped_network().set_deep_supervision(enabled)

    def initialize(self):
        super().initialize()
        if self._do_i_compile():
            # nnU-Net compiles self.network, which is the DualNetwork: both networks are compiled
            self.print_to_log_file("GSD: torch.compile covers both networks (one DualNetwork module)")
        self._dice = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1,
                                                 batch_dice=self.configuration_manager.batch_dice,
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

    def _prepare_aux_maps(self) -> None:
        """Build (or reuse) the cached superpixels and clean labels before the data loaders start."""
        uses_superpixels = self.gsd.refinement == "superpixel" and self._warmup_epochs < self.num_epochs
        self.layout = TargetLayout(has_clean=has_clean_labels(self._raw_dataset_folder),
                                   has_superpixels=uses_superpixels)
        if self.local_rank == 0:
            identifiers = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
            if self.layout.has_superpixels:
                build_superpixel_cache(self.preprocessed_dataset_folder, self._aux_folder("superpixels"),
                                       self.dataset_class, identifiers,
                                       {"n_segments_per_256sq": self.gsd.slic_segments_per_256sq,
                                        "compactness": self.gsd.slic_compactness, "sigma": self.gsd.slic_sigma,
                                        "convert2lab": is_rgb(self.dataset_json["channel_names"])},
                                       default_num_processes)
            if self.layout.has_clean:
                build_clean_label_cache(self._raw_dataset_folder, self._aux_folder("clean_labels"), identifiers,
                                        self.plans_manager.plans, self.configuration_name, self.dataset_json,
                                        default_num_processes)
        if self.is_ddp:
            dist.barrier()

    def get_tr_and_val_datasets(self):
        datasets = super().get_tr_and_val_datasets()
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
        # only keys logged every epoch: nnU-Net's progress plot stops at the shortest logged list
        for key in ("retention",) + self._step_figure_names[1:]:
            self.logger.local_logger.my_fantastic_logging.setdefault("gsd_" + key, [])
        super().on_train_start()
        self.print_to_log_file(f"GSD settings: {self.gsd.summary()}; T={self._threshold}; "
                               f"warm-up epochs={self._warmup_epochs} of {self.num_epochs}; "
                               f"truth diagnostics={'on' if self.layout.has_clean else 'off (no labelsTr_clean/)'}; "
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
        """nnU-Net's step: unscale, clip the gradient norm of both networks together at 12, step."""
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def train_step(self, batch: dict) -> dict:
        """One GSD iteration (SPEC §2, Algorithm 1).

        L_total = L_GDA + L_KT + L_cor, but the refined labels, weights and masks that link the two
        halves carry no gradient, so the gradient of the sum is the sum of two separate backward passes.
        Running the first before the KT passes frees the activations of passes 1–2 before passes 3–4
        allocate theirs: peak memory is that of two passes, not four, with identical gradients. Under
        DDP the first backward runs in ``no_sync`` so gradients are all-reduced once per step.
        """
        timer, settings = self._timer, self.gsd
        epoch, num_epochs = self.current_epoch, self.num_epochs
        with timer.phase("to_device"):
            data = batch["data"].to(self.device, non_blocking=True)
            target = batch["target"].to(self.device, non_blocking=True)
            noisy = target[:, 0].long()
            view = weak_intensity_view(data)
        threshold = self._threshold
        keep = retention_rate(epoch, num_epochs, settings.tau, settings.ramp_fraction)
        after_warmup = epoch >= self._warmup_epochs
        refine = after_warmup and settings.refinement != "none"
        transfer = after_warmup and settings.use_kt

        self.optimizer.zero_grad(set_to_none=True)
        defer_sync = self.network.no_sync() if (self.is_ddp and transfer) else dummy_context()
        with defer_sync:
            with self._autocast():
                with timer.phase("passes_1_2"):
                    logits1, logits2 = self.network(data, view)
                with timer.phase("selection"):
                    # per-pixel terms in float32: CE/KL of fp16 logits lose the small losses
                    logits1, logits2 = logits1.float(), logits2.float()
                    pick = pick_loss(logits1, logits2, noisy, settings.lam)
                    clean_mask = small_loss_mask(pick.detach(), keep)
                with timer.phase("gda"):
                    if settings.use_gda:
                        weights = gda_weights(clipped_boundary_distance(noisy, threshold), epoch, num_epochs,
                                              threshold)
                    else:
                        weights = torch.ones_like(pick)
                    loss_gda = gda_loss(pick, clean_mask, weights)
                refined = noisy
                if refine:
                    with timer.phase("refinement"), torch.no_grad():
                        fused = fuse_probabilities(logits1.detach(), logits2.detach(),
                                                   torch.rand((), device=self.device))
                        if settings.refinement == "superpixel":
                            ids = decode_ids(target[:, self.layout.superpixel_channels])
                            proposal = superpixel_argmax(fused, ids)
                        else:
                            proposal = pixel_argmax(fused)
                        refined = refine_labels(noisy, clean_mask, proposal)
                loss_kt = loss_cor = loss_gda.new_zeros(())
                if refine and not transfer:
                    # Without KT the refined labels supervise the unmixed passes (ablation rows +LR, +SGLR)
                    # in L_KT's form (W-weighted CE + Dice), at no extra network pass.
                    with timer.phase("kt_losses"):
                        loss_kt = (kt_loss(logits1, refined, weights, self._dice)
                                   + kt_loss(logits2, refined, weights, self._dice))
            with timer.phase("backward_1_2"):
                self._backward(loss_gda + loss_kt)

        if transfer:
            with self._autocast():
                with timer.phase("kt_mixing"):
                    partner = derangement(data.shape[0], device=self.device)
                    masks = transfer_masks(refined, self.label_manager.num_segmentation_heads, settings.rho)
                    data_mix, view_mix = mix(data, masks, partner), mix(view, masks, partner)
                    refined_mix, weights_mix = mix(refined, masks[:, 0], partner), mix(weights, masks[:, 0], partner)
                with timer.phase("passes_3_4"):
                    mixed1, mixed2 = self.network(data_mix, view_mix)
                with timer.phase("kt_losses"):
                    mixed1, mixed2 = mixed1.float(), mixed2.float()
                    loss_kt = (kt_loss(mixed1, refined_mix, weights_mix, self._dice)
                               + kt_loss(mixed2, refined_mix, weights_mix, self._dice))
                    loss_cor = correlation_loss(mixed1, mixed2, weights_mix)
            with timer.phase("backward_3_4"):
                self._backward(loss_kt + loss_cor)
        with timer.phase("optimizer"):
            self._optimizer_step()
        loss = loss_gda + loss_kt + loss_cor

        figures = [loss, loss_gda, loss_kt, loss_cor, weights.mean(), clean_mask.float().mean()]
        if settings.log_search_loss:
            figures.append(search_loss(logits1.detach(), logits2.detach(), noisy, clean_mask))
        if self.layout.has_clean:
            truth = truth_diagnostics(noisy, target[:, self.layout.clean_channel].long(), clean_mask, refined)
            figures += [truth[k] for k in TRUTH_FIGURES]
        # one device→host transfer per step, as in nnU-Net's own train_step
        values = torch.stack([f.detach().float() for f in figures]).cpu().numpy()
        return dict(zip(self._step_figure_names, values))

    @property
    def _step_figure_names(self) -> tuple:
        return (STEP_FIGURES + (("search_loss",) if self.gsd.log_search_loss else ())
                + (TRUTH_FIGURES if self.layout.has_clean else ()))

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        epoch = self.current_epoch
        self.logger.log("gsd_retention", retention_rate(epoch, self.num_epochs, self.gsd.tau,
                                                        self.gsd.ramp_fraction), epoch)
        for key in self._step_figure_names[1:]:
            self.logger.log("gsd_" + key, all_ranks_nanmean(outputs[key]), epoch)
        line = ", ".join(f"{k}={self.logger.get_value('gsd_' + k, step=-1):.4f}"
                         for k in ("retention",) + STEP_FIGURES[1:] + (("search_loss",) if self.gsd.log_search_loss
                                                                       else ()))
        self.print_to_log_file(f"GSD: {line}")
        if self.layout.has_clean:
            self.print_to_log_file("GSD truth: " + ", ".join(
                f"{k}={self.logger.get_value('gsd_' + k, step=-1):.4f}" for k in TRUTH_FIGURES))
        if self._timer.enabled:
            self.print_to_log_file("GSD phase ms/iteration: " + ", ".join(
                f"{k}={v:.1f}" for k, v in self._timer.mean_ms().items()))

    def validation_step(self, batch: dict) -> dict:
        # nnU-Net's validation loss and pseudo Dice use the noisy label only (channel 0)
        batch = dict(batch, target=batch["target"][:, :1])
        return super().validation_step(batch)

    def on_epoch_end(self):
        epoch = self.current_epoch
        if self.gsd.keep_last_k and epoch >= self.num_epochs - self.gsd.keep_last_k:
            self._save_weights_only(join(self.output_folder, "last_k", f"checkpoint_epoch_{epoch:04d}.pth"))
        super().on_epoch_end()
        if self.local_rank == 0:
            plot_gsd_progress(self.logger.local_logger.my_fantastic_logging, self.output_folder)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed: a crash never leaves half a file."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)  # writes nothing (nnU-Net logs why)
        with atomic_path(filename) as tmp:
            super().save_checkpoint(tmp)

    def _save_weights_only(self, filename: str) -> None:
        """A checkpoint ``nnUNetv2_predict -chk`` can load, without optimizer state (cheap to keep K of)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return
        os.makedirs(os.path.dirname(filename), exist_ok=True)
        checkpoint = {
            "network_weights": self._unwrapped_network().state_dict(),
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
        }
        with atomic_path(filename) as tmp:
            torch.save(checkpoint, tmp)
