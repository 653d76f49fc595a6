"""Small helpers shared by the analysis sub-commands (evaluate-raters, last-k, search-tau, overlay).

Everything numeric is nnU-Net's own: its reader/writers, its label handling (``LabelManager``) and
its true/false positive counting (``compute_tp_fp_fn_tn``), so Dice here is exactly the Dice
``nnUNetv2_evaluate_folder`` reports (NaN when reference and prediction are both empty).
"""
from __future__ import annotations

import argparse

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_gsd.errors import UserError
from nnunet_gsd.utils import nanmean_or_nan

Label = Union[int, Tuple[int, ...]]


# ---------------------------------------------------------------- dataset.json, labels, files
def load_dataset_json(location: Path) -> dict:
    """A dataset.json as a dict (``location``: the file, or the folder holding it), or a one-line UserError."""
    path = Path(location)
    if path.is_dir() or path.suffix != ".json":
        path = path / "dataset.json"
    if not path.is_file():
        raise UserError(f"{path} not found: pass an nnU-Net raw dataset folder (the one holding dataset.json, "
                        f"imagesTs/, labelsTs/), e.g. $nnUNet_raw/Dataset901_Synthetic")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); fix the file") from None


def foreground_labels(dataset_json: Mapping) -> List[Label]:
    """Foreground labels (or regions) of a dataset, in nnU-Net's order (``LabelManager``)."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    if manager.has_regions:
        return [tuple(int(i) for i in region) for region in manager.foreground_regions]
    return [int(label) for label in manager.foreground_labels]  # plain ints: they go into JSON


def reader_writer(dataset_json: Mapping, example_file: Path):
    """nnU-Net's reader/writer for this dataset's files (an instance)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    return determine_reader_writer_from_dataset_json(dict(dataset_json), str(example_file), verbose=False)()


def case_ids(folder: Path, file_ending: str) -> List[str]:
    """Sorted case ids of the segmentation files in ``folder`` (file name minus ``file_ending``)."""
    return sorted(p.name[:-len(file_ending)] for p in Path(folder).iterdir()
                  if p.is_file() and p.name.endswith(file_ending))


def require_folder(path: Path, what: str, fix: str) -> Path:
    if not Path(path).is_dir():
        raise UserError(f"{what} {path} is not a folder: {fix}")
    return Path(path)


def probability_channels(dataset_json: Mapping) -> Tuple[List[int], int]:
    """(channel of each of :func:`foreground_labels` in nnU-Net's ``--save_probabilities`` output, number of
    channels). Labels: softmax channel ``i`` is ``all_labels[i]`` (background included); regions: sigmoid
    channel ``i`` is the ``i``-th region (``LabelManager.num_segmentation_heads`` channels)."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    if manager.has_regions:
        return list(range(len(manager.foreground_regions))), manager.num_segmentation_heads
    return [manager.all_labels.index(label) for label in manager.foreground_labels], manager.num_segmentation_heads


# ---------------------------------------------------------------- metrics
#: QUBIQ's thresholds: k/10 exactly (np.linspace's 0.30000000000000004 would put a 3-of-10 vote above 0.3)
QUBIQ_THRESHOLDS = tuple(k / 10 for k in range(1, 10))


def dice_from_overlap(overlap: float, total: float) -> float:
    """``2 · overlap / total``, NaN when ``total`` is 0: the one Dice formula here, for counts (overlap = true
    positives, total = 2 tp + fp + fn) and for soft sums (overlap = Σ p·q, total = Σ p + Σ q)."""
    return float("nan") if total == 0 else 2 * float(overlap) / float(total)


def mask_dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two boolean masks, counted by nnU-Net's ``compute_tp_fp_fn_tn`` (NaN when both are empty)."""
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn
    tp, fp, fn, _ = compute_tp_fp_fn_tn(reference, prediction)
    return dice_from_overlap(tp, 2 * tp + fp + fn)


def dice_per_label(reference: np.ndarray, prediction: np.ndarray, labels: Sequence[Label]) -> Dict[Label, float]:
    """Dice per label as ``nnunetv2.evaluation.evaluate_predictions.compute_metrics`` computes it."""
    from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask
    if reference.shape != prediction.shape:
        raise UserError(f"prediction shape {prediction.shape} differs from the reference shape {reference.shape}")
    return {label: mask_dice(region_or_label_to_mask(reference, label), region_or_label_to_mask(prediction, label))
            for label in labels}


def soft_dice(reference: np.ndarray, probability: np.ndarray) -> float:
    """Soft Dice ``2 Σ r·p / (Σ r + Σ p)`` of two maps in [0, 1] (e.g. the fraction of raters and a predicted
    probability); NaN when both are 0 everywhere, as the hard Dice."""
    r, p = np.asarray(reference, dtype=np.float64), np.asarray(probability, dtype=np.float64)
    return dice_from_overlap((r * p).sum(), r.sum() + p.sum())


def qubiq_score(reference: np.ndarray, probability: np.ndarray,
                thresholds: Sequence[float] = QUBIQ_THRESHOLDS) -> float:
    """The QUBIQ challenge's score: the mean over ``thresholds`` of the Dice between ``reference > t`` and
    ``probability > t``. A threshold where both are empty scores 1, as in QUBIQ: at 0.9, say, no pixel
    has every rater's vote and the model is nowhere that sure, which is agreement, not an undefined case."""
    scores = [mask_dice(reference > t, probability > t) for t in thresholds]
    return float(np.mean([1.0 if np.isnan(d) else d for d in scores]))


def foreground_dice(reference: np.ndarray, prediction: np.ndarray, labels: Sequence[Label]) -> float:
    """Mean Dice over the foreground labels (NaN where every label is empty in both, as in nnU-Net)."""
    return nanmean_or_nan(list(dice_per_label(reference, prediction, labels).values()))


# ---------------------------------------------------------------- reporting
def add_subcommand(subparsers, name: str, summary: str, doc: str, dataset_help: str = "dataset name or id",
                   configuration_help: str = "configuration, e.g. 2d or 3d_fullres") -> argparse.ArgumentParser:
    """A sub-command with nnU-Net's ``-d DATASET -c CONFIGURATION`` (its help: the module docstring ``doc``)."""
    p = subparsers.add_parser(name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", dest="dataset", required=True, help=dataset_help)
    p.add_argument("-c", dest="configuration", required=True, help=configuration_help)
    return p


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats with 4 decimals."""
    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- console commands
def console_env(**extra: str) -> Dict[str, str]:
    """The current environment with this Python's scripts first on PATH (so nnU-Net's commands are ours)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("PYTHONUNBUFFERED", "1")  # output piped into a log arrives line by line, not at exit
    env.update(extra)
    return env


#: nnU-Net's messages that read like errors but are harmless where our commands run it; the commands keep
#: them in their log files and say so once (``HARMLESS_NOTE``).
HARMLESS_NOTE = ("nnU-Net's own notices in these logs are harmless here: the suggestion to try its newer "
                 "residual-encoder planner, 'hiddenlayer' not installed (it only draws the network), "
                 "torch.jit FutureWarnings from its dependencies, and 'GPU prediction completed' (printed on the "
                 "CPU too)")


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate a child command (it got the terminal's SIGINT too, and may already be exiting), kill it if it
    has not ended within ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_command(cmd: List[str], env: Mapping[str, str], log_file: Optional[Path] = None, what: str = "",
                echo: Optional[Callable[[str], Optional[str]]] = None, append: bool = False) -> None:
    """Run a console command; output to ``log_file`` (quiet; ``append``: after the commands already logged there,
    each under a ``$ command`` line) or the terminal. Failure -> UserError with its tail.

    With ``log_file`` and ``echo``, every output line goes to the log and ``echo(line)``, when not None, is
    printed as it arrives (a progress digest of a long step).
    """
    exe = cmd[0] if os.path.isabs(cmd[0]) else shutil.which(cmd[0], path=env.get("PATH"))
    if exe is None:
        raise UserError(f"command {cmd[0]} not found on PATH: install nnunet_gsd and nnunetv2 in this environment "
                        f"(and activate it: source .venv/bin/activate)")
    if log_file is None:
        returncode = subprocess.run([exe, *cmd[1:]], env=dict(env)).returncode
        tail = ""
    else:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a" if append else "w") as log, subprocess.Popen(
                [exe, *cmd[1:]], env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                errors="replace") as proc:
            try:
                if append:
                    log.write(f"\n$ {' '.join(cmd)}\n")
                for line in proc.stdout:
                    log.write(line)
                    shown = echo(line.rstrip("\n")) if echo is not None else None
                    if shown is not None:
                        print(shown, flush=True)
            except BaseException:
                # Ctrl-C: Popen's exit waits only 0.25 s for the child, which would go on writing into folders the
                # caller is about to clean up (subprocess.run, the branch above, kills its child the same way)
                _stop(proc)
                raise
        returncode = proc.returncode
        tail = "\n" + "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-15:])
    if returncode != 0:
        where = f" (full log: {log_file})" if log_file else ""
        raise UserError(f"{what or cmd[0]} failed with exit code {returncode}{where}: {' '.join(cmd)}{tail}")
