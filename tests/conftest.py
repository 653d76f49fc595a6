"""Shared helpers: run the real console commands in a clean environment."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

BIN = Path(sys.executable).parent


def clean_env(root: Path, **extra: str) -> Dict[str, str]:
    """Nothing but PATH, HOME and nnU-Net's three folder variables (plus small process counts for 2 cores).

    nnUNet_extTrainer is deliberately absent: the installed start-up hook must register our trainers.
    """
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(root)),
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "1",
        "MPLBACKEND": "Agg",
    }
    if os.environ.get("PYTHONPATH"):  # a checkout on PYTHONPATH (a worktree beside an editable install) stays first
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def run(cmd: List[str], env: Dict[str, str], timeout: int = 600) -> str:
    """Run a console command; on failure show its output tail in the assertion message."""
    exe = shutil.which(cmd[0], path=env["PATH"]) or cmd[0]
    proc = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="session")
def nnunet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nnunet")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
    return root


def run_failing(cmd: List[str], env: Dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a console command that must fail; returns the completed process for its messages."""
    exe = shutil.which(cmd[0], path=env["PATH"]) or cmd[0]
    proc = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode != 0, f"{' '.join(cmd)} unexpectedly succeeded:\n{proc.stdout[-3000:]}"
    return proc


TINY_DATASET_ID = 906


@pytest.fixture(scope="session")
def tiny_preprocessed(nnunet_root: Path) -> dict:
    """A converted (synthetic, S_E noise, 48 px, 10 train / 3 test) and 2d-preprocessed dataset, shared by the
    analysis-tool tests (last-k, search-tau). ``search-tau --write`` may change its dataset.json τ."""
    env = clean_env(nnunet_root)
    run(["nnunet_gsd", "convert", "synthetic", "--id", str(TINY_DATASET_ID), "--num-train", "10", "--num-test", "3",
         "--size", "48", "--noise", "S_E", "--seed", "3"], env)
    raw = next((nnunet_root / "nnUNet_raw").glob(f"Dataset{TINY_DATASET_ID}_*"))
    run(["nnUNetv2_plan_and_preprocess", "-d", str(TINY_DATASET_ID), "-c", "2d", "-np", "1"], env)
    return {"id": str(TINY_DATASET_ID), "raw": raw, "name": raw.name,
            "preprocessed": nnunet_root / "nnUNet_preprocessed" / raw.name}
