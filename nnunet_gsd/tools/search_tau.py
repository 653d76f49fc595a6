"""``nnunet_gsd search-tau -d DATASET -c CONFIGURATION``: choose the forget rate τ by short trainings (Eq. 20).

The paper (Discussion, Fig. 10) trains GSD-Net with several τ and monitors

    L_search = [Σ_{D_clean} CE(nGT) + Σ_{not D_clean} CE(inverted nGT)] / |D|        (Eq. 20)

where D_clean is the small-loss set of the run's τ; the τ whose curve reaches the lowest value lies
close to the training labels' noise rate. This command does that within a fixed budget:

* Grid: ``--taus`` or 0 … ``--max`` (0.3) in steps of ``--step`` (0.025): 13 values by default.
* Budget per τ: ``--epochs`` × ``--iterations`` training iterations (default 10 × 50, batch size from
  the plans), 1 validation iteration per epoch, no final validation and no checkpoints (the runs only
  produce L_search). Total = number of τ × epochs × iterations; printed before starting, with a
  progress bar over τ. SGLR/KT warm-up and the R(e) ramp follow the trainer (fractions of the epochs).
* Each τ trains ``-tr`` (default nnUNetTrainerGSD) in its own results folder
  ``WORKDIR/tau_<τ>/`` (``nnUNet_results`` is pointed there), so runs never touch your models.
* Resumable: finished τ values are recorded in ``WORKDIR/search_tau_state.json`` and skipped when the
  command is run again (an interrupted τ restarts from scratch; Ctrl-C removes its partial folder and
  ends with one line saying so). A different budget, trainer,
  dataset or other ``nnUNet_GSD_*`` setting in the shell (e.g. ``nnUNet_GSD_WARMUP``) in the same
  WORKDIR is refused (use ``--fresh`` or another ``--workdir``).
* Cheaper search: ``nnUNet_GSD_WARMUP=1`` keeps every run in the warm-up phase (small-loss selection
  only, no SGLR; Knowledge Transfer is off by default): L_search depends only on the selection, so this
  approximates the full trainer's search at a fraction of the cost on CPU.
* Smoothing and choice: the per-epoch L_search curve of each τ is smoothed by a trailing moving
  average over ``--window`` epochs (default 3); the score of a τ is the mean of its smoothed curve
  over the last ``--last`` epochs (default: the last quarter, at least 1) — after the R(e) ramp, when
  every run keeps its final fraction. The chosen τ has the smallest score (ties: the smaller τ).
* Output in WORKDIR: ``search_tau.json`` (curves, scores, choice), ``search_tau.md`` (the table) and
  ``search_tau.png`` (Fig. 10 style: smoothed L_search per τ over epochs; score against τ, with the
  dataset's measured pixel noise rate when it was simulated).
* ``--write`` stores the choice as ``"gsd": {"tau": …}`` in the raw and the preprocessed dataset.json
  (the trainer reads τ from there unless ``nnUNet_GSD_TAU`` is set; docs/decisions.md, "τ").
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import numpy as np

from nnunet_gsd.dataset_conversion.provenance import from_dataset_json, with_provenance
from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import add_subcommand, console_env, load_dataset_json, markdown_table, run_command
from nnunet_gsd.utils import dataset_name, nanmean_or_nan, write_json_atomic

STATE = "search_tau_state.json"
CURVE = "search_loss.json"
#: environment variables every τ run sets itself (the budget, τ, logging)
OVERRIDDEN = {"nnUNet_GSD_TAU", "nnUNet_GSD_LOG_SEARCH_LOSS", "nnUNet_GSD_NUM_EPOCHS", "nnUNet_GSD_NUM_ITERATIONS",
              "nnUNet_GSD_NUM_VAL_ITERATIONS", "nnUNet_GSD_KEEP_LAST"}


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "search-tau", "choose the forget rate tau by short trainings (paper Eq. 20)",
                       __doc__, dataset_help="dataset name or id (planned and preprocessed)",
                       configuration_help="configuration, e.g. 2d")
    p.add_argument("--taus", type=float, nargs="+", help="explicit τ grid (overrides --max/--step)")
    p.add_argument("--max", type=float, default=0.3, help="largest τ of the default grid (default: %(default)s)")
    p.add_argument("--step", type=float, default=0.025, help="grid step from 0 (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per τ (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=50, help="training iterations per epoch (default: %(default)s)")
    p.add_argument("--window", type=int, default=3, help="moving-average window in epochs (default: %(default)s)")
    p.add_argument("--last", type=int, help="score = mean of the last N smoothed epochs (default: epochs/4, >= 1)")
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainerGSD", help="trainer class (default: %(default)s)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("-f", dest="fold", default="0", help="fold whose training split is used (default: %(default)s)")
    p.add_argument("-device", default=None, choices=["cuda", "cpu", "mps"],
                   help="training device (default: cuda when available, else cpu)")
    p.add_argument("--workdir", type=Path,
                   help="work folder (default: $nnUNet_results/DatasetX/search_tau__TRAINER__PLANS__CONFIG)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in the work folder")
    p.add_argument("--write", action="store_true",
                   help='store the chosen τ as "gsd": {"tau": …} in the raw and preprocessed dataset.json')
    p.set_defaults(func=main)


# ---------------------------------------------------------------- pure parts
def tau_grid(taus: Optional[Sequence[float]], maximum: float, step: float) -> List[float]:
    """The τ values to try, sorted and unique; each in [0, 1) (the trainer's rule)."""
    if taus:
        grid = sorted({round(float(t), 6) for t in taus})
    else:
        if step <= 0 or maximum < 0:
            raise UserError(f"--step {step} / --max {maximum}: need step > 0 and max >= 0")
        grid = [round(i * step, 6) for i in range(int(np.floor(maximum / step + 1e-9)) + 1)]
    bad = [t for t in grid if not 0 <= t < 1]
    if bad:
        raise UserError(f"τ {bad[0]} is outside [0, 1): τ is the fraction of pixels treated as noisy")
    return grid


def tau_key(tau: float) -> str:
    return f"{tau:g}"


def smooth(curve: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first epochs average over what exists); NaN epochs are skipped."""
    values = np.asarray(curve, dtype=float)
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = nanmean_or_nan(values[max(0, i - window + 1):i + 1])
    return out


def score(curve: Sequence[float], window: int, last: Optional[int] = None) -> float:
    """Mean of the smoothed curve over its last ``last`` epochs (default: a quarter, at least 1)."""
    smoothed = smooth(curve, window)
    n = last or max(1, len(smoothed) // 4)
    return nanmean_or_nan(smoothed[-n:])


def choose(scores: Mapping[str, float]) -> str:
    """Key of the smallest finite score; ties go to the smaller τ."""
    finite = sorted(((s, float(k)) for k, s in scores.items() if np.isfinite(s)))
    if not finite:
        raise UserError("every τ run logged a NaN L_search: check the training logs in the work folder")
    return tau_key(finite[0][1])


# ---------------------------------------------------------------- training one τ
def _train_one(argv: List[str]) -> int:
    """Child process: train without final validation or checkpoints, write the L_search curve as JSON.

    Run as ``python -m nnunet_gsd.tools.search_tau DATASET CONFIG FOLD TRAINER PLANS DEVICE OUT_JSON``
    with nnUNet_results and the budget in the environment (nnU-Net reads its folders at import).
    """
    dataset, configuration, fold, trainer_name, plans, device, out_json = argv
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    dev = torch.device(device)
    # the same thread settings as nnUNetv2_train
    if dev.type == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    else:
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    trainer = get_trainer_from_args(dataset, configuration, fold if fold == "all" else int(fold), trainer_name,
                                    plans, False, device=dev)
    trainer.disable_checkpointing = True
    trainer.run_training()
    logger = getattr(trainer.logger, "local_logger", trainer.logger)
    curve = logger.my_fantastic_logging.get("gsd_search_loss")
    if not curve:
        print(f"search-tau: trainer {trainer_name} logged no gsd_search_loss: use an nnunet_gsd trainer "
              f"(nnUNetTrainerGSD or a variant)", file=sys.stderr)
        return 3
    Path(out_json).write_text(json.dumps({"search_loss": [float(v) for v in curve]}))
    return 0


def run_tau(tau: float, folder: Path, args: argparse.Namespace, name: str) -> List[float]:
    """Train one τ in ``folder`` (its own nnUNet_results) and return its per-epoch L_search."""
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished earlier attempt: start this τ again
    folder.mkdir(parents=True)
    env = console_env(nnUNet_results=str(folder), nnUNet_GSD_TAU=str(tau), nnUNet_GSD_LOG_SEARCH_LOSS="1",
                      nnUNet_GSD_NUM_EPOCHS=str(args.epochs), nnUNet_GSD_NUM_ITERATIONS=str(args.iterations),
                      nnUNet_GSD_NUM_VAL_ITERATIONS="1", nnUNet_GSD_KEEP_LAST="0")
    out = folder / CURVE
    run_command([sys.executable, "-m", "nnunet_gsd.tools.search_tau", name, args.configuration, str(args.fold),
                 args.trainer, args.plans, args.device, str(out)], env, log_file=folder / "train.log",
                what=f"training with τ={tau_key(tau)}")
    return json.loads(out.read_text())["search_loss"]


# ---------------------------------------------------------------- state, report, plot, write
def load_state(path: Path, settings: Mapping, fresh: bool) -> dict:
    if fresh or not path.is_file():
        return {"settings": dict(settings), "results": {}}
    state = json.loads(path.read_text())
    if state.get("settings") != dict(settings):
        differing = sorted(k for k in settings if state.get("settings", {}).get(k) != settings[k])
        raise UserError(f"{path} holds a search with other settings ({', '.join(differing)}): rerun with --fresh "
                        f"to discard it, or pass another --workdir")
    return state


def report(curves: Mapping[str, Sequence[float]], window: int, last: Optional[int],
           noise_rate: Optional[float]) -> dict:
    scores = {k: score(c, window, last) for k, c in curves.items()}
    chosen = choose(scores)
    return {"scores": scores, "chosen_tau": float(chosen), "pixel_noise_rate": noise_rate,
            "smoothed": {k: smooth(c, window).tolist() for k, c in curves.items()}}


def to_markdown(curves: Mapping[str, Sequence[float]], result: Mapping) -> str:
    rows = [[k, float(c[-1]), result["scores"][k], "← chosen" if float(k) == result["chosen_tau"] else ""]
            for k, c in sorted(curves.items(), key=lambda kv: float(kv[0]))]
    return markdown_table(["τ", "L_search (last epoch)", "score (smoothed)", ""], rows)


def plot(result: Mapping, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = sorted(result["smoothed"], key=float)
    colors = plt.cm.viridis(np.linspace(0, 1, max(len(keys), 2)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, color in zip(keys, colors):
        values = result["smoothed"][key]
        ax1.plot(range(len(values)), values, color=color, label=f"τ={key}")
    ax1.set(xlabel="epoch", ylabel="L_search (smoothed)", title="L_search per τ (Eq. 20)")
    ax1.legend(fontsize=7, ncol=2)
    taus = [float(k) for k in keys]
    ax2.plot(taus, [result["scores"][k] for k in keys], "o-", color="tab:blue")
    ax2.plot([result["chosen_tau"]], [result["scores"][tau_key(result["chosen_tau"])]], "*", ms=15, color="tab:red",
             label=f"chosen τ={result['chosen_tau']:g}")
    if result.get("pixel_noise_rate") is not None:
        ax2.axvline(result["pixel_noise_rate"], ls="--", color="gray",
                    label=f"measured noise rate {result['pixel_noise_rate']:.3f}")
    ax2.set(xlabel="τ", ylabel="score", title="score = mean of the last smoothed epochs")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_tau(name: str, tau: float, provenance: Mapping) -> List[Path]:
    """Store τ in the raw and preprocessed dataset.json (``"gsd": {"tau", "tau_source", "tau_search"}``)."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    written = []
    for root in (nnUNet_raw, nnUNet_preprocessed):
        if not root.is_set() or not (Path(root) / name / "dataset.json").is_file():
            continue
        content = load_dataset_json(Path(root) / name)
        gsd = from_dataset_json(content, str(Path(root) / name / "dataset.json"))
        if gsd.tau is not None and "tau_before_search" not in gsd.extra:
            gsd.extra["tau_before_search"] = gsd.tau
        gsd.tau, gsd.tau_source = tau, "nnunet_gsd search-tau (L_search, paper Eq. 20)"
        gsd.extra["tau_search"] = dict(provenance)
        write_json_atomic(Path(root) / name / "dataset.json", with_provenance(content, gsd))
        written.append(Path(root) / name / "dataset.json")
    if not written:
        raise UserError(f"no dataset.json of {name} under $nnUNet_raw or $nnUNet_preprocessed to write τ into")
    return written


def interrupted(work: Path, key: str, done: int, total: int) -> int:
    """Ctrl-C during τ=``key``: remove its partial folder and say, in one line, how to resume; exit code 130.

    Finished τ values are in the state file (written atomically after each); the interrupted one has no
    result and would start again from scratch anyway (:func:`run_tau`), so its half-trained folder is removed
    now rather than left looking like a result.
    """
    shutil.rmtree(work / f"tau_{key}", ignore_errors=True)
    print(f"nnunet_gsd search-tau: interrupted during τ={key}; rerun the same command to resume ({done} of {total} "
          f"τ finished, kept in {work / STATE}; τ={key} starts again)", file=sys.stderr)
    return 130  # the shell's code for a command ended by SIGINT


def main(args: argparse.Namespace) -> int:
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw, nnUNet_results
    from tqdm import tqdm
    if not nnUNet_preprocessed.is_set():
        raise UserError("nnUNet_preprocessed is not set: export it to the folder of your preprocessed datasets")
    name = dataset_name(args.dataset)
    if not (Path(nnUNet_preprocessed) / name / f"{args.plans}.json").is_file():
        raise UserError(f"{name} is not preprocessed under $nnUNet_preprocessed: run "
                        f"nnUNetv2_plan_and_preprocess -d {args.dataset} -c {args.configuration} first")
    for option in ("epochs", "iterations", "window"):
        if getattr(args, option) < 1:
            raise UserError(f"--{option} {getattr(args, option)}: must be >= 1")
    grid = tau_grid(args.taus, args.max, args.step)
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.workdir is None:
        if not nnUNet_results.is_set():
            raise UserError("nnUNet_results is not set: export it to your results folder, or pass --workdir")
        args.workdir = Path(nnUNet_results) / name / f"search_tau__{args.trainer}__{args.plans}__{args.configuration}"
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = {"dataset": name, "configuration": args.configuration, "trainer": args.trainer, "plans": args.plans,
                "fold": str(args.fold), "epochs": args.epochs, "iterations": args.iterations,
                # other GSD settings from the shell (e.g. nnUNet_GSD_WARMUP) change the runs: part of the identity
                "environment": {k: v for k, v in sorted(os.environ.items())
                                if k.startswith("nnUNet_GSD_") and k not in OVERRIDDEN}}
    state = load_state(work / STATE, settings, args.fresh)
    write_json_atomic(work / STATE, state)

    todo = [t for t in grid if tau_key(t) not in state["results"]]
    print(f"search-tau {name} {args.configuration} -tr {args.trainer}: {len(grid)} τ values "
          f"({', '.join(tau_key(t) for t in grid)}); budget per τ {args.epochs} epochs × {args.iterations} "
          f"iterations = {args.epochs * args.iterations}; total {len(grid) * args.epochs * args.iterations} "
          f"iterations, {len(grid) - len(todo)} τ already done; work folder {work}", flush=True)
    bar = tqdm(grid, desc="search-tau", unit="τ", file=sys.stderr)
    for tau in bar:
        key = tau_key(tau)
        bar.set_postfix_str(f"τ={key}")
        if key in state["results"]:
            continue
        start = time.time()
        try:
            curve = run_tau(tau, work / f"tau_{key}", args, name)
        except KeyboardInterrupt:
            bar.close()
            return interrupted(work, key, len(state["results"]), len(grid))
        state["results"][key] = {"search_loss": curve, "seconds": round(time.time() - start, 1)}
        write_json_atomic(work / STATE, state)
    bar.close()

    curves = {tau_key(t): state["results"][tau_key(t)]["search_loss"] for t in grid}
    raw_json = Path(nnUNet_raw) / name / "dataset.json" if nnUNet_raw.is_set() else None
    source = load_dataset_json(raw_json.parent) if raw_json is not None and raw_json.is_file() else \
        load_dataset_json(Path(nnUNet_preprocessed) / name)
    noise_rate = from_dataset_json(source).pixel_noise_rate
    result = report(curves, args.window, args.last, noise_rate)
    result.update(settings=settings, grid=grid, curves=curves, window=args.window,
                  last=args.last or max(1, args.epochs // 4))
    table = to_markdown(curves, result)
    write_json_atomic(work / "search_tau.json", result)
    (work / "search_tau.md").write_text(f"τ search on {name} ({args.configuration}, {args.trainer}, "
                                        f"{args.epochs}×{args.iterations})\n\n{table}\n")
    plot(result, work / "search_tau.png", f"{name}: τ search ({args.epochs} epochs × {args.iterations} iterations)")
    print(table)
    measured = "" if noise_rate is None else f"; measured pixel noise rate of the training labels = {noise_rate:.4f}"
    print(f"chosen τ = {result['chosen_tau']:g}{measured}")
    print(f"written: {work / 'search_tau.json'}, {work / 'search_tau.md'}, {work / 'search_tau.png'}")
    if args.write:
        provenance = {"grid": grid, "scores": result["scores"], "epochs": args.epochs,
                      "iterations": args.iterations, "trainer": args.trainer, "window": args.window,
                      "last": result["last"]}
        for path in write_tau(name, result["chosen_tau"], provenance):
            print(f'wrote "gsd": {{"tau": {result["chosen_tau"]:g}}} into {path}')
        if os.environ.get("nnUNet_GSD_TAU", "").strip():
            print("note: nnUNet_GSD_TAU is set in this shell and overrides dataset.json; unset it to use the "
                  "chosen τ")
    return 0


if __name__ == "__main__":
    sys.exit(_train_one(sys.argv[1:]))
