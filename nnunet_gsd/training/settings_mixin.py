"""The settings of :mod:`nnunet_gsd.settings` in nnU-Net's trainer lifecycle.

``__init__`` resolves them before nnU-Net creates folders and log files (a bad value stops the run with
one line, no traceback), refuses a ``--c`` whose method settings changed since ``fold_X/gsd_settings.json``
(also before nnU-Net writes anything), and applies the budget; ``run_training`` — training only, not
``--val`` — compares them again once the checkpoint is loaded (callers other than nnUNetv2_train), records
what changed and (re)writes that record.
"""
from __future__ import annotations

import json
import os
from os.path import isfile, join
from typing import Mapping, Optional, Tuple

import torch
from torch._dynamo import OptimizedModule

from nnunet_gsd.errors import UserError
from nnunet_gsd.settings import (GROUPS, RECORD_FILE, SETTINGS, GSDSettings, changes_since, check_resume,
                                 read_record, resolve_settings, trainer_class_attributes, unused_dataset_values,
                                 write_record)
from nnunet_gsd.utils import atomic_path


def _dataset_json_files(dataset_name: str) -> Tuple[Optional[str], Optional[str]]:
    """(preprocessed, raw) dataset.json of the dataset, each None when its folder variable or file is missing."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    files = tuple(join(os.fspath(root), dataset_name, "dataset.json") if root.is_set() else None
                  for root in (nnUNet_preprocessed, nnUNet_raw))
    return tuple(f if f is not None and isfile(f) else None for f in files)


def resolve_trainer_settings(trainer_class: type, groups, dataset_name: str, dataset_json: dict) -> GSDSettings:
    """The settings of one trainer class for one dataset, with notes on dataset.json values it does not see."""
    preprocessed, raw = _dataset_json_files(dataset_name)
    used_file = preprocessed or "given to the trainer"
    raw_file = raw or f"$nnUNet_raw/{dataset_name}/dataset.json"
    settings = resolve_settings(trainer_class_attributes(trainer_class), os.environ, dataset_json, used_file, raw_file,
                                groups)
    if raw is None or preprocessed is None:
        return settings
    try:
        with open(raw) as f:
            raw_json = json.load(f)
    except ValueError as e:
        return GSDSettings(settings.values, settings.sources, settings.notes + (
            f"{raw} is not valid JSON ({e}): its settings were not compared with {preprocessed}",))
    notes = unused_dataset_values(raw_json, dataset_json, settings, raw, preprocessed)
    return GSDSettings(settings.values, settings.sources, settings.notes + tuple(notes))


def cpu_threads(device: torch.device, env: Mapping[str, str]) -> Optional[int]:
    """The torch thread count a CPU training should use: ``OMP_NUM_THREADS`` where set to a positive whole number.

    nnUNetv2_train sets torch to every core on CPU, overriding OMP_NUM_THREADS; two concurrent CPU trainings then
    oversubscribe the cores, and each spends its time with threads waiting for the other's. None: keep nnU-Net's."""
    raw = (env.get("OMP_NUM_THREADS") or "").strip()
    return int(raw) if device.type == "cpu" and raw.isdigit() and int(raw) > 0 else None


#: the checkpoints nnUNetv2_train --c continues from (nnunetv2.run.run_training.maybe_load_checkpoint)
RESUMABLE_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def nnunet_output_folder(trainer_name: str, plans: dict, configuration: str, fold) -> Optional[str]:
    """``fold_X`` of a training, as nnU-Net's trainer ``__init__`` names it; None when nnUNet_results is unset.

    Needed before nnU-Net's ``__init__`` runs (it creates the folder and a new training log there).
    """
    from nnunetv2.paths import nnUNet_results
    if not nnUNet_results.is_set():
        return None
    return join(os.fspath(nnUNet_results), plans["dataset_name"],
                f"{trainer_name}__{plans['plans_name']}__{configuration}", f"fold_{fold}")


def refuse_changed_settings(folder: str, settings: GSDSettings) -> None:
    """UserError when ``--c`` would continue a checkpoint in ``folder`` with method settings changed since its record.

    Runs before nnU-Net's ``__init__``: a refused ``--c`` must not leave a new, near-empty ``training_log_*.txt``
    in the fold (nnU-Net writes one as soon as its trainer exists). Without a checkpoint nnU-Net starts afresh,
    and without a record (a run of an earlier version) there is nothing to compare: both go ahead.
    """
    record_file = join(folder, RECORD_FILE)
    if not any(isfile(join(folder, c)) for c in RESUMABLE_CHECKPOINTS):
        return
    record = read_record(record_file)
    if record is not None:
        check_resume(record_file, record, settings)


class SettingsMixin:
    """Put before the nnU-Net trainer class: ``class T(SettingsMixin, nnUNetTrainer)``; ``self.gsd`` holds them.

    ``settings_groups`` says which groups of :data:`~nnunet_gsd.settings.SETTINGS` the trainer reads
    (a one-network baseline reads the budget and the kept checkpoints). The kept checkpoints are weights-only
    files ``nnUNetv2_predict -chk`` loads: ``last_k/`` for the paper's last-K protocol, ``snapshots/`` for a
    learning curve (``nnunet_gsd last-k``).
    """

    settings_groups: Tuple[str, ...] = ("budget", "checkpoints")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        assert set(self.settings_groups) <= set(GROUPS), self.settings_groups
        try:
            self.gsd = resolve_trainer_settings(type(self), self.settings_groups, plans["dataset_name"], dataset_json)
            if plans.get("continue_training"):  # nnUNetv2_train --c (nnU-Net's __init__ pops the key)
                folder = nnunet_output_folder(type(self).__name__, plans, configuration, fold)
                if folder is not None:
                    refuse_changed_settings(folder, self.gsd)
            self._check_dataset(plans, configuration, dataset_json)
        except UserError as e:
            raise SystemExit(f"{self.__class__.__name__}: {e}") from None
        super().__init__(plans, configuration, fold, dataset_json, device)
        for s in SETTINGS:
            if s.group == "budget" and s.name in self.gsd.values:
                if self.gsd.values[s.name] is None:  # unset: record the trainer's own value
                    self.gsd = self.gsd.replace(s.name, getattr(self, s.name), "nnU-Net's default")
                else:
                    setattr(self, s.name, self.gsd.values[s.name])
        for note in self.gsd.notes:
            self.print_to_log_file(f"GSD settings note: {note}")
        threads = cpu_threads(self.device, os.environ)
        if threads is not None:
            torch.set_num_threads(threads)
            self.print_to_log_file(f"torch threads: {threads} (OMP_NUM_THREADS)")

    def _unwrapped_network(self) -> torch.nn.Module:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    def on_epoch_end(self):
        epoch = self.current_epoch   # nnU-Net's on_epoch_end advances it
        if self.gsd.keep_last_k and epoch >= self.num_epochs - self.gsd.keep_last_k:
            self._save_weights_only(join(self.output_folder, "last_k", f"checkpoint_epoch_{epoch:04d}.pth"))
        if self.gsd.snapshot_every and (epoch + 1) % self.gsd.snapshot_every == 0:
            self._save_weights_only(join(self.output_folder, "snapshots", f"checkpoint_epoch_{epoch:04d}.pth"))
        super().on_epoch_end()

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

    def _check_dataset(self, plans: dict, configuration: str, dataset_json: dict) -> None:
        """Hook: refuse a dataset the resolved settings cannot train on (UserError), before nnU-Net writes anything."""

    def run_training(self):
        try:
            self._check_and_record_settings()
        except UserError as e:
            raise SystemExit(f"{self.__class__.__name__}: {e}") from None
        super().run_training()

    def _check_and_record_settings(self) -> None:
        """Fresh start: write the record. Continued (``--c`` loaded a checkpoint): compare first, log what changed."""
        path = join(self.output_folder, RECORD_FILE)
        record = read_record(path)
        history = []
        if self.current_epoch > 0:
            if record is None:
                self.print_to_log_file(f"GSD settings: no {RECORD_FILE} beside the checkpoint (a run of an earlier "
                                       f"version): the settings were not compared")
            else:
                changes = check_resume(path, record, self.gsd)
                _, unmatched = changes_since(record, self.gsd)
                history = list(record.get("history", []))
                if changes or unmatched:
                    history.append({"epoch": self.current_epoch,
                                    "changed": {c.name: {"from": c.old, "from_source": c.old_source,
                                                         "to": c.new, "to_source": c.new_source} for c in changes},
                                    "not_compared": unmatched})
                    self.print_to_log_file("GSD settings changed since the training started: "
                                           + "; ".join(map(str, changes))
                                           + (f"; not compared (known to only one side): {unmatched}" if unmatched
                                              else ""))
        if self.local_rank == 0:
            write_record(path, self.__class__.__name__, self.gsd, history)
