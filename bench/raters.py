"""Does learning from every rater beat one rater per image? (issue 23's decision; not a test)

    .venv/bin/python bench/raters.py --background                                   # the real run (CPU, ~1.5 h)
    .venv/bin/python bench/raters.py --cases 24 --iterations 4 --iterations-per-epoch 2 \\
        --work /tmp/raters-smoke --results /tmp/raters-smoke/raters                 # a smoke run (minutes)

**Data.** A generated 2D multi-rater set (``generate``): 64² images of one large and, often, small bright
objects on a smooth textured background, and five raters who differ the way real ones do —

- ``A1`` tight: the outline eroded by 1–2 px (systematically inward),
- ``A2`` loose: dilated by 2–3 px (systematically outward),
- ``A3`` coarse: each object drawn as the polygon through 6 points of its outline,
- ``A4`` misses now and then: exact outlines, but an object under 60 px is left out with probability 0.7,
- ``A5`` unsteady: exact outlines with Markov boundary jitter M(15, 0.5, 0.3).

The set is written in the LIDC-IDRI pickle layout (``{name: {image, masks, series_uid}}``, two crops per
patient) and goes through ``nnunet_gsd convert lidc`` three times: ``--raters sample`` (one seeded rater per
image, the paper's protocol; every rater is kept in ``labelsTr_A1…A5``), ``majority`` and ``staple``. The
truth the raters were drawn from is kept beside the benchmark (``WORK/truth/``) for a diagnostic column.

**Arms** at equal iterations (nnU-Net's loop, fold ``all``, batch ``--batch``): stock nnU-Net
(``nnUNetTrainerBudget``) on one rater per image, on the majority vote and on STAPLE; stock with rater
sampling (``nnUNetTrainerRaterSampling``) and with soft labels (``nnUNetTrainerSoftRaters``: soft CE + soft
Dice; ``nnUNetTrainerSoftRatersCE``: soft CE alone); GSD (``nnUNetTrainerGSD``, defaults) on one rater
per image (the paper), with rater sampling and with soft labels (``nnUNet_GSD_RATERS=sample|soft``).
Every arm is predicted with ``nnUNetv2_predict --save_probabilities``
(no TTA) and scored by ``nnunet_gsd evaluate-raters``: Dice against each test rater and their mean, the
majority and STAPLE consensus, QUBIQ score and soft Dice; and Dice against the hidden truth.

**Decision.** Paired over test cases (per-case values averaged over ``--repeats`` trainings first): the
better all-rater arm (sampling or soft, by mean Dice over raters) minus the one-rater arm, for stock and for
GSD; GSD's better all-rater arm minus stock's. Targets: ≥ +1 Dice (mean over raters) and ≥ +2 QUBIQ points
over the paper's protocol; GSD with all raters ≥ stock with all raters − 0.5.

Resumable: ``WORK/state.json`` records every finished step; an arm interrupted in training is retrained.
Writes ``RESULTS.json`` and ``.md`` (default ``bench/results/raters``) after every arm. ``--keep FILE[:ARM,…]``
pools the trainings an earlier results file measured (all its arms, or those named) with this work folder's:
its per-case values are that arm's means over its trainings, so they count once per training — more
trainings per arm without keeping old work folders (on the same generated set: same ``--cases``, ``--size``,
``--seed``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.quality import TRAIN_ONLY, machine, nnunet_env  # noqa: E402
from bench.workdirs import (State, add_run_arguments, command_line, launch, log, open_state,  # noqa: E402
                            plans_name, portable, raw_folder, run, write_markdown, write_plans_variant)
from nnunet_gsd.tools.common import markdown_table  # noqa: E402
from nnunet_gsd.utils import write_json_atomic  # noqa: E402

STOCK, GSD = "nnUNetTrainerBudget", "nnUNetTrainerGSD"
#: the training labels (``convert lidc --raters``) of each dataset, by dataset-id offset
LABELS = {"sample": 0, "majority": 1, "staple": 2}
#: arm → (training labels, trainer, environment); the order is the order of training (the decision's arms first)
ARMS: Dict[str, tuple] = {
    "stock_one_rater": ("sample", STOCK, {}),
    "stock_soft": ("sample", "nnUNetTrainerSoftRaters", {}),
    "stock_soft_ce": ("sample", "nnUNetTrainerSoftRatersCE", {}),
    "stock_rater_sampling": ("sample", "nnUNetTrainerRaterSampling", {}),
    "gsd_sample": ("sample", GSD, {}),
    "gsd_soft": ("sample", GSD, {"nnUNet_GSD_RATERS": "soft"}),
    "gsd_rater_sampling": ("sample", GSD, {"nnUNet_GSD_RATERS": "sample"}),
    "stock_majority": ("majority", STOCK, {}),
    "stock_staple": ("staple", STOCK, {}),
}
#: the one-rater arm of each model (the paper's sample protocol), and an arm's name in results before it was renamed
ONE_RATER = {"stock": "stock_one_rater", "gsd": "gsd_sample"}
FORMER_NAMES = {"stock_sample": "stock_one_rater"}
RATER_KINDS = ("tight", "loose", "coarse", "misses small objects", "unsteady")
METRICS = ("mean", "majority", "staple", "qubiq_score", "soft_dice", "truth")


# ---------------------------------------------------------------------------------------------- data
def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(float)
    y, x = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    return ((c * y + s * x) / ry) ** 2 + ((-s * y + c * x) / rx) ** 2 <= 1


def _coarse(truth: np.ndarray, rng: np.random.Generator, vertices: int = 6) -> np.ndarray:
    """Each connected object as the polygon through ``vertices`` points of its outline, at random even angles."""
    from scipy import ndimage
    from skimage.draw import polygon
    out = np.zeros_like(truth)
    components, n = ndimage.label(truth)
    for k in range(1, n + 1):
        obj = components == k
        ys, xs = np.nonzero(obj & ~ndimage.binary_erosion(obj))
        cy, cx = ys.mean(), xs.mean()
        angles = np.arctan2(ys - cy, xs - cx)
        start = rng.uniform(0, 2 * np.pi / vertices)
        targets = (start + np.arange(vertices) * 2 * np.pi / vertices + np.pi) % (2 * np.pi) - np.pi
        picks = [int(np.argmin(np.abs(np.angle(np.exp(1j * (angles - t)))))) for t in targets]
        rr, cc = polygon(ys[picks], xs[picks], truth.shape)
        out[rr, cc] = True
        out[ys[picks], xs[picks]] = True
    return out


def _misses(truth: np.ndarray, rng: np.random.Generator, small: int = 60, p: float = 0.7) -> np.ndarray:
    from scipy import ndimage
    out = truth.copy()
    components, n = ndimage.label(truth)
    for k in range(1, n + 1):
        obj = components == k
        if obj.sum() < small and rng.random() < p:
            out[obj] = False
    return out


def rate(truth: np.ndarray, rng: np.random.Generator) -> List[np.ndarray]:
    """The five raters' masks (A1 … A5, see the module docstring) of one true mask."""
    from nnunet_gsd.dataset_conversion.noise import erode_dilate, markov_perturb
    return [erode_dilate(truth, int(rng.integers(1, 3)), dilate=False),
            erode_dilate(truth, int(rng.integers(2, 4)), dilate=True),
            _coarse(truth, rng),
            _misses(truth, rng),
            markov_perturb(truth, 15, 0.5, 0.3, rng)]


def generate(cases: int, size: int, seed: int) -> Dict[str, dict]:
    """``{name: {image, masks, series_uid, truth}}``: one large object (radius 7–14 px at 64²) and, in 60 % of
    the images, one or two small ones (radius 2.5–4 px) brighter than a smooth textured background."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    scale = size / 64
    data = {}
    for i in range(cases):
        truth = np.zeros((size, size), bool)
        r = rng.uniform(7, 14) * scale
        truth |= _ellipse(size, *rng.uniform(r, size - r, 2), r * rng.uniform(0.7, 1.0), r * rng.uniform(0.7, 1.0),
                          rng.uniform(0, np.pi))
        for _ in range(int(rng.choice([0, 1, 2], p=[0.4, 0.4, 0.2]))):
            r = rng.uniform(2.5, 4) * scale
            truth |= _ellipse(size, *rng.uniform(r + 1, size - r - 1, 2), r, r * rng.uniform(0.8, 1.2), 0.0)
        background = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 4 * scale)
        background /= background.std() + 1e-8
        image = (0.3 * background + 0.9 * ndimage.gaussian_filter(truth.astype(float), 0.8 * scale)
                 + rng.normal(0, 0.25, (size, size)))
        name = f"LIDC-IDRI-{i // 2 + 1:04d}_slice_{i % 2}"
        data[name] = {"image": image.astype(np.float32),
                      "masks": [m.astype(np.uint8) for m in rate(truth, rng)],
                      "series_uid": f"1.2.826.{i // 2}", "truth": truth.astype(np.uint8)}
    return data


def write_source(data: Dict[str, dict], work: Path) -> Path:
    """The generated set as ``data_lidc.pickle`` (without the truth) and the truth as ``truth/NAME.npy``."""
    (work / "truth").mkdir(parents=True, exist_ok=True)
    for name, case in data.items():
        np.save(work / "truth" / f"{name}.npy", case["truth"])
    source = work / "source" / "data_lidc.pickle"
    source.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "wb") as f:
        pickle.dump({n: {k: v for k, v in c.items() if k != "truth"} for n, c in data.items()}, f)
    return source


def rater_agreement(data: Dict[str, dict]) -> Dict[str, float]:
    """Mean Dice % of each rater against the truth: how the raters differ, for the report."""
    from nnunet_gsd.dataset_conversion.noise import dice
    return {f"A{k + 1}": 100 * float(np.mean([dice(c["masks"][k], c["truth"]) for c in data.values()]))
            for k in range(len(RATER_KINDS))}


# ---------------------------------------------------------------------------------------------- steps
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=300, help="generated images, 80 %% training (default 300)")
    ap.add_argument("--size", type=int, default=64, help="image edge (default 64)")
    ap.add_argument("--iterations", type=int, default=400, help="training iterations per arm (default 400)")
    ap.add_argument("--iterations-per-epoch", type=int, default=50, help="nnU-Net epoch length (default 50)")
    ap.add_argument("--batch", type=int, default=8, help="batch size of every arm (default 8)")
    ap.add_argument("--repeats", type=int, default=1, help="trainings per arm (default 1)")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="arms (default: all)")
    ap.add_argument("--id-base", type=int, default=660, help="dataset ids ID..ID+2 (default 660)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated set, split and rater draw (default 0)")
    ap.add_argument("--keep", nargs="+", default=[], metavar="FILE[:ARM,…]",
                    help="earlier results JSON whose trainings (all arms, or those named) are pooled with this run's")
    add_run_arguments(ap, "raters-SIZE", "raters")
    args = ap.parse_args(argv)
    if args.cases < 10 or args.iterations < 1 or args.repeats < 1:
        ap.error("--cases ≥ 10, --iterations ≥ 1 and --repeats ≥ 1")
    args.work = (args.work or REPO / "bench" / "work" / f"raters-{args.size}").resolve()
    args.results = (args.results or REPO / "bench" / "results" / "raters").resolve()
    return args


def prepare(args, state: State, logdir: Path) -> None:
    """Generate the set, convert it three times (sample, majority, staple), plan and preprocess each."""
    key = f"cases{args.cases}_size{args.size}_seed{args.seed}"
    if state.data["datasets"].get("set", {}).get("key") == key:
        return
    data = generate(args.cases, args.size, args.seed)
    source = write_source(data, args.work)
    env = nnunet_env(args, {"nnUNet_n_proc_DA": "1"})   # 0 crashes nnU-Net's planner
    for labels, offset in LABELS.items():
        did = args.id_base + offset
        log(f"Dataset{did}: convert lidc --raters {labels}")
        run(["nnunet_gsd", "convert", "lidc", "--source", str(source), "--id", str(did), "--raters", labels,
             "--seed", str(args.seed), "--overwrite"], env, logdir / f"convert_{labels}.log")
        run(["nnUNetv2_plan_and_preprocess", "-d", str(did), "-c", "2d", "-np", "1", "-npfp", "1",
             "--verify_dataset_integrity"], env, logdir / f"plan_{labels}.log")
        write_plans_variant(args.work, did, args.batch)
    state.set_dataset("set", {"key": key, "rater_dice_vs_truth": rater_agreement(data),
                              "cases": len(data)})


def truth_dice(args, pred: Path, raw: Path) -> Dict[str, float]:
    """Per test case Dice % of the prediction against the hidden truth (NaN where both are empty)."""
    from nnunet_gsd.tools.common import mask_dice
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    out = {}
    for f in sorted((raw / "labelsTs").glob("*.nii.gz")):
        case = f.name[: -len(".nii.gz")]
        prediction = SimpleITKIO().read_seg(str(pred / f.name))[0].reshape(args.size, args.size) > 0
        truth = np.load(args.work / "truth" / f"{case}.npy") > 0
        out[case] = 100 * mask_dice(truth, prediction)
    return out


def train_predict_evaluate(args, state: State, arm: str, repeat: int, logdir: Path) -> None:
    key = f"{arm}|repeat={repeat}"
    if state.run(key).get("evaluated"):
        return
    labels, trainer, extra = ARMS[arm]
    did = args.id_base + LABELS[labels]
    raw = raw_folder(args.work, did)
    tag = f"{arm}__r{repeat}"
    results = args.work / "nnUNet_results" / tag
    env = nnunet_env(args, {**extra, "nnUNet_results": str(results)})
    alog = logdir / f"{tag}.log"
    shutil.rmtree(results, ignore_errors=True)   # a training this state did not finish restarts clean
    log(f"train {tag} ({trainer}{' ' + ' '.join(f'{k}={v}' for k, v in extra.items()) if extra else ''})")
    train_s = run([sys.executable, "-c", TRAIN_ONLY, str(did), trainer, plans_name(args.batch), args.device], env,
                  alog)
    pred = args.work / "predictions" / tag
    shutil.rmtree(pred, ignore_errors=True)
    predict_s = run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(did), "-c", "2d",
                     "-tr", trainer, "-p", plans_name(args.batch), "-f", "all", "-chk", "checkpoint_final.pth",
                     "-npp", "1", "-nps", "1", "-device", args.device, "--disable_progress_bar", "--disable_tta",
                     "--save_probabilities"], env, alog)
    run(["nnunet_gsd", "evaluate-raters", str(raw), str(pred), "-o", str(pred / "rater_dice")], env, alog)
    scores = json.loads((pred / "rater_dice.json").read_text())
    truth = truth_dice(args, pred, raw)
    per_case = {c: {m: (truth[c] if m == "truth" else 100 * v[m] if v.get(m) is not None else None)
                    for m in METRICS} for c, v in scores["per_case"].items()}
    per_rater = {r: 100 * v for r, v in scores["per_rater"].items()}
    state.set(key, arm=arm, trainer=trainer, env=extra, labels=labels, train_s=round(train_s, 1),
              predict_s=round(predict_s, 1), per_case=per_case, per_rater=per_rater, evaluated=True)
    log(f"{tag}: mean Dice over raters {np.nanmean([v['mean'] for v in per_case.values()]):.2f}, "
        f"QUBIQ {np.nanmean([v['qubiq_score'] for v in per_case.values()]):.2f}")


# ---------------------------------------------------------------------------------------------- report
def kept_trainings(specs: List[str], settings: Dict[str, object]) -> Dict[str, dict]:
    """The trainings of earlier results files (``FILE`` or ``FILE:ARM,ARM``) as state records, one per training
    of each arm, each carrying the arm's per-case means (so that pooling weighs them by their trainings); a file
    measured on another generated set (``cases``, ``size``, ``seed``) or naming an unknown arm stops with one line."""
    out = {}
    for spec in specs:
        path, _, names = spec.partition(":")
        if not Path(path).is_file():
            raise SystemExit(f"--keep {spec}: no file {path}; give a results JSON that bench/raters.py wrote")
        result = json.loads(Path(path).read_text())
        other = {k: result["settings"].get(k) for k in ("cases", "size", "seed")
                 if result["settings"].get(k) != settings[k]}
        if other:
            raise SystemExit(f"--keep {path}: measured with {other}, this run uses "
                             f"{ {k: settings[k] for k in other} }; keep files of the same generated set")
        wanted = names.split(",") if names else list(result["arms"])
        unknown = [a for a in wanted if a not in result["arms"]]
        if unknown:
            raise SystemExit(f"--keep {spec}: no arm {', '.join(unknown)} in {path} "
                             f"(it has {', '.join(result['arms'])})")
        without = [a for a in wanted if "per_case" not in result["arms"][a]]
        if without:
            raise SystemExit(f"--keep {spec}: {path} holds no per-case values for {', '.join(without)} (written "
                             f"before results kept them): those trainings cannot be pooled; leave them out")
        for name in wanted:
            a, arm = result["arms"][name], FORMER_NAMES.get(name, name)
            per_case = {c: {m: a["per_case"][m].get(c) for m in METRICS} for c in a["per_case"]["mean"]}
            for i, training_mean in enumerate(a["mean_per_training"]):
                out[f"{arm}|kept={path}#{i}"] = {
                    "arm": arm, "trainer": a["trainer"], "env": a["env"], "labels": a["labels"], "evaluated": True,
                    "train_s": a["train_s"], "per_case": per_case, "per_rater": a["per_rater"],
                    "training_mean": training_mean, "kept_from": f"{portable(path)} ({result['date']})"}
    return out


def case_values(runs: dict, arm: str, metric: str) -> Dict[str, float]:
    """Per test case ``metric`` of ``arm``, averaged over its evaluated repeats (NaN cases left out)."""
    recs = [r for r in runs.values() if r.get("arm") == arm and r.get("evaluated")]
    if not recs:
        return {}
    cases = set.intersection(*(set(r["per_case"]) for r in recs))
    values = {c: np.nanmean([np.nan if r["per_case"][c][metric] is None else r["per_case"][c][metric]
                             for r in recs]) for c in cases}
    return {c: float(v) for c, v in values.items() if np.isfinite(v)}


def paired(runs: dict, a: str, b: str, metric: str) -> Optional[Dict[str, float]]:
    """Mean per-case ``metric`` difference a − b and its standard error, over the cases both scored."""
    va, vb = case_values(runs, a, metric), case_values(runs, b, metric)
    common = sorted(va.keys() & vb.keys())
    if len(common) < 2:
        return None
    d = np.array([va[c] - vb[c] for c in common])
    return {"diff": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))), "cases": len(common)}


def better(runs: dict, *candidates: str) -> Optional[str]:
    """The all-rater arm with the highest mean Dice over raters (the issue's 'better of sampling and soft')."""
    done = [a for a in candidates if case_values(runs, a, "mean")]
    return max(done, key=lambda a: np.mean(list(case_values(runs, a, "mean").values()))) if done else None


def decision(runs: dict) -> Dict[str, dict]:
    out = {}
    best = {"stock": better(runs, "stock_soft", "stock_soft_ce", "stock_rater_sampling"),
            "gsd": better(runs, "gsd_soft", "gsd_rater_sampling")}
    for model, arm in best.items():
        if arm:
            out[f"{model}: {arm} − {ONE_RATER[model]}"] = {
                "better_all_rater_arm": arm,
                "mean_dice": paired(runs, arm, ONE_RATER[model], "mean"),
                "qubiq": paired(runs, arm, ONE_RATER[model], "qubiq_score"),
                "targets": {"mean_dice": 1.0, "qubiq": 2.0}}
    if best["stock"] and best["gsd"]:
        out[f"gsd vs stock, all raters: {best['gsd']} − {best['stock']}"] = {
            "mean_dice": paired(runs, best["gsd"], best["stock"], "mean"),
            "qubiq": paired(runs, best["gsd"], best["stock"], "qubiq_score"), "targets": {"mean_dice": -0.5}}
    return out


def report(args, state: State) -> None:
    runs = {**kept_trainings(args.keep, vars(args)), **state.data["runs"]}
    rows, arms = [], {}
    for arm in ARMS:
        recs = [r for r in runs.values() if r.get("arm") == arm and r.get("evaluated")]
        if not recs:
            continue
        means = {m: float(np.mean(list(case_values(runs, arm, m).values()))) if case_values(runs, arm, m) else None
                 for m in METRICS}
        per_training = [r.get("training_mean", float(np.nanmean([v["mean"] for v in r["per_case"].values()])))
                        for r in recs]
        arms[arm] = {"trainer": recs[0]["trainer"], "env": recs[0]["env"], "labels": recs[0]["labels"],
                     "trainings": len(recs), **means, "mean_per_training": per_training,
                     "per_rater": {r: float(np.mean([x["per_rater"][r] for x in recs])) for r in recs[0]["per_rater"]},
                     "train_s": float(np.mean([r["train_s"] for r in recs])),
                     # averaged over the trainings: the arm's per-case values outlive its work folder (--keep
                     # pools them with later trainings)
                     "per_case": {m: {c: round(v, 4) for c, v in sorted(case_values(runs, arm, m).items())}
                                  for m in METRICS}}
        a = arms[arm]
        # the names issue 23 gives the results file's readers
        a["dice_mean_over_raters"], a["dice_per_rater"] = a["mean"], a["per_rater"]

        def f(v):
            return "–" if v is None else f"{v:.2f}"
        rows.append([arm, a["labels"], len(recs), f(a["mean"]),
                     " / ".join(f"{v:.1f}" for v in a["per_rater"].values()), f(a["majority"]), f(a["staple"]),
                     f(a["qubiq_score"]), f(a["soft_dice"]), f(a["truth"]),
                     " / ".join(f"{v:.2f}" for v in per_training), f"{a['train_s'] / 60:.1f}"])
    dec = decision(runs)
    dataset = state.data["datasets"].get("set", {})
    result = {"benchmark": "bench/raters.py", "date": dt.date.today().isoformat(), "machine": machine(),
              "settings": {k: ([portable(x) for x in v] if k == "keep" else str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()
                           if k not in ("work", "results", "background", "report_only")},
              "raters": dict(zip([f"A{k + 1}" for k in range(len(RATER_KINDS))], RATER_KINDS)),
              "rater_dice_vs_truth": dataset.get("rater_dice_vs_truth"), "arms": arms, "decision": dec}
    write_json_atomic(args.results.with_suffix(".json"), result)

    def pm(p):
        return "–" if not p else f"{p['diff']:+.2f} ± {p['se']:.2f}"
    agreement = dataset.get("rater_dice_vs_truth") or {}
    lines = [f"# Multi-rater training ({dt.date.today().isoformat()}, {machine()})", "",
             f"Generated 2D set, {args.cases} images at {args.size}² (80 % training), five raters: "
             + ", ".join(f"A{k + 1} {kind} ({agreement.get(f'A{k + 1}', float('nan')):.1f} Dice vs truth)"
                         for k, kind in enumerate(RATER_KINDS))
             + f". {args.iterations} iterations × batch {args.batch} per arm, fold all, {args.device}, no TTA. "
             "Values in %: Dice against each test rater and their mean, the majority / STAPLE consensus, QUBIQ "
             "score and soft Dice from the probabilities, Dice against the hidden truth; per case averaged over "
             "the trainings.", "",
             markdown_table(["arm", "labels", "trainings", "mean over raters", "A1 / … / A5", "majority", "STAPLE",
                             "QUBIQ", "soft Dice", "truth", "mean per training", "train min"], rows), "",
             "## Decision (paired over test cases, mean ± s.e.)", ""]
    lines += [markdown_table(["comparison", "mean Dice over raters", "QUBIQ", "targets"],
                             [[k, pm(v["mean_dice"]), pm(v["qubiq"]),
                               ", ".join(f"{m} ≥ {t:+.1f}" for m, t in v["targets"].items())]
                              for k, v in dec.items()]), ""]
    kept = sorted({r["kept_from"] for r in runs.values() if r.get("kept_from")})
    if kept:
        lines += ["Trainings pooled from earlier results (`--keep`; their commands are in those files): "
                  + "; ".join(f"`{k}`" for k in kept) + ".", ""]
    write_markdown(args.results, lines, state.commands or [command_line("bench/raters.py", sys.argv[1:])])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.background:
        return launch("raters", __file__, argv)
    state = open_state(args.work, "bench/raters.py", argv, args.report_only)
    if not args.report_only:
        logdir = args.work / "logs"
        prepare(args, state, logdir)
        for repeat in range(args.repeats):
            for arm in args.arms:
                train_predict_evaluate(args, state, arm, repeat, logdir)
                report(args, state)
    report(args, state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
