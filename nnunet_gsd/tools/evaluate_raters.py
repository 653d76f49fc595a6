"""``nnunet_gsd evaluate-raters PRED_DIR RAW_DATASET_DIR``: Dice of predictions against every rater.

The paper's Table 6 scores a model against each annotator of a multi-rater test set separately
(LIDC, MMIS-2024: A1 … A4) and their mean. Datasets converted with ``nnunet_gsd convert lidc|mmis2024``
keep one folder per rater, ``labelsTs_A1/ … labelsTs_An/`` (any number), beside the consensus
``labelsTs/`` (SPEC §6). This command reads every ``labelsTs_A*`` folder and reports, per case and
overall, the foreground Dice per rater and the mean over raters, computed with nnU-Net's own metric
code (``compute_tp_fp_fn_tn``; Dice is NaN where reference and prediction are both empty and such
cases are left out of means, as ``nnUNetv2_evaluate_folder`` does). "Overall" per rater is the mean
over cases; the overall mean is the mean of the per-rater values.

3D test volumes predicted slice by slice: MMIS-2024 is trained slice-wise in 2D. Its converter
writes the test cases as whole 3D volumes, which ``nnUNetv2_predict -c 2d`` predicts slice by slice
into one volume per case, so nothing needs assembling. If instead the predictions are one 2D file per
slice, the slices of a reference volume CASE are found through dataset.json ``"gsd": {"test_slices":
{CASE: [slice ids in order]}}`` when present, else by name: ``CASE_<n>``, ``CASE_s<n>``,
``CASE_slice<n>`` or ``CASE_z<n>`` (n = slice index along the first axis), stacked in index order.

Writes ``rater_dice.json`` and ``rater_dice.md`` (default: into PRED_DIR) and prints the table.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from nnunet_gsd.dataset_conversion import provenance
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import (case_ids, foreground_dice, load_dataset_json, markdown_table, nanmean,
                                     reader_writer, require_folder, write_json, foreground_labels)

RATER_FOLDER = re.compile(r"labelsTs_A(\d+)$")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-raters", help="Dice of predictions against every rater's test labels (paper Table 6)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pred_dir", type=Path, help="folder of predictions (e.g. from nnUNetv2_predict)")
    p.add_argument("raw_dir", type=Path, help="nnU-Net raw dataset folder with dataset.json and labelsTs_A*/")
    p.add_argument("--raters", nargs="+", metavar="A1",
                   help="evaluate only these raters (default: every labelsTs_A* folder)")
    p.add_argument("-o", "--output", type=Path,
                   help="output stem: writes STEM.json and STEM.md (default: PRED_DIR/rater_dice)")
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


def slice_files(pred_dir: Path, case: str, file_ending: str,
                slice_map: Optional[Mapping[str, Sequence[str]]] = None) -> List[Path]:
    """The prediction file(s) of ``case``: ``[CASE<ending>]``, or its 2D slices in order, or ``[]``."""
    whole = Path(pred_dir) / f"{case}{file_ending}"
    if whole.is_file():
        return [whole]
    if slice_map and case in slice_map:
        files = [Path(pred_dir) / f"{s}{file_ending}" for s in slice_map[case]]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(f"dataset.json gsd.test_slices lists {len(missing)} slice prediction(s) of {case} that "
                            f"are not in {pred_dir} (e.g. {missing[0]}): predict every test image first")
        return files
    pattern = re.compile(re.escape(case) + r"_(?:s|slice|z)?(\d+)" + re.escape(file_ending) + "$")
    indexed = sorted((int(m.group(1)), p) for p in Path(pred_dir).iterdir() if (m := pattern.fullmatch(p.name)))
    return [p for _, p in indexed]


def read_prediction(files: Sequence[Path], rw, reference_shape: Sequence[int]) -> np.ndarray:
    """Read one prediction; 2D slices are stacked along the first spatial axis into the reference's shape."""
    if len(files) == 1:
        return rw.read_seg(str(files[0]))[0]
    slices = [np.squeeze(rw.read_seg(str(f))[0]) for f in files]
    volume = np.stack(slices)[None]
    if tuple(volume.shape) != tuple(reference_shape):
        raise UserError(f"{len(files)} slice predictions ({files[0].name} …) stack to shape {volume.shape[1:]}, "
                        f"but the reference volume has shape {tuple(reference_shape)[1:]}: slices missing or "
                        f"from another case")
    return volume


def evaluate(pred_dir: Path, raw_dir: Path, raters: Optional[Sequence[str]] = None) -> dict:
    """Per-case and overall Dice against each rater (see the module docstring). Pure apart from reading."""
    require_folder(pred_dir, "prediction folder", "pass the -o folder of nnUNetv2_predict")
    dataset_json = load_dataset_json(raw_dir)
    ending = dataset_json.get("file_ending")
    if not ending:
        raise UserError(f"{raw_dir}/dataset.json has no 'file_ending'; add it (e.g. \".png\")")
    folders = rater_folders(raw_dir, raters)
    labels = foreground_labels(dataset_json)
    slice_map = provenance.from_dataset_json(dataset_json, str(raw_dir / "dataset.json")).test_slices
    cases = sorted(set().union(*(case_ids(f, ending) for f in folders.values())))
    if not cases:
        raise UserError(f"the rater folders of {raw_dir} hold no {ending} files")
    files = {c: slice_files(pred_dir, c, ending, slice_map) for c in cases}
    missing = [c for c, f in files.items() if not f]
    if missing:
        raise UserError(f"{len(missing)} of {len(cases)} test case(s) have no prediction in {pred_dir} "
                        f"(e.g. {missing[0]}{ending}): predict imagesTs/ into that folder first")
    rw = reader_writer(dataset_json, next(iter(folders.values())) / f"{cases[0]}{ending}")

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
                prediction = read_prediction(files[case], rw, reference.shape)
            try:
                row[rater] = foreground_dice(reference, prediction, labels)
            except UserError as e:
                raise UserError(f"{case}: {e} ({ref_file} vs {files[case][0]})") from None
        row["mean"] = nanmean([row[r] for r in folders])
        per_case[case] = row
    per_rater = {r: nanmean([per_case[c][r] for c in cases]) for r in folders}
    return {
        "prediction_folder": str(Path(pred_dir).resolve()),
        "dataset_folder": str(Path(raw_dir).resolve()),
        "raters": list(folders),
        "labels": [lab if isinstance(lab, int) else list(lab) for lab in labels],
        "per_case": per_case,
        "per_rater": per_rater,
        "mean": nanmean(list(per_rater.values())),
        "assembled_from_slices": [c for c in cases if len(files[c]) > 1],
        "note": "foreground Dice (nnU-Net's compute_tp_fp_fn_tn); NaN = empty reference and prediction, "
                "left out of means; per_rater = mean over cases, mean = mean over raters",
    }


def to_markdown(result: Mapping) -> str:
    raters = result["raters"]
    rows = [[case, *[row[r] for r in raters], row["mean"]] for case, row in result["per_case"].items()]
    rows.append(["**overall**", *[result["per_rater"][r] for r in raters], result["mean"]])
    return markdown_table(["case", *raters, "mean"], rows)


def main(args: argparse.Namespace) -> int:
    result = evaluate(args.pred_dir, args.raw_dir, args.raters)
    stem = args.output or Path(args.pred_dir) / "rater_dice"
    table = to_markdown(result)
    write_json(Path(f"{stem}.json"), result)
    Path(f"{stem}.md").write_text(f"Dice per rater: {result['prediction_folder']} vs {result['dataset_folder']}\n\n"
                                  f"{table}\n")
    print(table)
    print(f"\nmean Dice over raters: {result['mean']:.4f}  "
          + "  ".join(f"{r}: {v:.4f}" for r, v in result["per_rater"].items()))
    if result["assembled_from_slices"]:
        print(f"{len(result['assembled_from_slices'])} volume(s) assembled from 2D slice predictions")
    print(f"written: {stem}.json, {stem}.md")
    return 0
