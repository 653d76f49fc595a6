"""``nnunet_gsd audit -d D -c C -tr TRAINER``: which training labels are wrong, and where.

Every training case is scored with a model that did **not** train on it: nnU-Net's cross-validation
(``splits_final.json`` in the preprocessed dataset) trains fold F without its validation cases, so fold
F's prediction of those cases is out-of-sample. The probabilities come from nnU-Net's own validation
(``nnUNetv2_train D C F -tr T --npz`` writes ``fold_F/validation/CASE.npz``: key ``probabilities``, shape
(classes, *spatial) in the axis order of the raw label as nnU-Net's reader returns it), or, where a fold
has none, from ``nnUNetv2_predict … -f F --save_probabilities`` on that fold's validation images (kept in
``OUT/predictions/fold_F/`` and predicted again when the checkpoint is newer). With fewer than all folds,
the cases in the training set of every audited fold are listed as not scored (they have no
out-of-sample prediction).

Scoring (``--scorer ours``, the default). The **case score** asks how surprising the label is to the
out-of-sample model, beyond what the model's own uncertainty predicts (a typicality test: Cover and Thomas,
Elements of Information Theory, 2nd ed., ch. 3, the asymptotic equipartition property):

* per pixel i with label y_i and predicted distribution p_i, the excess surprisal s_i = −log p_i(y_i) − H(p_i);
  its mean under labels drawn from the model is 0, so a label that is as likely as the model expects scores
  ~0 where the model is unsure as well as where it is sure, and a confidently contradicted label scores high
  (p is clipped at 1e-6: one pixel costs at most 13.8 nats);
* per foreground class c, over its region R_c (pixels labelled c or predicted c by the argmax; the ignore
  label left out), the class's surprise is the mean of s_i and its label quality exp(−surprise) (1: as
  likely as expected, lower is worse; slightly above 1 where the label agrees with an unsure model's
  argmax; NaN: the class is neither labelled nor predicted); the case's score is the mean over its
  foreground classes (1.0 when all are NaN), lower is worse, and its ``surprise`` the mean of the classes'.

The **suspected pixels** are confident learning's (Northcutt, Jiang and Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 70, 2021):

* per class c, the threshold t_c is the mean predicted probability of c over all pixels labelled c (over
  every scored case; the ignore label, if any, is left out);
* a pixel labelled y is **suspected** when some other class k is confidently predicted (p_k ≥ t_k) while
  its own label is not (p_y < t_y); its suggested class is the most probable of those k; the case's
  suspected fraction is the share of its pixels suspected.

On Kvasir-SEG 64² with 17.5 % of the training labels corrupted (``bench/audit.py``) the excess surprisal
ranks corrupted cases better than confident learning's own case score (1 − |S_c| / |L_c ∪ S_c|, the suspected
and labelled pixels of class c) and than cleanlab's softmin: see ``bench/results/audit.md``. The scores are
absolute, not ranks: on a clean dataset with a calibrated model every case scores close to 1 and nothing is
flagged that the probabilities do not contradict.

``--scorer cleanlab`` (optional, AGPL-3.0: ``pip install 'nnunet_gsd[audit]'``) scores the same
probabilities with ``cleanlab.segmentation.rank.get_label_quality_scores`` (softmin of the pixels'
self-confidence; the case score) and ``cleanlab.segmentation.filter.find_label_issues`` (the suspected
pixels, thresholds over all pixels of all cases; suggested class: the argmax).

Output (default ``$nnUNet_results/D/TRAINER__PLANS__C/audit/``, ``audit_cleanlab/`` for cleanlab):
``audit.csv`` (worst first), ``audit.json`` (settings, thresholds, every case, the unscored ones),
``suspicion/CASE<file_ending>`` (1 = suspected, in the labels' format), ``error_percent/CASE<file_ending>``
(per pixel 100 · (1 − p(label)), whole percent: how likely the label is wrong, to threshold as you choose),
``corrected/CASE<file_ending>``
(the label with its suspected pixels replaced by the suggested class) and ``worst.png`` (image, label,
prediction, suspected pixels of the ``--top`` worst cases; 3D: the slice with most suspected pixels).

``--write-dataset NEW_ID`` with ``--drop FRACTION`` (the worst FRACTION of the scored cases left out)
and/or ``--relabel`` (the scored cases' labels replaced by ``corrected/``) writes a new raw dataset
``DatasetNEW_ID_<Name>Audited`` beside the source (imagesTr, labelsTr, imagesTs/labelsTs copied as they
are, dataset.json by nnU-Net's ``generate_dataset_json`` with an ``"audit"`` block recording the source,
trainer, folds, scorer, fraction and which cases were dropped or relabelled), built in a temporary
folder and renamed into place. Train it with stock nnU-Net and compare.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import (add_subcommand, case_ids, console_env, load_dataset_json, reader_writer,
                                     run_command)
from nnunet_gsd.utils import atomic_path, dataset_name, is_rgb, raw_dataset_folder, write_json_atomic

SCORERS = ("ours", "cleanlab")
CITATION = ("Northcutt, Jiang and Chuang, Confident Learning: Estimating Uncertainty in Dataset Labels, "
            "JAIR 70, 2021")
CLEANLAB_HINT = ("pip install 'nnunet_gsd[audit]' (or pip install cleanlab; cleanlab is AGPL-3.0, an optional "
                 "extra of this Apache-2.0 package), or use the default --scorer ours")


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "audit", "rank the training labels by how likely they are wrong, with "
                       "out-of-sample predictions", __doc__)
    p.add_argument("-tr", dest="trainer", required=True, help="trainer class of the cross-validation models")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("-f", dest="folds", nargs="+", metavar="FOLD",
                   help="folds to use (default: every fold of splits_final.json that has been trained)")
    p.add_argument("--out", type=Path, help="output folder (default: the model folder's audit/ or audit_cleanlab/)")
    p.add_argument("--top", type=int, default=12, metavar="K", help="cases in worst.png (default: %(default)s)")
    p.add_argument("--scorer", choices=SCORERS, default="ours",
                   help="ours (confident-learning thresholds per class; default) or cleanlab (optional extra)")
    p.add_argument("--write-dataset", type=int, metavar="NEW_ID",
                   help="write a new raw dataset with this id (with --drop and/or --relabel)")
    p.add_argument("--drop", type=float, metavar="WORST_FRACTION",
                   help="with --write-dataset: leave out this fraction of the scored cases, worst first")
    p.add_argument("--relabel", action="store_true",
                   help="with --write-dataset: replace the suspected pixels by the suggested class")
    p.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth",
                   help="checkpoint to predict with where validation probabilities are missing (default: %(default)s)")
    p.add_argument("-device", default=None, choices=["cuda", "cpu", "mps"],
                   help="prediction device (default: cuda when available, else cpu)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring when predicting (faster)")
    p.add_argument("-np", dest="num_processes", type=int, default=int(os.environ.get("nnUNet_def_n_proc", "2")),
                   help="processes for prediction pre/post-processing (default: $nnUNet_def_n_proc or 2)")
    p.set_defaults(func=main)


# ================================================================ scoring (pure)
class Thresholds:
    """Confident-learning thresholds t_c: mean probability of class c over the pixels labelled c."""

    def __init__(self, num_classes: int, ignore_label: Optional[int] = None):
        self.sums = np.zeros(num_classes, dtype=np.float64)
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.ignore_label = ignore_label

    def add(self, label: np.ndarray, probabilities: np.ndarray) -> None:
        flat_label = label.reshape(-1)
        flat_probs = probabilities.reshape(probabilities.shape[0], -1)
        for c in range(len(self.sums)):
            mask = flat_label == c
            self.counts[c] += int(mask.sum())
            self.sums[c] += float(flat_probs[c][mask].sum(dtype=np.float64))

    def values(self) -> np.ndarray:
        """t_c per class; NaN for a class no pixel is labelled with (it is then never a confident prediction)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)


def class_thresholds(pairs: Iterable[Tuple[np.ndarray, np.ndarray]], num_classes: int,
                     ignore_label: Optional[int] = None) -> np.ndarray:
    """t_c over (label, probabilities) pairs (see :class:`Thresholds`)."""
    acc = Thresholds(num_classes, ignore_label)
    for label, probabilities in pairs:
        acc.add(label, probabilities)
    return acc.values()


def scorable(label: np.ndarray, num_classes: int,
             ignore_label: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label as int64, the pixels a score may use: a class of the model and not the ignore label, the label with
    the others set to 0 so that it can index the probabilities)."""
    lab = np.asarray(label).astype(np.int64)
    valid = (lab >= 0) & (lab < num_classes)
    if ignore_label is not None:
        valid &= lab != ignore_label
    return lab, valid, np.where(valid, lab, 0)


def suspect(label: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray,
            ignore_label: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Suspected pixels and their suggested class (Confident Learning, Northcutt et al. 2021).

    A pixel labelled y is suspected when some class k ≠ y has p_k ≥ t_k while p_y < t_y; the suggested class
    is the most probable such k (elsewhere the label itself). Pixels with the ignore label are never suspected.
    ``label``: integer map of the spatial shape; ``probabilities``: (classes, *spatial).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    k = probs.shape[0]
    lab, valid, safe = scorable(label, k, ignore_label)
    with np.errstate(invalid="ignore"):
        confident = probs >= thresholds.reshape((k,) + (1,) * lab.ndim)   # NaN threshold: never confident
    own = np.take_along_axis(probs, safe[None], axis=0)[0]
    own_threshold = thresholds[safe]
    other = confident & (np.arange(k).reshape((k,) + (1,) * lab.ndim) != safe[None])
    with np.errstate(invalid="ignore"):
        suspected = valid & other.any(axis=0) & (own < own_threshold)
    suggested = np.where(suspected, np.argmax(np.where(other, probs, -np.inf), axis=0), lab)
    return suspected, suggested.astype(label.dtype if np.issubdtype(label.dtype, np.integer) else np.int64)


def label_error_probability(label: np.ndarray, probabilities: np.ndarray,
                            ignore_label: Optional[int] = None) -> np.ndarray:
    """Per pixel, the out-of-sample model's probability that the label is wrong, 1 − p(y) (0 for the ignore
    label): the graded form of the suspected pixels, for a user who sets their own threshold (on Kvasir-SEG it
    finds the wrong pixels better than the binary map, ``bench/results/audit-r2.md``)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    lab, valid, safe = scorable(label, probs.shape[0], ignore_label)
    return np.where(valid, 1.0 - np.take_along_axis(probs, safe[None], axis=0)[0], 0.0)


PROBABILITY_FLOOR = 1e-6   # −log of it bounds one pixel's surprisal: 13.8 nats


def class_surprise(label: np.ndarray, probabilities: np.ndarray, foreground: Sequence[int],
                   ignore_label: Optional[int] = None) -> Dict[int, float]:
    """Per foreground class c: the mean excess surprisal −log p(y) − H(p) over the pixels labelled c or predicted
    c by the argmax (NaN where there are none). See the module docstring (a typicality test, Cover and Thomas
    ch. 3). ``label``: integer map of the spatial shape; ``probabilities``: (classes, *spatial)."""
    probs = np.clip(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR, 1.0)
    lab, valid, safe = scorable(label, probs.shape[0], ignore_label)
    excess = -np.log(np.take_along_axis(probs, safe[None], axis=0)[0]) + (probs * np.log(probs)).sum(axis=0)
    predicted = np.argmax(probs, axis=0)
    out: Dict[int, float] = {}
    for c in foreground:
        region = valid & ((lab == c) | (predicted == c))
        out[int(c)] = float(excess[region].mean()) if region.any() else float("nan")
    return out


def overlap_quality(label: np.ndarray, suspected: np.ndarray, suggested: np.ndarray, foreground: Sequence[int],
                    ignore_label: Optional[int] = None) -> Dict[int, float]:
    """Per foreground class: 1 − |S_c| / |L_c ∪ S_c| of the suspected pixels S_c labelled or suggested c and the
    pixels L_c labelled c (NaN where both are empty); cleanlab's per-class figure, whose case score is its own."""
    valid = np.ones(label.shape, bool) if ignore_label is None else label != ignore_label
    per_class: Dict[int, float] = {}
    for c in foreground:
        labelled = (label == c) & valid
        involved = suspected & (labelled | (suggested == c))
        union = int((labelled | involved).sum())
        per_class[int(c)] = float("nan") if union == 0 else 1.0 - int(involved.sum()) / union
    return per_class


def case_row(label: np.ndarray, suspected: np.ndarray, per_class: Mapping[int, float],
             ignore_label: Optional[int] = None, surprise: Optional[Mapping[int, float]] = None) -> dict:
    """A case's audit row: per-class quality, their mean over finite classes (the score; 1.0 when none), the
    mean class surprise where given, and the suspected pixels and fraction."""
    valid = np.ones(label.shape, bool) if ignore_label is None else label != ignore_label
    finite = [v for v in per_class.values() if np.isfinite(v)]
    pixels = int(valid.sum())
    row = {"score": float(np.mean(finite)) if finite else 1.0, "per_class": dict(per_class),
           "suspected_pixels": int(suspected.sum()), "pixels": pixels,
           "suspected_fraction": float(suspected.sum()) / pixels if pixels else 0.0}
    if surprise is not None:
        nats = [v for v in surprise.values() if np.isfinite(v)]
        row["surprise"] = float(np.mean(nats)) if nats else 0.0
    return row


def case_scores(label: np.ndarray, probabilities: np.ndarray, suspected: np.ndarray, foreground: Sequence[int],
                ignore_label: Optional[int] = None) -> dict:
    """``--scorer ours``: per-class quality exp(−surprise) (:func:`class_surprise`), the case score (their mean),
    the case surprise and the suspected pixels' share."""
    surprise = class_surprise(label, probabilities, foreground, ignore_label)
    quality = {c: float(np.exp(-v)) if np.isfinite(v) else float("nan") for c, v in surprise.items()}
    return case_row(label, suspected, quality, ignore_label, surprise)


def rank(rows: Sequence[dict]) -> List[dict]:
    """Worst first: lowest score, then most suspected pixels, then the case id."""
    return sorted(rows, key=lambda r: (r["score"], -r["suspected_fraction"], r["case"]))


def cleanlab_scores(labels: Sequence[np.ndarray], probabilities: Sequence[np.ndarray],
                    ignore_label: Optional[int] = None) -> Tuple[List[float], List[np.ndarray], List[np.ndarray]]:
    """cleanlab's segmentation scorer on cases of any shape: (case scores, suspected maps, suggested maps).

    ``find_label_issues`` estimates its thresholds over every pixel of every case, so all cases are flattened
    into one (1, 1, pixels) "image"; ``get_label_quality_scores`` (softmin) runs per case.
    """
    try:
        from cleanlab.segmentation.filter import find_label_issues
        from cleanlab.segmentation.rank import get_label_quality_scores
    except ImportError:
        raise UserError(f"--scorer cleanlab: cleanlab is not installed: {CLEANLAB_HINT}") from None
    valids = [np.ones(lab.shape, bool) if ignore_label is None else lab != ignore_label for lab in labels]
    flat_labels = np.concatenate([lab[v].astype(np.int64) for lab, v in zip(labels, valids)])
    flat_probs = np.concatenate([p[:, v].astype(np.float64) for p, v in zip(probabilities, valids)], axis=1)
    flat_probs /= flat_probs.sum(axis=0, keepdims=True)   # float32 sums are 1 ± 1e-7; cleanlab checks
    issues = find_label_issues(flat_labels[None, None], flat_probs[:, None, :][None], n_jobs=1,
                               verbose=False).reshape(-1)
    scores, suspected, suggested = [], [], []
    start = 0
    for lab, p, v in zip(labels, probabilities, valids):
        n = int(v.sum())
        mask = np.zeros(lab.shape, bool)
        mask[v] = issues[start:start + n]
        image_scores, _ = get_label_quality_scores(flat_labels[None, None, start:start + n],
                                                   flat_probs[None, :, None, start:start + n], method="softmin",
                                                   n_jobs=1, verbose=False)
        start += n
        scores.append(float(image_scores[0]))
        suspected.append(mask)
        suggested.append(np.where(mask, np.argmax(p, axis=0), lab).astype(lab.dtype))
    return scores, suspected, suggested


# ================================================================ where the probabilities come from
@dataclass
class CaseSource:
    case: str
    fold: int
    probabilities: Path       # CASE.npz
    origin: str               # "validation" (nnU-Net's --npz) or "predicted" (by this command)


@dataclass
class Plan:
    """Which case is scored by which fold, from which file; what still needs predicting; what is not scored."""
    sources: Dict[str, CaseSource] = field(default_factory=dict)
    to_predict: Dict[int, List[str]] = field(default_factory=dict)
    not_scored: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def fold_validation_cases(splits: Sequence[Mapping], fold: int) -> List[str]:
    """Fold ``fold``'s validation cases as nnU-Net's ``do_split`` picks them (its seeded 80:20 split past the file)."""
    if fold < len(splits):
        return list(splits[fold]["val"])
    keys = np.sort(list(set(splits[0]["train"]) | set(splits[0]["val"])))
    rnd = np.random.RandomState(seed=12345 + fold)
    idx_tr = rnd.choice(len(keys), int(len(keys) * 0.8), replace=False)
    return [str(keys[i]) for i in range(len(keys)) if i not in idx_tr]


def train_command(dataset: str, configuration: str, fold: object, trainer: str, plans: str, *extra: str) -> str:
    p = "" if plans == "nnUNetPlans" else f" -p {plans}"
    return f"nnUNetv2_train {dataset} {configuration} {fold} -tr {trainer}{p}" + "".join(f" {e}" for e in extra)


def plan_sources(training_cases: Sequence[str], splits: Sequence[Mapping], folds: Sequence[int], model_dir: Path,
                 predictions_dir: Path, checkpoint: str, dataset: str, configuration: str, trainer: str,
                 plans: str) -> Plan:
    """Assign each training case to the first audited fold that validates it; find its probabilities."""
    plan = Plan()
    known = set(training_cases)
    for fold in folds:
        fold_dir = model_dir / f"fold_{fold}"
        if not fold_dir.is_dir():
            raise UserError(f"fold {fold} of {model_dir.name} is not trained ({fold_dir} not found): "
                            f"{train_command(dataset, configuration, fold, trainer, plans, '--npz')}")
        chk = fold_dir / checkpoint
        for case in fold_validation_cases(splits, fold):
            if case not in known or case in plan.sources:
                continue
            npz = fold_dir / "validation" / f"{case}.npz"
            if npz.is_file():
                plan.sources[case] = CaseSource(case, fold, npz, "validation")
                continue
            if not chk.is_file():
                raise UserError(
                    f"fold {fold}: no validation probabilities ({npz} missing) and no {chk.name} to predict them "
                    f"with (training unfinished?): "
                    f"{train_command(dataset, configuration, fold, trainer, plans, '--npz')} (add --c to continue "
                    f"a run, or --val --npz to only validate a finished one)")
            cached = predictions_dir / f"fold_{fold}" / f"{case}.npz"
            plan.sources[case] = CaseSource(case, fold, cached, "predicted")
            if not cached.is_file() or cached.stat().st_mtime < chk.stat().st_mtime:
                plan.to_predict.setdefault(fold, []).append(case)
    plan.not_scored = [c for c in training_cases if c not in plan.sources]
    return plan


def predict_missing(plan: Plan, raw: Path, file_ending: str, predictions_dir: Path, args: argparse.Namespace,
                    name: str) -> None:
    """nnUNetv2_predict --save_probabilities on each fold's validation images that lack probabilities."""
    env = console_env()
    for fold, cases in sorted(plan.to_predict.items()):
        out = predictions_dir / f"fold_{fold}"
        inputs = predictions_dir / f".input_fold_{fold}"
        shutil.rmtree(inputs, ignore_errors=True)
        inputs.mkdir(parents=True)
        for case in cases:
            files = sorted((raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{file_ending}"))
            if not files:
                raise UserError(f"no image {raw / 'imagesTr'}/{case}_0000{file_ending} to predict fold {fold}'s "
                                f"validation case {case}: restore the raw dataset")
            for f in files:
                os.symlink(f.resolve(), inputs / f.name)
        print(f"fold {fold}: predicting {len(cases)} validation case(s) with nnUNetv2_predict (no --npz "
              f"probabilities in fold_{fold}/validation/; "
              f"{train_command(args.dataset, args.configuration, fold, args.trainer, args.plans, '--val --npz')} "
              f"writes them)", flush=True)
        cmd = ["nnUNetv2_predict", "-i", str(inputs), "-o", str(out), "-d", name, "-c", args.configuration,
               "-tr", args.trainer, "-p", args.plans, "-f", str(fold), "-chk", args.checkpoint,
               "--save_probabilities", "-device", args.device, "-npp", str(args.num_processes),
               "-nps", str(args.num_processes), "--disable_progress_bar"] + (
            ["--disable_tta"] if args.disable_tta else [])
        try:
            run_command(cmd, env, log_file=predictions_dir / f"fold_{fold}.log",
                        what=f"prediction of fold {fold}'s validation cases")
        finally:
            shutil.rmtree(inputs, ignore_errors=True)
        for case in cases:
            if not (out / f"{case}.npz").is_file():
                raise UserError(f"nnUNetv2_predict wrote no {out / case}.npz (log: {predictions_dir}/fold_{fold}.log)")


# ================================================================ files
def load_probabilities(path: Path, shape: Tuple[int, ...], num_classes: int) -> np.ndarray:
    """(classes, *spatial) probabilities of an nnU-Net .npz, checked against the label's shape."""
    try:
        with np.load(path) as f:
            probs = f["probabilities"]
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: not nnU-Net probabilities ({e}); delete it and run the audit again") from None
    if probs.shape != (num_classes, *shape):
        raise UserError(f"{path}: probabilities of shape {probs.shape}, expected {(num_classes, *shape)} (classes, "
                        f"*label shape): was it predicted with another dataset or configuration?")
    return probs


def write_csv(path: Path, rows: Sequence[dict], class_names: Mapping[int, str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "case", "fold", "score", "surprise_nats", "suspected_fraction", "suspected_pixels"]
                   + [f"score_{class_names[c]}" for c in class_names])
        for i, r in enumerate(rows, 1):
            w.writerow([i, r["case"], r["fold"], f"{r['score']:.6f}",
                        f"{r['surprise']:.6f}" if "surprise" in r else "", f"{r['suspected_fraction']:.6f}",
                        r["suspected_pixels"]] + [f"{r['per_class'][c]:.6f}" for c in class_names])


def most_suspected_slice(suspected: np.ndarray, label: np.ndarray) -> int:
    """Index along the first axis of a (Z, Y, X) map: most suspected pixels, else most labelled, else the middle."""
    for m in (suspected, label > 0):
        counts = m.reshape(m.shape[0], -1).sum(axis=1)
        if counts.max() > 0:
            return int(np.argmax(counts))
    return suspected.shape[0] // 2


def worst_grid(path: Path, panels: Sequence[dict], rgb: bool) -> None:
    """A row per case: image, label (green contour), prediction (magenta), suspected pixels (red)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from nnunet_gsd.tools.overlay import PREDICTION_COLOUR, REFERENCE_COLOUR, to_rgb

    fig, axes = plt.subplots(len(panels), 4, squeeze=False, figsize=(10, 2.9 * len(panels) + 0.5))
    for row, p in enumerate(panels):
        base = to_rgb(p["image"], rgb)
        label_pic = base.copy()
        label_pic[find_boundaries(p["label"], mode="inner")] = REFERENCE_COLOUR
        pred_pic = base.copy()
        pred_pic[find_boundaries(p["prediction"], mode="inner")] = PREDICTION_COLOUR
        sus_pic = base * 0.6
        sus_pic[p["suspected"]] = (1.0, 0.0, 0.0)
        sus_pic[find_boundaries(p["label"], mode="inner") & ~p["suspected"]] = REFERENCE_COLOUR
        for col, (pic, title) in enumerate([(base, f"{p['case']}{p['where']}"), (label_pic, "label"),
                                            (pred_pic, f"prediction (fold {p['fold']})"),
                                            (sus_pic, f"suspected {100 * p['fraction']:.1f}%")]):
            ax = axes[row, col]
            ax.imshow(pic, interpolation="nearest")
            ax.set_title(title if col else f"#{row + 1} {title}\nscore {p['score']:.3f}", fontsize=8)
            ax.axis("off")
    fig.suptitle("worst labels: label contour green, prediction magenta, suspected pixels red", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# ================================================================ the new dataset
def new_dataset_folder(raw_root: Path, new_id: int, source_name: str) -> Path:
    """``DatasetNNN_<Name>Audited`` in ``raw_root``; refuses an id nnU-Net already knows (raw/preprocessed/results)."""
    if not 1 <= new_id <= 999:
        raise UserError(f"--write-dataset {new_id}: nnU-Net dataset ids are 1-999")
    roots = [raw_root] + [Path(os.environ[v]) for v in ("nnUNet_preprocessed", "nnUNet_results") if os.environ.get(v)]
    for root in roots:
        taken = sorted(root.glob(f"Dataset{new_id:03d}_*")) if root.is_dir() else []
        if taken:
            raise UserError(f"--write-dataset {new_id}: the id is taken ({taken[0]}): pick a free id")
    short = source_name.split("_", 1)[1] if "_" in source_name else source_name
    return raw_root / f"Dataset{new_id:03d}_{short}Audited"


def write_dataset(source: Path, target: Path, ranked: Sequence[dict], corrected_dir: Optional[Path],
                  drop: Optional[float], relabel: bool, provenance: Mapping) -> dict:
    """Write the audited copy of raw dataset ``source`` to ``target`` atomically; returns the "audit" record.

    ``ranked``: the scored cases, worst first (``case``, ``suspected_pixels``); unscored training cases are
    copied unchanged. ``corrected_dir`` holds the relabelled labels (``CASE<file_ending>``) for ``relabel``.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    if drop is None and not relabel:
        raise UserError("--write-dataset needs --drop WORST_FRACTION and/or --relabel")
    if drop is not None and not 0 < drop < 1:
        raise UserError(f"--drop {drop}: a fraction of the scored cases, between 0 and 1 (e.g. 0.1)")
    if target.exists():
        raise UserError(f"{target} already exists: pick another --write-dataset id or remove it")
    dj = load_dataset_json(source)
    ending = dj["file_ending"]
    training = case_ids(source / "labelsTr", ending)
    n_drop = int(round(drop * len(ranked))) if drop is not None else 0
    dropped = [r["case"] for r in ranked[:n_drop]]
    scored = {r["case"] for r in ranked}
    relabelled = {r["case"]: int(r["suspected_pixels"]) for r in ranked[n_drop:]
                  if relabel and r["suspected_pixels"] > 0}
    kept = [c for c in training if c not in set(dropped)]
    if not kept:
        raise UserError(f"--drop {drop} leaves no training case")
    record = {**provenance, "source_dataset": source.name, "created": dt.datetime.now().isoformat(timespec="seconds"),
              "drop_fraction": drop, "dropped": dropped, "relabel": relabel, "relabelled_pixels": relabelled,
              "unscored_kept": [c for c in kept if c not in scored], "num_training": len(kept)}
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp_name:
        tmp = Path(tmp_name)
        try:
            (tmp / "imagesTr").mkdir(parents=True)
            (tmp / "labelsTr").mkdir()
            for case in kept:
                for f in sorted((source / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
                    shutil.copy2(f, tmp / "imagesTr" / f.name)
                label = (corrected_dir if case in relabelled else source / "labelsTr") / f"{case}{ending}"
                if not label.is_file():
                    raise UserError(f"{label} not found: run the audit again (without --write-dataset) first")
                shutil.copy2(label, tmp / "labelsTr" / f"{case}{ending}")
            for folder in ("imagesTs", "labelsTs"):
                if (source / folder).is_dir():
                    shutil.copytree(source / folder, tmp / folder)
            splits = source / "splits_final.json"
            if splits.is_file():
                gone = set(dropped)
                write_json_atomic(tmp / "splits_final.json",
                                  [{k: [c for c in v if c not in gone] for k, v in s.items()}
                                   for s in json.loads(splits.read_text())])
            extra = {k: dj[k] for k in ("overwrite_image_reader_writer", "regions_class_order") if k in dj}
            generate_dataset_json(str(tmp), dict(dj["channel_names"]), dict(dj["labels"]), len(kept), ending,
                                  dataset_name=target.name.split("_", 1)[1],
                                  description=f"{source.name} after nnunet_gsd audit "
                                              f"({'drop ' + str(drop) if drop is not None else ''}"
                                              f"{' + ' if drop is not None and relabel else ''}"
                                              f"{'relabel' if relabel else ''})",
                                  reference=dj.get("reference"), license=dj.get("licence", dj.get("license", "?")),
                                  converted_by="nnunet_gsd audit", audit=record, **extra)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)   # atomic_path removes files only
            raise
    return record


# ================================================================ the command
def resolve_folds(requested: Optional[Sequence[str]], splits: Sequence[Mapping], model_dir: Path) -> List[int]:
    if requested:
        folds = []
        for f in requested:
            if f == "all":
                raise UserError("-f all: fold 'all' trains on every case, so it scores none out-of-sample: pass the "
                                "cross-validation folds, e.g. -f 0 1 2 3 4")
            try:
                folds.append(int(f))
            except ValueError:
                raise UserError(f"-f {f}: folds are integers (e.g. -f 0 1 2 3 4)") from None
        return sorted(set(folds))
    folds = [i for i in range(len(splits)) if (model_dir / f"fold_{i}").is_dir()]
    return folds


def main(args: argparse.Namespace) -> int:
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    from tqdm import tqdm

    if args.top < 0:
        raise UserError(f"--top {args.top}: must be >= 0")
    if (args.drop is not None or args.relabel) and args.write_dataset is None:
        raise UserError("--drop/--relabel choose what --write-dataset NEW_ID writes: add --write-dataset")
    if args.write_dataset is not None and args.drop is None and not args.relabel:
        raise UserError("--write-dataset needs --drop WORST_FRACTION and/or --relabel")
    if args.drop is not None and not 0 < args.drop < 1:
        raise UserError(f"--drop {args.drop}: a fraction of the scored cases, between 0 and 1 (e.g. 0.1)")
    missing = [v for v, path in (("nnUNet_results", nnUNet_results), ("nnUNet_preprocessed", nnUNet_preprocessed))
               if not path.is_set()]
    if missing:
        raise UserError(f"{' and '.join(missing)} not set: export nnU-Net's folder variables (the ones the models "
                        f"were trained with)")
    name = dataset_name(args.dataset)
    model_dir = Path(get_output_folder(name, args.trainer, args.plans, args.configuration))
    if not model_dir.is_dir():
        trained = sorted(p.name for p in model_dir.parent.iterdir() if p.is_dir()) if model_dir.parent.is_dir() else []
        raise UserError(f"no trained model {model_dir} (trainer {args.trainer}, plans {args.plans}, configuration "
                        f"{args.configuration}; trained for {name}: {', '.join(trained) or 'none'}): "
                        f"{train_command(args.dataset, args.configuration, 'FOLD', args.trainer, args.plans, '--npz')}"
                        f" for FOLD in 0 1 2 3 4")
    splits_file = Path(nnUNet_preprocessed) / name / "splits_final.json"
    if not splits_file.is_file():
        raise UserError(f"{splits_file} not found (nnU-Net writes it when it trains the first fold): "
                        f"{train_command(args.dataset, args.configuration, 0, args.trainer, args.plans, '--npz')}")
    splits = json.loads(splits_file.read_text())
    folds = resolve_folds(args.folds, splits, model_dir)
    if not folds:
        raise UserError(f"no fold_X folder in {model_dir}: "
                        f"{train_command(args.dataset, args.configuration, 0, args.trainer, args.plans, '--npz')}")
    raw = raw_dataset_folder(name)
    dj = load_dataset_json(raw)
    ending = dj["file_ending"]
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    manager = LabelManager(dj["labels"], dj.get("regions_class_order"))
    if manager.has_regions:
        raise UserError(f"{raw / 'dataset.json'} defines regions (overlapping label groups): audit scores one label "
                        f"per pixel, region-based datasets are not supported")
    num_classes = len(manager.all_labels)
    ignore = manager.ignore_label
    foreground = [int(c) for c in manager.foreground_labels]
    names_by_value = {int(v): k for k, v in dj["labels"].items() if not isinstance(v, (list, tuple))}
    class_names = {c: names_by_value.get(c, str(c)) for c in foreground}
    training = case_ids(raw / "labelsTr", ending)
    if not training:
        raise UserError(f"no {ending} labels in {raw / 'labelsTr'}")

    target = None if args.write_dataset is None else new_dataset_folder(raw.parent, args.write_dataset, name)
    out = (args.out or model_dir / ("audit" if args.scorer == "ours" else f"audit_{args.scorer}")).resolve()
    predictions_dir = out / "predictions"
    plan = plan_sources(training, splits, folds, model_dir, predictions_dir, args.checkpoint, args.dataset,
                        args.configuration, args.trainer, args.plans)
    if not plan.sources:
        raise UserError(f"folds {' '.join(map(str, folds))} validate none of the {len(training)} cases of "
                        f"{raw / 'labelsTr'}: does {splits_file} belong to this dataset?")
    if args.scorer == "cleanlab":
        try:
            import cleanlab  # noqa: F401  (checked before any prediction)
        except ImportError:
            raise UserError(f"--scorer cleanlab: cleanlab is not installed: {CLEANLAB_HINT}") from None
    if plan.to_predict:
        if args.device is None:
            import torch
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        predict_missing(plan, raw, ending, predictions_dir, args, name)

    scored = [c for c in training if c in plan.sources]
    print(f"{name}: {len(scored)} of {len(training)} training cases scored out-of-sample by folds "
          f"{' '.join(map(str, folds))} of {model_dir.name}"
          + (f"; not scored (in the training set of every audited fold: train the other folds to score them): "
             f"{len(plan.not_scored)}: {' '.join(plan.not_scored[:10])}{' …' if len(plan.not_scored) > 10 else ''}"
             if plan.not_scored else ""), flush=True)
    rw = reader_writer(dj, raw / "labelsTr" / f"{scored[0]}{ending}")

    def load(case: str):
        seg, props = rw.read_seg(str(raw / "labelsTr" / f"{case}{ending}"))
        label = np.rint(seg[0]).astype(np.int16 if num_classes < 32000 else np.int32)
        return label, props, load_probabilities(plan.sources[case].probabilities, label.shape, num_classes)

    for folder in ("suspicion", "corrected", "error_percent"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows: List[dict] = []
    thresholds = None
    if args.scorer == "ours":
        acc = Thresholds(num_classes, ignore)
        for case in tqdm(scored, desc="audit: thresholds", unit="case"):
            label, _, probs = load(case)
            acc.add(label, probs)
        thresholds = acc.values()
        per_case = None
    else:
        loaded = [load(c) for c in tqdm(scored, desc="audit: loading", unit="case")]
        print("audit: cleanlab find_label_issues / get_label_quality_scores …", flush=True)
        per_case = cleanlab_scores([x[0] for x in loaded], [x[2] for x in loaded], ignore)
        del loaded
    for i, case in enumerate(tqdm(scored, desc="audit: scoring", unit="case")):
        label, props, probs = load(case)
        if per_case is None:
            sus, sug = suspect(label, probs, thresholds, ignore)
            result = case_scores(label, probs, sus, foreground, ignore)
        else:
            sus, sug = per_case[1][i], per_case[2][i]
            result = case_row(label, sus, overlap_quality(label, sus, sug, foreground, ignore), ignore)
            result["score"] = per_case[0][i]
        # nnU-Net's writers take the spatial array (read_seg adds a channel axis in front)
        rw.write_seg(sus.astype(np.uint8), str(out / "suspicion" / f"{case}{ending}"), props)
        rw.write_seg(sug.astype(np.uint8 if sug.max() < 255 else np.uint16),
                     str(out / "corrected" / f"{case}{ending}"), props)
        # whole percent: an integer image in the labels' format, which every label viewer opens
        rw.write_seg(np.rint(100 * label_error_probability(label, probs, ignore)).astype(np.uint8),
                     str(out / "error_percent" / f"{case}{ending}"), props)
        rows.append({"case": case, "fold": plan.sources[case].fold, "source": plan.sources[case].origin, **result})
    ranked = rank(rows)

    write_csv(out / "audit.csv", ranked, class_names)
    settings = {"dataset": name, "trainer": args.trainer, "plans": args.plans, "configuration": args.configuration,
                "folds": folds, "scorer": args.scorer, "checkpoint_for_missing": args.checkpoint}
    method = ("excess surprisal: class quality exp(-mean(-log p_y - H(p))) over the pixels labelled or predicted "
              "c, case score = mean over foreground classes (lower is worse), surprise in nats; suspected pixels by "
              f"confident learning ({CITATION}): t_c = mean p_c over pixels labelled c; a pixel labelled y is "
              "suspected when some k != y has p_k >= t_k and p_y < t_y" if args.scorer == "ours" else
              "cleanlab.segmentation: case score = rank.get_label_quality_scores (softmin), suspected pixels = "
              "filter.find_label_issues; class quality 1 - |S_c|/|L_c u S_c| from those pixels")
    report = {**settings, "method": method,
              "thresholds": None if thresholds is None else
              {names_by_value.get(c, str(c)): (None if not np.isfinite(t) else float(t))
               for c, t in enumerate(thresholds)},
              "classes": {str(c): n for c, n in class_names.items()},
              "scored_out_of_sample": len(ranked), "not_scored": plan.not_scored,
              "cases": [{**r, "rank": i + 1, "per_class": {class_names[c]: v for c, v in r["per_class"].items()}}
                        for i, r in enumerate(ranked)]}
    write_json_atomic(out / "audit.json", report)

    if args.top and ranked:
        from nnunet_gsd.tools.overlay import image_files
        panels = []
        for r in ranked[:args.top]:
            label, _, probs = load(r["case"])
            sus, _ = rw.read_seg(str(out / "suspicion" / f"{r['case']}{ending}"))
            sus = sus[0] > 0
            z = most_suspected_slice(sus, label)
            image = rw.read_images([str(f) for f in image_files(raw / "imagesTr", r["case"], ending)])[0]
            panels.append({"case": r["case"], "fold": r["fold"], "score": r["score"],
                           "fraction": r["suspected_fraction"], "where": "" if label.shape[0] == 1 else f" z={z}",
                           "image": image[:, z], "label": label[z], "prediction": np.argmax(probs, axis=0)[z],
                           "suspected": sus[z]})
        worst_grid(out / "worst.png", panels, is_rgb(dj.get("channel_names", {})))

    flagged = sum(1 for r in ranked if r["suspected_pixels"] > 0)
    print(f"{flagged} of {len(ranked)} scored cases have suspected pixels; worst:")
    for i, r in enumerate(ranked[:min(5, len(ranked))], 1):
        per = ", ".join(f"{class_names[c]} {v:.3f}" for c, v in r["per_class"].items())
        print(f"  {i}. {r['case']} (fold {r['fold']}): score {r['score']:.4f}, {100 * r['suspected_fraction']:.2f}% "
              f"suspected ({per})")
    print(f"written: {out / 'audit.csv'}, {out / 'audit.json'}, {out / 'suspicion'}/, {out / 'error_percent'}/"
          + (f", {out / 'worst.png'}" if args.top and ranked else ""))

    if target is not None:
        record = write_dataset(raw, target, ranked, out / "corrected", args.drop, args.relabel,
                               {**settings, "audit": str(out / "audit.json"),
                                "not_scored": plan.not_scored})
        print(f"wrote {target}: {record['num_training']} training cases ({len(record['dropped'])} dropped, "
              f"{len(record['relabelled_pixels'])} relabelled); provenance in its dataset.json \"audit\"; next: "
              f"nnUNetv2_plan_and_preprocess -d {args.write_dataset} -c {args.configuration}")
    return 0
