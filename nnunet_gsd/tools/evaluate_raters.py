"""``nnunet_gsd evaluate-raters RAW_DATASET PRED_FOLDER``: Dice of predictions against every rater.

Arguments in the order of ``nnUNetv2_evaluate_folder`` (reference first): the raw dataset folder that
holds the raters' test labels (or its id or name in ``$nnUNet_raw``), then the predictions.

The paper's Table 6 scores a model against each annotator of a multi-rater test set separately
(LIDC, MMIS-2024: A1 … A4) and their mean. Datasets converted with ``nnunet_gsd convert lidc|mmis2024``
keep one folder per rater, ``labelsTs_A1/ … labelsTs_An/`` (any number), beside the consensus
``labelsTs/`` (docs/datasets.md). This command reads every ``labelsTs_A*`` folder and reports, per case
and overall, the foreground Dice per rater and the mean over raters, computed with nnU-Net's own metric
code (``compute_tp_fp_fn_tn``; Dice is NaN where reference and prediction are both empty and such
cases are left out of means, as ``nnUNetv2_evaluate_folder`` does). "Overall" per rater is the mean
over cases; the overall mean is the mean of the per-rater values.

MMIS-2024 is trained slice-wise in 2D; its converter writes the test cases as whole 3D volumes, which
``nnUNetv2_predict -c 2d`` predicts slice by slice into one volume per case, as the paper evaluates them.

Writes ``rater_dice.json`` and ``rater_dice.md`` (default: into PRED_FOLDER) and prints the table.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import (case_ids, foreground_dice, foreground_labels, load_dataset_json, markdown_table,
                                     reader_writer, require_folder)
from nnunet_gsd.utils import nanmean_or_nan, raw_dataset_folder, write_json_atomic

RATER_FOLDER = re.compile(r"labelsTs_A(\d+)$")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-raters", help="Dice of predictions against every rater's test labels (paper Table 6)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw_dir", help="nnU-Net raw dataset folder with dataset.json and labelsTs_A*/, or its id or name "
                                   "in $nnUNet_raw (as for nnunet_gsd preview)")
    p.add_argument("pred_dir", type=Path, help="folder of predictions (the -o folder of nnUNetv2_predict)")
    p.add_argument("--raters", nargs="+", metavar="A1",
                   help="evaluate only these raters (default: every labelsTs_A* folder)")
    p.add_argument("-o", "--output", type=Path,
                   help="output stem: writes STEM.json and STEM.md (default: PRED_FOLDER/rater_dice)")
    p.set_defaults(func=main)


def rater_folders(raw_dir: Path, only: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """``{"A1": raw_dir/labelsTs_A1, …}`` in rater-number order (A2 before A10)."""
    found = sorted(((int(m.group(1)), p) for p in Path(raw_dir).iterdir()
                    if p.is_dir() and (m := RATER_FOLDER.fullmatch(p.name))), key=lambda t: t[0])
    folders = {f"A{n}": p for n, p in found}
    if not folders:
        raise UserError(f"{raw_dir} has no labelsTs_A1/ … labelsTs_An/ folders: per-rater evaluation needs a "
                        f"multi-rater dataset (nnunet_gsd convert lidc|mmis2024); for one reference use "
                        f"nnUNetv2_evaluate_folder")
    if only:
        unknown = [r for r in only if r not in folders]
        if unknown:
            raise UserError(f"--raters {' '.join(unknown)}: {raw_dir} has raters {', '.join(folders)}")
        folders = {r: folders[r] for r in only}
    return folders


def evaluate(raw_dir: Path, pred_dir: Path, raters: Optional[Sequence[str]] = None) -> dict:
    """Per-case and overall Dice against each rater (see the module docstring). Pure apart from reading."""
    require_folder(pred_dir, "prediction folder", "pass the -o folder of nnUNetv2_predict")
    dataset_json = load_dataset_json(raw_dir)
    ending = dataset_json.get("file_ending")
    if not ending:
        raise UserError(f"{raw_dir}/dataset.json has no 'file_ending'; add it (e.g. \".png\")")
    folders = rater_folders(raw_dir, raters)
    labels = foreground_labels(dataset_json)
    cases = sorted(set().union(*(case_ids(f, ending) for f in folders.values())))
    if not cases:
        raise UserError(f"the rater folders of {raw_dir} hold no {ending} files")
    files = {c: Path(pred_dir) / f"{c}{ending}" for c in cases}
    missing = [c for c, f in files.items() if not f.is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(cases)} test case(s) have no prediction in {pred_dir} "
                        f"(e.g. {missing[0]}{ending}): predict imagesTs/ into that folder first")
    rw = reader_writer(dataset_json, files[cases[0]])

    per_case: Dict[str, Dict[str, float]] = {}
    for case in cases:
        prediction = None
        row: Dict[str, float] = {}
        for rater, folder in folders.items():
            ref_file = folder / f"{case}{ending}"
            if not ref_file.is_file():
                row[rater] = float("nan")  # this rater did not annotate the case
                continue
            reference = rw.read_seg(str(ref_file))[0]
            if prediction is None:
                prediction = rw.read_seg(str(files[case]))[0]
            try:
                row[rater] = foreground_dice(reference, prediction, labels)
            except UserError as e:
                raise UserError(f"{case}: {e} ({ref_file} vs {files[case]})") from None
        row["mean"] = nanmean_or_nan([row[r] for r in folders])
        per_case[case] = row
    per_rater = {r: nanmean_or_nan([per_case[c][r] for c in cases]) for r in folders}
    return {
        "prediction_folder": str(Path(pred_dir).resolve()),
        "dataset_folder": str(Path(raw_dir).resolve()),
        "raters": list(folders),
        "labels": [lab if isinstance(lab, int) else list(lab) for lab in labels],
        "per_case": per_case,
        "per_rater": per_rater,
        "mean": nanmean_or_nan(list(per_rater.values())),
        "note": "foreground Dice (nnU-Net's compute_tp_fp_fn_tn); NaN = empty reference and prediction, "
                "left out of means; per_rater = mean over cases, mean = mean over raters",
    }


def to_markdown(result: Mapping) -> str:
    raters = result["raters"]
    rows = [[case, *[row[r] for r in raters], row["mean"]] for case, row in result["per_case"].items()]
    rows.append(["**overall**", *[result["per_rater"][r] for r in raters], result["mean"]])
    return markdown_table(["case", *raters, "mean"], rows)


def main(args: argparse.Namespace) -> int:
    result = evaluate(raw_dataset_folder(args.raw_dir), args.pred_dir, args.raters)
    stem = args.output or Path(args.pred_dir) / "rater_dice"
    table = to_markdown(result)
    write_json_atomic(f"{stem}.json", result)
    Path(f"{stem}.md").write_text(f"Dice per rater: {result['prediction_folder']} vs {result['dataset_folder']}\n\n"
                                  f"{table}\n")
    print(table)
    print(f"\nmean Dice over raters: {result['mean']:.4f}  "
          + "  ".join(f"{r}: {v:.4f}" for r, v in result["per_rater"].items()))
    print(f"written: {stem}.json, {stem}.md")
    return 0
