"""``nnunet_gsd plans-variant``: a copy of nnU-Net's plans with another batch size.

GSD trains two networks, so at nnU-Net's planned batch size it needs more GPU memory than nnU-Net
budgeted for one network (the trainer already frees the first two passes' activations before the KT
passes; see the README). Halving the batch (``--batch-scale 0.5``) brings it back within the planned
budget. Benchmarks also use it to give every arm the same, smaller batch on a CPU. Patch size,
spacing and preprocessing are unchanged, so the variant reuses the preprocessed data (same
``data_identifier``); train with ``nnUNetv2_train ... -p NAME``.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Optional, Sequence

from nnunet_gsd.errors import UserError
from nnunet_gsd.utils import dataset_name, write_json_atomic


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plans-variant", help="copy nnU-Net plans with another batch size",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", dest="dataset", required=True,
                   help="dataset id or name (DatasetNNN_Name) in $nnUNet_preprocessed")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--batch-size", type=int, help="new batch size for every selected configuration")
    size.add_argument("--batch-scale", type=float, help="multiply the planned batch sizes (rounded, at least 1)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="source plans identifier (default: %(default)s)")
    p.add_argument("--name", help="new plans name (default: <plans>_bs<N> or <plans>_bsx<scale>)")
    p.add_argument("-c", dest="configurations", nargs="+", help="configurations to change (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing plans file of that name")
    p.set_defaults(func=_main)


def make_variant(plans: dict, name: str, batch_size: Optional[int] = None, batch_scale: Optional[float] = None,
                 configurations: Optional[Sequence[str]] = None) -> dict:
    """The plans under a new name with the batch size of the chosen configurations replaced or scaled."""
    if (batch_size is None) == (batch_scale is None):
        raise UserError("give exactly one of --batch-size and --batch-scale")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size} must be at least 1")
    if batch_scale is not None and batch_scale <= 0:
        raise UserError(f"--batch-scale {batch_scale} must be > 0")
    variant = copy.deepcopy(plans)
    variant["plans_name"] = name
    available = variant["configurations"]
    chosen = list(configurations) if configurations else list(available)
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise UserError(f"configuration(s) {unknown} not in the plans; available: {sorted(available)}")
    for configuration in chosen:
        entry = available[configuration]
        if "batch_size" not in entry:  # configurations that inherit everything from another one
            entry["batch_size"] = available[entry["inherits_from"]]["batch_size"]
        entry["batch_size"] = batch_size if batch_size is not None else max(1, round(entry["batch_size"] * batch_scale))
    return variant


def _dataset_folder(dataset: str) -> Path:
    from nnunetv2.paths import nnUNet_preprocessed
    if not nnUNet_preprocessed.is_set():
        raise UserError("nnUNet_preprocessed is not set: export it to the folder of your preprocessed datasets")
    return Path(str(nnUNet_preprocessed)) / dataset_name(dataset)


def _main(args: argparse.Namespace) -> int:
    folder = _dataset_folder(args.dataset)
    source = folder / f"{args.plans}.json"
    if not source.is_file():
        raise UserError(f"{source} does not exist: run nnUNetv2_plan_and_preprocess first (or check -p)")
    name = args.name or (f"{args.plans}_bs{args.batch_size}" if args.batch_size is not None
                         else f"{args.plans}_bsx{args.batch_scale:g}")
    target = folder / f"{name}.json"
    if target == source:
        raise UserError(f"--name {name} is the source plans {source}: choose another name")
    if target.is_file() and not args.overwrite:
        # trainings under $nnUNet_results/…__{name}__… were planned with this file: replacing it must be deliberate
        raise UserError(f"{target} exists: pass --overwrite to replace it, or choose another --name")
    variant = make_variant(json.loads(source.read_text()), name, args.batch_size, args.batch_scale,
                           args.configurations)
    write_json_atomic(target, variant, indent=4)
    sizes = {c: variant["configurations"][c].get("batch_size") for c in variant["configurations"]}
    print(f"wrote {target} (batch sizes {sizes}); train with: nnUNetv2_train {args.dataset} CONFIGURATION FOLD "
          f"-tr nnUNetTrainerGSD -p {name}")
    return 0
