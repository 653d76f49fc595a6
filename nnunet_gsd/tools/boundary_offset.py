"""``nnunet_gsd boundary-offset``: how far the labels' outlines sit from the image's edges, before training.

Runs the estimate of ``nnUNet_GSD_BOUNDARY_OFFSET=auto`` (docs/decisions.md §13) on a preprocessed dataset
(every training case, not one fold's) and prints, per label, the edge position in voxels (> 0: the outlines lie
inside the objects, labels too small; < 0: outside, labels too large), the offset the trainer would apply, how
many cases it rests on, and how many rings it measured (a third of the objects' median equivalent radius, at
least 6). ``--png`` draws the median ring profiles with the edge, to judge whether the fall
is one clear step (trust it) or a slope (do not).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, Optional, Tuple

from nnunet_gsd.errors import UserError
from nnunet_gsd.utils import dataset_name


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("boundary-offset", help="estimate how far label outlines sit from the image's edges",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", dest="dataset", required=True,
                   help="dataset id or name (DatasetNNN_Name) in $nnUNet_preprocessed")
    p.add_argument("-c", dest="configuration", default="2d", help="configuration (default: %(default)s)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("--png", type=Path, help="also draw the median ring profiles to this PNG file")
    p.set_defaults(func=_main)


def dataset_offsets(dataset: str, configuration: str = "2d", plans_id: str = "nnUNetPlans",
                    min_cases: Optional[int] = None, rings: Optional[int] = None
                    ) -> Tuple[str, Dict[int, dict], Dict[int, str]]:
    """The ``auto`` estimate on every training case of a preprocessed dataset: its folder name, the per-label
    results of :func:`~nnunet_gsd.training.calibration.estimate_class_offsets` (``min_cases`` and ``rings``
    passed on; None: the trainer's) and the label names (a one-line :class:`UserError` when the dataset, plans
    or configuration is missing or the labels are regions)."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_gsd.tools.common import foreground_labels, load_dataset_json
    from nnunet_gsd.training.calibration import MIN_CASES, estimate_class_offsets

    if not nnUNet_preprocessed.is_set():
        raise UserError("nnUNet_preprocessed is not set: export it to the folder of your preprocessed datasets")
    base = Path(str(nnUNet_preprocessed)) / dataset_name(dataset)
    plans_file = base / f"{plans_id}.json"
    if not plans_file.is_file():
        raise UserError(f"{plans_file} does not exist: run nnUNetv2_plan_and_preprocess first (or check -p)")
    plans = PlansManager(str(plans_file))
    if configuration not in plans.available_configurations:
        raise UserError(f"configuration {configuration!r} is not in {plans_file.name}; "
                        f"available: {plans.available_configurations}")
    config = plans.get_configuration(configuration)
    folder = base / config.data_identifier
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist: preprocess configuration {configuration} first "
                        f"(nnUNetv2_plan_and_preprocess -d {dataset} -c {configuration})")
    dataset_json = load_dataset_json(base)
    labels = foreground_labels(dataset_json)
    if any(isinstance(c, tuple) for c in labels):
        raise UserError(f"{base / 'dataset.json'} defines regions; boundary calibration, like GSD, needs one class "
                        f"per voxel (plain integer labels)")
    dataset_class = infer_dataset_class(str(folder))
    identifiers = dataset_class.get_identifiers(str(folder))
    classes = estimate_class_offsets(dataset_class(str(folder), identifiers), identifiers, labels,
                                     [float(s) for s in config.spacing],
                                     min_cases=MIN_CASES if min_cases is None else min_cases, rings=rings)
    names = {int(v): k for k, v in dataset_json["labels"].items() if isinstance(v, int)}
    return base.name, classes, names


def _main(args: argparse.Namespace) -> int:
    name, classes, names = dataset_offsets(args.dataset, args.configuration, args.plans)
    print(f"{name}, {args.configuration}: edge position in voxels from the labels' outlines "
          f"(> 0: labels too small, < 0: too large)")
    for c, v in classes.items():
        estimate = f"no estimate, {v['abstained']}" if v["estimate"] is None else f"{v['estimate']:+.2f}"
        print(f"  label {c} ({names.get(c, '?')}), {v['cases']} outlines: {estimate} -> auto moves it by "
              f"{v['offset']} ({v['rings']} rings per side)")
    print("train with it: nnUNet_GSD_BOUNDARY_OFFSET=auto (or a whole number of voxels for every class)")
    if args.png:
        _plot(classes, names, args.png)
        print(f"wrote {args.png}")
    return 0


def _plot(classes: dict, names: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for c, v in classes.items():
        if v["profile"] is None:
            continue
        rings = len(v["profile"]) // 2
        positions = [k + 0.5 for k in range(-rings, rings)]  # ring centres: −rings+0.5 … rings−0.5
        line, = ax.plot(positions, [float("nan") if x is None else x for x in v["profile"]], "o-",
                        label=f"{c} {names.get(c, '')}: edge {v['estimate']}, move {v['offset']}")
        if v["estimate"] is not None:
            ax.axvline(v["estimate"], color=line.get_color(), ls="--")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("distance from the label's outline (voxels; < 0 inside)")
    ax.set_ylabel("object-likeness (median over cases)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
