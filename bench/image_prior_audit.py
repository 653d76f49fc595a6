"""Do image-driven label smoothers move noisy outlines toward the truth? (not a test; no training)

    .venv/bin/python bench/image_prior_audit.py --dataset $nnUNet_raw/Dataset612_KvasirSEG \\
        --dataset $nnUNet_raw/Dataset615_KvasirSEG --cases 150

SGLR's premise is that the image knows where the outline is: a superpixel that follows the image's edges
should be labelled as a whole. This audit checks that premise on the labels alone, before any network is
involved, for every dataset written by ``nnunet_gsd convert … --noise`` (noisy ``labelsTr/`` beside clean
``labelsTr_clean/``) and, as the do-no-harm check, for the clean labels themselves. Smoothers:

- ``slic majority``: every SLIC superpixel (the trainer's :func:`~nnunet_gsd.method.superpixels.slic_superpixels`
  with its defaults) takes its most frequent noisy label;
- ``crf w/σ``: five mean-field iterations of a Potts CRF with a colour-and-position Gaussian kernel on a
  7 × 7 window (the unary trusts the noisy label at 0.9; weight w, colour σ on [0, 1] intensities,
  position σ 3 px) — the smoother behind dense-CRF losses and post-processing.

It prints and writes (``--out``, default ``bench/results/image-prior-audit``) pixel accuracy, Dice and
foreground area (% of the clean area) of the labels before and after each smoother, averaged over cases.
Binary masks only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.workdirs import command_line  # noqa: E402
from nnunet_gsd.method.refinement import superpixel_majority  # noqa: E402
from nnunet_gsd.method.superpixels import slic_superpixels  # noqa: E402

Smoother = Callable[[np.ndarray, np.ndarray], np.ndarray]


def slic_majority(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every superpixel's most frequent label (the trainer's SLIC settings)."""
    import torch
    ids = slic_superpixels(image)
    out = superpixel_majority(torch.from_numpy(labels.astype(np.int64))[None],
                              torch.from_numpy(ids.astype(np.int64))[None], 2)
    return out[0].numpy()


def potts_mean_field(image: np.ndarray, labels: np.ndarray, weight: float, sigma_colour: float,
                     sigma_xy: float = 3.0, radius: int = 3, iterations: int = 5, trust: float = 0.9) -> np.ndarray:
    """Mean-field inference of a binary Potts CRF with kernel exp(−|Δcolour|²/2σc² − |Δxy|²/2σxy²) on a
    (2r+1)² window; unary log(trust) for the given label, log(1 − trust) for the other."""
    h, w = labels.shape
    unary = np.stack([np.where(labels == c, np.log(trust), np.log(1 - trust)) for c in (0, 1)])
    padded = np.pad(image, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1) if dy or dx]
    kernels = [np.exp(-((image - padded[:, radius + dy:radius + dy + h, radius + dx:radius + dx + w]) ** 2).sum(0)
                      / (2 * sigma_colour ** 2) - (dy * dy + dx * dx) / (2 * sigma_xy ** 2)) for dy, dx in offsets]
    q = np.exp(unary)
    q /= q.sum(0)
    for _ in range(iterations):
        pq = np.pad(q, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
        message = sum(k * pq[:, radius + dy:radius + dy + h, radius + dx:radius + dx + w]
                      for k, (dy, dx) in zip(kernels, offsets))
        logits = unary + weight * message
        q = np.exp(logits - logits.max(0))
        q /= q.sum(0)
    return (q[1] > 0.5).astype(labels.dtype)


def smoothers() -> Dict[str, Smoother]:
    out: Dict[str, Smoother] = {"slic majority": slic_majority}
    for weight, sigma in ((0.5, 0.1), (1.0, 0.1), (1.0, 0.05)):
        out[f"crf {weight:g}/{sigma:g}"] = (lambda im, y, w=weight, s=sigma: potts_mean_field(im, y, w, s))
    return out


def figures(pred: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    p, t = pred > 0, truth > 0
    total = p.sum() + t.sum()
    dice = 2 * float((p & t).sum()) / total if total else 1.0
    return {"accuracy": 100 * float((p == t).mean()), "dice": 100 * dice,
            "area": 100 * float(p.sum()) / max(float(t.sum()), 1.0)}


def load(path: Path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path))


def audit(dataset: Path, which: str, cases: int) -> Dict[str, Dict[str, float]]:
    """Mean figures of the ``which`` labels (``labelsTr`` or ``labelsTr_clean``) against the clean ones, raw and
    after every smoother, over the first ``cases`` training cases (sorted by name)."""
    files = sorted((dataset / which).glob("*.png"))[:cases]
    if not files:
        raise SystemExit(f"{dataset / which}: no PNG labels (a dataset written by `nnunet_gsd convert … --noise`?)")
    sums: Dict[str, Dict[str, float]] = {}
    for f in files:
        truth = load(dataset / "labelsTr_clean" / f.name)
        labels = load(f).astype(np.int64)
        if labels.max() > 1:
            raise SystemExit(f"{f}: labels above 1; this audit handles binary masks only")
        image = load(dataset / "imagesTr" / f"{f.stem}_0000.png").astype(np.float32) / 255.0
        image = image.transpose(2, 0, 1) if image.ndim == 3 else image[None]
        rows = {"labels": labels, **{name: fn(image, labels) for name, fn in smoothers().items()}}
        for name, pred in rows.items():
            for k, v in figures(pred, truth).items():
                sums.setdefault(name, {}).setdefault(k, 0.0)
                sums[name][k] += v / len(files)
    return sums


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, action="append", required=True,
                    help="an nnU-Net raw dataset with noisy labelsTr/ and labelsTr_clean/ (repeatable)")
    ap.add_argument("--cases", type=int, default=150, help="training cases per dataset (default 150)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "image-prior-audit")
    args = ap.parse_args(argv)
    command = command_line("bench/image_prior_audit.py", sys.argv[1:])
    lines = ["# Image-driven label smoothers against the clean labels", "", "Command:", "", f"    {command}", "",
             "Mean over cases of pixel accuracy, Dice and foreground area (% of the clean area) against the clean "
             "labels; `labels` = before smoothing.", "",
             "| dataset | labels | smoother | accuracy % | Dice % | area % |", "|---|---|---|---|---|---|"]
    result = {}
    jobs = [(d, w) for d in args.dataset for w in ("labelsTr", "labelsTr_clean")]
    if len(args.dataset) > 1:  # the clean labels are the same images for every noise: audit them once
        jobs = [(d, "labelsTr") for d in args.dataset] + [(args.dataset[0], "labelsTr_clean")]
    for dataset, which in jobs:
        kind = "noisy" if which == "labelsTr" else "clean"
        sums = audit(dataset, which, args.cases)
        result[f"{dataset.name}/{kind}"] = sums
        for name, fig in sums.items():
            line = (f"| {dataset.name} | {kind} | {name} | {fig['accuracy']:.2f} | {fig['dice']:.2f} | "
                    f"{fig['area']:.1f} |")
            print(line, flush=True)
            lines.append(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "cases": args.cases,
                                                         "results": result}, indent=1))


if __name__ == "__main__":
    main()
