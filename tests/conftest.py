"""Shared fixtures: nnU-Net's three folders for a test session, a tiny preprocessed dataset.

Helper functions live in ``tests/helpers.py``; they are re-exported here for tests that still import
them from conftest.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import BIN, clean_env, run, run_failing  # noqa: F401 - re-exported


@pytest.fixture(scope="session")
def nnunet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nnunet")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (root / name).mkdir()
    return root


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
