"""``nnunet_gsd last-k``: the paper's protocol — test Dice as mean ± std over the last K epochs' weights.

GSD-Net reports test Dice as the mean ± std over the checkpoints of the final 10 epochs (paper §4.3;
the authors' released code evaluates every one of the last 10 epochs, without a validation split:
docs/decisions.md, "Evaluation protocol"). nnU-Net
instead predicts with ``checkpoint_final.pth``. This command reports both, side by side.

1. Train with ``nnUNet_GSD_KEEP_LAST=10`` (or a trainer with ``gsd_keep_last_k = 10``): the trainer
   then keeps, for each of the last K epochs, a weights-only checkpoint
   ``fold_F/last_k/checkpoint_epoch_XXXX.pth`` (no optimizer state, so K of them cost K × the network
   size, not K full training checkpoints).
2. ``nnunet_gsd last-k -d D -c 2d -tr nnUNetTrainerGSD -f 0 -i imagesTs -r labelsTs`` predicts the
   images with each of them and with ``checkpoint_final.pth`` through the stock
   ``nnUNetv2_predict -chk …``, scores every prediction folder with nnU-Net's
   ``compute_metrics_on_folder`` (its ``summary.json`` lands in the folder), and reports the
   foreground-mean Dice of each checkpoint, their mean ± std (population std, ddof = 0) and the
   final checkpoint's Dice.

Output (default ``fold_F/last_k_eval/``): ``predictions/<checkpoint>/`` (with ``summary.json``),
``last_k.json`` and ``last_k.md``.

A learning curve instead: train with ``nnUNet_GSD_SNAPSHOT_EVERY=N`` (weights every N epochs in
``fold_F/snapshots/``; every trainer of this package, stock baselines included) and pass ``--snapshots``: the
same table, one row per snapshot (output ``fold_F/snapshots_eval/``). Against clean reference labels it shows
whether a network trained on noisy ones gets worse as it fits them.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np

from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.common import (add_subcommand, case_ids, console_env, foreground_labels, load_dataset_json,
                                     markdown_table, reader_writer, require_folder, run_command)
from nnunet_gsd.utils import dataset_name, write_json_atomic

CHECKPOINT = re.compile(r"checkpoint_epoch_(\d+)\.pth$")
FINAL = "checkpoint_final.pth"


def add_parser(subparsers) -> None:
    p = add_subcommand(subparsers, "last-k", "the paper's protocol: predict with the last K epochs' weights, "
                       "mean ± std Dice", __doc__)
    p.add_argument("-tr", dest="trainer", default="nnUNetTrainerGSD", help="trainer class (default: %(default)s)")
    p.add_argument("-p", dest="plans", default="nnUNetPlans", help="plans identifier (default: %(default)s)")
    p.add_argument("-f", dest="fold", default="0", help="fold (default: %(default)s)")
    p.add_argument("-i", dest="images", type=Path, required=True, help="images to predict (e.g. imagesTs/)")
    p.add_argument("-r", dest="labels", type=Path, required=True, help="reference labels (e.g. labelsTs/)")
    p.add_argument("-o", dest="output", type=Path, help="output folder (default: the fold's last_k_eval/)")
    p.add_argument("-k", dest="k", type=int, help="use only the last K kept checkpoints (default: all kept)")
    p.add_argument("--snapshots", action="store_true",
                   help="evaluate the snapshots (nnUNet_GSD_SNAPSHOT_EVERY) instead of the last K epochs: a learning "
                        "curve")
    p.add_argument("-device", default=None, choices=["cuda", "cpu", "mps"],
                   help="prediction device (default: cuda when available, else cpu)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring at test time (faster)")
    p.add_argument("-np", dest="num_processes", type=int,
                   default=int(os.environ.get("nnUNet_def_n_proc", "2")),
                   help="processes for prediction pre/post-processing and evaluation "
                        "(default: $nnUNet_def_n_proc or 2)")
    p.set_defaults(func=main)


#: kept-checkpoint folder → how a training keeps them
KEPT = {"last_k": "nnUNet_GSD_KEEP_LAST=10 (the paper's last 10 epochs; or gsd_keep_last_k in a trainer variant)",
        "snapshots": "nnUNet_GSD_SNAPSHOT_EVERY=10 (every 10 epochs; or gsd_snapshot_every in a trainer variant)"}


def kept_checkpoints(fold_dir: Path, k: int | None = None, kind: str = "last_k") -> List[Path]:
    """The ``<kind>/checkpoint_epoch_XXXX.pth`` files of a fold, oldest first (only the last ``k``)."""
    folder = Path(fold_dir) / kind
    found = sorted((int(m.group(1)), p) for p in folder.glob("checkpoint_epoch_*.pth")
                   if (m := CHECKPOINT.fullmatch(p.name))) if folder.is_dir() else []
    if not found:
        raise UserError(f"no {folder}/checkpoint_epoch_*.pth: train with {KEPT[kind]} to keep them")
    if k is not None:
        if k < 1:
            raise UserError(f"-k {k}: must be >= 1")
        found = found[-k:]
    return [p for _, p in found]


def summarise(dice: Mapping[str, float], final: float | None) -> dict:
    """Mean ± std (population, ddof = 0) of the kept checkpoints' Dice, and the final checkpoint's."""
    values = np.array(list(dice.values()), dtype=float)
    return {
        "k": len(values),
        "checkpoints": dict(dice),
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "final": final,
    }


def to_markdown(summary: Mapping, kind: str = "last_k") -> str:
    rows: List[Sequence[object]] = [[name, dice] for name, dice in summary["checkpoints"].items()]
    if kind == "last_k":
        rows.append([f"**mean ± std over the last {summary['k']} epochs**",
                     f"{summary['mean']:.4f} ± {summary['std']:.4f}"])
    if summary["final"] is not None:
        rows.append([f"{FINAL} (nnU-Net's usual result)", summary["final"]])
    return markdown_table(["checkpoint", "Dice"], rows)


def predict_and_score(checkpoint: str, args: argparse.Namespace, name: str, out: Path, labels_ref: Path,
                      dataset_json: dict, env: Dict[str, str]) -> float:
    """Stock nnUNetv2_predict with ``-chk checkpoint``, then nnU-Net's compute_metrics_on_folder; foreground Dice."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    cmd = ["nnUNetv2_predict", "-i", str(args.images), "-o", str(out), "-d", name, "-c", args.configuration,
           "-tr", args.trainer, "-p", args.plans, "-f", str(args.fold), "-chk", checkpoint,
           "-device", args.device, "-npp", str(args.num_processes), "-nps", str(args.num_processes),
           "--disable_progress_bar"] + (["--disable_tta"] if args.disable_tta else [])
    run_command(cmd, env, log_file=out.parent / f"{out.name}.log", what=f"prediction with {checkpoint}")
    ending = dataset_json["file_ending"]
    predicted = case_ids(out, ending)
    missing = sorted(set(predicted) - set(case_ids(labels_ref, ending)))
    if not predicted or missing:
        raise UserError(f"{labels_ref} lacks reference labels for {len(missing)} predicted case(s) "
                        f"(e.g. {missing[0] if missing else '?'}{ending}): pass the labels matching -i")
    summary = compute_metrics_on_folder(str(labels_ref), str(out), str(out / "summary.json"),
                                        reader_writer(dataset_json, labels_ref / f"{predicted[0]}{ending}"),
                                        ending, foreground_labels(dataset_json), num_processes=args.num_processes)
    return float(summary["foreground_mean"]["Dice"])


def epochs_trained(checkpoint_name: str) -> int:
    """Epochs a ``checkpoint_epoch_XXXX.pth`` had trained: its 0-based epoch + 1."""
    return int(CHECKPOINT.fullmatch(checkpoint_name).group(1)) + 1


def plot_curve(summary: Mapping, path: Path, title: str) -> None:
    """Dice of each snapshot against the epochs trained (the checkpoint's 0-based epoch + 1)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [epochs_trained(n) for n in summary["checkpoints"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, list(summary["checkpoints"].values()), marker="o")
    ax.set(xlabel="epochs trained", ylabel="test Dice", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    kind = "snapshots" if args.snapshots else "last_k"
    name = dataset_name(args.dataset)
    fold = args.fold if args.fold == "all" else int(args.fold)
    fold_dir = Path(get_output_folder(name, args.trainer, args.plans, args.configuration, fold))
    model_dir = fold_dir.parent
    require_folder(fold_dir, "trained fold", f"train first: nnUNetv2_train {args.dataset} {args.configuration} "
                                             f"{args.fold} -tr {args.trainer} (with {KEPT[kind].split()[0]})")
    require_folder(args.images, "-i", "pass the test images folder, e.g. $nnUNet_raw/DatasetX/imagesTs")
    require_folder(args.labels, "-r", "pass the reference labels folder, e.g. $nnUNet_raw/DatasetX/labelsTs")
    checkpoints = kept_checkpoints(fold_dir, args.k, kind)
    dataset_json = load_dataset_json(model_dir)
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    out = (args.output or fold_dir / f"{kind}_eval").resolve()
    env = console_env()

    dice: Dict[str, float] = {}
    for chk in checkpoints:
        dice[chk.name] = predict_and_score(f"{kind}/{chk.name}", args, name, out / "predictions" / chk.stem,
                                           args.labels.resolve(), dataset_json, env)
        print(f"{chk.name}: Dice {dice[chk.name]:.4f}", flush=True)
    final = None
    if (fold_dir / FINAL).is_file():
        final = predict_and_score(FINAL, args, name, out / "predictions" / Path(FINAL).stem, args.labels.resolve(),
                                  dataset_json, env)
    else:
        print(f"note: {fold_dir / FINAL} not found (training unfinished?): reporting the kept checkpoints only")
    summary = summarise(dice, final)
    summary.update(dataset=name, trainer=args.trainer, plans=args.plans, configuration=args.configuration,
                   fold=args.fold, images=str(args.images.resolve()), labels=str(args.labels.resolve()),
                   metric="foreground-mean Dice of nnU-Net's compute_metrics_on_folder; std with ddof=0")
    table = to_markdown(summary, kind)
    title = f"{name} {args.trainer} {args.configuration} fold {args.fold}"
    write_json_atomic(out / f"{kind}.json", summary)
    (out / f"{kind}.md").write_text(f"{title}: test Dice\n\n{table}\n")
    written = [out / f"{kind}.json", out / f"{kind}.md"]
    if kind == "snapshots":
        plot_curve(summary, out / "snapshots.png", title)
        written.append(out / "snapshots.png")
    print(table)
    print(f"written: {', '.join(map(str, written))}")
    return 0
