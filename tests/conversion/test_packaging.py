"""The converters have one import path, ``nnunet_gsd.dataset_conversion``, in a checkout and in the wheel."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]


def test_checkout_maps_the_top_level_folder_under_nnunet_gsd():
    code = ("import sys, nnunet_gsd.cli as c; c.build_parser(); import nnunet_gsd.dataset_conversion as d; "
            "print(d.__file__); print(sorted(m for m in sys.modules if m.split('.')[0] == 'dataset_conversion'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/",
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    assert Path(out[0]) == REPO / "dataset_conversion" / "__init__.py"
    assert out[1] == "[]"   # nothing imports the generic top-level name


def test_wheel_installs_the_folder_as_nnunet_gsd_dataset_conversion():
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["sources"] == {"dataset_conversion": "nnunet_gsd/dataset_conversion"}
    assert "dataset_conversion" in wheel["packages"]
