"""Shared test helpers (imported as ``from helpers import ...``; pytest puts ``tests/`` on the path for its
root conftest.py): run the real console commands in a clean environment, tiny nnU-Net plans, and tiny
source trees that mimic each public dataset's real release layout.
"""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
from nnunet_gsd.dataset_conversion import brats2020, mmis2024
from PIL import Image


BIN = Path(sys.executable).parent


def clean_env(root: Path, **extra: str) -> Dict[str, str]:
    """Nothing but PATH, HOME, PYTHONPATH and nnU-Net's three folder variables (plus small process counts).

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
    if os.environ.get("PYTHONPATH"):  # the commands must import the code under test (e.g. a git worktree)
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


def run_failing(cmd: List[str], env: Dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a console command that must fail; returns the completed process for its messages."""
    exe = shutil.which(cmd[0], path=env["PATH"]) or cmd[0]
    proc = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode != 0, f"{' '.join(cmd)} unexpectedly succeeded:\n{proc.stdout[-3000:]}"
    return proc


def tiny_2d_plans(dataset_name: str = "Dataset000_X") -> dict:
    """nnU-Net plans of a 2-stage 2D PlainConvUNet (4/8 features, 32² patches, batch 2), one configuration "2d"."""
    return {
        "dataset_name": dataset_name, "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1],
        "original_median_shape_after_transp": [32, 32], "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1], "transpose_backward": [0, 1], "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {},
        "configurations": {"2d": {
            "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [32, 32], "median_image_size_in_voxels": [32, 32], "spacing": [1, 1],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": {},
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": {"n_stages": 2, "features_per_stage": [4, 8],
                                             "conv_op": "torch.nn.modules.conv.Conv2d",
                                             "kernel_sizes": [[3, 3], [3, 3]],
                                             "strides": [[1, 1], [2, 2]], "n_conv_per_stage": [1, 1],
                                             "n_conv_per_stage_decoder": [1], "conv_bias": True,
                                             "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                                             "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                             "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                             "nonlin_kwargs": {"inplace": True}},
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
    }


# ------------------------------------------------------------------ source trees of the public datasets
def _ellipse(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(0.35, 0.65) * shape[0], rng.uniform(0.35, 0.65) * shape[1]
    ry, rx = rng.uniform(0.15, 0.3) * shape[0], rng.uniform(0.15, 0.3) * shape[1]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def make_kvasir(root: Path, n: int = 10, empty: int | None = None) -> Path:
    src = root / "Kvasir-SEG"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = (40 + 2 * i, 48)  # sizes differ between cases, as in the real release
        img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        m = _ellipse(shape, rng) if i != empty else np.zeros(shape, bool)
        Image.fromarray(img).save(src / "images" / f"cju{i:03d}.jpg")
        Image.fromarray(np.stack([m.astype(np.uint8) * 255] * 3, -1)).save(src / "masks" / f"cju{i:03d}.jpg",
                                                                           quality=90)
    return src


def make_shenzhen(root: Path, n: int = 6) -> Path:
    src = root / "Lung Segmentation"
    (src / "CXR_png").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n + 1):
        img = rng.integers(0, 256, (36, 36), dtype=np.uint8)
        Image.fromarray(img).save(src / "CXR_png" / f"CHNCXR_{i:04d}_{i % 2}.png")
        if i < n:  # the last image has no mask, as 96 real ones
            m = _ellipse((36, 36), rng).astype(np.uint8) * 255
            Image.fromarray(m).save(src / "masks" / f"CHNCXR_{i:04d}_{i % 2}_mask.png")
    Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8)).save(src / "CXR_png" / "MCUCXR_0001_0.png")
    Image.fromarray(np.zeros((36, 36), np.uint8)).save(src / "masks" / "MCUCXR_0001_0_mask.png")
    return root


def make_bu_suc(root: Path, n: int = 4) -> Path:
    src = root / "BUS_UC" / "BUS_UC"
    rng = np.random.default_rng(2)
    for cls in ("Benign", "Malignant"):
        (src / cls / "images").mkdir(parents=True)
        (src / cls / "masks").mkdir()
        for i in range(n):  # equal names in both classes, as in the release
            Image.fromarray(np.stack([rng.integers(0, 256, (30, 34), dtype=np.uint8)] * 3, -1)).save(
                src / cls / "images" / f"{i + 1}.png")
            Image.fromarray(_ellipse((30, 34), rng).astype(np.uint8) * 255).save(src / cls / "masks" / f"{i + 1}.png")
    return root


def _nii(path: Path, arr: np.ndarray) -> None:
    import SimpleITK as sitk
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


def make_brats(root: Path, n: int = 5) -> Path:
    src = root / "MICCAI_BraTS2020_TrainingData"
    rng = np.random.default_rng(3)
    for i in range(1, n + 1):
        cid = f"BraTS20_Training_{i:03d}"
        d = src / cid
        d.mkdir(parents=True)
        for m in brats2020.MODALITIES:
            _nii(d / f"{cid}_{m}.nii.gz", rng.integers(0, 1000, (10, 12, 14)).astype(np.int16))
        seg = np.zeros((10, 12, 14), np.uint8)
        seg[3:7, 4:9, 4:10] = 2
        seg[4:6, 5:8, 5:8] = 1
        seg[5, 6, 6] = 4
        # Case 355 of the real release: the segmentation is misnamed.
        _nii(d / ("W39_1998.09.19_Segm.nii" if i == 2 else f"{cid}_seg.nii.gz"), seg)
    return root


def make_lidc(root: Path, patients: int = 5, per_patient: int = 2, raters: int = 4) -> Path:
    rng = np.random.default_rng(4)
    data = {}
    for p in range(patients):
        for k in range(per_patient):
            masks = [_ellipse((16, 16), rng).astype(np.uint8) for _ in range(raters)]
            masks[-1][:] = 0  # one rater saw nothing, as often in LIDC
            data[f"LIDC-IDRI-{p + 1:04d}_slice_{k}"] = {"image": rng.random((16, 16)).astype(np.float32),
                                                        "masks": masks, "series_uid": f"1.2.{p}"}
    with open(root / "data_lidc.pickle", "wb") as f:
        pickle.dump(data, f)
    return root / "data_lidc.pickle"


def make_mmis(root: Path, n_train: int = 4, n_test: int = 2, raters: int = 3) -> Path:
    import h5py
    rng = np.random.default_rng(5)
    src = root / "NPC"
    for folder in ("training_2d", "testing", "validation"):
        (src / folder).mkdir(parents=True)

    def write(path: Path, shape: tuple[int, ...]) -> None:
        with h5py.File(path, "w") as f:
            for k in mmis2024.CHANNELS:
                f[k] = rng.random(shape).astype(np.float32)
            for r in range(1, raters + 1):
                m = np.zeros(shape, np.uint8)
                m[..., 4:10 + r, 5:11] = 1
                f[f"label_a{r}"] = m

    for i in range(n_train):
        write(src / "training_2d" / f"npc_{i:03d}_slice_{i % 3}.h5", (16, 16))
    for i in range(n_test):
        write(src / "testing" / f"npc_{100 + i:03d}.h5", (3, 16, 16))
    write(src / "validation" / "npc_200.h5", (3, 16, 16))
    return root
