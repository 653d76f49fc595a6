"""The settings in the trainer's lifecycle, on real trainer objects (no training): resolve before nnU-Net
creates anything, apply the budget, write fold_X/gsd_settings.json, refuse --c with changed settings."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from helpers import tiny_2d_plans
from nnunet_gsd.settings import ALLOW_CHANGE_VARIABLE
from nnunet_gsd.training.trainer import nnUNetTrainerGSD
from nnunet_gsd.training.variants import nnUNetTrainerCELossBudget, nnUNetTrainerGSD_tiny

NAME = "Dataset000_X"
DATASET_JSON = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
                "file_ending": ".png", "gsd": {"tau": 0.1}}


@pytest.fixture
def folders(tmp_path: Path, monkeypatch) -> dict:
    """nnU-Net's folders in tmp_path; the preprocessed dataset.json says τ = 0.1, the raw one τ = 0.2."""
    for key in list(os.environ):
        if key.startswith("nnUNet_GSD_"):
            monkeypatch.delenv(key)
    roots = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, root in roots.items():
        (root / NAME).mkdir(parents=True)
        monkeypatch.setenv(name, str(root))
    (roots["nnUNet_preprocessed"] / NAME / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (roots["nnUNet_raw"] / NAME / "dataset.json").write_text(json.dumps(dict(DATASET_JSON, gsd={"tau": 0.2})))
    return roots


def make(trainer_class=nnUNetTrainerGSD_tiny):
    plans = dict(tiny_2d_plans(NAME), continue_training=False)  # nnU-Net 2.8's run_training adds this key
    return trainer_class(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))


def fold(folders: dict, trainer: str = "nnUNetTrainerGSD_tiny") -> Path:
    return folders["nnUNet_results"] / NAME / f"{trainer}__nnUNetPlans__2d" / "fold_0"


def test_fresh_start_records_values_and_exact_sources(folders):
    trainer = make()
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (4, 4, 2)
    trainer._check_and_record_settings()
    record = json.loads((fold(folders) / "gsd_settings.json").read_text())
    preprocessed = folders["nnUNet_preprocessed"] / NAME / "dataset.json"
    assert record["trainer"] == "nnUNetTrainerGSD_tiny" and record["history"] == []
    assert record["settings"]["tau"] == {"value": 0.1, "source": f'dataset.json {preprocessed} "gsd": {{"tau"}}'}
    assert record["settings"]["num_epochs"] == {"value": 4,
                                                "source": "class attribute nnUNetTrainerGSD_tiny.budget_num_epochs"}
    assert record["settings"]["warmup_fraction"] == {
        "value": 0.25, "source": "class attribute nnUNetTrainerGSD_tiny.gsd_warmup_fraction"}
    # the raw copy's different τ is not used, and the log says so with the fix
    log = next(fold(folders).glob("training_log_*.txt")).read_text()
    raw = folders["nnUNet_raw"] / NAME / "dataset.json"
    assert f'GSD settings note: {raw} has "gsd": {{"tau": 0.2}} but training uses 0.1' in log
    assert "edit the raw one and then copy it over or rerun nnUNetv2_plan_and_preprocess" in log


def test_unset_budget_records_the_trainers_own_value(folders):
    trainer = make(nnUNetTrainerGSD)
    assert trainer.gsd.num_epochs == trainer.num_epochs == 1000
    assert trainer.gsd.sources["num_epochs"] == "nnU-Net's default"


def test_budget_trainer_reads_only_the_budget_and_checkpoints(folders, monkeypatch):
    monkeypatch.setenv("nnUNet_GSD_NUM_EPOCHS", "3")
    trainer = make(nnUNetTrainerCELossBudget)
    assert trainer.num_epochs == 3 and set(trainer.gsd.values) == {
        "num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch", "keep_last_k", "snapshot_every"}
    assert not trainer.enable_deep_supervision


def test_bad_setting_stops_before_nnunet_creates_the_fold(folders, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_GSD_TAU", "1.5")
    with pytest.raises(SystemExit) as info:
        make()
    assert str(info.value).startswith("nnUNetTrainerGSD_tiny: setting tau=1.5 from environment variable nnUNet_GSD_TAU")
    assert not fold(folders).exists()


def test_continue_with_changed_tau_stops_naming_it(folders, monkeypatch):
    make()._check_and_record_settings()
    record_file = fold(folders) / "gsd_settings.json"
    before = record_file.read_text()
    monkeypatch.setenv("nnUNet_GSD_TAU", "0.2")
    trainer = make()
    trainer.current_epoch = 2  # what load_checkpoint sets on --c
    with pytest.raises(SystemExit) as info:
        trainer.run_training()  # refuses before on_train_start (no data loading, no SLIC)
    message = str(info.value)
    assert message.startswith(f"nnUNetTrainerGSD_tiny: --c: settings changed since this training started "
                              f"({record_file}): tau 0.1 (dataset.json ")
    assert "→ 0.2 (environment variable nnUNet_GSD_TAU)" in message and "\n" not in message
    assert record_file.read_text() == before  # the record still describes the checkpoint


def test_continue_with_a_longer_budget_or_deliberate_change_is_recorded(folders, monkeypatch):
    make()._check_and_record_settings()
    monkeypatch.setenv("nnUNet_GSD_NUM_EPOCHS", "6")
    trainer = make()
    trainer.current_epoch = 4
    trainer._check_and_record_settings()
    monkeypatch.setenv("nnUNet_GSD_RHO", "0.25")
    monkeypatch.setenv(ALLOW_CHANGE_VARIABLE, "1")
    trainer = make()
    trainer.current_epoch = 5
    trainer._check_and_record_settings()
    record = json.loads((fold(folders) / "gsd_settings.json").read_text())
    assert record["settings"]["num_epochs"]["value"] == 6 and record["settings"]["rho"]["value"] == 0.25
    assert [(h["epoch"], sorted(h["changed"])) for h in record["history"]] == [(4, ["num_epochs"]), (5, ["rho"])]
    assert record["history"][0]["changed"]["num_epochs"] == {
        "from": 4, "from_source": "class attribute nnUNetTrainerGSD_tiny.budget_num_epochs",
        "to": 6, "to_source": "environment variable nnUNet_GSD_NUM_EPOCHS"}


def test_continue_from_a_run_without_record_is_logged_not_refused(folders):
    trainer = make()
    trainer.current_epoch = 3
    trainer._check_and_record_settings()
    assert (fold(folders) / "gsd_settings.json").is_file()
    assert "no gsd_settings.json beside the checkpoint" in next(fold(folders).glob("training_log_*.txt")).read_text()


def test_refused_continue_leaves_no_new_training_log(folders, monkeypatch):
    """nnUNetv2_train --c with a changed τ: refused before nnU-Net writes a new training_log_*.txt into the fold."""
    make()._check_and_record_settings()
    folder = fold(folders)
    (folder / "checkpoint_latest.pth").write_bytes(b"")  # refused before nnU-Net would load it
    logs_before = sorted(folder.glob("training_log_*.txt"))
    monkeypatch.setenv("nnUNet_GSD_TAU", "0.2")
    plans = dict(tiny_2d_plans(NAME), continue_training=True)  # what nnUNetv2_train --c passes
    with pytest.raises(SystemExit) as info:
        nnUNetTrainerGSD_tiny(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))
    message = str(info.value)
    assert message.startswith("nnUNetTrainerGSD_tiny: --c: settings changed since this training started")
    assert "tau 0.1" in message and "\n" not in message
    assert sorted(folder.glob("training_log_*.txt")) == logs_before


def test_continue_without_a_checkpoint_or_with_unchanged_settings_goes_ahead(folders, monkeypatch):
    make()._check_and_record_settings()
    plans = dict(tiny_2d_plans(NAME), continue_training=True)
    monkeypatch.setenv("nnUNet_GSD_TAU", "0.2")
    nnUNetTrainerGSD_tiny(dict(plans), "2d", 0, DATASET_JSON, torch.device("cpu"))  # no checkpoint: nnU-Net restarts
    (fold(folders) / "checkpoint_final.pth").write_bytes(b"")
    monkeypatch.delenv("nnUNet_GSD_TAU")
    monkeypatch.setenv("nnUNet_GSD_NUM_EPOCHS", "8")  # the budget may change on --c
    trainer = nnUNetTrainerGSD_tiny(dict(plans), "2d", 0, DATASET_JSON, torch.device("cpu"))
    assert trainer.num_epochs == 8


def test_the_fold_is_named_as_nnunet_names_it(folders):
    from nnunet_gsd.training.settings_mixin import nnunet_output_folder
    trainer = make()
    assert nnunet_output_folder("nnUNetTrainerGSD_tiny", tiny_2d_plans(NAME), "2d", 0) == trainer.output_folder


@pytest.mark.parametrize("where, block, start", [
    ("nnUNet_preprocessed", 0.1, '"gsd" is 0.1, not an object'),
    ("nnUNet_preprocessed", {"tauu": 0.1}, '"gsd" key "tauu" names no GSD setting or recorded key (did you mean'),
    ("nnUNet_raw", {"tau": "0.1"}, "setting tau='0.1' from dataset.json"),
])
def test_a_broken_gsd_block_stops_the_trainer_with_one_line_naming_the_file(folders, where, block, start):
    """`"gsd": 0.1` used to stop nnUNetv2_train with an AttributeError traceback; "tauu" trained with τ unset."""
    dataset_json = dict(DATASET_JSON, gsd=block)
    (folders[where] / NAME / "dataset.json").write_text(json.dumps(dataset_json))
    used = dataset_json if where == "nnUNet_preprocessed" else DATASET_JSON
    with pytest.raises(SystemExit) as info:
        nnUNetTrainerGSD_tiny(dict(tiny_2d_plans(NAME), continue_training=False), "2d", 0, used, torch.device("cpu"))
    message = str(info.value)
    file = folders[where] / NAME / "dataset.json"
    assert message.startswith("nnUNetTrainerGSD_tiny: ") and start in message and str(file) in message, message
    assert "\n" not in message and not fold(folders).exists()


def test_a_cpu_training_keeps_omp_num_threads_against_nnunets_every_core(folders, monkeypatch):
    from nnunet_gsd.training.settings_mixin import cpu_threads
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cpu_threads(cpu, {"OMP_NUM_THREADS": "1"}) == 1 and cpu_threads(cpu, {"OMP_NUM_THREADS": " 3 "}) == 3
    assert cpu_threads(cpu, {}) is None and cpu_threads(cpu, {"OMP_NUM_THREADS": "0"}) is None
    assert cpu_threads(cpu, {"OMP_NUM_THREADS": "2,1"}) is None and cpu_threads(cuda, {"OMP_NUM_THREADS": "1"}) is None
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what nnUNetv2_train does on a 2-core machine
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        make(nnUNetTrainerCELossBudget)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
