"""``nnunet_gsd demo``: the whole pipeline on a small generated noisy dataset, on CPU, in minutes.

convert (synthetic lesions, simulated S_R noise, clean test labels) → nnUNetv2_plan_and_preprocess →
nnUNetv2_train -tr nnUNetTrainerGSD (short budget) → nnUNetv2_predict → nnUNetv2_evaluate_folder, each
through the real console command, then the Dice against the clean test labels.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List

from nnunet_gsd.dataset_conversion import provenance
from nnunet_gsd.tools.common import console_env, run_command


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline on a small generated noisy dataset (CPU, minutes)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("nnunet_gsd_demo"),
                   help="folder for nnUNet_raw/_preprocessed/_results and predictions (default: %(default)s)")
    p.add_argument("--id", type=int, default=900, help="dataset id (default: %(default)s)")
    p.add_argument("--noise", default="S_R", choices=["S_R", "S_E", "S_DE"], help="simulated label noise")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="training device")
    p.add_argument("--fresh", action="store_true", help="delete the work folder first")
    p.set_defaults(func=run_demo)


def _step(title: str, cmd: List[str], env: Dict[str, str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    start = time.time()
    run_command(cmd, env, what=f"step '{title}'")
    print(f"=== {title}: done in {time.time() - start:.0f} s", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    work = args.workdir.resolve()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    env = console_env()
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = str(work / name)
        os.makedirs(env[name], exist_ok=True)
    env.setdefault("nnUNet_def_n_proc", "2")
    started = time.time()
    dataset_id = str(args.id)
    raw = list((work / "nnUNet_raw").glob(f"Dataset{args.id:03d}_*"))
    if not raw:
        _step("1/5 generate a synthetic dataset with noisy training labels",
              ["nnunet_gsd", "convert", "synthetic", "--id", dataset_id, "--num-train", "40", "--num-test", "12",
               "--size", "64", "--noise", args.noise, "--seed", "0"], env)
        raw = list((work / "nnUNet_raw").glob(f"Dataset{args.id:03d}_*"))
    raw_folder = raw[0]
    if not (work / "nnUNet_preprocessed" / raw_folder.name / "nnUNetPlans.json").is_file():
        _step("2/5 plan and preprocess", ["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "2d",
                                          "--verify_dataset_integrity", "-np", "2"], dict(env, nnUNet_n_proc_DA="1"))
    train_env = dict(env, nnUNet_n_proc_DA=env.get("nnUNet_n_proc_DA", "0"),
                     nnUNet_GSD_NUM_EPOCHS=str(args.epochs), nnUNet_GSD_NUM_ITERATIONS=str(args.iterations),
                     nnUNet_GSD_NUM_VAL_ITERATIONS="5")
    _step("3/5 train nnUNetTrainerGSD", ["nnUNetv2_train", dataset_id, "2d", "0", "-tr", "nnUNetTrainerGSD",
                                         "-device", args.device], train_env)
    predictions = work / "predictions"
    _step("4/5 predict the test images (fused two-network prediction)",
          ["nnUNetv2_predict", "-i", str(raw_folder / "imagesTs"), "-o", str(predictions), "-d", dataset_id, "-c",
           "2d", "-tr", "nnUNetTrainerGSD", "-f", "0", "-device", args.device], train_env)
    _step("5/5 evaluate against the clean test labels",
          ["nnUNetv2_evaluate_folder", str(raw_folder / "labelsTs"), str(predictions),
           "-djfile", str(predictions / "dataset.json"), "-pfile", str(predictions / "plans.json")], env)
    summary = json.loads((predictions / "summary.json").read_text())
    noise = provenance.read(raw_folder).noise or {}
    results = work / "nnUNet_results" / raw_folder.name / "nnUNetTrainerGSD__nnUNetPlans__2d" / "fold_0"
    print(f"\nDemo finished in {time.time() - started:.0f} s.")
    if "dice_vs_clean" in noise:
        print(f"Training labels: {noise.get('preset')} noise, Dice(noisy, clean) = {noise['dice_vs_clean']:.4f}, "
              f"pixel noise rate = {noise.get('pixel_noise_rate', float('nan')):.4f}")
    print(f"Test Dice of nnUNetTrainerGSD against the clean test labels: {summary['foreground_mean']['Dice']:.4f}")
    print(f"Training log and plots (progress.png, progress_gsd.png): {results}")
    return 0
