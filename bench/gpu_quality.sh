#!/usr/bin/env bash
# The quality benchmark where users train (issue 22): Kvasir-SEG at 256², batch 16, the paper's 100 epochs
# (100 × 44 = 4 400 iterations), on one GPU machine that has Python and torch but neither nnU-Net nor SimpleITK
# nor a network. Two steps:
#
#   bench/gpu_quality.sh pack --source PATH/Kvasir-SEG [--with-simpleitk] [--python-version 3.12]
#       where pip works: the wheels nnU-Net needs beyond what such a machine has (CPython 3.12 unless told,
#       manylinux x86-64)
#       into bench/gpu/wheels/, and Kvasir-SEG resized to 256² (the size it is converted at: JPEG images,
#       lossless PNG masks) into bench/gpu/kvasir/; both git-ignored, ~40 MB without SimpleITK (its wheel alone
#       is 53 MB).
#   bench/gpu_quality.sh run [bench/quality.py options]
#       on the GPU machine, from the repository root: a virtual environment over the machine's own Python
#       (torch and everything else it has stay visible), the packed wheels where nnU-Net is missing, this
#       checkout installed into it, then bench/quality.py on CUDA. Where SimpleITK is missing and was not packed,
#       a stand-in (bench/gpu/simpleitk_standin/) satisfies nnU-Net's imports: the PNG pipeline never calls it,
#       and any call fails naming the fix. Results: bench/results/quality-256-gpu.{md,json} (+ $OUT if set).
#
# Default arms (heavy_S_R, one call): stock on clean and on noisy labels, GSD's defaults, a second stock training
# and the two stock networks ensembled, four trainings at once (--jobs 4). Pass other bench/quality.py options
# after `run` (e.g. --only gsd_noisy stock_calibrated, --regimes clean, --jobs 2); the results file keeps the
# arms of earlier calls, so fewer arms per call add up. Tested on CPU at a tiny budget (docs/benchmarks.md):
#   PYTHON=/path/to/python-with-torch bench/gpu_quality.sh run --device cpu --iterations 4 \
#       --iterations-per-epoch 2 --work /tmp/gpu-smoke --results /tmp/gpu-smoke/q
set -euo pipefail
cd "$(dirname "$0")/.."
GPU=bench/gpu
step="${1:-}"
shift || true

pack() {
    local source="" simpleitk=0 version=3.12
    while [ $# -gt 0 ]; do
        case "$1" in
            --source) source="$2"; shift 2 ;;
            --with-simpleitk) simpleitk=1; shift ;;
            --python-version) version="$2"; shift 2 ;;
            *) echo "bench/gpu_quality.sh pack: unknown option $1 (--source PATH, --with-simpleitk, --python-version X.Y)" >&2; exit 2 ;;
        esac
    done
    [ -n "$source" ] || { echo "bench/gpu_quality.sh pack: --source PATH/Kvasir-SEG is required" >&2; exit 2; }
    local py="${PYTHON:-.venv/bin/python}"
    rm -rf "$GPU/wheels.partial" && mkdir -p "$GPU/wheels.partial"
    # nnU-Net 2.8.1's requirements and theirs that the GPU image lacks (its package list: the device README),
    # and hatchling, which builds this checkout there
    local binary=(nnunetv2==2.8.1 batchgenerators==0.25.5 batchgeneratorsv2==0.3.6 blosc2==4.15.0
                  dynamic-network-architectures==0.4.4 graphviz==0.21 nibabel==5.4.2 yacs==0.1.8
                  connected-components-3d==4.1.1 ndindex==1.10.1 future==1.0.0 unittest2==1.1.0
                  traceback2==1.4.0 linecache2==1.0.0 pydantic==2.14.4 pydantic-core==2.50.5
                  annotated-types==0.8.0 typing-inspection==0.4.5 hatchling==1.33.0 trove-classifiers)
    [ "$simpleitk" = 1 ] && binary+=(SimpleITK==2.5.7)
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$GPU/wheels.partial" "${binary[@]}"
    "$py" -m pip wheel -q --no-deps -w "$GPU/wheels.partial" acvl-utils==0.2.6   # published as source only
    rm -rf "$GPU/wheels" && mv "$GPU/wheels.partial" "$GPU/wheels"
    "$py" - "$source" "$GPU/kvasir" <<'PY'
import shutil, sys
from pathlib import Path
import numpy as np
from PIL import Image
from tqdm import tqdm
from nnunet_gsd.dataset_conversion import kvasir
from nnunet_gsd.dataset_conversion.resizing import resize_image, resize_label
source, target = Path(sys.argv[1]), Path(sys.argv[2])
partial = target.with_name(target.name + ".partial")
shutil.rmtree(partial, ignore_errors=True)
(partial / "images").mkdir(parents=True)
(partial / "masks").mkdir()
found = kvasir.discover(source)
for case in tqdm(found.cases, desc="Kvasir-SEG at 256²", unit="case"):
    sample = case.load()
    image = resize_image(sample.image, (256, 256))
    Image.fromarray(np.clip(np.rint(np.moveaxis(image, 0, -1)), 0, 255).astype(np.uint8)).save(
        partial / "images" / f"{case.case_id}.jpg", quality=95)
    Image.fromarray((resize_label(sample.label, (256, 256)) > 0).astype(np.uint8) * 255).save(
        partial / "masks" / f"{case.case_id}.png")
shutil.rmtree(target, ignore_errors=True)
partial.rename(target)
print(f"{len(found.cases)} cases at 256² in {target}")
PY
    du -sh "$GPU/wheels" "$GPU/kvasir"
    echo "packed: carry bench/gpu/wheels and bench/gpu/kvasir to the GPU machine, then: bench/gpu_quality.sh run"
}

run() {
    [ -d "$GPU/kvasir/images" ] || { echo "bench/gpu_quality.sh run: no $GPU/kvasir/images: run bench/gpu_quality.sh pack --source PATH/Kvasir-SEG first (where pip works) and bring bench/gpu/ along" >&2; exit 2; }
    local base="${PYTHON:-python3}" venv="${GSD_GPU_VENV:-/tmp/gsd-gpu-venv}"
    "$base" -c "import torch" 2>/dev/null || { echo "bench/gpu_quality.sh run: $base has no torch: set PYTHON to the Python that has it" >&2; exit 2; }
    [ -x "$venv/bin/python" ] || "$base" -m venv --system-site-packages --without-pip "$venv"
    # the base may itself be a virtual environment, whose packages --system-site-packages does not reach (its pip
    # included: the new environment runs the base's pip, which installs into the new one)
    local site
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$base" -c "import site, sys; print('\n'.join(site.getsitepackages() + [p for p in sys.path if p.endswith('-packages')]))" \
        > "$site/gsd_gpu_base.pth"
    if ! "$venv/bin/python" -c "import nnunetv2" 2>/dev/null; then
        ls "$GPU"/wheels/*.whl >/dev/null 2>&1 || { echo "bench/gpu_quality.sh run: nnU-Net is missing and $GPU/wheels/ holds no wheels: bench/gpu_quality.sh pack" >&2; exit 2; }
        "$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile "$GPU"/wheels/*.whl
    fi
    if ! "$venv/bin/python" -c "import SimpleITK" 2>/dev/null; then
        echo "SimpleITK missing: using the stand-in (the PNG pipeline never calls it)"
        cp -r "$GPU/simpleitk_standin/SimpleITK" "$site/"
    fi
    "$venv/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation --force-reinstall .
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
    "$venv/bin/python" bench/quality.py --source "$GPU/kvasir" --device cuda --size 256 --batch 16 \
        --iterations 4400 --iterations-per-epoch 44 --regimes heavy_S_R --no-faithful --jobs 4 \
        --only stock_clean stock_noisy gsd_noisy stock_noisy_r1 stock_ensemble \
        --work "${GSD_GPU_WORK:-/tmp/gsd-gpu-work}" --results bench/results/quality-256-gpu "$@"
    if [ -n "${OUT:-}" ]; then
        cp bench/results/quality-256-gpu* "$OUT/" 2>/dev/null || true
        find "${GSD_GPU_WORK:-/tmp/gsd-gpu-work}" -maxdepth 1 -name state.json -exec cp {} "$OUT/" \; || true
    fi
}

case "$step" in
    pack) pack "$@" ;;
    run) run "$@" ;;
    *) echo "usage: bench/gpu_quality.sh pack --source PATH/Kvasir-SEG [--with-simpleitk] [--python-version X.Y] | run [bench/quality.py options]" >&2; exit 2 ;;
esac
