"""Training from every rater of a multi-rater set (issue 23, item 2), through nnU-Net's own data pipeline.

The multi-rater converters write every rater's training labels beside ``labelsTr/``, as
``labelsTr_A1/ … labelsTr_An/`` (same case ids and file format). Here they are

* preprocessed once per case with nnU-Net's own preprocessor (crop, transposition, resampling of the plans) and
  cached beside the preprocessed data as one ``(R, *spatial)`` int16 array, keyed to the files it came from like
  the other caches (:mod:`nnunet_gsd.training.data`): a changed rater file, image or preprocessed case is
  computed again;
* put into the segmentation by :class:`RaterDataset` when a case is loaded, so nnU-Net's cropping, padding,
  rotation, scaling and mirroring move them like the label (as nnU-Net moves the cascade's previous stage):

  - ``"sample"`` (*rater sampling*): each time a case is loaded — each sample of each batch — one of its raters
    is drawn uniformly and replaces the label (channel 0), so every trainer trains on it unchanged;
  - ``"soft"`` (*soft labels*): the raters follow the label as channels ``1 … R``; the trainer turns them into the
    per-class fraction of raters (:func:`rater_fraction_map`) and learns it with soft CE + soft Dice
    (:class:`~nnunet_gsd.method.soft_labels.SoftDCandCELoss`).

Deep supervision with soft labels: nnU-Net's ``DownsampleSegForDSTransform`` (batchgeneratorsv2) cannot make the
lower targets. It resizes the segmentation channels with ``interpolate(mode="nearest-exact")``: right for integer
labels, but a fraction target of a lower output must be the *area average* of the fractions it covers, and those
exist only after the raters' integer maps are expanded per class (averaging the integer rater maps themselves
would mean nothing). So the soft trainers leave it out of the training pipeline and build the lower targets on the
device by area pooling (:func:`soft_target_pyramid`), at the shapes the transform would have produced.

On a dataset without rater folders nothing of this runs unless asked for, and then the run stops with one line
(:func:`plan_raters`); with a single rater folder the dataset trains as a one-rater set from ``labelsTr/``.
"""
from __future__ import annotations

import copy
import os
import glob
import re
from dataclasses import dataclass
from os.path import basename, isdir, isfile, join
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nnunet_gsd.errors import UserError
from nnunet_gsd.method.soft_labels import SoftDCandCELoss
from nnunet_gsd.settings import RATER_MODES
from nnunet_gsd.training.data import (CACHE_VERSION, CacheJob, CacheReport, CaseWrapper, _load_dataset_class,
                                      _update_cache, _update_case, case_files, clean_label_params)

RATER_FOLDER_PATTERN = "labelsTr_A*"
CONVERT_HINT = ("convert it with a multi-rater converter (`nnunet_gsd convert lidc` or `mmis2024`), which writes "
                "every rater's labels to labelsTr_A1 … labelsTr_An")


# ------------------------------------------------------------------ which raters a run trains from
def rater_folders(raw_dataset_folder: str) -> List[str]:
    """The rater folders ``labelsTr_A1 … labelsTr_An`` of a raw dataset, in the raters' order (A2 before A10)."""
    folders = [basename(p) for p in glob.glob(join(glob.escape(raw_dataset_folder), RATER_FOLDER_PATTERN))
               if isdir(p)]
    return sorted(folders, key=lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)])


@dataclass(frozen=True)
class RaterPlan:
    """How a run uses the raters: ``mode`` as trained ("off" with fewer than two rater folders), what was asked."""

    requested: str
    mode: str
    raw_folder: Optional[str] = None
    folders: Tuple[str, ...] = ()
    note: Optional[str] = None  # a line for the training log

    @property
    def active(self) -> bool:
        return self.mode != "off"

    @property
    def num_raters(self) -> int:
        return len(self.folders)

    def describe(self) -> str:
        if not self.active:
            return self.note or "off"
        return f"{self.mode} over {self.num_raters} raters ({', '.join(self.folders)} of {self.raw_folder})"


def plan_raters(mode: str, dataset_name: str, asked_by: str, alternative: str = "") -> RaterPlan:
    """The raters a run trains from; ``asked_by`` says where ``mode`` came from and ``alternative`` how else to
    train (both for the one-line error).

    UserError when a rater mode is asked for and the raw dataset has no ``labelsTr_A*`` folders.
    """
    if mode not in RATER_MODES:
        raise UserError(f"{asked_by}: raters {mode!r} is not one of {RATER_MODES}")
    if mode == "off":
        return RaterPlan(mode, "off")
    from nnunetv2.paths import nnUNet_raw
    if not nnUNet_raw.is_set():
        raise UserError(f"{asked_by} trains from every rater's labels, which live in the raw dataset "
                        f"(labelsTr_A1 … labelsTr_An), but nnUNet_raw is not set: set it")
    raw = join(os.fspath(nnUNet_raw), dataset_name)
    folders = tuple(rater_folders(raw)) if isdir(raw) else ()
    if not folders:
        raise UserError(f"{asked_by} trains from every rater's labels, but {raw} has no rater folders "
                        f"(labelsTr_A1 … labelsTr_An beside labelsTr): {CONVERT_HINT}"
                        + (f"; or {alternative}" if alternative else ""))
    if len(folders) == 1:
        return RaterPlan(mode, "off", raw, folders,
                         note=f"off: {raw} has one rater folder ({folders[0]}), so it trains as a single-rater set "
                              f"from labelsTr")
    return RaterPlan(mode, mode, raw, folders)


def plan_training_raters(mode: str, plans: dict, configuration: str, dataset_json: dict, asked_by: str,
                         alternative: str) -> RaterPlan:
    """:func:`plan_raters` for a trainer's plans, with soft labels checked against its labels and configuration."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plan = plan_raters(mode, plans["dataset_name"], asked_by, alternative)
    if plan.mode == "soft":
        manager = PlansManager(plans)
        check_soft_labels(manager.get_label_manager(dataset_json), manager.get_configuration(configuration))
    return plan


def check_soft_labels(label_manager, configuration_manager) -> None:
    """UserError where soft rater labels cannot be learnt: region labels, an ignore label (no fraction to learn),
    and the cascade (its previous-stage segmentation is expected as channel 1)."""
    if label_manager.has_regions:
        raise UserError("soft rater labels need one class per pixel; region-based labels (dataset.json 'labels' "
                        "with tuples) are not supported: use rater sampling")
    if label_manager.has_ignore_label:
        raise UserError("soft rater labels with an 'ignore' label are not supported (an ignored pixel has no "
                        "fraction of raters): use rater sampling, or remove the ignore label")
    if configuration_manager.previous_stage_name is not None:
        raise UserError("training from raters does not support cascade configurations (the previous stage's "
                        "segmentation travels as channel 1): train a full-resolution configuration")


# ------------------------------------------------------------------ the cache
def _check_rater_label(path: str, seg: np.ndarray, image_shape: tuple, labels: Sequence[int]) -> None:
    if tuple(seg.shape[1:]) != tuple(image_shape):
        raise UserError(f"rater label {path} has shape {tuple(seg.shape[1:])}, its case's images "
                        f"{tuple(image_shape)}: every rater's label must have its image's shape; fix the file or "
                        f"convert the dataset again")
    unknown = np.setdiff1d(np.unique(seg), np.asarray(labels))
    if unknown.size:
        raise UserError(f"rater label {path} has label values {[int(v) for v in unknown[:8]]} that dataset.json's "
                        f"labels ({[int(v) for v in labels]}) do not define: fix the file or convert the dataset "
                        f"again")


def _rater_labels(image_files: List[str], rater_files: List[str], plans: dict, dataset_json: dict,
                  configuration: str, dataset_class_path: str, preprocessed_folder: str,
                  identifier: str) -> np.ndarray:
    """Every rater's label of one case, preprocessed by nnU-Net's own preprocessor: ``(R, *spatial)`` int16."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    labels = plans_manager.get_label_manager(dataset_json).all_labels
    reader = plans_manager.image_reader_writer_class()
    data, properties = reader.read_images(image_files)  # read once; run_case_npy copies what it changes
    maps = []
    for path in rater_files:
        seg, _ = reader.read_seg(path)
        _check_rater_label(path, seg, data.shape[1:], labels)
        _, out, _ = preprocessor.run_case_npy(data, seg, copy.deepcopy(properties), plans_manager,
                                              configuration_manager, dataset_json)
        maps.append(out[0])
    case = _load_dataset_class(dataset_class_path)(preprocessed_folder, [identifier]).load_case(identifier)[1]
    if tuple(maps[0].shape) != tuple(case.shape[1:]):
        raise UserError(f"rater label {rater_files[0]} preprocesses to shape {tuple(maps[0].shape)}, the "
                        f"preprocessed case {identifier} has {tuple(case.shape[1:])}: the raw images changed after "
                        f"nnUNetv2_plan_and_preprocess ran; run it again")
    return np.stack(maps).astype(np.int16)


def _rater_job(job: CacheJob) -> str:
    return _update_case(job, _rater_labels)


def build_rater_cache(raw_dataset_folder: str, folders: Sequence[str], cache_folder: str,
                      identifiers: Sequence[str], plans: dict, configuration: str, dataset_json: dict,
                      num_processes: int, preprocessed_folder: str, dataset_class: type) -> CacheReport:
    """Every rater's training labels preprocessed exactly like ``labelsTr/`` (one ``(R, *spatial)`` map per case).

    Each map is kept until one of its rater files, its raw images, its preprocessed case or the plans'
    preprocessing change; other rater folders discard the cache. Every folder must hold every training case.
    """
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    ending = dataset_json["file_ending"]

    def rater_files(identifier: str) -> List[str]:
        return [join(raw_dataset_folder, folder, identifier + ending) for folder in folders]

    for folder in folders:
        missing = [i for i in identifiers if not isfile(join(raw_dataset_folder, folder, i + ending))]
        if missing:
            raise UserError(f"rater label {join(raw_dataset_folder, folder, missing[0] + ending)} is missing "
                            f"({len(missing)} of {len(identifiers)} training cases lack one in {folder}/): every "
                            f"rater folder must hold one label per training case; convert the dataset again with "
                            f"its multi-rater converter, or remove {folder}/")
    files = get_filenames_of_train_images_and_targets(raw_dataset_folder, dataset_json)
    params = {"version": CACHE_VERSION, "kind": "raters", "configuration": configuration, "raters": list(folders),
              **clean_label_params(plans, configuration)}
    class_path = f"{dataset_class.__module__}.{dataset_class.__name__}"
    return _update_cache(
        cache_folder, "rater labels", params, identifiers,
        lambda i: [*files[i]["images"], *rater_files(i), *case_files(preprocessed_folder, i)],
        lambda i: (files[i]["images"], rater_files(i), plans, dataset_json, configuration, class_path,
                   preprocessed_folder, i),
        _rater_job, num_processes)


def rater_cache_folder(trainer) -> str:
    """Where a trainer's rater cache lives: beside the preprocessed data, one per data identifier (like GSD's)."""
    return join(trainer.preprocessed_dataset_folder_base,
                f"gsd_raters_{trainer.configuration_manager.data_identifier}")


def prepare_rater_cache(trainer, plan: RaterPlan, cache_folder: str) -> None:
    """Build (or reuse) the rater cache on rank 0 before the data loaders start, and log what it did."""
    import torch.distributed as dist
    from nnunetv2.configuration import default_num_processes
    if trainer.local_rank == 0:
        identifiers = trainer.dataset_class.get_identifiers(trainer.preprocessed_dataset_folder)
        try:
            report = build_rater_cache(plan.raw_folder, plan.folders, cache_folder, identifiers,
                                       trainer.plans_manager.plans, trainer.configuration_name, trainer.dataset_json,
                                       default_num_processes, trainer.preprocessed_dataset_folder,
                                       trainer.dataset_class)
        except UserError as e:
            raise SystemExit(f"{trainer.__class__.__name__}: {e}") from None
        trainer.print_to_log_file(str(report))
    if trainer.is_ddp:
        dist.barrier()


# ------------------------------------------------------------------ the raters in the data pipeline
class RaterDataset(CaseWrapper):
    """An nnU-Net dataset whose ``load_case`` puts the case's raters into the segmentation (see the module doc)."""

    def __init__(self, base, cache_folder: str, mode: str):
        assert mode in ("sample", "soft"), mode
        super().__init__(base)
        self.cache_folder = cache_folder
        self.mode = mode

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.base.load_case(identifier)
        raters = np.load(join(self.cache_folder, identifier + ".npy"), mmap_mode="r")
        if tuple(raters.shape[1:]) != tuple(seg.shape[1:]):
            raise RuntimeError(f"cached rater labels of case {identifier} have shape {raters.shape[1:]}, the "
                               f"preprocessed case {seg.shape[1:]}: the data was preprocessed again while this "
                               f"training ran; restart it (the stale maps are then computed again)")
        if self.mode == "sample":
            # numpy's global generator, as nnU-Net's data loader draws cases and patches: each data-augmentation
            # worker seeds it (batchgenerators' producer), the single-threaded loader uses the main process's
            k = np.random.randint(raters.shape[0])  # noqa: NPY002
            return data, np.array(raters[k:k + 1], dtype=np.int16), seg_prev, properties  # a copy: the map is read-only
        return data, np.concatenate((np.asarray(seg, dtype=np.int16), np.asarray(raters, dtype=np.int16))), \
            seg_prev, properties


# ------------------------------------------------------------------ soft targets
def rater_fraction_map(rater_maps: Tensor, num_classes: int) -> Tensor:
    """``(B, R, *spatial)`` integer rater maps → ``(B, num_classes, *spatial)`` float32 fraction of raters per class.

    :func:`~nnunet_gsd.method.soft_labels.rater_fractions` without its range check, which would synchronise host
    and device every step (the cache checks the label values once)."""
    labels = rater_maps.long()
    counts = torch.zeros((labels.shape[0], num_classes, *labels.shape[2:]), dtype=torch.float32,
                         device=labels.device)
    counts.scatter_add_(1, labels, torch.ones(labels.shape, dtype=torch.float32, device=labels.device))
    return counts / labels.shape[1]


def majority_label(fractions: Tensor) -> Tensor:
    """``(B, *spatial)`` long: the class most raters gave a pixel; ties go to the highest label, as in the
    converters' ``--raters majority`` (2 of 4 raters make a binary pixel foreground)."""
    return fractions.shape[1] - 1 - torch.flip(fractions, (1,)).argmax(1)


def deep_supervision_shapes(spatial: Sequence[int], scales: Optional[Sequence]) -> List[Tuple[int, ...]]:
    """The target shape of each output, as nnU-Net's ``DownsampleSegForDSTransform`` computes it."""
    if scales is None:
        return [tuple(spatial)]
    shapes = []
    for s in scales:
        s = list(s) if isinstance(s, (tuple, list)) else [s] * len(spatial)
        shapes.append(tuple(round(i * j) for i, j in zip(spatial, s)))
    return shapes


def soft_target_pyramid(fractions: Tensor, shapes: Sequence[Sequence[int]]) -> List[Tensor]:
    """The soft target at each deep-supervision shape: the full-resolution fractions, area-averaged down
    (each lower pixel: the mean fraction over the pixels it covers)."""
    return [fractions if tuple(shape) == tuple(fractions.shape[2:])
            else F.interpolate(fractions, size=tuple(shape), mode="area") for shape in shapes]


class SoftRaterLoss(SoftDCandCELoss):
    """Soft CE + soft Dice that also takes nnU-Net's integer targets ``(B, 1, *spatial)`` (validation, from
    ``labelsTr``), one-hot encoded: on them it is nnU-Net's ``DC_and_CE_loss``."""

    def forward(self, net_output: Tensor, target: Tensor) -> Tensor:
        if not target.is_floating_point():
            target = F.one_hot(target[:, 0].long(), net_output.shape[1]).movedim(-1, 1).to(torch.float32)
        return super().forward(net_output, target)


# ------------------------------------------------------------------ stock nnU-Net trainers
class RaterTrainerMixin:
    """Rater sampling or soft labels for a stock nnU-Net trainer (Dice + CE, deep supervision); put it first:
    ``class T(RaterTrainerMixin, nnUNetTrainerBudget)``, with ``rater_mode = "sample"`` or ``"soft"``.

    Needs :class:`~nnunet_gsd.training.settings_mixin.SettingsMixin` below it (its ``_check_dataset`` hook runs
    before nnU-Net creates the output folder). Validation (loss, pseudo Dice, final validation) stays on
    ``labelsTr``.
    """

    rater_mode: str = "off"
    #: weight of the soft Dice term beside soft CE (nnU-Net's 1). Soft CE alone is minimised by the rater fraction
    #: itself; Dice rewards pushing a probability past 0.5 toward 1, so it sharpens the soft target it is given.
    soft_dice_weight: float = 1.0

    def _check_dataset(self, plans: dict, configuration: str, dataset_json: dict) -> None:
        super()._check_dataset(plans, configuration, dataset_json)
        self._raters = plan_training_raters(self.rater_mode, plans, configuration, dataset_json,
                                            f"this trainer (raters={self.rater_mode!r})",
                                            "train with nnUNetTrainerBudget or nnUNetTrainer (one label per case)")

    @property
    def _soft(self) -> bool:
        return self._raters.mode == "soft"

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        self.print_to_log_file(f"Raters: {self._raters.describe()}")
        if self._raters.active:
            prepare_rater_cache(self, self._raters, rater_cache_folder(self))
        super().on_train_start()

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        if self._raters.active:
            dataset_tr = RaterDataset(dataset_tr, rater_cache_folder(self), self._raters.mode)
        return dataset_tr, dataset_val

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, *args, **kwargs):
        # soft labels: no DownsampleSegForDSTransform (nearest neighbour); train_step area-pools the fractions
        scales = None if self._soft else deep_supervision_scales
        return super().get_training_transforms(patch_size, rotation_for_DA, scales, *args, **kwargs)

    def _build_loss(self):
        loss = super()._build_loss()  # nnU-Net's, with its deep supervision weights
        if not self._soft:
            return loss
        soft = SoftRaterLoss({"batch_dice": self.configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False,
                              "ddp": self.is_ddp}, weight_dice=self.soft_dice_weight)
        if self._do_i_compile():
            soft.dc = torch.compile(soft.dc)
        if hasattr(loss, "loss"):  # DeepSupervisionWrapper
            loss.loss = soft
            return loss
        return soft

    def train_step(self, batch: dict) -> dict:
        if self._soft:
            target = batch["target"].to(self.device, non_blocking=True)
            fractions = rater_fraction_map(target[:, 1:], self.label_manager.num_segmentation_heads)
            scales = self._get_deep_supervision_scales() if self.enable_deep_supervision else None
            pyramid = soft_target_pyramid(fractions, deep_supervision_shapes(fractions.shape[2:], scales))
            batch = dict(batch, target=pyramid if self.enable_deep_supervision else pyramid[0])
        return super().train_step(batch)
