"""demo: dataset reuse and rebuild, the clean-label copy, the epoch digest, the printed conclusion."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from nnunet_gsd.tools import demo


def options(noise: str = "S_R", seed: int = 0) -> dict:
    return demo.dataset_options(argparse.Namespace(noise=noise, seed=seed))


def make_raw(work: Path, dataset_id: int) -> Path:
    raw = work / "nnUNet_raw" / f"Dataset{dataset_id:03d}_Synthetic"
    for sub in ("imagesTr", "imagesTs", "labelsTs", "labelsTr", "labelsTr_clean"):
        (raw / sub).mkdir(parents=True)
    (raw / "labelsTr" / "a.png").write_bytes(b"noisy")
    (raw / "labelsTr_clean" / "a.png").write_bytes(b"clean")
    (raw / "dataset.json").write_text(json.dumps({"name": "Synthetic", "gsd": {"tau": 0.1}, "file_ending": ".png",
                                                    "channel_names": {"0": "R"}, "labels": {"background": 0, "x": 1},
                                                    "numTraining": 1}))
    return raw


def test_datasets_are_reused_only_with_the_same_options(tmp_path: Path):
    assert demo.stale_datasets(tmp_path, [900], options()) == "not built yet"
    make_raw(tmp_path, 900)
    (tmp_path / "demo_datasets.json").write_text(json.dumps(options()))
    assert demo.stale_datasets(tmp_path, [900], options()) is None
    assert demo.stale_datasets(tmp_path, [900], options("S_E")) == "options changed (noise S_R → S_E)"
    assert demo.stale_datasets(tmp_path, [900, 901], options()) == "incomplete"
    demo.remove_datasets(tmp_path, [900])
    assert not list((tmp_path / "nnUNet_raw").iterdir()) and not (tmp_path / "demo_datasets.json").exists()


def test_clean_copy_takes_the_clean_training_labels(tmp_path: Path):
    clean = demo.make_clean_copy(make_raw(tmp_path, 900), 901)
    assert clean.name == "Dataset901_SyntheticClean"
    assert (clean / "labelsTr" / "a.png").read_bytes() == b"clean"
    content = json.loads((clean / "dataset.json").read_text())
    assert content["name"] == "SyntheticClean" and "gsd" not in content
    assert (content["channel_names"], content["labels"], content["numTraining"]) == (
        {"0": "R"}, {"background": 0, "x": 1}, 1)
    assert not list(tmp_path.glob("nnUNet_raw/.*partial*"))


def test_epoch_digest_reports_each_epoch_once():
    echo = demo._epoch_digest(10)
    lines = ["2026-01-01 10:00:00.000000: Epoch 0", "2026-01-01 10:00:01.0: Current learning rate: 0.01",
             "2026-01-01 10:00:02.0: Pseudo dice [np.float32(0.8123)]", "2026-01-01 10:00:03.0: Epoch 1",
             "2026-01-01 10:00:04.0: Pseudo dice [np.float32(0.5), np.float32(0.25)]"]
    assert [echo(line) for line in lines] == [
        None, None, "      epoch 1/10: validation pseudo Dice 0.8123", None,
        "      epoch 2/10: validation pseudo Dice 0.5, 0.25"]


def test_conclusion_states_the_differences_and_the_limits():
    lines = demo.conclusion({demo.GSD: 0.80, demo.STOCK: 0.83, "clean": 0.86}, 10, 25)
    assert lines[0].startswith("GSD − stock nnU-Net = -3.0 Dice points")
    assert "+3.0 points" in lines[1]
    assert any("does not show: which method is better" in line for line in lines)


def test_comparison_figure_is_written(tmp_path: Path):
    import numpy as np
    from nnunet_gsd.tools.overlay import comparison_figure
    ref = np.zeros((16, 16), np.uint8)
    ref[4:10, 4:10] = 1
    comparison_figure(tmp_path / "o.png", [np.random.default_rng(0).random((1, 16, 16))], [ref],
                      {"a": [ref], "b": [np.roll(ref, 2, 0)]}, {"a": [1.0], "b": [0.67]}, ["case"], rgb=False)
    with Image.open(tmp_path / "o.png") as png:
        assert png.size[0] > png.size[1] > 100


def test_parallel_jobs_stop_starting_after_a_failure():
    import pytest
    started = []

    def job(name: str, fail: bool = False):
        def run():
            started.append(name)
            if fail:
                raise RuntimeError(f"{name} failed")
        return run

    demo.Steps.parallel([job("a"), job("b"), job("c")], workers=2)
    assert sorted(started) == ["a", "b", "c"]
    started.clear()
    # one worker: the jobs queued behind the failed one never start, and the failure is raised
    with pytest.raises(RuntimeError, match="b failed"):
        demo.Steps.parallel([job("a"), job("b", fail=True), job("c"), job("d")], workers=1)
    assert started == ["a", "b"]
