"""Does GSD beat stock nnU-Net under label noise, and never lose on clean labels? (not a test)

    .venv/bin/python bench/quality.py --source /data/Kvasir-SEG --background     # the decisive table (CPU, hours)
    .venv/bin/python bench/quality.py --source /data/Kvasir-SEG --regimes heavy_S_R --iterations 300 \\
        --variant conf09:nnUNet_GSD_REFINE_CONFIDENCE=0.9                        # explore a setting, cheaply
    .venv/bin/python bench/quality.py --source /data/Kvasir-SEG --regimes heavy_S_R --subset 0.285715 \
        --iterations 2500 --batch 8 --curve-every 5 --work bench/work/memorisation-64 \
        --results bench/results/memorisation-64             # the memorisation regime: 200 images, 100 passes, curves

Kvasir-SEG (Jha et al., MMM 2020; https://datasets.simula.no/kvasir-seg/) is converted with
``nnunet_gsd convert kvasir`` — pass ``--source`` to the unpacked ``Kvasir-SEG/`` folder (``images/``,
``masks/``). The multi-class regime is generated (``nnunet_gsd convert synthetic``) and needs nothing.

Regimes (every one at 64², seeded 700/300 Kvasir split; test Dice against the *clean* test labels):

- ``clean``: clean training labels (GSD must not lose to stock nnU-Net here);
- ``mild_S_R``: Table 3's S_R under-annotation, applied at the source resolution (Dice(nGT, GT) ≈ 84);
- ``heavy_S_R``: the same Markov preset applied to 256² masks, then resized (Dice(nGT, GT) ≈ 62);
- ``heavy_S_E`` (optional): the mirror of ``heavy_S_R``, over-annotation (S_E) applied to 256² masks, then
  resized — a method that gains under ``heavy_S_R`` only through a foreground bias loses here;
- ``multiclass_thin``: generated images with two blob classes and one thin-line class under heavy
  over-annotation (S_E); no class may collapse.

Arms at equal iterations (``--iterations`` in all, nnU-Net's own loop, fold ``all``): ``stock_clean`` and
``stock_noisy`` (``nnUNetTrainerBudget``: stock nnU-Net, Dice+CE with deep supervision), ``gsd_noisy``
(``nnUNetTrainerGSD``, its defaults), ``gsd_faithful`` on ``heavy_S_R`` (``nnUNetTrainerGSDFaithful``,
the paper's rules), plus any ``--variant``. Every arm is predicted with stock ``nnUNetv2_predict`` and
scored with ``nnUNetv2_evaluate_folder``. GSD arms get no τ from the dataset unless ``--tau dataset``:
a user has no clean labels to measure it, so by default GSD trains with its ``fallback_tau``.

Resumable (``<work>/state.json``; a run is identified by its dataset, trainer and settings, so one
stock run on clean Kvasir serves every Kvasir regime). Writes ``bench/results/quality-<size>.md`` and
``.json`` after every arm.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import json
import os
import platform
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))
from bench.workdirs import (State, add_run_arguments, command_line, in_background, listed, log,  # noqa: E402
                            plans_name, raw_folder, run, write_plans_variant)
from nnunet_gsd.tools.last_k import epochs_trained  # noqa: E402
STOCK, GSD, FAITHFUL = "nnUNetTrainerBudget", "nnUNetTrainerGSD", "nnUNetTrainerGSDFaithful"
CE, CALIBRATED = "nnUNetTrainerCELossBudget", "nnUNetTrainerBudgetCalibrated"


@dataclass(frozen=True)
class Regime:
    name: str
    convert: List[str]          # `nnunet_gsd convert` arguments of the noisy dataset (without --id/--seed)
    offset: int                 # dataset id = --id-base + offset
    clean_offset: int           # the same images with clean labels
    kvasir: bool = True
    calibrates: bool = False    # boundary calibration moves these labels at 64²: a calibrated-ensemble control too


REGIMES = {r.name: r for r in [
    Regime("clean", ["kvasir", "--noise", "none"], 0, 0),
    Regime("mild_S_R", ["kvasir", "--noise", "S_R", "--noise-at", "source"], 1, 0),
    Regime("heavy_S_R", ["kvasir", "--noise", "S_R", "--noise-at", "256"], 2, 0, calibrates=True),
    Regime("multiclass_thin", ["synthetic", "--classes", "3", "--thin", "--noise", "S_E",
                               "--num-train", "300", "--num-test", "150"], 4, 3, kvasir=False, calibrates=True),
    Regime("heavy_S_E", ["kvasir", "--noise", "S_E", "--noise-at", "256"], 5, 0, calibrates=True),
]}
REQUIRED = ("heavy_S_R", "mild_S_R", "clean", "multiclass_thin")
PAPER_REGIMES = ("heavy_S_R", "clean")   # where the paper's comparison (faithful GSD vs a CE-only network) is run


@dataclass(frozen=True)
class Arm:
    name: str                   # as in the table: stock_clean, stock_noisy, gsd_noisy, gsd_faithful, variant names
    regime: str
    trainer: str
    labels: str                 # "clean" or "noisy" (the regime's dataset)
    env: Dict[str, str] = field(default_factory=dict)
    repeat: int = 0             # > 0: another training of the same arm (nnU-Net's training is not seeded)
    members: tuple = ()         # an ensemble: nothing trained, these arms' probabilities averaged by nnU-Net

    def run_key(self, args) -> str:
        """Arms that train the same thing share one run (e.g. stock on clean Kvasir for three regimes)."""
        if self.members:
            return "ensemble(" + " + ".join(m.run_key(args) for m in self.members) + ")"
        did = dataset_id(args, self.regime, self.labels)
        return "|".join([str(did), self.trainer] + [f"{k}={v}" for k, v in sorted(self.env.items())]
                        + ([f"repeat={self.repeat}"] if self.repeat else []))



def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=None,
                    help="the unpacked Kvasir-SEG download (images/, masks/): https://datasets.simula.no/kvasir-seg/")
    ap.add_argument("--regimes", nargs="+", default=list(REQUIRED), choices=list(REGIMES),
                    help=f"regimes to run (default: the required ones, {' '.join(REQUIRED)})")
    ap.add_argument("--size", type=int, default=64, help="image edge (default 64)")
    ap.add_argument("--iterations", type=int, default=850,
                    help="training iterations of every arm (default 850: 17 epochs × 50)")
    ap.add_argument("--iterations-per-epoch", type=int, default=50, help="nnU-Net epoch length (default 50)")
    ap.add_argument("--subset", type=float, default=1.0, metavar="FRACTION",
                    help="train on this seeded fraction of Kvasir's 700 training images (the test set stays whole; "
                         "e.g. 0.285715: 200 images, the memorisation regime; default 1)")
    ap.add_argument("--curve-every", type=int, default=0, metavar="EPOCHS",
                    help="keep weights every EPOCHS nnU-Net epochs (nnUNet_GSD_SNAPSHOT_EVERY) and score each on the "
                         "test set (nnunet_gsd last-k --snapshots): a learning curve per arm, table and PNG "
                         "(default 0: none)")
    ap.add_argument("--batch", type=int, default=16,
                    help="batch size of the plans variant every arm uses (nnU-Net picks 35 at 64²; default 16, the "
                         "paper's)")
    ap.add_argument("--tau", choices=("hidden", "dataset"), default="hidden",
                    help="GSD's τ: hidden from training (default; what a user without clean labels gets: the "
                         "trainer's fallback_tau) or the converter's measured noise rate from dataset.json")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME[@REGIME+…]:VAR=VALUE[,VAR=VALUE]",
                    help="an extra GSD arm on every regime (or only those after @) with these environment settings "
                         "(e.g. conf09:nnUNet_GSD_REFINE_CONFIDENCE=0.9); TRAINER= picks another trainer, REPEAT=N "
                         "trains the arm again (e.g. stock_r1@clean:TRAINER=nnUNetTrainerBudget,REPEAT=1: "
                         "nnU-Net's training is not seeded, so repeats measure the spread between trainings)")
    ap.add_argument("--no-faithful", action="store_true",
                    help="skip the paper's comparison: the paper-faithful GSD arm and CE-only nnU-Net on clean and "
                         f"noisy labels ({' and '.join(PAPER_REGIMES)})")
    ap.add_argument("--no-controls", action="store_true",
                    help="skip the equal-compute controls: a second stock training and the two-network stock "
                         "ensemble in every regime, and the same for stock on calibrated labels where calibration "
                         "moves them")
    ap.add_argument("--only", nargs="+", metavar="ARM",
                    help="train only these arms (e.g. stock_noisy stock_clean, or a variant's name); the report "
                         "still lists every arm already evaluated")
    ap.add_argument("--jobs", type=int, default=2, help="arms trained at once, one torch thread each (default 2)")
    ap.add_argument("--id-base", type=int, default=610, help="nnU-Net dataset ids ID..ID+5 (default 610)")
    ap.add_argument("--seed", type=int, default=0, help="seed of split, noise and training (default 0)")
    add_run_arguments(ap, "quality-SIZE", "quality-SIZE")
    args = ap.parse_args(argv)
    if any(REGIMES[r].kvasir for r in args.regimes) and not args.report_only:
        if args.source is None:
            ap.error("--source is required for the Kvasir regimes: the unpacked Kvasir-SEG folder (images/, "
                     "masks/) from https://datasets.simula.no/kvasir-seg/ (or run only --regimes multiclass_thin)")
        if not (args.source / "images").is_dir() and not (args.source / "Kvasir-SEG" / "images").is_dir():
            ap.error(f"--source {args.source} holds no images/ folder: point it at the unpacked Kvasir-SEG folder")
    if not 0 < args.subset <= 1:
        ap.error(f"--subset {args.subset}: a fraction in (0, 1] of the training images")
    if args.curve_every < 0:
        ap.error(f"--curve-every {args.curve_every}: epochs between snapshots, >= 1 (0: no curves)")
    args.variants = [parse_variant(v, ap) for v in args.variant]
    args.work = (args.work or REPO / "bench" / "work" / f"quality-{args.size}").resolve()
    args.results = (args.results or REPO / "bench" / "results" / f"quality-{args.size}").resolve()
    args.log = (REPO / "bench" / "logs" / f"quality-{args.size}.log").resolve()
    return args


@dataclass(frozen=True)
class Variant:
    name: str
    trainer: str
    env: Dict[str, str]
    repeat: int
    regimes: Optional[tuple]    # None: every regime


def parse_variant(spec: str, ap: argparse.ArgumentParser) -> Variant:
    head, _, rest = spec.partition(":")
    name, _, where = head.partition("@")
    env = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
    regimes = tuple(where.split("+")) if where else None
    if (not name or not env or any(not (k.startswith("nnUNet_GSD_") or k in ("TRAINER", "REPEAT")) for k in env)
            or not env.get("REPEAT", "0").isdigit() or any(r not in REGIMES for r in regimes or ())):
        ap.error(f"--variant {spec!r}: expected NAME[@REGIME+…]:nnUNet_GSD_X=V[,…] (or TRAINER=…, REPEAT=N); "
                 f"regimes: {', '.join(REGIMES)}")
    return Variant(name, env.pop("TRAINER", GSD), env, int(env.pop("REPEAT", "0")), regimes)


def arms_of(args) -> List[Arm]:
    arms = []
    for r in args.regimes:
        clean = "clean" if r != "clean" else "noisy"  # the clean regime's "noisy" dataset is clean already
        paper = r in PAPER_REGIMES and not args.no_faithful
        # run order = this order (regimes as given): the long GSD runs first, so both lanes stay busy to the end
        arms.append(Arm("gsd_noisy", r, GSD, "noisy"))
        if paper:
            arms.append(Arm("gsd_faithful", r, FAITHFUL, "noisy"))
        arms += [Arm(v.name, r, v.trainer, "noisy", v.env, v.repeat) for v in args.variants
                 if v.regimes is None or r in v.regimes]
        stock = Arm("stock_noisy", r, STOCK, "noisy")
        arms += [stock, Arm("stock_clean", r, STOCK, clean)]
        if paper:
            arms += [Arm("ce_noisy", r, CE, "noisy"), Arm("ce_clean", r, CE, clean)]
        if not args.no_controls:
            arms += ensemble_arms(r, "stock", stock)
            if REGIMES[r].calibrates:
                arms += ensemble_arms(r, "calibrated", Arm("stock_calibrated", r, CALIBRATED, "noisy"))
    return arms


def ensemble_arms(regime: str, name: str, first: Arm) -> List[Arm]:
    """The equal-compute control of GSD's two networks: a second training of ``first`` and both predicted together
    (``nnUNetv2_ensemble`` averages their softmax), named ``{name}_ensemble``."""
    second = Arm(f"{first.name}_r1", regime, first.trainer, first.labels, first.env, repeat=first.repeat + 1)
    extra = [first] if first.name != "stock_noisy" else []   # stock_noisy is an arm of every regime already
    return extra + [second, Arm(f"{name}_ensemble", regime, first.trainer, first.labels, members=(first, second))]


# ---------------------------------------------------------------------------------------------- environment
def nnunet_env(args, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(args.work)),
        "nnUNet_raw": str(args.work / "nnUNet_raw"),
        "nnUNet_preprocessed": str(args.work / "nnUNet_preprocessed"),
        "nnUNet_results": str(args.work / "nnUNet_results"),
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "0" if args.device == "cpu" else "4",
        "nnUNet_compile": "f",
        "nnUNet_GSD_NUM_EPOCHS": str(args.iterations // args.iterations_per_epoch),
        "nnUNet_GSD_NUM_ITERATIONS": str(args.iterations_per_epoch),
        "nnUNet_GSD_NUM_VAL_ITERATIONS": "1",
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(REPO),
    }
    if getattr(args, "curve_every", 0):   # bench/raters.py shares this environment and takes no snapshots
        env["nnUNet_GSD_SNAPSHOT_EVERY"] = str(args.curve_every)
    for var in ("CUDA_VISIBLE_DEVICES",):
        if var in os.environ:
            env[var] = os.environ[var]
    return {**env, **(extra or {})}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "CPU")
    import torch
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}, Python {platform.python_version()}"


# ---------------------------------------------------------------------------------------------- datasets
def dataset_id(args, regime: str, labels: str) -> int:
    r = REGIMES[regime]
    return args.id_base + (r.offset if labels == "noisy" else r.clean_offset)


def dataset_specs(args) -> Dict[int, List[str]]:
    """dataset id → convert arguments, for every dataset the chosen regimes need."""
    specs = {}
    for name in args.regimes:
        r = REGIMES[name]
        convert = r.convert + (["--subset", str(args.subset)] if r.kvasir and args.subset != 1 else [])
        specs[args.id_base + r.offset] = convert
        clean = list(convert)
        i = clean.index("--noise")
        clean[i + 1] = "none"
        if "--noise-at" in clean:
            j = clean.index("--noise-at")
            del clean[j:j + 2]
        specs[args.id_base + r.clean_offset] = clean
    return specs




def prepare(args, state: State, logdir: Path) -> None:
    """Convert and preprocess every dataset once, then write one plans variant (batch size) per dataset."""
    env = nnunet_env(args, {"nnUNet_n_proc_DA": "1"})  # 0 crashes nnU-Net's planner (set_num_threads(0))
    # a GPU machine's set-up counts against its minutes: every dataset at once, preprocessed by several processes
    parallel = args.device != "cpu"
    procs = str(max(1, min(8, (os.cpu_count() or 1) // 2))) if parallel else "1"

    def one(did: int, conv: List[str]) -> None:
        key = " ".join(conv + ["--size", str(args.size), "--seed", str(args.seed)])
        if state.data["datasets"].get(str(did), {}).get("convert") == key:
            return
        log(f"Dataset{did:03d}: convert {key}")
        source = ["--source", str(args.source)] if conv[0] != "synthetic" else []
        logfile = logdir / (f"prepare_{did}.log" if parallel else "prepare.log")
        run(["nnunet_gsd", "convert"] + conv[:1] + source + conv[1:] + ["--id", str(did), "--size", str(args.size),
                                                                         "--seed", str(args.seed), "--overwrite"],
            env, logfile)
        run(["nnUNetv2_plan_and_preprocess", "-d", str(did), "-c", "2d", "-np", procs, "-npfp", procs,
             "--verify_dataset_integrity"], env, logfile)
        gsd = json.loads((raw_folder(args.work, did) / "dataset.json").read_text()).get("gsd", {})
        noise = gsd.get("noise") or {}
        state.set_dataset(did, {"convert": key, "dice_noisy_vs_clean": noise.get("dice_vs_clean"),
                                "pixel_noise_rate": noise.get("pixel_noise_rate")})

    specs = dataset_specs(args)
    with cf.ThreadPoolExecutor(max_workers=len(specs) if parallel else 1) as pool:
        for done in [pool.submit(one, did, conv) for did, conv in specs.items()]:
            done.result()
    for did in dataset_specs(args):
        write_plans_variant(args.work, did, args.batch)


def without_tau(args, did: int) -> None:
    """Drop τ from the preprocessed dataset.json that GSD trains from (kept in the raw one, and outside the "gsd"
    block, whose keys the trainers validate)."""
    path = args.work / "nnUNet_preprocessed" / raw_folder(args.work, did).name / "dataset.json"
    content = json.loads(path.read_text())
    if "tau" in content.get("gsd", {}):
        content["benchmark"] = {"measured_tau_hidden_from_training": content["gsd"].pop("tau")}
        path.write_text(json.dumps(content, indent=1))


# ---------------------------------------------------------------------------------------------- one run
TRAIN_ONLY = """
import sys, torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
did, trainer, plans, device = sys.argv[1:5]
torch.set_num_threads(1)
t = get_trainer_from_args(did, "2d", "all", trainer, plans, True, device=torch.device(device))
maybe_load_checkpoint(t, True, False, None)
t.run_training()
"""


def arm_tag(arm: Arm) -> str:
    """The folder name of an arm's results and predictions: trainer, settings, repeat."""
    return "__".join([arm.trainer] + [f"{k[11:]}{v}" for k, v in sorted(arm.env.items())]
                     + ([f"repeat{arm.repeat}"] if arm.repeat else []))


def predictions_folder(args, arm: Arm) -> Path:
    tag = arm_tag(arm) if not arm.members else "ensemble__" + "+".join(arm_tag(m) for m in arm.members)
    return args.work / "predictions" / tag / raw_folder(args.work, dataset_id(args, arm.regime, arm.labels)).name


def area_ratios(args, arm: Arm) -> Optional[Dict[str, float]]:
    """Predicted / true foreground area per label over the test set, in % (from nnU-Net's summary.json): above 100
    the arm over-segments, below it under-segments. None before the arm is evaluated."""
    summary = predictions_folder(args, arm) / "summary.json"
    if not summary.is_file():
        return None
    means = json.loads(summary.read_text())["mean"]
    return {k: 100 * m["n_pred"] / m["n_ref"] for k, m in sorted(means.items(), key=lambda km: int(km[0]))
            if m["n_ref"]}


def train_predict_evaluate(args, state: State, arm: Arm, logdir: Path) -> None:
    key = arm.run_key(args)
    rec = state.run(key)
    if rec.get("evaluated") and (not args.curve_every or rec.get("curve")):
        return
    did = dataset_id(args, arm.regime, arm.labels)
    raw = raw_folder(args.work, did)
    tag = arm_tag(arm)
    results = args.work / "nnUNet_results" / tag
    env = nnunet_env(args, {**arm.env, "nnUNet_results": str(results)})
    out = results / raw.name / f"{arm.trainer}__{plans_name(args.batch)}__2d" / "fold_all"
    alog = logdir / f"{raw.name}__{tag}.log"
    if not rec.get("trained"):
        if not rec.get("started") and out.exists():
            # a folder this state never started (e.g. of an earlier code version): continuing it would mix the two
            shutil.rmtree(out)
        state.set(key, started=True)
        log(f"train {tag} on {raw.name}")
        train_s = round(run([sys.executable, "-c", TRAIN_ONLY, str(did), arm.trainer, plans_name(args.batch),
                             args.device], env, alog), 1)
        import torch
        logging = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
        state.set(key, train_s=train_s, trained=True, log={k: [float(x) for x in v] for k, v in logging.items()
                                                           if k.startswith("gsd_") or k in ("train_losses",
                                                                                            "mean_fg_dice")})
    pred = predictions_folder(args, arm)
    if not rec.get("evaluated"):
        if pred.exists():
            shutil.rmtree(pred)
        # probabilities kept for the ensemble controls (nnUNetv2_ensemble averages them)
        cmd = ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(did), "-c", "2d",
               "-tr", arm.trainer, "-p", plans_name(args.batch), "-f", "all", "-chk", "checkpoint_final.pth",
               "-npp", "1", "-nps", "1", "-device", args.device, "--disable_progress_bar", "--disable_tta",
               "--save_probabilities"]
        predict_s = round(run(cmd, env, alog), 1)
        state.set(key, predict_s=predict_s, per_case=evaluate(raw, pred, env, alog), evaluated=True)
        log(f"{tag} on {raw.name}: mean Dice {mean_dice(state.run(key)):.2f}")
    if args.curve_every and not state.run(key).get("curve"):
        state.set(key, curve=learning_curve(args, arm, raw, env, alog))


def learning_curve(args, arm: Arm, raw: Path, env: Dict[str, str], alog: Path) -> Dict[str, float]:
    """Test Dice % (nnU-Net's foreground mean) of every snapshot, keyed by the epochs trained: the product's
    ``nnunet_gsd last-k --snapshots`` on the arm's fold."""
    out = args.work / "curves" / arm_tag(arm) / raw.name
    run(["nnunet_gsd", "last-k", "-d", str(dataset_id(args, arm.regime, arm.labels)), "-c", "2d", "-tr", arm.trainer,
         "-p", plans_name(args.batch), "-f", "all", "-i", str(raw / "imagesTs"), "-r", str(raw / "labelsTs"),
         "-o", str(out), "--snapshots", "--disable_tta", "-np", "1", "-device", args.device], env, alog)
    checkpoints = json.loads((out / "snapshots.json").read_text())["checkpoints"]
    curve = {str(epochs_trained(name)): 100 * dice for name, dice in checkpoints.items()}
    log(f"{arm_tag(arm)} on {raw.name}: curve " + ", ".join(f"{e}: {d:.1f}" for e, d in curve.items()))
    return curve


def evaluate(raw: Path, pred: Path, env: Dict[str, str], alog: Path) -> Dict[str, Dict[str, float]]:
    """Per-case Dice % of a prediction folder against the clean test labels (``nnUNetv2_evaluate_folder``)."""
    run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred), "-djfile", str(pred / "dataset.json"),
         "-pfile", str(pred / "plans.json"), "-np", "1"], env, alog)
    summary = json.loads((pred / "summary.json").read_text())
    return {Path(c["reference_file"]).name: {k: 100 * m["Dice"] for k, m in c["metrics"].items()}
            for c in summary["metric_per_case"]}


def ensemble_evaluate(args, state: State, arm: Arm, logdir: Path) -> bool:
    """Predict an ensemble arm once its members are evaluated: nnU-Net's own ``nnUNetv2_ensemble`` over the members'
    saved probabilities. False while a member is missing."""
    key = arm.run_key(args)
    if state.run(key).get("evaluated"):
        return True
    folders = [predictions_folder(args, m) for m in arm.members]
    if not all(state.run(m.run_key(args)).get("evaluated") for m in arm.members) or not all(
            any(f.glob("*.npz")) for f in folders):
        return False
    raw = raw_folder(args.work, dataset_id(args, arm.regime, arm.labels))
    pred = predictions_folder(args, arm)
    if pred.exists():
        shutil.rmtree(pred)
    env, alog = nnunet_env(args), logdir / f"{raw.name}__{pred.parent.name}.log"
    run(["nnUNetv2_ensemble", "-i", *map(str, folders), "-o", str(pred), "-np", "1"], env, alog)
    shutil.copy(folders[0] / "plans.json", pred / "plans.json")  # nnUNetv2_ensemble copies only dataset.json
    state.set(key, per_case=evaluate(raw, pred, env, alog), evaluated=True,
              train_s=round(sum(state.run(m.run_key(args)).get("train_s", 0.0) for m in arm.members), 1))
    log(f"{arm.name} ({arm.regime}): mean Dice {mean_dice(state.run(key)):.2f}")
    return True


def mean_dice(rec: dict, label: Optional[str] = None) -> float:
    """Mean over test cases of the mean foreground Dice (NaN cases — empty reference and prediction — skipped); a
    kept record from before results carried per-case Dice holds only its means."""
    if "per_case" not in rec:
        return rec["dice"] if label is None else rec["dice_per_class"][label]
    per = []
    for metrics in rec["per_case"].values():
        vals = [v for k, v in metrics.items() if label is None or k == label]
        vals = [v for v in vals if v == v]
        if vals:
            per.append(float(np.mean(vals)))
    return float(np.mean(per))


def missed_share(rec: dict) -> float:
    """% of test cases whose prediction misses every reference object (mean foreground Dice exactly 0): detection
    failures, which weigh more in the mean Dice than a boundary off by a pixel."""
    if "per_case" not in rec:
        return rec["missed"]
    return 100.0 * float(np.mean([v == 0.0 for v in case_means(rec).values()]))


def case_means(rec: dict) -> Dict[str, float]:
    out = {}
    for case, metrics in rec["per_case"].items():
        vals = [v for v in metrics.values() if v == v]
        if vals:
            out[case] = float(np.mean(vals))
    return out


def paired(a: dict, b: dict) -> Optional[tuple[float, float]]:
    """Mean per-case Dice difference a − b on the same test images and its standard error; None where either holds
    only means (a kept record without per-case Dice)."""
    if "per_case" not in a or "per_case" not in b:
        return None
    ca, cb = case_means(a), case_means(b)
    d = np.array([ca[k] - cb[k] for k in ca.keys() & cb.keys()])
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def trainings(runs: dict, key: str) -> List[dict]:
    """Every evaluated training of a run: the run itself and its repeats (``key|repeat=N``)."""
    return [r for k, r in runs.items() if (k == key or k.startswith(key + "|repeat=")) and r.get("evaluated")]


def averaged(recs: List[dict]) -> dict:
    """A record whose per-case Dice is the mean over trainings: paired differences of means compare the same images.
    Empty (unpairable) where a training holds only its mean."""
    if not all("per_case" in r for r in recs):
        return {}
    cases = set.intersection(*(set(r["per_case"]) for r in recs))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a label absent from both reference and prediction: NaN
        return {"per_case": {c: {k: float(np.nanmean([r["per_case"][c][k] for r in recs]))
                                 for k in recs[0]["per_case"][c]} for c in cases}}


def repeats_line(args, runs: dict, here: Dict[str, Arm], regime: str) -> tuple[List[str], dict]:
    """Arms trained more than once: every training's Dice, the mean, and for GSD arms Δ and recovery of the means."""
    same_as_noisy = here["stock_clean"].run_key(args) == here["stock_noisy"].run_key(args)  # the clean regime
    groups = {name: trainings(runs, arm.run_key(args)) for name, arm in here.items()
              if not arm.repeat and not (name == "stock_clean" and same_as_noisy)}
    groups = {name: recs for name, recs in groups.items() if len(recs) > 1}
    if not groups:
        return [], {}
    out, found = [], {}
    base, ceil = (groups.get(n) or trainings(runs, here[n].run_key(args)) for n in ("stock_noisy", "stock_clean"))
    base_mean = np.mean([mean_dice(r) for r in base]) if base else None
    gap = np.mean([mean_dice(r) for r in ceil]) - base_mean if base and ceil and regime != "clean" else 0.0
    for name, recs in groups.items():
        dice = [mean_dice(r) for r in recs]
        found[name] = {"trainings": dice, "mean": float(np.mean(dice))}
        text = f"{name} {', '.join(f'{d:.2f}' for d in dice)} (mean {np.mean(dice):.2f})"
        if name not in ("stock_noisy", "stock_clean") and base:
            pair = paired(averaged(recs), averaged(base))
            if pair:
                found[name].update(delta_of_means=pair[0], delta_se=pair[1])
                text += f": Δ of the means {pair[0]:+.2f} ± {pair[1]:.2f}"
            else:
                found[name].update(delta_of_means=float(np.mean(dice) - base_mean), delta_se=None)
                text += f": Δ of the means {np.mean(dice) - base_mean:+.2f} (unpaired)"
            if abs(gap) > 1e-9:
                found[name]["recovered_of_means"] = float((np.mean(dice) - base_mean) / gap)
                text += f", {100 * found[name]['recovered_of_means']:.0f} % of the gap"
        out.append(text)
    return ["Repeated trainings (nnU-Net's training is not seeded; Δ of the means pairs per-case Dice averaged over "
            "each arm's trainings): " + "; ".join(out) + ".", ""], found


def controls_lines(args, runs: dict, here: Dict[str, Arm], regime: str) -> tuple[List[str], dict]:
    """GSD against what the same compute buys with stock nnU-Net (two networks ensembled, on the annotated and on
    the calibrated labels), and the paper's comparison: faithful GSD against a CE-only network (share of the CE
    noise gap it recovers)."""
    rec = {n: runs.get(a.run_key(args), {}) for n, a in here.items()}
    done = {n for n, r in rec.items() if r.get("evaluated")}
    found, text = {}, []
    # every GSD training and variant: repeats are paired one by one where the first training is a kept mean
    gsd_arms = [n for n, a in here.items() if a.trainer not in (STOCK, CE, CALIBRATED) and not a.members]
    for gsd in gsd_arms:
        for control in ("stock_ensemble", "calibrated_ensemble"):
            if {gsd, control} <= done:
                pair = paired(rec[gsd], rec[control]) or (rec[gsd].get("controls", {}).get(control)
                                                          if rec[control].get("measured") else None)
                d, se = pair or (mean_dice(rec[gsd]) - mean_dice(rec[control]), None)
                found[f"{gsd}_vs_{control}"] = {"delta": d, "delta_se": se}
                text.append(f"{gsd} − {control} {d:+.2f} " + (f"± {se:.2f}" if pair else "(means, unpaired)"))
    if regime != "clean" and {"ce_noisy", "ce_clean"} <= done:
        ce_noisy, ce_clean = mean_dice(rec["ce_noisy"]), mean_dice(rec["ce_clean"])
        found["ce_gap"] = {"ce_clean": ce_clean, "ce_noisy": ce_noisy}
        parts = [f"CE-only nnU-Net {ce_clean:.2f} clean / {ce_noisy:.2f} noisy"]
        for name in ("gsd_faithful", "stock_noisy", "gsd_noisy"):
            if name in done and abs(ce_clean - ce_noisy) > 1e-9:
                share = (mean_dice(rec[name]) - ce_noisy) / (ce_clean - ce_noisy)
                found["ce_gap"][f"{name}_recovered"] = share
                pair = paired(rec[name], rec["ce_noisy"])
                d, se = pair or (mean_dice(rec[name]) - ce_noisy, None)
                found["ce_gap"][f"{name}_vs_ce_noisy"] = {"delta": d, "delta_se": se}
                parts.append(f"{name} {mean_dice(rec[name]):.2f} ({d:+.2f} "
                             + (f"± {se:.2f}" if pair else "unpaired") + " vs CE noisy, "
                             f"{100 * share:.0f} % of the CE gap)")
        text.append("; ".join(parts))
    if not text:
        return [], found
    return ["Controls (paired over the test images): " + "; ".join(text) + ".", ""], found


def curve_lines(args, runs: dict, here: Dict[str, Arm]) -> tuple[List[str], Dict[str, Dict[str, float]]]:
    """The learning curves of a regime's arms (``--curve-every``): test Dice % by epochs trained, and how far each arm
    fell from its best snapshot by the end — a network that memorises noisy labels peaks, then falls."""
    curves = {name: runs[a.run_key(args)]["curve"] for name, a in here.items()
              if runs.get(a.run_key(args), {}).get("curve")}
    if not curves:
        return [], {}
    epochs = sorted({int(e) for c in curves.values() for e in c})
    lines = [f"Learning curves (test Dice % of the weights kept every {args.curve_every} epochs, nnU-Net's foreground "
             "mean; peak − final = what the arm lost after its best snapshot):", "",
             "| arm | " + " | ".join(f"ep {e}" for e in epochs) + " | peak − final |",
             "|---|" + "---|" * (len(epochs) + 1)]
    for name, curve in curves.items():
        values = [curve.get(str(e)) for e in epochs]
        final = curve[str(max(int(e) for e in curve))]
        lines.append(f"| {name} | " + " | ".join("" if v is None else f"{v:.1f}" for v in values)
                     + f" | {max(curve.values()) - final:.1f} |")
    return lines + [""], curves


def plot_curves(curves: Dict[str, Dict[str, Dict[str, float]]], path: Path) -> None:
    """One panel per regime, one line per arm: test Dice against the nnU-Net epochs trained."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4), squeeze=False)
    for ax, (regime, arms) in zip(axes[0], curves.items()):
        for name, curve in arms.items():
            epochs = sorted(curve, key=int)
            ax.plot([int(e) for e in epochs], [curve[e] for e in epochs], marker="o", label=name)
        ax.set(xlabel="nnU-Net epochs trained", ylabel="test Dice % (clean labels)", title=regime)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- report
def last(rec: dict, key: str) -> Optional[float]:
    values = (rec.get("log") or {}).get("gsd_" + key)
    return 100 * values[-1] if values else None


def results_budget(args) -> dict:
    """The budget a results file records; runs of one budget may be reported together."""
    return {"iterations": args.iterations, "iterations_per_epoch": args.iterations_per_epoch, "batch": args.batch,
            "size": args.size, "device": args.device, "seed": args.seed, "tau": args.tau, "subset": args.subset,
            "curve_every": args.curve_every}


def kept_runs(args, arms: List[Arm], runs: dict) -> Dict[str, dict]:
    """Runs of the results file already at ``args.results`` that this work folder never started, rebuilt from their
    entries (per-case Dice, truth diagnostics, curve) when the file has this budget: a work folder holding only new
    arms then reports beside the earlier ones and pairs with them. A run started here supersedes its kept entry."""
    path = args.results.with_suffix(".json")
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    same = lambda b: {k: v for k, v in b.items() if k != "curve_every"}  # noqa: E731  (snapshots change no Dice)
    if same(old.get("budget", {})) != same(results_budget(args)):
        return {}
    kept = {}
    for arm in arms:
        key, rj = arm.run_key(args), old.get("regimes", {}).get(arm.regime, {})
        entry = rj.get("arms", {}).get(arm.name)
        if key in runs or key in kept or not entry:
            continue
        kept[key] = {"evaluated": True, "train_s": entry.get("train_s"),
                     **{k: entry[k] for k in ("per_case", "dice", "dice_per_class", "missed") if k in entry},
                     "tau_used": entry.get("tau_used"), "area_pred_vs_true": entry.get("area_pred_vs_true"),
                     "truth": {**{k: entry.get(k) for k in ("selection_precision", "noisy_accuracy",
                                                            "calibrated_accuracy", "refined_accuracy")},
                               "disagreement": entry.get("contradicted")},
                     "measured": (entry.get("measured") or rj.get("measured")
                                  or {"date": old.get("date"), "command": old.get("command")})}
        if "delta_se" in entry:   # paired when measured, against the stock_noisy kept beside it
            kept[key]["delta"] = (entry["delta_vs_stock_noisy"], entry["delta_se"])
        controls = {c: (v["delta"], v["delta_se"]) for n, v in rj.get("controls", {}).items()
                    for c in ("stock_ensemble", "calibrated_ensemble") if n == f"{arm.name}_vs_{c}" and v["delta_se"]}
        if controls:
            kept[key]["controls"] = controls
        if rj.get("curves", {}).get(arm.name):
            kept[key]["curve"] = rj["curves"][arm.name]
    return kept


def earlier_arms(args, arms: List[Arm]) -> List[Arm]:
    """The arms of the results file at ``args.results`` that this run does not list (variants of earlier runs, arms
    an option leaves out), rebuilt from their entries' trainer, settings and repeat so that the report keeps them;
    ensembles are left to the runs that list their members."""
    path = args.results.with_suffix(".json")
    if not path.is_file():
        return []
    listed_here = {(a.regime, a.name) for a in arms}
    regimes = json.loads(path.read_text()).get("regimes", {})
    out = []
    for regime in args.regimes:
        for name, entry in regimes.get(regime, {}).get("arms", {}).items():
            if (regime, name) in listed_here or name.endswith("_ensemble") or "trainer" not in entry:
                continue
            labels = "clean" if name.endswith("_clean") and regime != "clean" else "noisy"
            out.append(Arm(name, regime, entry["trainer"], labels, dict(entry.get("settings") or {}),
                           int(entry.get("repeat") or 0)))
    return out


def report(args, state: State, arms: List[Arm]) -> None:
    arms = arms + earlier_arms(args, arms)   # a run with other variants must not drop the earlier ones' rows
    runs = {**kept_runs(args, arms, state.data["runs"]), **state.data["runs"]}
    commands = state.commands
    regimes_json, lines = {}, []
    lines += [f"# GSD vs stock nnU-Net under label noise ({args.size}²)", "",
              "Test Dice (clean test labels; stock `nnUNetv2_predict` without TTA + `nnUNetv2_evaluate_folder`), "
              "every arm trained for the same iterations on the same plans.", "",
              ("Command (from the repository root):" if len(commands) == 1 else
               "Commands (from the repository root; one work folder, one state):"), "",
              *(f"    {c}" for c in commands), "",
              f"- Machine: {machine()}; date {dt.date.today().isoformat()}",
              f"- Budget: {args.iterations} iterations ({args.iterations // args.iterations_per_epoch} epochs × "
              f"{args.iterations_per_epoch}) × batch {args.batch} (plans `{plans_name(args.batch)}` = nnU-Net's 2d "
              f"plans with this batch size), fold `all`, device {args.device}, 1 torch thread per arm, "
              f"seed {args.seed}",
              "- GSD's τ: " + ("none given (dataset.json τ hidden): the trainer's fallback_tau" if args.tau == "hidden"
                               else "dataset.json (measured noise rate)"),
              "- stock = `nnUNetTrainerBudget` (nnU-Net's Dice+CE with deep supervision, one network); gsd = "
              "`nnUNetTrainerGSD` (defaults); faithful = `nnUNetTrainerGSDFaithful` (the paper's rules)",
              "- Δ = mean per-case difference to stock on the same noisy labels ± its standard error over the test "
              "images (test-set noise only: one training seed per arm); recovered = (gsd − stock_noisy) / "
              "(stock_clean − stock_noisy)",
              "- truth diagnostics (last epoch, training batches): selection precision = share of D_clean whose nGT "
              "is right (after boundary calibration); noisy acc. = nGT vs clean; calibrated acc. = nGT after boundary "
              "calibration vs clean (— where the run predates it); refined acc. = refined labels vs clean; "
              "τ = the forget rate GSD trained with; contradicted = share of labels both networks confidently "
              "contradict (p(nGT) < 0.2), "
              "the upper bound the trainer logs in place of a τ estimate "
              "(true rate: the noisy acc.'s complement); area pred/true = predicted over true foreground area on "
              "the test set, per label (above 100: over-segments); missed = test cases whose mean foreground Dice is 0 "
              "(detection failures)", ""]
    for regime in args.regimes:
        ds = state.data["datasets"].get(str(dataset_id(args, regime, "noisy")), {})
        dnc = ds.get("dice_noisy_vs_clean")
        rj = {"dice_noisy_vs_clean": None if dnc is None else 100 * dnc,
              "pixel_noise_rate": None if ds.get("pixel_noise_rate") is None else 100 * ds["pixel_noise_rate"],
              "arms": {}}
        lines += [f"## {regime}" + (f" — Dice(nGT, GT) {100 * dnc:.1f} %, {100 * ds['pixel_noise_rate']:.1f} % of "
                                    f"pixels wrong" if dnc is not None else " — clean labels"), "",
                  "| arm | trainer | test Dice % | Δ vs stock_noisy | recovered | selection prec. | noisy acc. | "
                  "calibrated acc. | refined acc. | τ % | contradicted % | area pred/true % | missed % | train s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        fixed = ("stock_clean", "stock_noisy", "gsd_noisy", "gsd_faithful")
        here = {a.name: a for a in sorted((a for a in arms if a.regime == regime),
                                          key=lambda a: fixed.index(a.name) if a.name in fixed else len(fixed))}
        base = runs.get(here["stock_noisy"].run_key(args), {})
        ceil = runs.get(here["stock_clean"].run_key(args), {})
        for name, arm in here.items():
            rec = runs.get(arm.run_key(args), {})
            if not rec.get("evaluated"):
                lines.append(f"| {name} | `{arm.trainer}` | (pending) | | | | | | | | | | | |")
                continue
            dice = mean_dice(rec)
            # per-case Dice travel with the results so that a later run can be paired with this one even where the
            # work folder (state.json, predictions) is gone
            entry = {"dice": dice, "trainer": arm.trainer, "settings": arm.env, "repeat": arm.repeat}
            if "per_case" in rec:
                entry["per_case"] = {c: {k: round(v, 6) for k, v in m.items()}
                                     for c, m in sorted(rec["per_case"].items())}
            labels = sorted({k for m in rec.get("per_case", {}).values() for k in m} or rec.get("dice_per_class", ()),
                            key=int)
            if len(labels) > 1:
                entry["dice_per_class"] = {k: mean_dice(rec, k) for k in labels}
            delta = rec_str = "—"
            if base.get("evaluated") and name != "stock_noisy" and name != "stock_clean":
                pair = paired(rec, base) or (rec.get("delta") if base.get("measured") else None)
                if pair:
                    entry["delta_vs_stock_noisy"], entry["delta_se"] = pair
                    delta = f"{pair[0]:+.2f} ± {pair[1]:.2f}"
                else:
                    delta = f"{dice - mean_dice(base):+.2f} (unpaired)"
                if regime != "clean" and ceil.get("evaluated"):
                    gap = mean_dice(ceil) - mean_dice(base)
                    if abs(gap) > 1e-9:
                        entry["recovered"] = (dice - mean_dice(base)) / gap
                        rec_str = f"{100 * entry['recovered']:.0f} %"
            truth = rec.get("truth") or {k: last(rec, k) for k in ("selection_precision", "noisy_accuracy",
                                                                  "calibrated_accuracy", "refined_accuracy",
                                                                  "disagreement")}
            if truth["noisy_accuracy"] is not None:
                entry.update({k: truth[k] for k in ("selection_precision", "noisy_accuracy", "calibrated_accuracy",
                                                    "refined_accuracy") if truth[k] is not None})
            if arm.trainer != STOCK:
                tau = (rec.get("log") or {}).get("gsd_tau")
                entry["tau_used"] = rec.get("tau_used", None if not tau else 100 * tau[-1])
                entry["contradicted"] = truth["disagreement"]
            # a kept arm's predictions went with its work folder
            entry["area_pred_vs_true"] = rec.get("area_pred_vs_true") or (None if rec.get("measured")
                                                                          else area_ratios(args, arm))
            entry["missed"] = missed_share(rec)
            entry["train_s"] = rec.get("train_s")
            if rec.get("measured"):
                entry["measured"] = rec["measured"]
            area = "—" if not entry["area_pred_vs_true"] else " / ".join(
                f"{v:.0f}" for v in entry["area_pred_vs_true"].values())
            fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
            per_class = (" (" + " / ".join(f"{entry['dice_per_class'][k]:.1f}" for k in labels) + ")"
                         if "dice_per_class" in entry else "")
            what = (f"`{arm.trainer}`" + (f" {arm.env}" if arm.env else "")
                    + (f" repeat {arm.repeat}" if arm.repeat else "")
                    + (f" × {len(arm.members)}, ensembled" if arm.members else "")
                    + (f" *kept* ({rec['measured']['date']})" if rec.get("measured") else ""))
            lines.append(f"| {name} | {what} | {dice:.2f}{per_class} | "
                         f"{delta} | {rec_str} | {fmt(truth['selection_precision'])} | {fmt(truth['noisy_accuracy'])} "
                         f"| {fmt(truth['calibrated_accuracy'])} | {fmt(truth['refined_accuracy'])} "
                         f"| {fmt(entry.get('tau_used'))} "
                         f"| {fmt(entry.get('contradicted'))} | {area} | {entry['missed']:.1f} "
                         f"| {rec.get('train_s')} |")
            rj["arms"][name] = entry
        lines.append("")
        kept = {c: None for a in here.values() if runs.get(a.run_key(args), {}).get("measured")
                for c in listed(runs[a.run_key(args)]["measured"]["command"])}
        if kept:
            lines += ["Rows marked *kept* were measured by earlier runs of this budget whose work folders are gone "
                      "(their figures come from the results file, paired where it holds their per-case Dice or the "
                      "pair was measured together; ensembles of them cannot be predicted again): "
                      + "; ".join(f"`{c}`" for c in kept) + ".", ""]
        more, rj["repeated_trainings"] = repeats_line(args, runs, here, regime)
        lines += more
        more, rj["controls"] = controls_lines(args, runs, here, regime)
        lines += more
        more, rj["curves"] = curve_lines(args, runs, here)
        lines += more
        regimes_json[regime] = rj
    stem = args.results
    stem.parent.mkdir(parents=True, exist_ok=True)
    md = stem.with_suffix(".md")
    text = md.read_text() if md.is_file() else ""
    notes = text[text.index("\n## Notes"):] if "\n## Notes" in text else ""
    kept_json, kept_md = kept_regimes(stem, args.regimes)
    for regime in kept_json:
        regimes_json.setdefault(regime, kept_json[regime])
    # after the kept regimes join: a run of one regime redraws the others' curves beside its own
    if any(rj.get("curves") for rj in regimes_json.values()):
        plot_curves({r: rj["curves"] for r, rj in regimes_json.items() if rj.get("curves")},
                    stem.with_name(stem.name + "-curves.png"))
    md.write_text("\n".join(lines + kept_md) + notes)
    stem.with_suffix(".json").write_text(json.dumps({"regimes": regimes_json, "budget": results_budget(args),
                                                     "command": commands[0] if len(commands) == 1 else commands,
                                                     "machine": machine(), "date": dt.date.today().isoformat()},
                                                    indent=1))


def kept_regimes(stem: Path, regimes: List[str]) -> tuple[dict, List[str]]:
    """The regimes of the results file already at ``stem`` that this run does not train: their JSON entries (each
    with the date and command it was measured with) and markdown sections, so that a run of some regimes adds to
    the table instead of erasing the others."""
    old_json, old_md = stem.with_suffix(".json"), stem.with_suffix(".md")
    if not old_json.is_file():
        return {}, []
    old = json.loads(old_json.read_text())
    kept = {name: {**entry, "measured": entry.get("measured") or {"date": old.get("date"),
                                                                   "command": old.get("command")}}
            for name, entry in old.get("regimes", {}).items() if name not in regimes}
    text = old_md.read_text() if old_md.is_file() else ""
    text = text[:text.index("\n## Notes")] if "\n## Notes" in text else text
    sections = []
    for section in text.split("\n## ")[1:]:
        name = section.split(maxsplit=1)[0]
        if name in kept:
            note = (f"_Kept from an earlier run ({kept[name]['measured']['date']}; its commands: "
                    + "; ".join(f"`{c}`" for c in listed(kept[name]['measured']['command'])) + ")._")
            body = section.rstrip("\n").split("\n")
            old_note = [i for i, line in enumerate(body) if line.startswith("_Kept from an earlier run")]
            if old_note:
                body[old_note[0]] = note
            else:
                body[1:1] = ["", note]
            sections += ["## " + "\n".join(body), ""]
    return kept, sections


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = command_line("bench/quality.py", argv)
    if args.background:
        pid = in_background(str(Path(__file__).resolve()), argv, args.log, cwd=REPO)
        print(f"quality benchmark running: PID {pid}, log {args.log}; results {args.results}.md/.json")
        return
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (args.work / sub).mkdir(parents=True, exist_ok=True)
    state = State(args.work / "state.json")
    budget = {"iterations": args.iterations, "per_epoch": args.iterations_per_epoch, "batch": args.batch,
              "size": args.size, "seed": args.seed, "device": args.device, "tau": args.tau,
              **({"subset": args.subset} if args.subset != 1 else {})}
    if state.data.get("budget") not in (None, budget):
        raise SystemExit(f"{args.work} holds runs of another budget {state.data['budget']}: pass another --work")
    state.data["budget"] = budget
    arms = arms_of(args)
    if args.report_only:
        report(args, state, arms)
        return
    state.add_command(command)
    logdir = args.log.parent / f"quality-{args.size}"
    prepare(args, state, logdir)
    if args.tau == "hidden":
        for regime in args.regimes:
            without_tau(args, dataset_id(args, regime, "noisy"))
    unique, ensembles = {}, {}
    for arm in arms:
        if arm.members:   # cheap (no training): predicted whenever its members are there, whatever --only says
            ensembles.setdefault(arm.run_key(args), arm)
        elif args.only is None or arm.name in args.only:
            unique.setdefault(arm.run_key(args), arm)
    log(f"{len(arms)} arms, {len(unique)} distinct runs, {args.jobs} at a time")

    def ready_ensembles() -> None:
        for k, arm in list(ensembles.items()):
            try:
                if ensemble_evaluate(args, state, arm, logdir):
                    del ensembles[k]
            except RuntimeError as e:
                log(f"FAILED {arm.name} ({arm.regime}): {e}")
                del ensembles[k]

    ready_ensembles()
    with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(train_predict_evaluate, args, state, arm, logdir): arm for arm in unique.values()}
        for fut in cf.as_completed(futures):
            try:
                fut.result()
            except RuntimeError as e:
                log(f"FAILED {futures[fut].name} ({futures[fut].regime}): {e}")
            ready_ensembles()
            report(args, state, arms)
    for arm in ensembles.values():
        log(f"{arm.name} ({arm.regime}) not predicted: a member is not evaluated (see --only)")
    report(args, state, arms)
    log(f"done: {args.results}.md")


if __name__ == "__main__":
    main()
