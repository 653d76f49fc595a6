"""What GSD buys: test Dice under simulated label noise on the real Kvasir-SEG (not a test).

    .venv/bin/python bench/quality.py --background            # default: 64², 7 arms, ~1 h on 2 CPU cores
    .venv/bin/python bench/quality.py --size 256 --epochs 100 --iterations 250 --batch 16 --device cuda

Arms (same plans, same budget, same fold for all): nnU-Net's one-network Dice+CE baseline
(``nnUNetTrainerNoDeepSupervisionBudget``) on clean labels (the ceiling) and on S_R / S_E / S_DE labels,
and ``nnUNetTrainerGSD`` on S_R / S_E / S_DE labels; ``--ablation`` adds the Table 7 family on S_R.
Every arm is trained on all 700 training images (fold ``all``), predicted on the 300 test images with
stock ``nnUNetv2_predict`` and scored against the clean test labels with ``nnUNetv2_evaluate_folder``.

Resumable: each finished stage of each arm is recorded in ``<work>/state.json`` at once, and a rerun
with the same options skips it (an interrupted training continues from nnU-Net's latest checkpoint).
The results file ``bench/results/quality-<size>.md`` is rewritten after every arm.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "Kvasir-SEG"

BASELINE = "nnUNetTrainerNoDeepSupervisionBudget"
NOISES = ("S_R", "S_E", "S_DE")
# the order puts each GSD arm right after its CE arm, so partial results already answer something
DEFAULT_ARMS = [("ce_clean", "none", BASELINE)]
for _n in NOISES:
    DEFAULT_ARMS += [(f"ce_{_n}", _n, BASELINE), (f"gsd_{_n}", _n, "nnUNetTrainerGSD")]
ABLATION_ARMS = [  # Table 7 on S_R; "+KT" (= GSD) is the default arm gsd_S_R
    ("jocor_S_R", "S_R", "nnUNetTrainerJoCoR"),
    ("jocor_gda_S_R", "S_R", "nnUNetTrainerJoCoRGDA"),
    ("jocor_gda_lr_S_R", "S_R", "nnUNetTrainerJoCoRGDALR"),
    ("jocor_gda_sglr_S_R", "S_R", "nnUNetTrainerJoCoRGDASGLR"),
]
CE_ONLY = "nnUNetTrainerCELossBudget"
CE_ONLY_ARMS = [("celoss_clean", "none", CE_ONLY)] + [(f"celoss_{n}", n, CE_ONLY) for n in NOISES]
PAPER = {  # SPEC §6 (Dice %, U-Net backbone, 256², 100 epochs)
    # the paper's baseline is a U-Net trained with CE only: its rows anchor the CE-only arms
    "celoss_clean": 80.62, "celoss_S_R": 66.86, "celoss_S_E": 70.33, "celoss_S_DE": 63.11,
    "gsd_S_R": 80.04, "gsd_S_E": 79.39, "gsd_S_DE": 79.97,
    "jocor_S_R": 71.05, "jocor_gda_S_R": 76.76, "jocor_gda_lr_S_R": 78.74, "jocor_gda_sglr_S_R": 78.84,
}


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help="the Kvasir-SEG download (images/, masks/); read only, never copied (default: %(default)s)")
    ap.add_argument("--size", type=int, default=64, help="resize every image to SIZE² (paper: 256; default 64)")
    ap.add_argument("--epochs", type=int, default=25, help="epochs of every arm (default 25)")
    ap.add_argument("--iterations", type=int, default=20, help="training iterations per epoch (default 20)")
    ap.add_argument("--val-iterations", type=int, default=2,
                    help="nnU-Net's per-epoch validation iterations (pseudo Dice only; default 2)")
    ap.add_argument("--batch", type=int, default=8,
                    help="batch size written into the plans variant used by every arm (nnU-Net's default plans "
                         "pick 35 at 64², ~1.1 s per baseline iteration on 2 CPU cores; default 8)")
    ap.add_argument("--sde-noise-at", choices=("auto", "source", "output"), default="auto",
                    help="where the converter applies S_DE (K(9-11), a kernel in pixels). auto: the converter's "
                         "default (output) at 256², 'source' below: at 64² an output-size kernel of 9-11 px is 4x "
                         "too big (measured Dice(nGT, GT) 30 %% vs Table 3's 76 %%; at source: ~89 %%)")
    ap.add_argument("--id-base", type=int, default=610,
                    help="nnU-Net dataset ids: clean = ID, S_R = ID+1, S_E = ID+2, S_DE = ID+3 (default 610)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the 700/300 split and of the noise (default 0)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="training/inference device")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads for training on CPU (default 1: on a shared, loaded 2-core CPU "
                         "two threads stall in OpenMP barriers)")
    ap.add_argument("--tta", action="store_true",
                    help="mirroring test-time augmentation at prediction (nnU-Net's default; off here to save time, "
                         "the same for every arm)")
    ap.add_argument("--ablation", action="store_true", help="also run the Table 7 family on S_R (4 more arms)")
    ap.add_argument("--ce-only", action="store_true",
                    help="also train a cross-entropy-only baseline (the loss of the paper's CE rows) on clean and "
                         "noisy labels (4 more arms; Δ is then against the Dice+CE baseline on the same labels)")
    ap.add_argument("--arms", nargs="+", metavar="ARM",
                    help="run only these arms (names as in the results table, e.g. ce_S_R gsd_S_R)")
    ap.add_argument("--work", type=Path, default=None,
                    help="nnU-Net folders and state (default bench/work/quality-<size>; git-ignored)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results markdown (default bench/results/quality-<size>.md)")
    ap.add_argument("--log", type=Path, default=None,
                    help="log file with --background (default bench/logs/quality-<size>.log); per-arm command "
                         "output goes next to it in quality-<size>/")
    ap.add_argument("--background", action="store_true",
                    help="detach: rerun this command in a new session with output to --log, print its PID, return")
    ap.add_argument("--report-only", action="store_true", help="rewrite the results file from the state and exit")
    args = ap.parse_args(argv)
    if args.sde_noise_at == "auto":
        args.sde_noise_at = "source" if args.size < 256 else "output"
    args.work = (args.work or REPO / "bench" / "work" / f"quality-{args.size}").resolve()
    args.results = (args.results or REPO / "bench" / "results" / f"quality-{args.size}.md").resolve()
    args.log = (args.log or REPO / "bench" / "logs" / f"quality-{args.size}.log").resolve()
    return args


# ---------------------------------------------------------------------------------------------- environment
def nnunet_env(args) -> Dict[str, str]:
    """A clean environment like the tests' (tests/conftest.py): nnU-Net's folders, small process counts."""
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(args.work)),
        "nnUNet_raw": str(args.work / "nnUNet_raw"),
        "nnUNet_preprocessed": str(args.work / "nnUNet_preprocessed"),
        "nnUNet_results": str(args.work / "nnUNet_results"),
        # 2 shared cores: nnU-Net's default 8-12 worker processes would only fight each other
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": "0" if args.device == "cpu" else "4",
        "nnUNet_GSD_NUM_EPOCHS": str(args.epochs),
        "nnUNet_GSD_NUM_ITERATIONS": str(args.iterations),
        "nnUNet_GSD_NUM_VAL_ITERATIONS": str(args.val_iterations),
        "OMP_NUM_THREADS": str(args.threads),
        "MPLBACKEND": "Agg",
    }
    for var in ("CUDA_VISIBLE_DEVICES",):
        if var in os.environ:
            env[var] = os.environ[var]
    return env


def run(cmd: List[str], env: Dict[str, str], logfile: Path) -> float:
    """Run a command with its output appended to logfile; stop with its tail on failure. Returns seconds."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(logfile, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = logfile.read_text(errors="replace")[-4000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- tail of {logfile} ---\n{tail}")
    return time.perf_counter() - t0


def load_state(args) -> dict:
    path = args.work / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"arms": {}}


def save_state(args, state: dict) -> None:
    path = args.work / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}, Python {platform.python_version()}"


# ---------------------------------------------------------------------------------------------- datasets
def dataset_ids(args) -> Dict[str, int]:
    return {"none": args.id_base, "S_R": args.id_base + 1, "S_E": args.id_base + 2, "S_DE": args.id_base + 3}


def raw_folder(args, did: int) -> Optional[Path]:
    hits = sorted((args.work / "nnUNet_raw").glob(f"Dataset{did:03d}_*"))
    return hits[0] if hits else None


def noise_at(args, noise: str) -> List[str]:
    return ["--noise-at", args.sde_noise_at] if noise == "S_DE" else []


def converted_as(raw: Path, args, noise: str) -> bool:
    """An earlier conversion with the same source, size, seed and noise can be reused (conversion is seeded)."""
    try:
        gsd = json.loads((raw / "dataset.json").read_text())["gsd"]
    except (OSError, KeyError, ValueError):
        return False
    spec = gsd.get("noise") or {}
    if noise == "S_DE" and spec.get("noise_at") != args.sde_noise_at:
        return False
    return (gsd.get("size") == [args.size, args.size] and gsd.get("seed") == args.seed
            and spec.get("preset", "none") == noise)


def preprocessed(args, did: int) -> bool:
    """nnU-Net's 2d preprocessing of every training case is there (e.g. from an interrupted earlier run)."""
    raw = raw_folder(args, did)
    folder = args.work / "nnUNet_preprocessed" / raw.name
    n = json.loads((raw / "dataset.json").read_text())["numTraining"]
    return (folder / "nnUNetPlans.json").is_file() and len(list((folder / "nnUNetPlans_2d").glob("*.pkl"))) >= n


def plans_name(args) -> str:
    return f"nnUNetPlans_b{args.batch}"


def prepare(args, state: dict, env: Dict[str, str], logdir: Path) -> None:
    """Convert each noise type once (same seed: same split, same clean labels), preprocess, write the plans variant."""
    for noise, did in dataset_ids(args).items():
        key = f"dataset_{did}"
        if state.get(key, {}).get("done"):
            continue
        if not args.source.is_dir():
            raise SystemExit(f"Kvasir-SEG not found at {args.source}: pass --source (see ../shared/data/README.md)")
        log(f"convert + preprocess Kvasir-SEG, noise {noise} → Dataset{did:03d}")
        raw = raw_folder(args, did)
        t_conv = 0.0
        if not (raw and converted_as(raw, args, noise)):
            t_conv = run(["nnunet_gsd", "convert", "kvasir", "--source", str(args.source), "--id", str(did),
                          "--noise", noise, "--size", str(args.size), "--seed", str(args.seed), "--overwrite"]
                         + noise_at(args, noise),
                         env, logdir / "prepare.log")
        t_pre = 0.0
        if not preprocessed(args, did):
            t_pre = run(["nnUNetv2_plan_and_preprocess", "-d", str(did), "-c", "2d", "-np", "1", "-npfp", "1",
                         "--verify_dataset_integrity"], env, logdir / "prepare.log")
        raw = raw_folder(args, did)
        tau = json.loads((raw / "dataset.json").read_text()).get("gsd", {}).get("tau")
        gsd = json.loads((raw / "dataset.json").read_text()).get("gsd", {})
        state[key] = {"done": True, "noise": noise, "tau": tau,
                      "noise_at": (gsd.get("noise") or {}).get("noise_at"),
                      "dice_noisy_vs_clean": (gsd.get("noise") or {}).get("dice_vs_clean"), "convert_s": round(t_conv, 1),
                      "preprocess_s": round(t_pre, 1)}
        save_state(args, state)
    # One plans variant, written into every dataset from the clean dataset's plans so that every arm trains
    # with identical plans; only the batch size differs from nnU-Net's own choice.
    clean_plans = args.work / "nnUNet_preprocessed" / raw_folder(args, args.id_base).name / "nnUNetPlans.json"
    base = json.loads(clean_plans.read_text())
    for noise, did in dataset_ids(args).items():
        folder = args.work / "nnUNet_preprocessed" / raw_folder(args, did).name
        own = json.loads((folder / "nnUNetPlans.json").read_text())
        if own["configurations"]["2d"] != base["configurations"]["2d"]:
            log(f"note: nnU-Net planned Dataset{did:03d} differently from the clean dataset; using the clean plans")
        plans = json.loads(json.dumps(base))
        plans["dataset_name"] = own["dataset_name"]
        plans["plans_name"] = plans_name(args)
        plans["configurations"]["2d"]["batch_size"] = args.batch
        target = folder / f"{plans_name(args)}.json"
        if not target.is_file() or json.loads(target.read_text()) != plans:
            target.write_text(json.dumps(plans, indent=1))
    state["plans"] = {"name": plans_name(args), "nnunet_batch_size": base["configurations"]["2d"]["batch_size"],
                      "batch_size": args.batch, "patch_size": base["configurations"]["2d"]["patch_size"]}
    save_state(args, state)


# ---------------------------------------------------------------------------------------------- arms
TRAIN_ONLY = """
import sys, torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
did, trainer, plans, device, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
t = get_trainer_from_args(did, "2d", "all", trainer, plans, True, device=torch.device(device))
maybe_load_checkpoint(t, True, False, None)
t.run_training()
"""


def last_match(text: str, prefix: str) -> Dict[str, float]:
    lines = [l for l in text.splitlines() if prefix in l]
    if not lines:
        return {}
    return {k: float(v) for k, v in re.findall(r"(\w+)=(-?[\d.]+(?:e-?\d+)?|nan)", lines[-1].split(prefix, 1)[1])}


def run_arm(args, state: dict, env: Dict[str, str], logdir: Path, name: str, noise: str, trainer: str) -> None:
    arm = state["arms"].setdefault(name, {"noise": noise, "trainer": trainer})
    did = dataset_ids(args)[noise]
    raw = raw_folder(args, did)
    out = (args.work / "nnUNet_results" / raw.name / f"{trainer}__{plans_name(args)}__2d" / "fold_all")
    alog = logdir / f"{name}.log"
    if not arm.get("trained"):
        log(f"{name}: train {trainer} on Dataset{did:03d} ({args.epochs} epochs × {args.iterations} iterations, "
            f"batch {args.batch})")
        # nnU-Net's own training loop; only its final 'validation' on the training images is skipped: fold
        # 'all' has no held-out cases and the test set below is the evaluation.
        secs = run([sys.executable, "-c", TRAIN_ONLY, str(did), trainer, plans_name(args), args.device,
                    str(args.threads)], env, alog)
        arm.update(trained=True, train_s=round(secs + arm.get("train_s_partial", 0), 1))
        logs = sorted(out.glob("training_log_*.txt"))
        text = "\n".join(p.read_text(errors="replace") for p in logs)
        epoch_times = [float(x) for x in re.findall(r"Epoch time: ([\d.]+) s", text)]
        arm["epoch_s_median"] = sorted(epoch_times)[len(epoch_times) // 2] if epoch_times else None
        arm["gsd"] = last_match(text, "GSD: ")
        arm["truth"] = last_match(text, "GSD truth: ")
        pseudo = re.findall(r"Pseudo dice \[([^\]]*)\]", text)
        arm["last_pseudo_dice"] = pseudo[-1] if pseudo else None
        save_state(args, state)
    pred = args.work / "predictions" / name
    if not arm.get("predicted"):
        log(f"{name}: nnUNetv2_predict on the {args.size}² test images")
        if pred.exists():
            shutil.rmtree(pred)
        cmd = ["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", str(did), "-c", "2d",
               "-tr", trainer, "-p", plans_name(args), "-f", "all", "-chk", "checkpoint_final.pth",
               "-npp", "1", "-nps", "1", "-device", args.device, "--disable_progress_bar"]
        if not args.tta:
            cmd.append("--disable_tta")
        arm["predict_s"] = round(run(cmd, env, alog), 1)
        arm["predicted"] = True
        save_state(args, state)
    if not arm.get("evaluated"):
        run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(pred), "-djfile", str(pred / "dataset.json"),
             "-pfile", str(pred / "plans.json"), "-np", "1"], env, alog)
        summary = json.loads((pred / "summary.json").read_text())
        dice = [c["metrics"]["1"]["Dice"] for c in summary["metric_per_case"]]
        dice = [d for d in dice if d == d]  # an empty reference and prediction gives NaN: not a case to score
        import numpy as np
        arm.update(evaluated=True, dice_mean=100 * float(np.mean(dice)), dice_std=100 * float(np.std(dice)),
                   n_cases=len(dice), finished=dt.datetime.now().isoformat(timespec="seconds"))
        save_state(args, state)
        log(f"{name}: test Dice {arm['dice_mean']:.2f} ± {arm['dice_std']:.2f} % over {len(dice)} cases "
            f"(train {arm['train_s']:.0f} s, predict {arm['predict_s']:.0f} s)")


# ---------------------------------------------------------------------------------------------- report
def recovered(state: dict, name: str, noise: str) -> Optional[float]:
    arms = state["arms"]
    try:
        clean, noisy, own = (arms[k]["dice_mean"] for k in ("ce_clean", f"ce_{noise}", name))
    except KeyError:
        return None
    return (own - noisy) / (clean - noisy) if clean != noisy else None


def per_case(args, name: str) -> Dict[str, float]:
    path = args.work / "predictions" / name / "summary.json"
    if not path.is_file():
        return {}
    cases = json.loads(path.read_text())["metric_per_case"]
    return {Path(c["reference_file"]).name: 100 * c["metrics"]["1"]["Dice"] for c in cases}


def paired_delta(args, name: str, reference: str) -> Optional[str]:
    """Mean per-case Dice difference on the same test images ± its standard error (test-set noise only:
    the run-to-run spread of training is not in it)."""
    a, b = per_case(args, name), per_case(args, reference)
    diffs = [a[k] - b[k] for k in a.keys() & b.keys() if a[k] == a[k] and b[k] == b[k]]
    if len(diffs) < 2:
        return None
    import numpy as np
    return f"{np.mean(diffs):+.2f} ± {np.std(diffs, ddof=1) / np.sqrt(len(diffs)):.2f}"


def write_report(args, state: dict, command: str) -> None:
    arms = state["arms"]
    lines = [f"# Quality under label noise on the real Kvasir-SEG ({args.size}²)", "",
             "What GSD buys: test Dice (clean test labels, stock `nnUNetv2_predict` + `nnUNetv2_evaluate_folder`) "
             "of nnU-Net's one-network Dice+CE baseline and of GSD, trained on the same plans for the same budget.",
             "", "Command (from the repository root):", "", f"    {command}", "",
             f"- Machine: {machine()}", f"- Date: {state.get('started', '?')} → {state.get('updated', '?')}",
             f"- Data: Kvasir-SEG 700 train / 300 test (seed {args.seed}), resized to {args.size}²; noise presets "
             f"of `nnunet_gsd convert kvasir` (S_DE applied at the {args.sde_noise_at} resolution); per noise type "
             f"Dice(nGT, GT) of the training labels (Table 3: S_R 84.97, S_E 88.61, S_DE 76.14) and measured pixel "
             f"noise rate τ (dataset.json, GSD's forget rate): " + ", ".join(
                 f"{v['noise']} {100 * (v.get('dice_noisy_vs_clean') or 0):.2f} / τ {100 * (v.get('tau') or 0):.2f} %"
                 for k, v in state.items() if k.startswith("dataset_") and v["noise"] != "none"),
             f"- Plans: `{state.get('plans', {}).get('name')}` = nnU-Net's 2d plans of the clean dataset with batch "
             f"size {args.batch} (nnU-Net picked {state.get('plans', {}).get('nnunet_batch_size')}), patch "
             f"{state.get('plans', {}).get('patch_size')}; identical for every arm",
             f"- Budget (every arm): {args.epochs} epochs × {args.iterations} iterations × batch {args.batch}, "
             f"{args.val_iterations} validation iterations per epoch, fold `all` (700 images), device {args.device}"
             f", {args.threads} torch thread(s); prediction {'with' if args.tta else 'without'} mirroring TTA",
             "- Baseline = `nnUNetTrainerNoDeepSupervisionBudget` (nnU-Net's Dice+CE, one network); "
             "\"recovered\" = (arm − CE_noisy) / (CE_clean − CE_noisy) of the same noise type; \"Δ Dice, paired\" = mean "
             "per-case difference to CE on the same labels (CE arms: to CE on clean labels) ± its standard error over "
             "the 300 test images — test-set noise only, not the run-to-run spread of training (one seed per arm)",
             "",
             "| arm | trainer | labels | test Dice % (mean ± std) | paper | Δ Dice, paired (± s.e.) | "
             "recovered | selection precision | refined acc. | noisy acc. | train s | predict s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = [a[0] for a in DEFAULT_ARMS + ABLATION_ARMS + CE_ONLY_ARMS]
    for name in order:
        a = arms.get(name)
        if not a:
            continue
        rec = (recovered(state, name, a["noise"]) if a["noise"] != "none" and not name.startswith(("ce_", "celoss_"))
               else None)
        t = a.get("truth") or {}
        dice = f"{a['dice_mean']:.2f} ± {a['dice_std']:.2f}" if "dice_mean" in a else "(running)"
        fmt = lambda k: f"{100 * t[k]:.2f}" if k in t and not name.startswith("ce_") else "—"
        lines.append(f"| {name} | `{a['trainer']}` | {a['noise'] if a['noise'] != 'none' else 'clean'} | {dice} | "
                     f"{PAPER.get(name, '—')} | "
                     f"{(paired_delta(args, name, reference_arm(name, a['noise'])) if name != 'ce_clean' else None) or '—'} | "
                     f"{'—' if rec is None else f'{100 * rec:.0f} %'} | "
                     f"{fmt('selection_precision')} | {fmt('refined_accuracy')} | {fmt('noisy_accuracy')} | "
                     f"{a.get('train_s', '—')} | {a.get('predict_s', '—')} |")
    lines += ["", "Truth diagnostics are the GSD log's last-epoch `GSD truth:` means over the training batches "
              "(selection precision = share of the selected pixels whose noisy label is right; refined acc. = "
              "refined labels vs clean; noisy acc. = nGT vs clean), in %.", ""]
    final = {}
    for noise in NOISES:
        rec = recovered(state, f"gsd_{noise}", noise)
        if rec is not None:
            final[noise] = rec
    if final:
        lines.append("Final line:")
        lines.append("")
        lines.append("    " + final_line(state))
    lines.append("")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    existing = args.results.read_text() if args.results.is_file() else ""
    marker = "\n## Notes"
    notes = existing[existing.index(marker):] if marker in existing else ""
    args.results.write_text("\n".join(lines) + notes)


def reference_arm(name: str, noise: str) -> str:
    """The Dice+CE arm a row's paired Δ is taken against: CE arms vs clean, CE-only arms vs Dice+CE on the same
    labels, GSD-family arms vs Dice+CE on their labels."""
    if name.startswith("ce_"):
        return "ce_clean"
    if name.startswith("celoss_"):
        return "ce_" + name.split("_", 1)[1]
    return "ce_" + noise


def final_line(state: dict) -> str:
    arms = state["arms"]
    parts = []
    for noise in NOISES:
        g, c = arms.get(f"gsd_{noise}", {}), arms.get(f"ce_{noise}", {})
        rec = recovered(state, f"gsd_{noise}", noise)
        if "dice_mean" in g and "dice_mean" in c:
            parts.append(f"{noise}: GSD {g['dice_mean']:.2f} vs CE {c['dice_mean']:.2f} "
                         f"(recovered {100 * rec:.0f} %)" if rec is not None else f"{noise}: GSD {g['dice_mean']:.2f}")
    clean = arms.get("ce_clean", {}).get("dice_mean")
    return "; ".join(parts) + (f"; CE clean {clean:.2f}" if clean is not None else "")


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join([".venv/bin/python", "bench/quality.py"] + [a for a in argv if a != "--background"])
    if args.background:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        with open(args.log, "a") as fh:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())]
                                    + [a for a in argv if a != "--background"],
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        print(f"quality benchmark running in the background: PID {proc.pid}, log {args.log}\n"
              f"resume after an interruption with the same command; results: {args.results}")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (args.work / sub).mkdir(exist_ok=True)
    state = load_state(args)
    budget = {k: getattr(args, k) for k in ("size", "epochs", "iterations", "val_iterations", "batch", "seed",
                                            "device", "threads", "tta", "sde_noise_at")}
    if state.get("budget") not in (None, budget):
        raise SystemExit(f"{args.work} holds results of another budget {state['budget']}: pass another --work "
                         f"(or delete that folder) to run with {budget}")
    state["budget"] = budget
    state.setdefault("started", dt.datetime.now().isoformat(timespec="seconds"))
    if args.report_only:
        write_report(args, state, state.get("command", command))
        print(args.results.read_text())
        return
    state["command"] = command
    env = nnunet_env(args)
    logdir = args.log.parent / f"quality-{args.size}"
    log(f"quality benchmark: {budget}; work {args.work}; per-arm logs {logdir}")
    prepare(args, state, env, logdir)
    arms = DEFAULT_ARMS + (ABLATION_ARMS if args.ablation else []) + (CE_ONLY_ARMS if args.ce_only else [])
    if args.arms:
        unknown = set(args.arms) - {a[0] for a in DEFAULT_ARMS + ABLATION_ARMS + CE_ONLY_ARMS}
        if unknown:
            raise SystemExit(f"unknown arm(s) {sorted(unknown)}; known: "
                             f"{[a[0] for a in DEFAULT_ARMS + ABLATION_ARMS + CE_ONLY_ARMS]}")
        arms = [a for a in DEFAULT_ARMS + ABLATION_ARMS + CE_ONLY_ARMS if a[0] in args.arms]
    for i, (name, noise, trainer) in enumerate(arms, 1):
        if state["arms"].get(name, {}).get("evaluated"):
            log(f"[{i}/{len(arms)}] {name}: done before, skipped")
            continue
        log(f"[{i}/{len(arms)}] {name}")
        run_arm(args, state, env, logdir, name, noise, trainer)
        state["updated"] = dt.datetime.now().isoformat(timespec="seconds")
        save_state(args, state)
        write_report(args, state, command)
    write_report(args, state, command)
    log("final: " + final_line(state))


if __name__ == "__main__":
    main()
