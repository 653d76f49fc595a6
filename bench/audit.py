"""Does ``nnunet_gsd audit`` find the wrong training labels, and does acting on it help? (not a test)

    .venv/bin/python bench/audit.py --source /data/Kvasir-SEG --background        # the real run (CPU, hours)
    .venv/bin/python bench/audit.py --synthetic --num-train 20 --iterations 4 --iterations-per-epoch 2 \\
        --folds 0 1 --work /tmp/audit-smoke --results /tmp/audit-smoke/audit          # a smoke run (minutes)

Kvasir-SEG (Jha et al., MMM 2020; https://datasets.simula.no/kvasir-seg/) at 64² (``nnunet_gsd convert kvasir
--source PATH --noise none``, seeded 700/300 split; ``--synthetic`` uses generated blobs instead). Then:

1. **Corruption.** A seeded ``--corrupt-fraction`` (default 0.175) of the training cases gets one corruption
   each, in turn: heavy S_R (Markov under-annotation, the 2D Table 3 preset at 256 px scaled to the image
   edge, as ``quality.py``'s heavy regimes), heavy S_E (over-annotation, likewise), a deleted object (the
   largest connected foreground component removed) and an added object (an ellipse of the object's typical
   size placed on background). The corrupted dataset keeps the clean labels in ``labelsTr_clean/``; the true
   error map of a case is ``labelsTr != labelsTr_clean``.
2. **Cross-validation.** Stock nnU-Net (``nnUNetTrainerBudget``) and, with ``--models stock gsd``, GSD
   (``nnUNetTrainerGSD``) train ``--folds`` (default 0-4) on the corrupted dataset with ``--npz``.
3. **Audit.** ``nnunet_gsd audit`` per model and scorer (``ours``, and ``cleanlab`` where it is installed).
   Per scorer and model: ``case_auroc`` (corrupted vs clean cases, from the case score), ``precision_at_k``
   (k = the number of corrupted cases scored), ``pixel_auroc`` (the binary suspicion map against the true
   error map over every scored pixel; with a binary score this is the mean of pixel sensitivity and
   specificity), ``pixel_auroc_graded`` (the audit's graded map ``error_percent/``, 1 − p(label), likewise),
   pixel precision/recall and the share of each corruption kind found in the top k.
4. **Retraining.** Stock nnU-Net on fold ``all`` of: the clean labels, the corrupted labels, and the
   audited datasets (``--retrain-from MODEL:SCORER``, default stock:ours) with the worst ``--drop``
   (default: the corruption fraction) dropped, and with suspected pixels relabelled. Test Dice (stock
   ``nnUNetv2_predict`` without TTA, ``nnUNetv2_evaluate_folder`` against the clean test labels) and the
   share of the corrupted→clean gap each audited arm recovers.

Resumable: every step records itself in ``WORK/state.json`` and a training with a checkpoint continues
(``--c``). Writes ``RESULTS.json`` and ``RESULTS.md`` (default ``bench/results/audit``) after every step.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nnunet_gsd.tools.common import console_env, markdown_table, run_command  # noqa: E402
from nnunet_gsd.utils import write_json_atomic  # noqa: E402
from bench.workdirs import (State, add_run_arguments, command_line, launch, log, open_state,  # noqa: E402
                            plans_name, raw_folder, write_markdown, write_plans_variant)
from bench.workdirs import run as timed  # noqa: E402

STOCK, GSD = "nnUNetTrainerBudget", "nnUNetTrainerGSD"
MODELS = {"stock": STOCK, "gsd": GSD}
KINDS = ("heavy_S_R", "heavy_S_E", "deleted_object", "added_object")



def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="the unpacked Kvasir-SEG download (images/, masks/)")
    src.add_argument("--synthetic", action="store_true", help="generated blobs instead of Kvasir (smoke runs)")
    ap.add_argument("--num-train", type=int, default=40, help="--synthetic: training cases (default 40)")
    ap.add_argument("--num-test", type=int, default=10, help="--synthetic: test cases (default 10)")
    ap.add_argument("--size", type=int, default=64, help="image edge (default 64)")
    ap.add_argument("--corrupt-fraction", type=float, default=0.175,
                    help="share of the training cases corrupted (default 0.175)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=["stock"],
                    help="cross-validation models to audit with (default: stock)")
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds (default 0-4)")
    ap.add_argument("--iterations", type=int, default=850, help="training iterations per training (default 850)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once, one torch thread each (default 2)")
    ap.add_argument("--iterations-per-epoch", type=int, default=50, help="nnU-Net epoch length (default 50)")
    ap.add_argument("--batch", type=int, default=16, help="batch size of the plans every training uses (default 16)")
    ap.add_argument("--drop", type=float, default=None,
                    help="fraction of the scored cases the drop arm leaves out (default: --corrupt-fraction)")
    ap.add_argument("--retrain-from", default="stock:ours", metavar="MODEL:SCORER",
                    help="the audit whose datasets are retrained (default stock:ours)")
    ap.add_argument("--no-retrain", action="store_true", help="stop after the audits")
    ap.add_argument("--id-base", type=int, default=640, help="dataset ids ID..ID+3 (default 640)")
    ap.add_argument("--seed", type=int, default=0, help="seed of split, corruption and choice (default 0)")
    add_run_arguments(ap, "audit-SIZE", "audit")
    args = ap.parse_args(argv)
    if args.source is None and not args.synthetic and not args.report_only:
        ap.error("pass --source (the unpacked Kvasir-SEG folder: images/, masks/) or --synthetic")
    if not 0 < args.corrupt_fraction < 1:
        ap.error("--corrupt-fraction must lie in (0, 1)")
    args.drop = args.corrupt_fraction if args.drop is None else args.drop
    model, _, scorer = args.retrain_from.partition(":")
    if model not in args.models or scorer not in ("ours", "cleanlab"):
        ap.error(f"--retrain-from {args.retrain_from}: MODEL one of --models ({' '.join(args.models)}), SCORER "
                 f"ours or cleanlab")
    args.work = (args.work or REPO / "bench" / "work" / f"audit-{args.size}").resolve()
    args.results = (args.results or REPO / "bench" / "results" / "audit").resolve()
    return args


# ---------------------------------------------------------------------------------------------- state
def in_parallel(jobs: int, tasks: Dict[str, Callable[[], None]]) -> None:
    """Run the callables of ``tasks`` (name → zero-argument function), ``jobs`` at a time; the first error stops."""
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
        for fut in cf.as_completed([pool.submit(task) for task in tasks.values()]):
            fut.result()


def nnunet_env(args, **extra: str) -> Dict[str, str]:
    # nnUNet_n_proc_DA 1 here (0 crashes nnU-Net's planner), 0 for training (train_env)
    settings = {"nnUNet_raw": str(args.work / "nnUNet_raw"), "nnUNet_preprocessed": str(args.work /
                "nnUNet_preprocessed"), "nnUNet_results": str(args.work / "nnUNet_results"), "nnUNet_def_n_proc": "1",
                "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}
    return console_env(**{**settings, **extra})


def train_env(args) -> Dict[str, str]:
    epochs = max(1, args.iterations // args.iterations_per_epoch)
    return nnunet_env(args, nnUNet_n_proc_DA="0", nnUNet_GSD_NUM_EPOCHS=str(epochs),
                      nnUNet_GSD_NUM_ITERATIONS=str(args.iterations_per_epoch),
                      nnUNet_GSD_NUM_VAL_ITERATIONS=str(max(1, min(5, args.iterations_per_epoch // 10))))




# ---------------------------------------------------------------------------------------------- corruption
def corrupt(label: np.ndarray, kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One corruption of a (H, W) integer label map (the dataset_conversion noise functions for S_R/S_E)."""
    from scipy import ndimage

    from nnunet_gsd.dataset_conversion import noise
    if kind in ("heavy_S_R", "heavy_S_E"):
        preset = noise.scale_preset(noise.get_preset("2d", kind[-3:]), size / 256)
        return noise.apply_noise(label, preset, rng)
    out = label.copy()
    if kind == "deleted_object":
        components, n = ndimage.label(label > 0)
        if n:
            largest = 1 + int(np.argmax(ndimage.sum(np.ones_like(label), components, range(1, n + 1))))
            out[components == largest] = 0
        return out
    # added object: an ellipse of the typical object size, on background, of a class the case (or class 1) has
    present = [int(c) for c in np.unique(label) if c != 0] or [1]
    area = max(float((label > 0).sum()) / max(1, ndimage.label(label > 0)[1]), 0.02 * label.size)
    radius = float(np.clip(np.sqrt(area / np.pi), 3, label.shape[0] / 4))
    yy, xx = np.mgrid[: label.shape[0], : label.shape[1]]
    for _ in range(100):
        cy, cx = rng.uniform(radius, label.shape[0] - radius), rng.uniform(radius, label.shape[1] - radius)
        ry, rx = radius * rng.uniform(0.7, 1.3), radius * rng.uniform(0.7, 1.3)
        blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if (label[blob] > 0).mean() <= 0.05:
            out[blob & (label == 0)] = int(rng.choice(present))
            break
    return out


def corrupted_dataset(args, state: State, logdir: Path) -> None:
    """The clean dataset (id base), then its copy with a known share of corrupted training labels (base + 1)."""
    from PIL import Image

    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    from nnunet_gsd.dataset_conversion.noise import dice as noise_dice
    clean_id, noisy_id = args.id_base, args.id_base + 1
    key = f"datasets:{'synthetic' if args.synthetic else 'kvasir'}:{args.size}:{args.seed}:{args.corrupt_fraction}"
    if state.run(key):
        return
    env = nnunet_env(args)
    for did in (clean_id, noisy_id):
        for root in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            for old in (args.work / root).glob(f"Dataset{did:03d}_*"):
                shutil.rmtree(old)
    conv = (["synthetic", "--num-train", str(args.num_train), "--num-test", str(args.num_test)] if args.synthetic
            else ["kvasir", "--source", str(args.source)])
    log(f"Dataset{clean_id:03d}: convert {' '.join(conv[:1])} (clean) at {args.size}²")
    timed(["nnunet_gsd", "convert", *conv, "--noise", "none", "--id", str(clean_id), "--size", str(args.size),
           "--seed", str(args.seed)], env, logdir / "convert.log", "conversion")
    clean = raw_folder(args.work, clean_id)
    dj = json.loads((clean / "dataset.json").read_text())
    ending = dj["file_ending"]
    target = args.work / "nnUNet_raw" / f"Dataset{noisy_id:03d}_{dj.get('name', 'X')}Corrupted"
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(clean, tmp, ignore=shutil.ignore_patterns("dataset.json", "splits_final.json"))
    shutil.copytree(clean / "labelsTr", tmp / "labelsTr_clean")
    cases = sorted(p.name[:-len(ending)] for p in (clean / "labelsTr").glob(f"*{ending}"))
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(cases, int(round(args.corrupt_fraction * len(cases))), replace=False).tolist())
    corruptions = {}
    for i, case in enumerate(chosen):
        label = np.asarray(Image.open(clean / "labelsTr" / f"{case}{ending}"))
        for kind in KINDS[i % len(KINDS):] + KINDS[:i % len(KINDS)]:  # the next kind if one changes nothing
            bad = corrupt(label, kind, rng, args.size)
            changed = int((bad != label).sum())
            if changed >= max(10, 0.05 * max(1, int((label > 0).sum()))):
                break
        if changed == 0:
            continue                                   # nothing to find: not counted as corrupted
        Image.fromarray(bad.astype(np.uint8)).save(tmp / "labelsTr" / f"{case}{ending}")
        corruptions[case] = {"kind": kind, "changed_pixels": changed,
                             "dice_vs_clean": float(noise_dice(bad, label))}
    generate_dataset_json(str(tmp), dj["channel_names"], dj["labels"], len(cases), ending,
                          dataset_name=target.name.split("_", 1)[1], license=dj.get("licence", "?"),
                          description=f"{clean.name} with {len(chosen)} corrupted training labels (bench/audit.py)",
                          reference=dj.get("reference"), converted_by="bench/audit.py",
                          benchmark={"source": clean.name, "corrupted": corruptions, "seed": args.seed})
    os.replace(tmp, target)
    for did in (clean_id, noisy_id):
        log(f"Dataset{did:03d}: plan and preprocess")
        timed(["nnUNetv2_plan_and_preprocess", "-d", str(did), "-c", "2d", "-np", "1", "-npfp", "1",
               "--verify_dataset_integrity"], env, logdir / f"plan_{did}.log", "planning")
        write_plans_variant(args.work, did, args.batch)
    state.set(key, clean=clean.name, corrupted=target.name, cases=len(cases), corrupted_cases=corruptions)




# ---------------------------------------------------------------------------------------------- training
def train(args, did: int, trainer: str, fold: str, logdir: Path, npz: bool) -> float:
    """nnUNetv2_train, continued (--c) from a checkpoint an interrupted run left; 0 s when already trained."""
    out = (args.work / "nnUNet_results" / raw_folder(args.work, did).name / f"{trainer}__{plans_name(args.batch)}__2d"
           / f"fold_{fold}")
    if (out / "checkpoint_final.pth").is_file():
        return 0.0
    resume = ["--c"] if (out / "checkpoint_latest.pth").is_file() else []
    log(f"train {trainer} Dataset{did:03d} fold {fold}{' (continued)' if resume else ''}")
    cmd = ["nnUNetv2_train", str(did), "2d", fold, "-tr", trainer, "-p", plans_name(args.batch), "-device", args.device,
           *(["--npz"] if npz else []), *resume]
    return timed(cmd, train_env(args), logdir / f"train_{did}_{trainer}_fold{fold}.log", f"training fold {fold}")


def cross_validation(args, state: State, logdir: Path) -> None:
    did = args.id_base + 1

    def one(model: str, fold: int) -> None:
        state.set(f"cv:{model}:{fold}", train_s=train(args, did, MODELS[model], str(fold), logdir, npz=True))

    in_parallel(args.jobs, {f"cv:{m}:{f}": (lambda m=m, f=f: one(m, f)) for m in args.models for f in args.folds
                            if not state.run(f"cv:{m}:{f}")})


# ---------------------------------------------------------------------------------------------- audit metrics
def auroc(y_true: np.ndarray, score: np.ndarray) -> Optional[float]:
    from sklearn.metrics import roc_auc_score
    y_true = np.asarray(y_true, bool)
    if y_true.all() or not y_true.any():
        return None
    return float(roc_auc_score(y_true, score))


def audit_metrics(report: dict, corrupted: Dict[str, dict], raw: Path, audit_dir: Path) -> dict:
    """Case AUROC and precision@k of the case score, pixel AUROC/precision/recall of the suspicion maps."""
    from PIL import Image
    ending = ".png"
    cases = report["cases"]                                  # worst first
    is_bad = np.array([c["case"] in corrupted for c in cases])
    k = int(is_bad.sum())
    # lower score = worse for both scorers; equal scores: more suspected pixels = worse (the audit's own order)
    badness = np.array([-c["score"] + 1e-6 * c["suspected_fraction"] for c in cases])
    top = [c["case"] for c in cases[:k]]
    truth_px, suspect_px, graded_px = [], [], []
    for c in cases:
        noisy = np.asarray(Image.open(raw / "labelsTr" / f"{c['case']}{ending}"))
        clean = np.asarray(Image.open(raw / "labelsTr_clean" / f"{c['case']}{ending}"))
        suspicion = np.asarray(Image.open(audit_dir / "suspicion" / f"{c['case']}{ending}")) > 0
        truth_px.append((noisy != clean).reshape(-1))
        suspect_px.append(suspicion.reshape(-1))
        graded_px.append(np.asarray(Image.open(audit_dir / "error_percent" / f"{c['case']}{ending}")).reshape(-1))
    truth = np.concatenate(truth_px)
    sus = np.concatenate(suspect_px)
    kinds = {}
    for kind in KINDS:
        of_kind = [c for c, v in corrupted.items() if v["kind"] == kind and c in {x["case"] for x in cases}]
        if of_kind:
            kinds[kind] = {"cases": len(of_kind), "found_in_top_k": sum(c in top for c in of_kind) / len(of_kind)}
    return {
        "scored_cases": len(cases), "corrupted_scored": k,
        "case_auroc": auroc(is_bad, badness),
        "precision_at_k": (sum(c in corrupted for c in top) / k) if k else None,
        "pixel_auroc": auroc(truth, sus.astype(float)),
        "pixel_auroc_graded": auroc(truth, np.concatenate(graded_px).astype(float)),
        "pixel_precision": float((truth & sus).sum() / sus.sum()) if sus.any() else None,
        "pixel_recall": float((truth & sus).sum() / truth.sum()) if truth.any() else None,
        "per_kind": kinds,
    }


def audits(args, state: State, logdir: Path) -> None:
    did = args.id_base + 1
    raw = raw_folder(args.work, did)
    corrupted = state.run(next(k for k in state.data["runs"] if k.startswith("datasets:")))["corrupted_cases"]
    scorers = ["ours"]
    try:
        import cleanlab.segmentation  # noqa: F401
        scorers.append("cleanlab")
    except ImportError:
        log("cleanlab not installed: only our scorer (pip install 'nnunet_gsd[audit]')")
    for model in args.models:
        for scorer in scorers:
            key = f"audit:{model}:{scorer}"
            if state.run(key):
                continue
            out = args.work / "audits" / f"{model}_{scorer}"
            log(f"audit {model} models with {scorer}")
            seconds = timed(["nnunet_gsd", "audit", "-d", str(did), "-c", "2d", "-tr", MODELS[model], "-p",
                             plans_name(args.batch), "-f", *map(str, args.folds), "--scorer", scorer, "--out", str(out),
                             "-device", args.device, "-np", "1", "--disable_tta"], nnunet_env(args),
                            logdir / f"audit_{model}_{scorer}.log", f"audit {model} {scorer}")
            report = json.loads((out / "audit.json").read_text())
            state.set(key, audit_s=seconds, **audit_metrics(report, corrupted, raw, out))


# ---------------------------------------------------------------------------------------------- retraining
def evaluate(args, did: int, trainer: str, logdir: Path) -> float:
    raw = raw_folder(args.work, did)
    pred = args.work / "predictions" / raw.name
    shutil.rmtree(pred, ignore_errors=True)
    env = nnunet_env(args)
    alog = logdir / f"predict_{did}.log"
    run_command(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(did), "-c", "2d",
                 "-tr", trainer, "-p", plans_name(args.batch), "-f", "all", "-npp", "1", "-nps", "1", "-device",
                 args.device, "--disable_progress_bar", "--disable_tta"], env, log_file=alog, what="prediction")
    run_command(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred), "-djfile", str(pred / "dataset.json"),
                 "-pfile", str(pred / "plans.json"), "-np", "1"], env, log_file=alog, what="evaluation")
    return 100 * float(json.loads((pred / "summary.json").read_text())["foreground_mean"]["Dice"])


def retraining(args, state: State, logdir: Path) -> None:
    model, _, scorer = args.retrain_from.partition(":")
    audit_dir = args.work / "audits" / f"{model}_{scorer}"
    arms = {"stock_clean": args.id_base, "stock_corrupted": args.id_base + 1,
            "stock_audit_drop": args.id_base + 2, "stock_audit_relabel": args.id_base + 3}
    writes = {"stock_audit_drop": ["--drop", str(args.drop)], "stock_audit_relabel": ["--relabel"]}
    todo = {arm: did for arm, did in arms.items() if not state.run(f"retrain:{arm}")}
    for arm, did in todo.items():
        if arm in writes and not list((args.work / "nnUNet_raw").glob(f"Dataset{did:03d}_*")):
            log(f"{arm}: write the audited dataset {did} ({' '.join(writes[arm])})")
            run_command(["nnunet_gsd", "audit", "-d", str(args.id_base + 1), "-c", "2d", "-tr", MODELS[model], "-p",
                         plans_name(args.batch), "-f", *map(str, args.folds), "--scorer", scorer,
                         "--out", str(audit_dir),
                         "--top", "0", "--write-dataset", str(did), *writes[arm]], nnunet_env(args),
                        log_file=logdir / f"write_{arm}.log", what=f"audit --write-dataset {did}")
        if arm in writes and not (args.work / "nnUNet_preprocessed" / raw_folder(args.work, did).name /
                                  f"{plans_name(args.batch)}.json").is_file():
            timed(["nnUNetv2_plan_and_preprocess", "-d", str(did), "-c", "2d", "-np", "1", "-npfp", "1",
                   "--verify_dataset_integrity"], nnunet_env(args), logdir / f"plan_{did}.log", "planning")
            write_plans_variant(args.work, did, args.batch)

    def one(arm: str, did: int) -> None:
        train_s = train(args, did, STOCK, "all", logdir, npz=False)
        dice = evaluate(args, did, STOCK, logdir)
        audit_record = json.loads((raw_folder(args.work, did) / "dataset.json").read_text()).get("audit", {})
        state.set(f"retrain:{arm}", dataset=raw_folder(args.work, did).name, train_s=train_s, test_dice=dice,
                  dropped=len(audit_record.get("dropped", [])),
                  relabelled=len(audit_record.get("relabelled_pixels", {})))
        log(f"{arm}: test Dice {dice:.2f}")

    in_parallel(args.jobs, {arm: (lambda a=arm, d=did: one(a, d)) for arm, did in todo.items()})


# ---------------------------------------------------------------------------------------------- report
def report(args, state: State) -> None:
    steps = state.data["runs"]
    data = next((v for k, v in steps.items() if k.startswith("datasets:")), None)
    audit_rows = {k.split(":", 1)[1]: v for k, v in steps.items() if k.startswith("audit:")}
    arms = {k.split(":", 1)[1]: v for k, v in steps.items() if k.startswith("retrain:")}
    clean, bad = arms.get("stock_clean", {}).get("test_dice"), arms.get("stock_corrupted", {}).get("test_dice")
    for arm in arms.values():
        arm["gap_recovered"] = ((arm["test_dice"] - bad) / (clean - bad)
                                if clean is not None and bad is not None and clean != bad else None)
    result = {
        "benchmark": "bench/audit.py", "date": dt.date.today().isoformat(), "dataset": data and data["corrupted"],
        "settings": {"synthetic": args.synthetic, "size": args.size, "corrupt_fraction": args.corrupt_fraction,
                     "folds": args.folds, "iterations": args.iterations, "batch": args.batch, "drop": args.drop,
                     "retrain_from": args.retrain_from, "seed": args.seed, "device": args.device},
        "corrupted_cases": data and len(data["corrupted_cases"]), "training_cases": data and data["cases"],
        "targets": {"case_auroc": 0.9, "precision_at_k": 0.8, "gap_recovered": 0.5},
        "audit": audit_rows, "retraining": arms,
    }
    write_json_atomic(args.results.with_suffix(".json"), result)

    def f(v, pct=False):
        return "–" if v is None else (f"{v:.1f}" if pct else f"{v:.3f}")

    lines = [f"# nnunet_gsd audit on {result['dataset']}", "",
             f"{result['corrupted_cases']} of {result['training_cases']} training cases corrupted "
             f"({', '.join(KINDS)}, in turn); folds {' '.join(map(str, args.folds))}; {args.iterations} iterations per "
             f"training, batch {args.batch}, {args.device}. Targets: case AUROC ≥ 0.9, precision@k ≥ 0.8, "
             f"≥ 50 % of the gap recovered.", "", "## Finding the corrupted labels", ""]
    rows = [[name.replace(":", " / "), v["scored_cases"], v["corrupted_scored"], f(v["case_auroc"]),
             f(v["precision_at_k"]), f(v["pixel_auroc"]), f(v.get("pixel_auroc_graded")), f(v["pixel_precision"]),
             f(v["pixel_recall"]),
             ", ".join(f"{kk} {f(kv['found_in_top_k'])}" for kk, kv in v["per_kind"].items())]
            for name, v in sorted(audit_rows.items())]
    lines += [markdown_table(["model / scorer", "scored", "corrupted", "case AUROC", "precision@k", "pixel AUROC",
                              "pixel AUROC graded", "pixel precision", "pixel recall", "found in top k, per kind"],
                             rows), ""]
    if arms:
        lines += ["## Retraining stock nnU-Net (fold all, clean test labels)", "",
                  markdown_table(["arm", "dataset", "dropped", "relabelled", "test Dice %", "gap recovered"],
                                 [[a, v["dataset"], v["dropped"], v["relabelled"], f(v["test_dice"], True),
                                   f(v["gap_recovered"])] for a, v in arms.items()]), ""]
    write_markdown(args.results, lines, state.commands or [command_line("bench/audit.py", sys.argv[1:])])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.background:
        return launch("audit", __file__, argv)
    state = open_state(args.work, "bench/audit.py", argv, args.report_only)
    if args.report_only:
        report(args, state)
        return 0
    logdir = args.work / "logs"
    corrupted_dataset(args, state, logdir)
    cross_validation(args, state, logdir)
    audits(args, state, logdir)
    report(args, state)
    if not args.no_retrain:
        retraining(args, state, logdir)
        report(args, state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
