"""Where does ``auto`` boundary calibration move labels? A survey over preprocessed datasets (no training).

    .venv/bin/python bench/calibration_survey.py 720:"Kvasir clean 256" 721=720:"Kvasir S_R 256" [-c 2d]
    .venv/bin/python bench/calibration_survey.py --preprocessed $OTHER_ROOT --append 610:"Kvasir clean 64"

``nnUNet_GSD_BOUNDARY_OFFSET=auto`` (docs/decisions.md §13) moves each label's outlines onto the image's edges
before training. It must move none on clean expert labels (an offset there would damage good labels) and should
move the labels of the synthetic-noise regimes (S_R shrinks them, S_E grows them). For every dataset (an id or
``DatasetNNN_Name`` in ``--preprocessed``, default ``$nnUNet_preprocessed``; ``ID:note`` adds a label for the
table) this runs exactly what ``nnunet_gsd boundary-offset -d D -c C`` runs (its :func:`dataset_offsets`) and writes
one row per dataset and foreground label to ``--out``.md/.json (``--append`` merges into an earlier survey).
``ID=CLEAN:note`` names the same cases with clean labels (a noisy build's clean twin, same case ids): the row then
also gives the training labels' mean Dice against the clean ones as given and after ``auto``'s shift
(:func:`~nnunet_gsd.method.calibration.shift_labels`, what the trainer applies).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workdirs import command_line, portable  # noqa: E402
from nnunet_gsd.errors import UserError  # noqa: E402
from nnunet_gsd.method.calibration import shift_labels  # noqa: E402
from nnunet_gsd.tools.boundary_offset import dataset_offsets  # noqa: E402
from nnunet_gsd.training.calibration import MIN_CASES  # noqa: E402

COLUMNS = ("dataset", "label", "note", "configuration", "cases", "min_cases", "radius", "rings", "estimate", "inner",
           "outer", "abstained", "offset", "dice_given", "dice_moved")
MEANING = ("cases: outlines (2D planes or 3D cases) the estimate rests on; min_cases: outlines an estimate needed "
           f"(the trainer needs {MIN_CASES}; a lower minimum shows what a small extract says, not what training "
           "does); estimate: edge position in voxels from the labels' outlines (> 0 labels too small, < 0 too "
           "large); radius: median equivalent radius of the label's outlines (voxels); rings: rings per side "
           "measured (0.4 of the radius, at least 6; rows surveyed with --rings: that fixed count, the rule before "
           "rings scaled with the objects); inner/outer: innermost/outermost ring of the median "
           "profile (object-likeness, ≈ 1 object, ≈ 0 background); abstained: why there is no estimate; offset: "
           "voxels `auto` moves the label by (0: untouched); dice_given/dice_moved: mean Dice of the training labels "
           "against the clean twin's, as given and moved by the offset (every training case; — without a twin)")


def resolve(root: Path, dataset: str) -> str:
    """``DatasetNNN_Name`` of an id or name in ``root``, or a one-line UserError."""
    names = [dataset] if dataset.startswith("Dataset") else \
        [p.name for p in root.glob(f"Dataset{int(dataset):03d}_*")] if dataset.isdigit() else []
    if len(names) != 1 or not (root / names[0]).is_dir():
        raise UserError(f"dataset {dataset!r} is not (or not uniquely) in {root}")
    return names[0]


def label_dice(root: Path, noisy: str, clean: str, label: int, offset: int, configuration: str = "2d",
               plans_id: str = "nnUNetPlans") -> Dict[str, float]:
    """Mean Dice (%) over every preprocessed training case of ``label`` in ``noisy`` against ``clean`` (the same
    cases with clean labels), as given and after :func:`shift_labels` by ``offset``; a case where both are empty
    counts 100."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(str(root / noisy / f"{plans_id}.json")).get_configuration(configuration)
    folders = [root / d / config.data_identifier for d in (noisy, clean)]
    classes = [infer_dataset_class(str(f)) for f in folders]
    ids = [sorted(c.get_identifiers(str(f))) for c, f in zip(classes, folders)]
    if ids[0] != ids[1]:
        raise UserError(f"{noisy} and {clean} do not hold the same cases")
    sets = [c(str(f), ids[0]) for c, f in zip(classes, folders)]
    spacing = [float(v) for v in config.spacing]
    given, moved = [], []
    for identifier in ids[0]:
        y, truth = (np.asarray(s.load_case(identifier)[1])[0] for s in sets)
        y, truth = torch.from_numpy((y == label).astype(np.int64)), truth == label
        planes = y if y.ndim == len(spacing) + 1 else y[None]   # (B, *spatial), as shift_labels takes them
        shifted = shift_labels(planes, [0, offset], spacing).reshape(y.shape) if offset else y
        for out, pred in ((given, y.numpy() == 1), (moved, shifted.numpy() == 1)):
            total = pred.sum() + truth.sum()
            out.append(100.0 if total == 0 else 200.0 * (pred & truth).sum() / total)
    return {"dice_given": round(float(np.mean(given)), 2), "dice_moved": round(float(np.mean(moved)), 2)}


def cell(column: str, value) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if column == "estimate" else f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", metavar="ID[:NOTE]", help="dataset id or name, optional note")
    parser.add_argument("-c", "--configuration", default="2d", help="configuration (default: %(default)s)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    parser.add_argument("--preprocessed", type=Path, help="preprocessed root (default: $nnUNet_preprocessed)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/calibration-survey", help="output prefix")
    parser.add_argument("--min-cases", type=int, default=MIN_CASES,
                        help="outlines an estimate needs (default: the trainer's %(default)s; lower it only to see "
                             "what a small extract says)")
    parser.add_argument("--rings", type=int, help="measure with this fixed number of rings per side (the rule "
                        "before rings scaled with the objects: 6) instead of the trainer's ring_count")
    parser.add_argument("--built", action="append", default=[], metavar="COMMAND",
                        help="how the datasets were built (repeatable; recorded in the header, local paths as PATH/)")
    parser.add_argument("--append", action="store_true", help="merge into the --out survey instead of replacing it")
    args = parser.parse_args()
    command = command_line("bench/calibration_survey.py", sys.argv[1:])
    survey: Dict[str, List] = {"commands": [], "rows": []}
    json_file, md_file = Path(f"{args.out}.json"), Path(f"{args.out}.md")
    if args.append and json_file.is_file():
        survey = json.loads(json_file.read_text())
    try:
        root = Path(args.preprocessed or os.environ.get("nnUNet_preprocessed") or "")
        if root == Path(""):
            raise UserError("nnUNet_preprocessed is not set: export it or pass --preprocessed")
        os.environ["nnUNet_preprocessed"] = str(root.resolve())  # nnunetv2.paths reads it on first import
        specs = []
        for spec in args.datasets:
            ids, _, note = spec.partition(":")
            noisy, _, clean = ids.partition("=")
            specs.append((resolve(root, noisy), resolve(root, clean) if clean else None, note))
        for name, clean, note in specs:
            for label, v in dataset_offsets(name, args.configuration, args.plans, args.min_cases,
                                            args.rings)[1].items():
                profile = v["profile"] or [None]
                dice: Dict[str, Optional[float]] = {"dice_given": None, "dice_moved": None}
                if clean:
                    dice = label_dice(root, name, clean, label, v["offset"], args.configuration, args.plans)
                row = dict(zip(COLUMNS, (name, label, note, args.configuration, v["cases"], args.min_cases,
                                         v.get("radius"), v.get("rings"), v["estimate"], profile[0], profile[-1],
                                         v["abstained"], v["offset"], dice["dice_given"], dice["dice_moved"])),
                           truth=clean, fixed_rings=args.rings, profile=v["profile"])
                same = ("dataset", "label", "note", "configuration", "min_cases", "fixed_rings")
                survey["rows"] = [r for r in survey["rows"] if any(r.get(k) != row[k] for k in same)] + [row]
    except UserError as e:
        sys.exit(f"calibration_survey: {e}")
    survey["commands"].append({"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds")})
    built = survey.setdefault("built", [])
    built += [b for b in map(portable, args.built) if b not in built]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(survey, indent=1, ensure_ascii=False) + "\n")
    lines = ["# Boundary calibration survey (`nnunet_gsd boundary-offset`)", ""]
    if survey.get("built"):
        lines += ["Datasets built with:", ""] + [f"    {b}" for b in survey["built"]] + ["", "Surveyed with:", ""]
    lines += [f"    {c['command']}    # {c['date']}" for c in survey["commands"]]
    lines += ["", MEANING + ".", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    ordered = sorted(survey["rows"], key=lambda r: (r["dataset"], r["label"], r.get("fixed_rings") is not None))
    lines += ["| " + " | ".join(cell(k, r.get(k)) for k in COLUMNS) + " |" for r in ordered]
    md_file.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.md/.json ({len(survey['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
