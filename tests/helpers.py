"""Shared test helpers: run the real console commands in a clean environment; small nnU-Net inputs.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on the path for its root conftest.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

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
                                             "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": [[3, 3], [3, 3]],
                                             "strides": [[1, 1], [2, 2]], "n_conv_per_stage": [1, 1],
                                             "n_conv_per_stage_decoder": [1], "conv_bias": True,
                                             "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                                             "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                             "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                             "nonlin_kwargs": {"inplace": True}},
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
    }
