"""What GSD costs against nnU-Net on the same dataset and plans (not a test).

    .venv/bin/python bench/cost.py --source PATH/Kvasir-SEG     # Kvasir-SEG at 64², CPU (docs/datasets.md)
    .venv/bin/python bench/cost.py                               # without --source: a generated dataset
    .venv/bin/python bench/cost.py --source PATH/Kvasir-SEG --device cuda --size 256 --batch 0

Arms, each trained in its own process (so each has its own peak memory) and driven in interleaved
rounds from this one (so machine drift hits every arm alike):

- ``base``: nnU-Net's ``nnUNetTrainerNoDeepSupervision`` (one network, Dice + CE);
- ``stock``: nnU-Net's ``nnUNetTrainer`` (one network, Dice + CE with deep supervision): what users compare with;
- ``gsd_default``: ``nnUNetTrainerGSD`` with its defaults after the warm-up and no τ (``nnUNet_GSD_TAU=0``, what a
  user without a noise estimate gets): passes 1–2, no superpixel vote (R(e) = 1 rejects nothing), Knowledge
  Transfer off;
- ``gsd_tau``: the same with the dataset's τ: passes 1–2 and the superpixel vote (SGLR) — what τ adds;
- ``gsd_steady``: ``nnUNetTrainerGSD`` with the dataset's τ and Knowledge Transfer on (``nnUNet_GSD_USE_KT=1``)
  after warm-up (4 network passes: SGLR + KT), phase-profiled: the most a GSD step costs.

Per iteration we time ``next(dataloader_train)`` (the wait for a batch: ≈ 0 when nnU-Net's background
augmentation keeps up) and ``train_step`` separately; the first iterations are not counted. Inference:
the fused two-network checkpoint against the one-network one, per case on the same preprocessed test
cases (nnU-Net's predictor, sliding window + mirroring as ``nnUNetv2_predict`` does), plus two full
``nnUNetv2_predict`` commands per arm (order A B B A). The last line printed is
``default_ratio=… tau_ratio=… steady_ratio=… infer_ratio=… mem_ratio=… loader_wait=…``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))
from bench import workdirs  # noqa: E402
from bench.workdirs import log  # noqa: E402
from nnunet_gsd.tools.common import console_env  # noqa: E402
ARMS = ("base", "stock", "gsd_default", "gsd_tau", "gsd_steady")
TRAINERS = {"base": "nnUNetTrainerNoDeepSupervision", "stock": "nnUNetTrainer", "gsd_default": "nnUNetTrainerGSD",
            "gsd_tau": "nnUNetTrainerGSD", "gsd_steady": "nnUNetTrainerGSD"}
#: settings of the GSD arms beyond the trainer's defaults (the dataset's τ unless nnUNet_GSD_TAU says otherwise)
GSD_ENV = {"gsd_default": {"nnUNet_GSD_TAU": "0"}, "gsd_tau": {}, "gsd_steady": {"nnUNet_GSD_USE_KT": "1"}}
#: the trainer's timing phases (nnUNetTrainerGSD.train_step), by what they are
NETWORK = ("passes_1_2", "backward_1_2", "passes_3_4", "backward_3_4")
METHOD = ("inputs", "selection", "kt_mixing", "kt_losses")
#: ratios of a GSD arm's iteration to another arm's, and their limits
RATIOS = {"default_ratio": ("gsd_default", "stock", 2.05), "tau_ratio": ("gsd_tau", "stock", None),
          "steady_ratio": ("gsd_steady", "base", 4.4)}
TARGETS = {**{k: lim for k, (_, _, lim) in RATIOS.items() if lim}, "infer_ratio": 2.05, "mem_ratio": 2.5}



def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None,
                    help="an nnU-Net raw dataset folder (DatasetNNN_Name) to use instead of Kvasir-SEG; read only")
    ap.add_argument("--source", type=Path, default=None,
                    help="your Kvasir-SEG download (the folder holding images/ and masks/; where to get it: "
                         "docs/datasets.md); without it, a generated dataset (nnunet_gsd convert synthetic) is used")
    ap.add_argument("--size", type=int, default=64, help="edge of the converted images (default 64)")
    ap.add_argument("--batch", type=int, default=8,
                    help="batch size of the plans variant used by all arms; 0 = nnU-Net's own plans (35 at 64²) "
                         "(default 8, as bench/quality.py)")
    ap.add_argument("--configuration", default="2d", choices=("2d", "3d_fullres", "3d_lowres"),
                    help="nnU-Net configuration of every arm (default 2d; 3d_fullres e.g. with --dataset of "
                         "a 3D dataset or the generated fallback with --dim 3)")
    ap.add_argument("--dim", type=int, default=2, choices=(2, 3),
                    help="dimension of the generated fallback dataset (default 2)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per arm process on CPU (default 1: the arms take turns, and 2 threads "
                         "on a shared 2-core CPU stall in OpenMP barriers)")
    ap.add_argument("--da-workers", type=int, default=1,
                    help="nnU-Net's background augmentation processes per arm (nnUNet_n_proc_DA; default 1)")
    ap.add_argument("--rounds", type=int, default=15, help="counted rounds (default 15)")
    ap.add_argument("--chunk", type=int, default=2, help="iterations per arm per round (default 2)")
    ap.add_argument("--warmup-rounds", type=int, default=2,
                    help="uncounted rounds first (allocator, caches, loader queue; default 2)")
    ap.add_argument("--infer-cases", type=int, default=20, help="test cases timed per inference arm (default 20)")
    ap.add_argument("--infer-repeats", type=int, default=3, help="interleaved passes over those cases (default 3)")
    ap.add_argument("--compile", action="store_true", help="let nnU-Net torch.compile (CUDA only; default off)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default bench/work/cost; git-ignored)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results markdown (default bench/results/cost-<device>.md)")
    args = ap.parse_args(argv)
    args.work = (args.work or REPO / "bench" / "work" / "cost").resolve()
    args.results = (args.results or REPO / "bench" / "results" / f"cost-{args.device}.md").resolve()
    return args


def environment(args, raw_root: Path) -> Dict[str, str]:
    env = {
        "nnUNet_raw": str(raw_root),
        "nnUNet_preprocessed": str(args.work / "nnUNet_preprocessed"),
        "nnUNet_results": str(args.work / "nnUNet_results"),
        "nnUNet_def_n_proc": "1",
        "nnUNet_n_proc_DA": str(args.da_workers),
        "nnUNet_compile": "t" if args.compile else "f",
        "OMP_NUM_THREADS": str(args.threads),
        "MPLBACKEND": "Agg",
        # nnU-Net's warm-up/steady split is by epoch; 10 epochs, warm-up 3 (see set_epoch in the worker)
        "nnUNet_GSD_NUM_EPOCHS": "10",
    }
    return env


def run(cmd: List[str], env: Dict[str, str], logfile: Path) -> float:
    """:func:`bench.workdirs.run` with this environment on top of the caller's (this Python's scripts first)."""
    return workdirs.run(cmd, console_env(**env), logfile)


# ---------------------------------------------------------------------------------------------- dataset
def prepare(args) -> tuple:
    """Returns (raw root, dataset name, plans name, description) with the dataset planned and preprocessed."""
    args.work.mkdir(parents=True, exist_ok=True)
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (args.work / sub).mkdir(exist_ok=True)
    logfile = args.work / "prepare.log"
    if args.dataset:
        raw = args.dataset.resolve()
        if not (raw / "dataset.json").is_file():
            raise SystemExit(f"--dataset {raw}: not an nnU-Net raw dataset folder (no dataset.json)")
        raw_root, name, what = raw.parent, raw.name, f"`{raw}`"
    else:
        raw_root = args.work / "nnUNet_raw"
        env = environment(args, raw_root)
        hits = sorted(raw_root.glob("Dataset620_*"))
        if args.source is not None and not args.source.is_dir():
            raise SystemExit(f"--source {args.source} is not a folder: pass your Kvasir-SEG download "
                             f"(docs/datasets.md), or leave --source out to use a generated dataset")
        if args.source is not None:
            what = f"Kvasir-SEG at {args.size}², S_R labels (700 train / 300 test, seed 0)"
            if not hits:
                log(f"converting Kvasir-SEG ({args.source}) at {args.size}²")
                run(["nnunet_gsd", "convert", "kvasir", "--source", str(args.source), "--id", "620", "--noise", "S_R",
                     "--size", str(args.size), "--seed", "0"], env, logfile)
        else:
            what = f"synthetic dataset at {args.size}² (no --source), S_E labels"
            if not hits:
                log("no --source: generating a synthetic dataset")
                run(["nnunet_gsd", "convert", "synthetic", "--id", "620", "--num-train", "60", "--num-test", "20",
                     "--size", str(args.size), "--dim", str(args.dim), "--noise", "S_E", "--seed", "0"], env, logfile)
        name = sorted(raw_root.glob("Dataset620_*"))[0].name
    env = environment(args, raw_root)
    pre = args.work / "nnUNet_preprocessed" / name
    if not (pre / f"nnUNetPlans_{args.configuration}").is_dir():  # nnU-Net's data_identifier
        log(f"planning and preprocessing {name} ({args.configuration})")
        run(["nnUNetv2_plan_and_preprocess", "-d", name.split("_")[0][7:], "-c", args.configuration, "-np", "1",
             "-npfp", "1"],
            env, logfile)
    plans_name = "nnUNetPlans"
    if args.batch:
        plans = json.loads((pre / "nnUNetPlans.json").read_text())
        plans_name = plans["plans_name"] = f"nnUNetPlans_b{args.batch}"
        plans["configurations"][args.configuration]["batch_size"] = args.batch
        (pre / f"{plans_name}.json").write_text(json.dumps(plans, indent=1))
    return raw_root, name, plans_name, what


# ---------------------------------------------------------------------------------------------- workers
def rss_now_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def worker(arm: str, env: Dict[str, str], dataset: str, plans: str, configuration: str, device: str, threads: int,
           conn) -> None:
    """One arm in its own process: set up nnU-Net's trainer, then run iterations when told to."""
    os.environ.update(env)
    if arm in GSD_ENV:
        os.environ["nnUNet_GSD_PROFILE"] = "1" if (device == "cpu" or arm == "gsd_steady") else "0"
        os.environ.update(GSD_ENV[arm])
    import torch
    torch.set_num_threads(threads)
    from nnunetv2.run.run_training import get_trainer_from_args
    trainer = get_trainer_from_args(dataset, configuration, 0, TRAINERS[arm], plans, device=torch.device(device))
    trainer.on_train_start()
    if arm in GSD_ENV:
        # after both warm-ups, with the selection ramp done (R(e) = 1 − τ)
        warm = max(trainer._warmup_epochs, trainer._kt_warmup_epochs)
        trainer.current_epoch = warm
        assert 0 < warm < trainer.num_epochs
    trainer.on_train_epoch_start()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    conn.send({"rss_setup_kb": rss_now_kb(), "batch": trainer.batch_size,
               "patch": list(trainer.configuration_manager.patch_size),
               "epoch": trainer.current_epoch, "num_epochs": trainer.num_epochs})
    counted_once = False
    while True:
        cmd, n, counted = conn.recv()
        if cmd == "run":
            if counted and not counted_once and hasattr(trainer, "_timer"):
                trainer._timer.reset()  # profile only counted iterations
                counted_once = True
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                batch = next(trainer.dataloader_train)
                t1 = time.perf_counter()
                trainer.train_step(batch)
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append((t1 - t0, time.perf_counter() - t1))
            conn.send(times)
        elif cmd == "finish":
            result = {"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else None,
                      "phases_ms": trainer._timer.mean_ms() if hasattr(trainer, "_timer") else {}}
            if arm in ("base", "gsd_steady"):
                # an ordinary final checkpoint for the inference timing
                trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
                result["model_folder"] = trainer.output_folder_base
            for loader in (trainer.dataloader_train, trainer.dataloader_val):
                if hasattr(loader, "_finish"):
                    loader._finish()
            conn.send(result)
            return


def infer_worker(env, folders: Dict[str, str], dataset_raw: str, n_cases: int, repeats: int, device: str,
                 threads: int, conn) -> None:
    """Per-case logits time of each checkpoint on the same preprocessed cases, arms alternating per case."""
    os.environ.update(env)
    import torch
    torch.set_num_threads(threads)
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictors = {}
    for arm, folder in folders.items():
        p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                            perform_everything_on_device=device == "cuda", device=torch.device(device),
                            verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        p.initialize_from_trained_model_folder(folder, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
        predictors[arm] = p
    ref = next(iter(predictors.values()))
    ending = ref.dataset_json["file_ending"]
    cases = sorted(Path(dataset_raw, "imagesTs").glob(f"*_0000{ending}"))[:n_cases]
    if not cases:
        cases = sorted(Path(dataset_raw, "imagesTr").glob(f"*_0000{ending}"))[:n_cases]
    pre = ref.configuration_manager.preprocessor_class(verbose=False)
    datas = []
    for c in cases:
        files = sorted(c.parent.glob(c.name.replace("_0000" + ending, "_*" + ending)))
        data, _, _ = pre.run_case(files, None, ref.plans_manager, ref.configuration_manager, ref.dataset_json)
        datas.append(torch.from_numpy(data))
    times = {arm: [] for arm in predictors}
    for r in range(repeats + 1):  # the first pass is warm-up
        for i, data in enumerate(datas):
            order = list(predictors) if (i + r) % 2 == 0 else list(predictors)[::-1]
            for arm in order:
                t0 = time.perf_counter()
                predictors[arm].predict_logits_from_preprocessed_data(data)
                if device == "cuda":
                    torch.cuda.synchronize()
                if r:
                    times[arm].append(time.perf_counter() - t0)
    conn.send({"times": times, "cases": [c.name for c in cases]})


# ---------------------------------------------------------------------------------------------- main
def machine() -> str:
    import torch
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} CPU cores ({cpu}){gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def med(xs: List[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv=None) -> None:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    command = workdirs.command_line("bench/cost.py", argv)
    started = dt.datetime.now()
    load_start = os.getloadavg()
    raw_root, dataset, plans, what = prepare(args)
    env = environment(args, raw_root)
    ctx = mp.get_context("spawn")

    log(f"starting the arms {', '.join(ARMS)} on {dataset} / {plans} ({args.device})")
    conns, procs, setup = {}, {}, {}
    for arm in ARMS:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker,
                        args=(arm, env, dataset, plans, args.configuration, args.device, args.threads, child))
        p.start()
        conns[arm], procs[arm] = parent, p
        setup[arm] = parent.recv()  # one at a time: set-up (SLIC cache, loaders) must not overlap the timing
    log(f"arms ready: batch {setup['base']['batch']}, patch {setup['base']['patch']}; "
        f"{args.warmup_rounds} uncounted + {args.rounds} counted rounds of {args.chunk} iterations per arm")

    waits = {a: [] for a in ARMS}
    steps = {a: [] for a in ARMS}
    total = args.warmup_rounds + args.rounds
    for r in range(total):
        counted = r >= args.warmup_rounds
        # rotate the order so no arm always runs right after the same other arm
        order = ARMS[r % len(ARMS):] + ARMS[:r % len(ARMS)]
        for arm in order:
            conns[arm].send(("run", args.chunk, counted))
            for w, s in conns[arm].recv():
                if counted:
                    waits[arm].append(w)
                    steps[arm].append(s)
        log(f"round {r + 1}/{total}{'' if counted else ' (uncounted)'}: " + ", ".join(
            f"{a} {1000 * med([w + s for w, s in zip(waits[a], steps[a])]):.0f} ms" for a in ARMS if steps[a]))
    finals = {}
    for arm in ARMS:
        conns[arm].send(("finish", 0, False))
        finals[arm] = conns[arm].recv()
        procs[arm].join()

    iter_ms = {a: 1000 * med([w + s for w, s in zip(waits[a], steps[a])]) for a in ARMS}
    step_ms = {a: 1000 * med(steps[a]) for a in ARMS}
    wait_ms = {a: 1000 * med(waits[a]) for a in ARMS}
    wait_share = {a: sum(waits[a]) / (sum(waits[a]) + sum(steps[a])) for a in ARMS}

    # inference: the per-case network part in-process, then the full command once per arm
    log(f"inference: {args.infer_cases} cases × {args.infer_repeats} interleaved passes")
    folders = {"base": finals["base"]["model_folder"], "gsd": finals["gsd_steady"]["model_folder"]}
    raw_dir = str(raw_root / dataset)
    parent, child = ctx.Pipe()
    p = ctx.Process(target=infer_worker, args=(env, folders, raw_dir, args.infer_cases, args.infer_repeats,
                                               args.device, args.threads, child))
    p.start()
    inf = parent.recv()
    p.join()
    infer_ms = {a: 1000 * med(t) for a, t in inf["times"].items()}
    case_dir = args.work / "predict_in"
    shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir()
    for name in inf["cases"]:
        stem = name.split("_0000")[0]
        images = Path(raw_dir, "imagesTs" if Path(raw_dir, "imagesTs", name).exists() else "imagesTr")
        for f in images.glob(stem + "_*"):
            os.symlink(f, case_dir / f.name)
    e2e = {"base": [], "gsd": []}
    # A B B A: the first command of a series pays cold file caches; this order gives both arms the same share
    for arm in ("base", "gsd", "gsd", "base"):
        out = args.work / f"predict_out_{arm}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["nnUNetv2_predict", "-i", str(case_dir), "-o", str(out), "-d", dataset, "-c", args.configuration,
               "-p", plans, "-tr", TRAINERS["base" if arm == "base" else "gsd_steady"], "-f", "0",
               "-npp", "1", "-nps", "1", "-device", args.device, "--disable_progress_bar"]
        e2e[arm].append(run(cmd, {**env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
                           args.work / "predict.log"))
    e2e = {a: statistics.mean(t) for a, t in e2e.items()}

    if args.device == "cuda":
        mem = {a: finals[a]["cuda_peak_mb"] for a in ARMS}
        mem_label = "peak `torch.cuda.max_memory_allocated` (MiB)"
        mem_ratio = mem["gsd_steady"] / mem["base"]
    else:
        mem = {a: finals[a]["peak_rss_kb"] / 1024 for a in ARMS}
        mem_label = "peak RSS of the arm's process (MiB)"
        # the training increment over the set-up RSS (torch, dataset, loaders): what the arms differ in
        inc = {a: (finals[a]["peak_rss_kb"] - setup[a]["rss_setup_kb"]) / 1024 for a in ARMS}
        mem_ratio = inc["gsd_steady"] / inc["base"]

    phases = finals["gsd_steady"]["phases_ms"]
    net = sum(phases.get(k, 0) for k in NETWORK)
    method = sum(phases.get(k, 0) for k in METHOD)
    other = sum(v for k, v in phases.items() if k not in NETWORK + METHOD)
    phases_default = finals["gsd_default"]["phases_ms"]
    phases_tau = finals["gsd_tau"]["phases_ms"]

    ratios = {k: iter_ms[a] / iter_ms[b] for k, (a, b, _) in RATIOS.items()}
    ratios.update(infer_ratio=infer_ms["gsd"] / infer_ms["base"], mem_ratio=mem_ratio)
    loader_wait = max(wait_share.values())
    final = " ".join(f"{k}={v:.2f}" for k, v in ratios.items()) + f" loader_wait={loader_wait:.3f}"

    n_counted = args.rounds * args.chunk
    lines = [f"# What GSD costs against nnU-Net ({args.device})", "",
             "Command (from the repository root):", "", f"    {command}", "",
             f"- Machine: {machine()}; load average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end "
             f"(shared machine)",
             f"- Date: {started:%Y-%m-%d %H:%M} ({(dt.datetime.now() - started).total_seconds() / 60:.1f} min)",
             f"- Data: {what}; plans `{plans}` (batch {setup['base']['batch']}, patch {setup['base']['patch']}), "
             f"the same for every arm; {args.threads} torch thread(s) per arm, {args.da_workers} augmentation "
             f"process(es) per arm, torch.compile {'on' if args.compile else 'off'}",
             f"- Budget: {args.warmup_rounds} uncounted + {args.rounds} counted interleaved rounds × {args.chunk} "
             f"iterations per arm = {n_counted} counted iterations per arm (medians); GSD arms at epoch "
             f"{setup['gsd_steady']['epoch']} of {setup['gsd_steady']['num_epochs']} (after the warm-ups)", "",
             "| arm | trainer | settings | ms / iteration | train_step ms | loader wait ms (median) | "
             f"loader wait share | {mem_label} | ratio to base | ratio to stock |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in ARMS:
        extra = f" (+{inc[a]:.0f} over set-up)" if args.device == "cpu" else ""
        settings = ", ".join(f"{k}={v}" for k, v in GSD_ENV.get(a, {}).items()) or "—"
        lines.append(f"| {a} | `{TRAINERS[a]}` | {settings} | {iter_ms[a]:.0f} | {step_ms[a]:.0f} | {wait_ms[a]:.1f} | "
                     f"{100 * wait_share[a]:.1f} % | {mem[a]:.0f}{extra} | {iter_ms[a] / iter_ms['base']:.2f} | "
                     f"{iter_ms[a] / iter_ms['stock']:.2f} |")
    lines += ["", f"Inference, per case ({len(inf['cases'])} test cases × {args.infer_repeats} passes, nnU-Net's "
              f"sliding window with mirroring; preprocessing and export excluded): one network "
              f"{infer_ms['base']:.1f} ms, fused two networks {infer_ms['gsd']:.1f} ms → "
              f"**{ratios['infer_ratio']:.2f}×**. Full `nnUNetv2_predict` command on the same "
              f"{len(inf['cases'])} cases (process start, preprocessing, export included; mean of 2, order A B B A): "
              f"{e2e['base']:.1f} s vs {e2e['gsd']:.1f} s ({e2e['gsd'] / e2e['base']:.2f}×): on a small 2D case the "
              f"command is dominated by what does not depend on the number of networks.", "",
              "GSD phases after warm-up (mean ms per counted iteration, `nnUNet_GSD_PROFILE=1`; means, so their sum "
              "exceeds the median step above when some iterations were slowed by other jobs):", "",
              "| phase | ms | share of step |", "|---|---|---|"]
    step_total = sum(phases.values())
    for k, v in phases.items():
        lines.append(f"| {k} | {v:.1f} | {100 * v / step_total:.1f} % |")
    lines += ["", f"Network passes (forward + backward of the 4 passes) {net:.0f} ms; the method around them "
              f"(inputs: x', calibration, superpixel ids; selection with GDA and refinement; KT mixing and losses) "
              f"{method:.1f} ms = "
              f"**{100 * method / net:.1f} % on top of the passes** (target ≤ 15 %); transfer + optimizer "
              f"{other:.1f} ms.",
              "GSD default phases (τ = 0, ms): " + ", ".join(f"{k}={v:.1f}" for k, v in phases_default.items()),
              "GSD with τ phases (ms): " + ", ".join(f"{k}={v:.1f}" for k, v in phases_tau.items()), "",
              "| target | measured | limit | met |", "|---|---|---|---|"]
    for k, lim in TARGETS.items():
        lines.append(f"| {k} | {ratios[k]:.2f} | ≤ {lim} | {'yes' if ratios[k] <= lim else 'no'} |")
    lines.append(f"| loader_wait (largest share of an arm's iteration time) | {loader_wait:.3f} | ≈ 0 | "
                 f"{'yes' if loader_wait < 0.05 else 'no'} |")
    lines += ["", "Final line:", "", f"    {final}", ""]
    text = "\n".join(lines)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    old = args.results.read_text() if args.results.is_file() else ""
    notes = old[old.index("\n## Notes"):] if "\n## Notes" in old else ""
    args.results.write_text(text + notes)
    print(text)
    print(final)


if __name__ == "__main__":
    main()
