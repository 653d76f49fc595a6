"""``nnunet_gsd preview``: a PNG grid of a converted dataset's training cases — image, clean
contour (red), noisy contour (green) — as in the paper's Fig. 5, to see the noise before training.

Rows are cases (drawn with the seed); 3D cases show the axial slice with the most foreground.
Without ``labelsTr_clean/`` (multi-rater sets, or no noise) the middle column shows the training
label and the right one stays empty.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_gsd.errors import UserError

from .provenance import from_dataset_json


def _read(path: Path) -> np.ndarray:
    if path.name.endswith(".nii.gz"):
        import SimpleITK as sitk
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im)


def _resolve(dataset: str) -> Path:
    p = Path(dataset)
    if p.is_dir():
        return p
    if dataset.isdigit() and os.environ.get("nnUNet_raw"):
        hits = sorted(Path(os.environ["nnUNet_raw"]).glob(f"Dataset{int(dataset):03d}_*"))
        if hits:
            return hits[0]
    raise UserError(f"no dataset folder {dataset!r} (give a path, or an id found in $nnUNet_raw)")


def _slice(img: np.ndarray, clean: np.ndarray, noisy: np.ndarray | None, is_3d: bool) -> tuple[Any, ...]:
    """Reduce a 3D case to the axial slice with the most foreground; 2D passes through."""
    if not is_3d:
        return img, clean, noisy
    z = int(np.argmax((clean > 0).reshape(clean.shape[0], -1).sum(1)))
    return img[z], clean[z], None if noisy is None else noisy[z]


def write_preview(dataset_dir: Path, out_png: Path, n_cases: int = 4, seed: int = 0,
                  cases: list[str] | None = None) -> Path:
    """Write the grid for ``dataset_dir`` to ``out_png``; returns ``out_png``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset_dir = Path(dataset_dir)
    meta: dict[str, Any] = json.loads((dataset_dir / "dataset.json").read_text())
    ending = meta["file_ending"]
    labels = sorted((dataset_dir / "labelsTr").glob(f"*{ending}"))
    if not labels:
        raise UserError(f"{dataset_dir}/labelsTr holds no {ending} labels")
    ids = [p.name[: -len(ending)] for p in labels]
    if cases:
        missing = [c for c in cases if c not in ids]
        if missing:
            raise UserError(f"case(s) {missing} not in {dataset_dir}/labelsTr")
        chosen = cases
    else:
        pick = np.random.default_rng(seed).permutation(len(ids))[: n_cases]
        chosen = [ids[i] for i in sorted(pick)]
    prov = from_dataset_json(meta, str(dataset_dir / "dataset.json"))
    clean_dir = dataset_dir / (prov.clean_labels or "labelsTr_clean")
    has_clean = clean_dir.is_dir()
    noise = prov.noise or {}
    fig, axes = plt.subplots(len(chosen), 3, figsize=(9, 3 * len(chosen)), squeeze=False)
    for row, cid in zip(axes, chosen):
        img = _read(dataset_dir / "imagesTr" / f"{cid}_0000{ending}")  # first channel (RGB PNG: all three)
        noisy = _read(dataset_dir / "labelsTr" / f"{cid}{ending}")
        clean = _read(clean_dir / f"{cid}{ending}") if has_clean else noisy
        img, clean, noisy = _slice(img, clean, noisy if has_clean else None, ending != ".png" and img.ndim == 3)
        img = np.squeeze(img)
        disp = img.astype(np.float32)
        lo, hi = np.percentile(disp, (1, 99))
        disp = np.clip((disp - lo) / max(hi - lo, 1e-6), 0, 1)
        cmap = None if disp.ndim == 3 else "gray"
        titles = ["image", "clean (red)" if has_clean else "training label (red)",
                  f"noisy {noise.get('preset', '')} (green)" if has_clean else ""]
        for ax, title in zip(row, titles):
            ax.imshow(disp, cmap=cmap)
            ax.set_title(f"{cid}: {title}" if title == "image" else title, fontsize=8)
            ax.axis("off")
        noisy_map = None if noisy is None else np.squeeze(noisy)
        for ax, lab, colour in ((row[1], np.squeeze(clean), "red"), (row[2], noisy_map, "lime")):
            if lab is not None and np.any(lab) and not np.all(lab):
                ax.contour(lab > 0, levels=[0.5], colors=colour, linewidths=1)
        if has_clean and noisy is not None and np.any(clean):
            row[2].contour(np.squeeze(clean) > 0, levels=[0.5], colors="red", linewidths=0.6, alpha=0.6)
    if noise:
        fig.suptitle(f"{meta.get('name', '')}: {prov.noise_summary()}, "
                     f"Dice(nGT, GT) {100 * (prov.dice_vs_clean or 0):.1f}",
                     fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("preview", help="PNG grid of image, clean and noisy contours of a converted dataset",
                              description=(__doc__ or "").strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="dataset folder, or its id in $nnUNet_raw")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="PNG",
                   help="output file (default: DATASET/gsd_preview.png)")
    p.add_argument("-n", "--num-cases", type=int, default=4, help="number of training cases (rows) (default 4)")
    p.add_argument("--cases", nargs="+", default=None, metavar="ID", help="show these case ids instead")
    p.add_argument("--seed", type=int, default=0, help="seed of the case choice (default 0)")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    folder = _resolve(args.dataset)
    out = write_preview(folder, args.output or folder / "gsd_preview.png", args.num_cases, args.seed, args.cases)
    print(f"wrote {out}")
    return 0
