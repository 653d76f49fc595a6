"""bench/gpu_quality.sh: its refusals, and the SimpleITK stand-in it brings to an offline GPU machine."""
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_standin_imports_and_any_use_names_the_fix():
    spec = importlib.util.spec_from_file_location("standin", BENCH / "gpu" / "simpleitk_standin" / "SimpleITK"
                                                  / "__init__.py")
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    with pytest.raises(ImportError, match="SimpleITK.ReadImage: this is bench/gpu_quality.sh's stand-in.*"
                                          "--with-simpleitk"):
        standin.ReadImage("x.nii.gz")
    assert not hasattr(standin, "__wrapped__")   # dunder probes (hasattr, the import machinery) see a plain module


@pytest.mark.parametrize("argv,message", [
    ([], "usage: bench/gpu_quality.sh pack"),
    (["pack"], "--source PATH/Kvasir-SEG is required"),
    (["pack", "--sauce", "x"], "unknown option --sauce"),
    (["run"], "no bench/gpu/kvasir/images: run bench/gpu_quality.sh pack"),
])
def test_refusals_are_one_line_naming_the_fix(tmp_path, argv, message):
    # a copy outside the checkout: nothing packed there
    (tmp_path / "bench").mkdir()
    shutil.copy(BENCH / "gpu_quality.sh", tmp_path / "bench" / "gpu_quality.sh")
    done = subprocess.run(["bash", str(tmp_path / "bench" / "gpu_quality.sh"), *argv], capture_output=True,
                          text=True)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
