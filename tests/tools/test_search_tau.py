"""search-tau: grid, smoothing and choice by hand; a tiny real search that writes τ and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import clean_env, run, run_failing
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools import search_tau


def test_default_grid_is_0_to_0_3():
    grid = search_tau.tau_grid(None, 0.3, 0.025)
    assert len(grid) == 13 and grid[0] == 0.0 and grid[-1] == 0.3 and grid[1] == 0.025
    assert search_tau.tau_grid([0.1, 0.05, 0.1], 0.3, 0.025) == [0.05, 0.1]
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        search_tau.tau_grid([0.1, 1.0], 0.3, 0.025)


def test_trailing_moving_average_and_score():
    np.testing.assert_allclose(search_tau.smooth([3, 1, 2, 6], 2), [3, 2, 1.5, 4])
    np.testing.assert_allclose(search_tau.smooth([3, np.nan, 3], 3), [3, 3, 3])
    # 8 epochs: default score = mean of the last 2 smoothed values; window 1 = no smoothing
    assert search_tau.score([9, 9, 9, 9, 9, 9, 1, 3], 1) == pytest.approx(2.0)
    assert search_tau.score([9, 9, 9, 9, 9, 9, 1, 3], 2, last=1) == pytest.approx(2.0)


def test_choice_is_the_minimum_and_ties_go_to_the_smaller_tau():
    assert search_tau.choose({"0": 0.5, "0.05": 0.3, "0.1": 0.4}) == "0.05"
    assert search_tau.choose({"0.1": 0.3, "0.05": 0.3, "0.2": float("nan")}) == "0.05"
    with pytest.raises(UserError):
        search_tau.choose({"0": float("nan")})


@pytest.mark.e2e
def test_tiny_search_writes_tau_and_resumes(tiny_preprocessed, nnunet_root: Path, tmp_path: Path):
    env = clean_env(nnunet_root, nnUNet_n_proc_DA="0")
    work = tmp_path / "search"
    cmd = ["nnunet_gsd", "search-tau", "-d", tiny_preprocessed["id"], "-c", "2d", "--taus", "0", "0.1", "--epochs", "2",
           "--iterations", "2", "-tr", "nnUNetTrainerGSD_tiny", "-device", "cpu", "--workdir", str(work)]
    out = run(cmd + ["--write"], env)
    result = json.loads((work / "search_tau.json").read_text())
    state = json.loads((work / "search_tau_state.json").read_text())
    curves = {key: done["search_loss"] for key, done in state["results"].items()}
    assert set(curves) == {"0", "0.1"} and all(len(c) == 2 for c in curves.values())
    assert result["curves"] == curves
    # 2 epochs, window 3, --last unset (2 // 4 → 1): a score is the last smoothed epoch, the mean of both epochs;
    # the smaller score wins, a tie goes to τ = 0
    scores = {key: (c[0] + c[1]) / 2 for key, c in curves.items()}
    assert result["scores"] == pytest.approx(scores)
    assert result["chosen_tau"] == (0.0 if scores["0"] <= scores["0.1"] else 0.1)
    assert (work / "search_tau.png").stat().st_size > 1000 and (work / "search_tau.md").is_file()
    noise_rate = json.loads((tiny_preprocessed["raw"] / "dataset.json").read_text())["gsd"]["noise"]["pixel_noise_rate"]
    assert result["pixel_noise_rate"] == pytest.approx(noise_rate)
    assert f"chosen τ = {result['chosen_tau']:g}" in out
    for folder in (tiny_preprocessed["raw"], tiny_preprocessed["preprocessed"]):
        gsd = json.loads((folder / "dataset.json").read_text())["gsd"]
        assert gsd["tau"] == result["chosen_tau"] and "search-tau" in gsd["tau_source"]
    # each τ trains in its own results folder inside the work folder, never in $nnUNet_results
    for key in ("0", "0.1"):
        assert (work / f"tau_{key}" / tiny_preprocessed["name"] / "nnUNetTrainerGSD_tiny__nnUNetPlans__2d"
                / "fold_0").is_dir()

    # resumable: finished τ values are skipped — the state keeps both results as they were, no τ trains again
    curve_files = {key: work / f"tau_{key}" / "search_loss.json" for key in curves}
    written = {key: f.stat().st_mtime_ns for key, f in curve_files.items()}
    rerun = run(cmd, env)
    assert "2 τ already done" in rerun
    assert json.loads((work / "search_tau_state.json").read_text())["results"] == state["results"]
    assert {key: f.stat().st_mtime_ns for key, f in curve_files.items()} == written
    assert json.loads((work / "search_tau.json").read_text())["curves"] == curves

    # another budget in the same work folder is refused with one line
    proc = run_failing(cmd[:-2] + ["--workdir", str(work), "--epochs", "3"], env)
    assert "--fresh" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_unset_nnunet_folders_give_one_line_errors(tmp_path: Path):
    """nnU-Net 2.8's folder variables are objects, never None: an unset one must still give our message."""
    env = clean_env(tmp_path)
    del env["nnUNet_preprocessed"]
    proc = run_failing(["nnunet_gsd", "search-tau", "-d", "1", "-c", "2d"], env)
    assert "nnUNet_preprocessed is not set" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_failing(["nnunet_gsd", "plans-variant", "-d", "1", "--batch-size", "2"], env)
    assert "nnUNet_preprocessed is not set" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def fake_preprocessed(tmp_path: Path, monkeypatch) -> str:
    """A dataset that passes search-tau's checks (plans and dataset.json in $nnUNet_preprocessed); nothing trains."""
    name = "Dataset907_Interrupted"
    folder = tmp_path / "nnUNet_preprocessed" / name
    folder.mkdir(parents=True)
    (folder / "nnUNetPlans.json").write_text("{}")
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}, "file_ending": ".png"}))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    for key in [k for k in __import__("os").environ if k.startswith("nnUNet_GSD_")]:
        monkeypatch.delenv(key)
    return name


def test_ctrl_c_is_one_line_removes_the_partial_tau_and_the_rerun_resumes(fake_preprocessed, tmp_path, monkeypatch,
                                                                           capsys):
    """Ctrl-C used to print a KeyboardInterrupt traceback and leave tau_0.1/ behind."""
    from nnunet_gsd.cli import main
    trained = []

    def training(cmd, env, log_file=None, what="", echo=None):  # stands in for the child training one τ
        tau = env["nnUNet_GSD_TAU"]
        trained.append(tau)
        Path(log_file).write_text("epoch 0\n")
        (Path(log_file).parent / fake_preprocessed).mkdir()  # nnU-Net's half-written results folder
        if float(tau) == 0.1 and interrupt:
            raise KeyboardInterrupt
        Path(cmd[-1]).write_text(json.dumps({"search_loss": [0.5, 0.4] if float(tau) == 0 else [0.3, 0.2]}))

    monkeypatch.setattr(search_tau, "run_command", training)
    work = tmp_path / "work"
    argv = ["search-tau", "-d", fake_preprocessed, "-c", "2d", "--taus", "0", "0.1", "0.2", "--epochs", "2",
            "--iterations", "1", "-device", "cpu", "--workdir", str(work)]
    interrupt = True
    try:
        code = main(argv)
    except KeyboardInterrupt:  # what the user saw as a traceback (and pytest would take as its own Ctrl-C)
        pytest.fail("the KeyboardInterrupt escaped search-tau")
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"nnunet_gsd search-tau: interrupted during τ=0.1; rerun the same command to resume (1 of 3 τ "
                   f"finished, kept in {work / 'search_tau_state.json'}; τ=0.1 starts again)")
    assert not (work / "tau_0.1").exists() and (work / "tau_0").is_dir()
    assert set(json.loads((work / "search_tau_state.json").read_text())["results"]) == {"0"}

    interrupt, trained[:] = False, []
    assert main(argv) == 0
    assert trained == ["0.1", "0.2"]  # τ=0 is not trained again
    assert "1 τ already done" in capsys.readouterr().out
    assert json.loads((work / "search_tau.json").read_text())["chosen_tau"] == 0.1
