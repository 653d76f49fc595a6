"""Where does ``auto`` boundary calibration move labels? A survey over preprocessed datasets (no training).

    .venv/bin/python bench/calibration_survey.py 720:"Kvasir clean 256" 721:"Kvasir S_R 256" [-c 2d]
    .venv/bin/python bench/calibration_survey.py --preprocessed $OTHER_ROOT --append 610:"Kvasir clean 64"

``nnUNet_GSD_BOUNDARY_OFFSET=auto`` (docs/decisions.md §13) moves each label's outlines onto the image's edges
before training. It must move none on clean expert labels (an offset there would damage good labels) and should
move the labels of the synthetic-noise regimes (S_R shrinks them, S_E grows them). For every dataset (an id or
``DatasetNNN_Name`` in ``--preprocessed``, default ``$nnUNet_preprocessed``; ``ID:note`` adds a label for the
table) this runs exactly what ``nnunet_gsd boundary-offset -d D -c C`` runs (its :func:`dataset_offsets`) and writes
one row per dataset and foreground label to ``--out``.md/.json (``--append`` merges into an earlier survey).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nnunet_gsd.errors import UserError  # noqa: E402
from nnunet_gsd.tools.boundary_offset import dataset_offsets  # noqa: E402
from nnunet_gsd.training.calibration import MIN_CASES  # noqa: E402

COLUMNS = ("dataset", "label", "note", "configuration", "cases", "min_cases", "estimate", "inner", "outer",
           "abstained", "offset")
MEANING = ("cases: outlines (2D planes or 3D cases) the estimate rests on; min_cases: outlines an estimate needed "
           f"(the trainer needs {MIN_CASES}; a lower minimum shows what a small extract says, not what training "
           "does); estimate: edge position in voxels from the labels' outlines (> 0 labels too small, < 0 too "
           "large); inner/outer: innermost/outermost ring of the median profile (object-likeness, ≈ 1 object, ≈ 0 "
           "background); abstained: why there is no estimate; offset: voxels `auto` moves the label by (0: "
           "untouched)")


def resolve(root: Path, dataset: str) -> str:
    """``DatasetNNN_Name`` of an id or name in ``root``, or a one-line UserError."""
    names = [dataset] if dataset.startswith("Dataset") else \
        [p.name for p in root.glob(f"Dataset{int(dataset):03d}_*")] if dataset.isdigit() else []
    if len(names) != 1 or not (root / names[0]).is_dir():
        raise UserError(f"dataset {dataset!r} is not (or not uniquely) in {root}")
    return names[0]


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
    parser.add_argument("--append", action="store_true", help="merge into the --out survey instead of replacing it")
    args = parser.parse_args()
    command = shlex.join(["python", *[re.sub(r"^/[^:]*/", "PATH/", a) for a in sys.argv]])
    survey: Dict[str, List] = {"commands": [], "rows": []}
    json_file, md_file = Path(f"{args.out}.json"), Path(f"{args.out}.md")
    if args.append and json_file.is_file():
        survey = json.loads(json_file.read_text())
    try:
        root = Path(args.preprocessed or os.environ.get("nnUNet_preprocessed") or "")
        if root == Path(""):
            raise UserError("nnUNet_preprocessed is not set: export it or pass --preprocessed")
        os.environ["nnUNet_preprocessed"] = str(root.resolve())  # nnunetv2.paths reads it on first import
        specs = [(resolve(root, d), note) for d, _, note in (s.partition(":") for s in args.datasets)]
        for name, note in specs:
            for label, v in dataset_offsets(name, args.configuration, args.plans, args.min_cases)[1].items():
                profile = v["profile"] or [None]
                row = dict(zip(COLUMNS, (name, label, note, args.configuration, v["cases"], args.min_cases,
                                         v["estimate"], profile[0], profile[-1], v["abstained"], v["offset"])),
                           profile=v["profile"])
                same = ("dataset", "label", "note", "configuration", "min_cases")
                survey["rows"] = [r for r in survey["rows"] if any(r[k] != row[k] for k in same)] + [row]
    except UserError as e:
        sys.exit(f"calibration_survey: {e}")
    survey["commands"].append({"command": command, "date": datetime.datetime.now().isoformat(timespec="seconds")})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(survey, indent=1, ensure_ascii=False) + "\n")
    lines = ["# Boundary calibration survey (`nnunet_gsd boundary-offset`)", ""]
    lines += [f"    {c['command']}    # {c['date']}" for c in survey["commands"]]
    lines += ["", MEANING + ".", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in COLUMNS) + " |" for r in survey["rows"]]
    md_file.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.md/.json ({len(survey['rows'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
