"""``nnunet_gsd demo``: stock nnU-Net and GSD-Net on the same generated noisy dataset, side by side.

Every step is the real console command a user would type: ``nnunet_gsd convert synthetic`` (blob
"lesions" with simulated label noise on the training labels, clean test labels) →
``nnUNetv2_plan_and_preprocess`` → ``nnUNetv2_train`` with stock nnU-Net (``nnUNetTrainerBudget``:
nnU-Net's own ``nnUNetTrainer``, Dice + CE with deep supervision, with a settable budget) and with
``nnUNetTrainerGSD``, both at the same epochs × iterations → ``nnUNetv2_predict``
→ ``nnUNetv2_evaluate_folder`` against the clean test labels. Unless ``--no-ceiling``, stock nnU-Net
also trains on the clean training labels of the same images: the score the noise takes away.

Prints the Dice of each model and what the numbers do and do not show at this tiny budget, and
writes ``overlays.png`` (a few test cases, each model's prediction against the clean reference).

Files: the generated datasets are cached in ``WORKDIR/nnUNet_raw`` and ``WORKDIR/nnUNet_preprocessed``
and rebuilt when the dataset options (``--noise``, ``--seed``) change; each run's models, predictions,
logs and results go to their own folder ``WORKDIR/runs/<time>_<noise>_<epochs>x<iterations>/``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from nnunet_gsd.dataset_conversion import provenance
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import HARMLESS_NOTE, console_env, run_command
from nnunet_gsd.utils import write_json_atomic

STOCK = "nnUNetTrainerBudget"
GSD = "nnUNetTrainerGSD"
NUM_TRAIN, NUM_TEST, SIZE = 40, 12, 64
OVERLAY_CASES = 4
EPOCH_LINE = re.compile(r"Epoch (\d+)$")
PSEUDO_DICE = re.compile(r"Pseudo dice \[(.*)\]")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="stock nnU-Net and GSD on a small generated noisy dataset, side by side (CPU, minutes)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("nnunet_gsd_demo"),
                   help="folder for the datasets and the runs (default: %(default)s)")
    p.add_argument("-d", dest="dataset_id", type=int, default=900,
                   help="dataset id of the noisy dataset; the clean-label copy takes id + 1 (default: %(default)s)")
    p.add_argument("--noise", default="S_R", choices=["S_R", "S_E", "S_DE"],
                   help="simulated label noise: S_R shrinks, S_E expands the lesions, S_DE erodes or dilates "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images, split and noise (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs of every model (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=50,
                   help="training iterations per epoch of every model (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=None,
                   help="trainings run side by side, each with its share of the CPU cores (default: 2 on a CPU "
                        "with 2 or more cores, else 1)")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                   help="skip stock nnU-Net on the clean labels (saves one training)")
    p.add_argument("-device", default="cpu", choices=["cpu", "cuda", "mps"], help="device (default: %(default)s)")
    p.add_argument("-np", dest="num_processes", type=int, default=int(os.environ.get("nnUNet_def_n_proc", "2")),
                   help="processes for planning, preprocessing and evaluation (default: $nnUNet_def_n_proc or 2)")
    p.set_defaults(func=run_demo)


# ---------------------------------------------------------------- datasets
def dataset_options(args: argparse.Namespace) -> Dict[str, object]:
    """What the generated dataset depends on: a change rebuilds it."""
    return {"noise": args.noise, "seed": args.seed, "num_train": NUM_TRAIN, "num_test": NUM_TEST, "size": SIZE}


def raw_folder(work: Path, dataset_id: int) -> Optional[Path]:
    found = sorted((work / "nnUNet_raw").glob(f"Dataset{dataset_id:03d}_*"))
    return found[0] if found else None


def stale_datasets(work: Path, ids: List[int], options: Mapping[str, object]) -> Optional[str]:
    """Why the cached datasets must be rebuilt (options changed, or half-built), or None to reuse them."""
    record = work / "demo_datasets.json"
    if not all(raw_folder(work, i) for i in ids):
        return "not built yet" if not record.is_file() else "incomplete"
    if not record.is_file():
        return "built by another version of the demo"
    before = json.loads(record.read_text())
    changed = [f"{k} {before.get(k)} → {v}" for k, v in options.items() if before.get(k) != v]
    return f"options changed ({', '.join(changed)})" if changed else None


def remove_datasets(work: Path, ids: List[int]) -> None:
    for dataset_id in ids:
        for root in ("nnUNet_raw", "nnUNet_preprocessed"):
            for folder in (work / root).glob(f"Dataset{dataset_id:03d}_*"):
                shutil.rmtree(folder)
    (work / "demo_datasets.json").unlink(missing_ok=True)


def make_clean_copy(noisy: Path, dataset_id: int) -> Path:
    """The same images with the clean training labels (the converter keeps them in labelsTr_clean/)."""
    clean = noisy.parent / f"Dataset{dataset_id:03d}_SyntheticClean"
    tmp = noisy.parent / f".{clean.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("imagesTr", "imagesTs", "labelsTs"):
        shutil.copytree(noisy / sub, tmp / sub)
    shutil.copytree(noisy / "labelsTr_clean", tmp / "labelsTr")
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    source = json.loads((noisy / "dataset.json").read_text())
    generate_dataset_json(str(tmp), source["channel_names"], source["labels"], source["numTraining"],
                          source["file_ending"], dataset_name=clean.name.split("_", 1)[1],
                          description=f"{noisy.name} with its clean training labels (nnunet_gsd demo)",
                          license=source.get("licence", "see the source dataset"), converted_by="nnunet_gsd demo")
    os.replace(tmp, clean)
    return clean


# ---------------------------------------------------------------- steps
class Steps:
    """Numbered steps with a one-line status each; full output in the run's logs/ folder. Steps of concurrent jobs
    (:meth:`parallel`) print as they start and end, each line naming its step."""

    def __init__(self, total: int, logs: Path, env: Dict[str, str]):
        self.total, self.done, self.logs, self.env = total, 0, logs, env
        self._lock = threading.Lock()

    def announce(self, title: str) -> int:
        with self._lock:
            self.done += 1
            print(f"[{self.done}/{self.total}] {title}", flush=True)
            return self.done

    def run(self, title: str, cmd: List[str], log_name: str, env: Optional[Dict[str, str]] = None,
            epochs: Optional[int] = None, tag: str = "") -> None:
        number = self.announce(title)
        start = time.time()
        log = self.logs / f"{log_name}.log"
        run_command(cmd, env or self.env, log_file=log, what=title,
                    echo=_epoch_digest(epochs, tag) if epochs else None)
        print(f"      [{number}/{self.total}] done in {time.time() - start:.0f} s  (log: {log})", flush=True)

    @staticmethod
    def parallel(jobs: List[Callable[[], None]], workers: int) -> None:
        """Run ``jobs`` on ``workers`` threads (each job runs its console commands in turn); after a failure no
        further job starts, and the first failure is raised once the running jobs have ended."""
        failed = threading.Event()

        def guarded(job: Callable[[], None]) -> None:
            if failed.is_set():
                return
            try:
                job()
            except BaseException:
                failed.set()  # before this worker takes the next job
                raise

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(guarded, job) for job in jobs]:
                future.result()


def _epoch_digest(epochs: int, tag: str = ""):
    """From nnU-Net's training output, one line per epoch: its number and the validation pseudo Dice; ``tag``
    names the model when trainings run side by side."""
    state = {"epoch": None}

    def echo(line: str) -> Optional[str]:
        if m := EPOCH_LINE.search(line):
            state["epoch"] = int(m.group(1))
        elif (m := PSEUDO_DICE.search(line)) and state["epoch"] is not None:
            dice = ", ".join(re.findall(r"\d+\.\d+", m.group(1)))
            return f"      {tag + ' ' if tag else ''}epoch {state['epoch'] + 1}/{epochs}: validation pseudo Dice {dice}"
        return None
    return echo


def dice_of(summary_json: Path) -> Dict[str, object]:
    summary = json.loads(summary_json.read_text())
    per_case = {Path(c["reference_file"]).name: float(c["metrics"]["1"]["Dice"])
                for c in summary["metric_per_case"]}
    return {"mean": float(summary["foreground_mean"]["Dice"]), "per_case": per_case}


def conclusion(results: Mapping[str, float], epochs: int, iterations: int) -> List[str]:
    """What the numbers support at this budget, and what they do not."""
    gsd, stock = results[GSD], results[STOCK]
    lines = [f"GSD − stock nnU-Net = {100 * (gsd - stock):+.1f} Dice points on {NUM_TEST} test images."]
    if "clean" in results:
        lines.append(f"The noise costs stock nnU-Net {100 * (results['clean'] - stock):+.1f} points against the "
                     f"clean-label run: that gap is all a noise-robust method could recover here.")
    lines += [
        "What this shows: the whole pipeline runs with nnU-Net's own commands (convert, plan, train, predict, "
        "evaluate) and GSD trains and predicts like any nnU-Net trainer.",
        f"What it does not show: which method is better. {epochs} epochs × {iterations} iterations on "
        f"{NUM_TRAIN} generated {SIZE}² images is far too little training, nnU-Net's training is not seeded, and "
        f"differences of a few points change from run to run. Judge the method on your data at full budget, or "
        f"with bench/quality.py (docs/benchmarks.md).",
    ]
    return lines


def write_overlays(path: Path, raw: Path, predictions: Mapping[str, Path], labels: Mapping[str, str],
                   per_case: Mapping[str, Mapping[str, float]], title: str) -> None:
    """The first OVERLAY_CASES test cases, one column per model, against the clean reference."""
    from nnunet_gsd.tools.common import reader_writer
    from nnunet_gsd.tools.overlay import comparison_figure, image_files
    from nnunet_gsd.utils import is_rgb
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    cases = sorted(p.name[:-len(ending)] for p in (raw / "labelsTs").glob(f"*{ending}"))[:OVERLAY_CASES]
    rw = reader_writer(dataset_json, raw / "labelsTs" / f"{cases[0]}{ending}")
    images = [rw.read_images([str(f) for f in image_files(raw / "imagesTs", c, ending)])[0][:, 0] for c in cases]
    references = [rw.read_seg(str(raw / "labelsTs" / f"{c}{ending}"))[0][0, 0] for c in cases]
    preds = {labels[m]: [rw.read_seg(str(folder / f"{c}{ending}"))[0][0, 0] for c in cases]
             for m, folder in predictions.items()}
    dice = {labels[m]: [per_case[m][f"{c}{ending}"] for c in cases] for m in predictions}
    comparison_figure(path, images, references, preds, dice, cases, is_rgb(dataset_json["channel_names"]), title)


# ---------------------------------------------------------------- the command
def run_demo(args: argparse.Namespace) -> int:
    for option in ("epochs", "iterations", "num_processes"):
        if getattr(args, option) < 1:
            raise UserError(f"{option} {getattr(args, option)}: must be >= 1")
    cores = os.cpu_count() or 1
    jobs = args.jobs if args.jobs is not None else (2 if args.device == "cpu" and cores >= 2 else 1)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: must be >= 1 (e.g. --jobs 1 to train one model at a time)")
    work = args.workdir.resolve()
    noisy_id, clean_id = args.dataset_id, args.dataset_id + 1
    ids = [noisy_id, clean_id] if args.ceiling else [noisy_id]
    options = dataset_options(args)
    run_dir = work / "runs" / f"{datetime.now():%Y%m%d-%H%M%S}_{args.noise}_{args.epochs}x{args.iterations}"
    run_dir.mkdir(parents=True)
    env = console_env(nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
                      nnUNet_results=str(run_dir / "nnUNet_results"))
    env.setdefault("nnUNet_def_n_proc", str(args.num_processes))
    env.setdefault("nnUNet_n_proc_DA", "1")
    # 0 data-loader workers is fastest for tiny CPU trainings (it would crash planning, hence only here); side by
    # side, each training gets its share of the cores (our trainers keep OMP_NUM_THREADS on the CPU)
    train_env = dict(env, nnUNet_n_proc_DA=os.environ.get("nnUNet_n_proc_DA", "0"),
                     nnUNet_GSD_NUM_EPOCHS=str(args.epochs), nnUNet_GSD_NUM_ITERATIONS=str(args.iterations),
                     nnUNet_GSD_NUM_VAL_ITERATIONS="5")
    if jobs > 1 and args.device == "cpu":
        train_env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
    why = stale_datasets(work, ids, options)
    models = {GSD: noisy_id, STOCK: noisy_id, **({"clean": clean_id} if args.ceiling else {})}
    total = (len(ids) + 1 if why else 0) + 2 * len(models)  # convert (+ clean copy) + one planning for all
    steps = Steps(total, run_dir / "logs", env)
    started = time.time()
    print(f"nnunet_gsd demo: run folder {run_dir}\n{HARMLESS_NOTE}.\n", flush=True)

    if why:
        print(f"Datasets: {why}: building them in {work}", flush=True)
        remove_datasets(work, ids)
        steps.run(f"generate {NUM_TRAIN} training + {NUM_TEST} test images with {args.noise} noise on the "
                  f"training labels", ["nnunet_gsd", "convert", "synthetic", "--id", str(noisy_id), "--num-train",
                                       str(NUM_TRAIN), "--num-test", str(NUM_TEST), "--size", str(SIZE),
                                       "--noise", args.noise, "--seed", str(args.seed)], "convert")
        if args.ceiling:
            make_clean_copy(raw_folder(work, noisy_id), clean_id)
            steps.announce(f"copy with the clean training labels: Dataset{clean_id:03d}")
        steps.run(f"plan and preprocess {' and '.join(f'Dataset{i:03d}' for i in ids)}",
                  ["nnUNetv2_plan_and_preprocess", "-d", *map(str, ids), "-c", "2d", "--verify_dataset_integrity",
                   "-np", str(args.num_processes), "-npfp", str(args.num_processes)], "plan")
        write_json_atomic(work / "demo_datasets.json", options)
    else:
        print(f"Datasets: reusing Dataset{noisy_id:03d} ({args.noise}, seed {args.seed}) in {work}", flush=True)

    noisy_raw = raw_folder(work, noisy_id)
    noise = provenance.read(noisy_raw).noise or {}
    titles = {STOCK: "stock nnU-Net, noisy labels", GSD: "GSD-Net, noisy labels",
              "clean": "stock nnU-Net, clean labels"}
    tags = {STOCK: "[stock]", GSD: "[GSD]", "clean": "[clean]"}
    results: Dict[str, Dict[str, object]] = {}
    predictions: Dict[str, Path] = {}
    if jobs > 1:
        print(f"Training {min(jobs, len(models))} models at a time ({train_env.get('OMP_NUM_THREADS', 'all')} CPU "
              f"thread(s) each); GSD first, as it takes longest", flush=True)

    def train_predict_evaluate(model: str) -> None:
        dataset_id = models[model]
        trainer = STOCK if model == "clean" else model
        steps.run(f"train {titles[model]} ({trainer}, {args.epochs} epochs × {args.iterations} iterations)",
                  ["nnUNetv2_train", str(dataset_id), "2d", "0", "-tr", trainer, "-device", args.device],
                  f"train_{model}", train_env, epochs=args.epochs, tag=tags[model] if jobs > 1 else "")
        raw = raw_folder(work, dataset_id)
        out = run_dir / "predictions" / model
        steps.run(f"predict and evaluate the test images: {titles[model]}",
                  ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-d", str(dataset_id), "-c", "2d",
                   "-tr", trainer, "-f", "0", "-device", args.device, "-npp", "0", "-nps", "0",  # in-process:
                   "--disable_progress_bar"], f"predict_{model}", train_env)  # spawning workers costs more here
        run_command(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(out), "-djfile",
                     str(out / "dataset.json"), "-pfile", str(out / "plans.json"), "-np", str(args.num_processes)],
                    env, log_file=run_dir / "logs" / f"evaluate_{model}.log", what=f"evaluation of {model}")
        results[model] = dice_of(out / "summary.json")
        predictions[model] = out

    Steps.parallel([lambda m=m: train_predict_evaluate(m) for m in models], jobs)
    predictions = {m: predictions[m] for m in (STOCK, GSD, "clean") if m in predictions}  # the figure's order

    overlay_png = run_dir / "overlays.png"
    write_overlays(overlay_png, noisy_raw, predictions, titles, {m: r["per_case"] for m, r in results.items()},
                   f"{args.noise} noise, {args.epochs} epochs × {args.iterations} iterations: contours on the first "
                   f"{OVERLAY_CASES} test images")
    means = {m: float(r["mean"]) for m, r in results.items()}
    elapsed = time.time() - started
    write_json_atomic(run_dir / "demo_results.json", {
        "dataset_options": options, "noise": noise, "epochs": args.epochs, "iterations": args.iterations,
        "device": args.device, "dice": means, "per_case": {m: r["per_case"] for m, r in results.items()},
        "trainers": {m: STOCK if m == "clean" else m for m in models}, "seconds": round(elapsed)})

    print(f"\nDemo finished in {elapsed:.0f} s. Test Dice against the clean test labels ({NUM_TEST} images):")
    if "dice_vs_clean" in noise:
        print(f"  (training labels: {noise.get('preset')} noise, Dice(noisy, clean) = {noise['dice_vs_clean']:.3f}, "
              f"{100 * noise.get('pixel_noise_rate', float('nan')):.1f} % of the pixels wrong)")
    for model in predictions:
        print(f"  {titles[model]:<30} {means[model]:.4f}   ({STOCK if model == 'clean' else model})")
    print()
    for line in conclusion(means, args.epochs, args.iterations):
        print(line)
    print(f"\nOverlays (reference green, prediction magenta, both yellow): {overlay_png}")
    print(f"Results: {run_dir / 'demo_results.json'}; training logs and plots (progress.png, progress_gsd.png) "
          f"under {run_dir / 'nnUNet_results'}")
    return 0
