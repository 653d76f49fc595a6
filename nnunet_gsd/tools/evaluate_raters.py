"""``nnunet_gsd evaluate-raters RAW_DATASET PRED_FOLDER``: predictions scored against every rater, their
consensus, and (with nnU-Net's probabilities) the soft metrics multi-rater work reports.

Arguments in the order of ``nnUNetv2_evaluate_folder`` (reference first): the raw dataset folder that
holds the raters' test labels (or its id or name in ``$nnUNet_raw``), then the predictions.

Datasets converted with ``nnunet_gsd convert lidc|mmis2024`` keep one folder per rater,
``labelsTs_A1/ … labelsTs_An/`` (any number), beside the consensus ``labelsTs/`` (docs/datasets.md).
This command reads every ``labelsTs_A*`` folder and reports, per case and overall:

* **Dice per rater** and their mean (the paper's Table 6), with nnU-Net's own metric code
  (``compute_tp_fp_fn_tn``; Dice is NaN where reference and prediction are both empty and such cases
  are left out of means, as ``nnUNetv2_evaluate_folder`` does);
* **Dice against the majority vote and the STAPLE consensus** of the case's raters
  (``dataset_conversion.consensus``, the functions the converter's ``--raters`` uses);
* from ``PRED_FOLDER/CASE.npz`` (``nnUNetv2_predict --save_probabilities``; key ``probabilities``,
  shape ``(C, *spatial)`` in the axis order of the segmentation files as nnU-Net reads them):
  the **QUBIQ score** (for thresholds 0.1 … 0.9, the Dice between the fraction of raters > t and the
  predicted probability > t, averaged; a threshold where both are empty scores 1, as in QUBIQ) and the
  **soft Dice** ``2 Σ f·p / (Σ f + Σ p)`` between the fraction of raters ``f`` and the probability ``p``.
  Per foreground label (its softmax channel; regions: their sigmoid channel), then averaged over labels.
  Without npz files they are reported as missing.

A rater without a file for a case did not annotate it: that rater's Dice is NaN there, and the consensus
and the fraction of raters use the others. "Overall" per rater is the mean over cases; the overall mean
is the mean of the per-rater values; the other overall values are means over cases.

MMIS-2024 is trained slice-wise in 2D; its converter writes the test cases as whole 3D volumes, which
``nnUNetv2_predict -c 2d`` predicts slice by slice into one volume per case, as the paper evaluates them.

Writes ``rater_dice.json`` and ``rater_dice.md`` (default: into PRED_FOLDER) and prints the table.
"""
from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from nnunet_gsd.dataset_conversion import consensus
from nnunet_gsd.dataset_conversion.consensus import rater_fraction
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import (Label, case_ids, foreground_dice, foreground_labels, load_dataset_json,
                                     markdown_table, probability_channels, qubiq_score, reader_writer,
                                     require_folder, soft_dice)
from nnunet_gsd.utils import nanmean_or_nan, raw_dataset_folder, write_json_atomic

RATER_FOLDER = re.compile(r"labelsTs_A(\d+)$")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate-raters", help="Dice of predictions against every rater's test labels (paper Table 6), their "
                                "majority and STAPLE consensus; QUBIQ score and soft Dice from --save_probabilities",
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


#: the per-case and overall values beside the per-rater Dice, in the order of the table
CONSENSUS = ("majority", "staple")
SOFT = ("qubiq_score", "soft_dice")
HEADERS = {"mean": "mean", "majority": "majority", "staple": "STAPLE", "qubiq_score": "QUBIQ", "soft_dice": "soft Dice"}


def soft_missing_line(pred_dir: Path) -> str:
    return (f"soft metrics (QUBIQ score, soft Dice) missing: {pred_dir} holds no CASE.npz probabilities; rerun "
            f"nnUNetv2_predict with --save_probabilities into it")


def read_spatial(rw, path: Path) -> np.ndarray:
    """A segmentation file as a spatial map: nnU-Net's reader returns ``(1, *spatial)`` (a 2D image is
    ``(1, 1, H, W)``); the consensus functions and STAPLE need the map itself, and ``CASE.npz`` holds
    ``(C, *spatial)`` with the same ``spatial``."""
    return rw.read_seg(str(path))[0][0]


def load_probabilities(path: Path, n_channels: int, spatial: Sequence[int]) -> np.ndarray:
    """The ``probabilities`` array of one ``--save_probabilities`` file, checked against the segmentation's shape."""
    rerun = "rerun nnUNetv2_predict with --save_probabilities"
    try:
        npz = np.load(path)
        if not isinstance(npz, np.lib.npyio.NpzFile):   # a plain .npy under the .npz name
            raise UserError(f"{path} is not an .npz archive: {rerun}, or remove the file")
        with npz:
            if "probabilities" not in npz.files:
                raise UserError(f"{path} has no 'probabilities' array (keys {npz.files}): it was not written by "
                                f"nnUNetv2_predict --save_probabilities; {rerun}, or remove the file")
            probabilities = npz["probabilities"]
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:   # what np.load raises on damaged files
        raise UserError(f"cannot read {path} ({e}): {rerun}") from None
    expected = (n_channels, *spatial)
    if probabilities.shape != expected:
        raise UserError(f"{path} holds probabilities of shape {probabilities.shape}, but the segmentation beside it "
                        f"needs {expected} (channels, *spatial): predict both with the same nnUNetv2_predict run "
                        f"(--save_probabilities) of a model of this dataset")
    return probabilities


def soft_scores(raters: Mapping[str, np.ndarray], probabilities: np.ndarray, labels: Sequence[Label],
                channels: Sequence[int]) -> Dict[str, float]:
    """QUBIQ score and soft Dice of one case, averaged over the foreground labels (pure)."""
    qubiq, soft = [], []
    for label, channel in zip(labels, channels):
        fraction = rater_fraction(raters, label)
        qubiq.append(qubiq_score(fraction, probabilities[channel]))
        soft.append(soft_dice(fraction, probabilities[channel]))
    return {"qubiq_score": nanmean_or_nan(qubiq), "soft_dice": nanmean_or_nan(soft)}


def evaluate(raw_dir: Path, pred_dir: Path, raters: Optional[Sequence[str]] = None) -> dict:
    """Per-case and overall metrics (see the module docstring). Pure apart from reading."""
    require_folder(pred_dir, "prediction folder", "pass the -o folder of nnUNetv2_predict")
    dataset_json = load_dataset_json(raw_dir)
    ending = dataset_json.get("file_ending")
    if not ending:
        raise UserError(f"{raw_dir}/dataset.json has no 'file_ending'; add it (e.g. \".png\")")
    folders = rater_folders(raw_dir, raters)
    labels = foreground_labels(dataset_json)
    channels, n_channels = probability_channels(dataset_json)
    cases = sorted(set().union(*(case_ids(f, ending) for f in folders.values())))
    if not cases:
        raise UserError(f"the rater folders of {raw_dir} hold no {ending} files")
    files = {c: Path(pred_dir) / f"{c}{ending}" for c in cases}
    missing = [c for c, f in files.items() if not f.is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(cases)} test case(s) have no prediction in {pred_dir} "
                        f"(e.g. {missing[0]}{ending}): predict imagesTs/ into that folder first")
    npz = {c: Path(pred_dir) / f"{c}.npz" for c in cases}
    with_npz = [c for c in cases if npz[c].is_file()]
    if with_npz and len(with_npz) < len(cases):
        # a mean over the cases that happen to have probabilities would not be comparable with another run's
        lacking = next(c for c in cases if c not in with_npz)
        raise UserError(f"{len(cases) - len(with_npz)} of {len(cases)} test case(s) have no probabilities in "
                        f"{pred_dir} (e.g. {lacking}.npz): rerun nnUNetv2_predict with --save_probabilities for "
                        f"every case, or remove the .npz files to score the segmentations only")
    rw = reader_writer(dataset_json, files[cases[0]])

    per_case: Dict[str, Dict[str, Optional[float]]] = {}
    for case in cases:
        prediction = read_spatial(rw, files[case])
        maps: Dict[str, np.ndarray] = {}
        row: Dict[str, Optional[float]] = {}
        for rater, folder in folders.items():
            ref_file = folder / f"{case}{ending}"
            if not ref_file.is_file():
                row[rater] = float("nan")  # this rater did not annotate the case
                continue
            maps[rater] = read_spatial(rw, ref_file)
            try:   # also checks the shape, so that the consensus below combines maps of one shape
                row[rater] = foreground_dice(maps[rater], prediction, labels)
            except UserError as e:
                raise UserError(f"{case}: {e} ({ref_file} vs {files[case]}): predict {case} again, or fix the "
                                f"rater's file") from None
        row["mean"] = nanmean_or_nan([row[r] for r in folders])
        for method in CONSENSUS:
            row[method] = foreground_dice(consensus.combine(method, maps), prediction, labels)
        if with_npz:
            row.update(soft_scores(maps, load_probabilities(npz[case], n_channels, prediction.shape), labels,
                                   channels))
        else:
            row.update(dict.fromkeys(SOFT))
        per_case[case] = row
    per_rater = {r: nanmean_or_nan([per_case[c][r] for c in cases]) for r in folders}
    mean = nanmean_or_nan(list(per_rater.values()))
    overall = {**per_rater, "mean": mean,
               **{k: nanmean_or_nan([per_case[c][k] for c in cases]) for k in CONSENSUS},
               **{k: nanmean_or_nan([per_case[c][k] for c in cases]) if with_npz else None for k in SOFT}}
    result = {
        "prediction_folder": str(Path(pred_dir).resolve()),
        "dataset_folder": str(Path(raw_dir).resolve()),
        "raters": list(folders),
        "labels": [lab if isinstance(lab, int) else list(lab) for lab in labels],
        "per_case": per_case,
        "per_rater": per_rater,
        "mean": mean,
        "overall": overall,
        "soft_metrics": "CASE.npz probabilities (nnUNetv2_predict --save_probabilities)" if with_npz else None,
        "note": "foreground Dice (nnU-Net's compute_tp_fp_fn_tn) against each rater, the raters' majority vote and "
                "STAPLE consensus; NaN = empty reference and prediction, left out of means; per_rater = mean over "
                "cases, mean = mean over raters, other overall values = mean over cases; qubiq_score = mean over "
                "thresholds 0.1 … 0.9 of Dice(fraction of raters > t, probability > t), 1 where both are empty; "
                "soft_dice = 2 Σ f·p / (Σ f + Σ p)",
    }
    if not with_npz:
        result["soft_missing"] = soft_missing_line(Path(pred_dir))
    return result


def to_markdown(result: Mapping) -> str:
    columns = [*result["raters"], "mean", *CONSENSUS, *SOFT]

    def cells(row: Mapping) -> list:
        return ["–" if row[k] is None else row[k] for k in columns]   # None: soft metric not computed

    rows = [[case, *cells(row)] for case, row in result["per_case"].items()]
    rows.append(["**overall**", *cells(result["overall"])])
    return markdown_table(["case", *result["raters"], *(HEADERS[k] for k in columns[len(result["raters"]):])], rows)


def main(args: argparse.Namespace) -> int:
    result = evaluate(raw_dataset_folder(args.raw_dir), args.pred_dir, args.raters)
    stem = args.output or Path(args.pred_dir) / "rater_dice"
    table = to_markdown(result)
    write_json_atomic(f"{stem}.json", result)
    missing = result.get("soft_missing")
    legend = ("Dice per rater, their mean, Dice against the raters' majority vote and STAPLE consensus, QUBIQ score "
              "and soft Dice against the fraction of raters")
    Path(f"{stem}.md").write_text(f"Raters: {result['prediction_folder']} vs {result['dataset_folder']}\n\n"
                                  f"{legend}.\n\n{table}\n" + (f"\n{missing}\n" if missing else ""))
    print(table)
    overall = result["overall"]
    print(f"\nmean Dice over raters: {result['mean']:.4f}  "
          + "  ".join(f"{r}: {v:.4f}" for r, v in result["per_rater"].items()))
    print(f"Dice vs majority: {overall['majority']:.4f}  vs STAPLE: {overall['staple']:.4f}")
    print(missing if missing else f"QUBIQ score: {overall['qubiq_score']:.4f}  soft Dice: {overall['soft_dice']:.4f}")
    print(f"written: {stem}.json, {stem}.md")
    return 0
