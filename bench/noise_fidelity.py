"""Fidelity of the simulated noise to the paper's Table 3, on real masks of every dataset that has them.

For each dataset given and each preset (S_R, S_E, S_DE) it prints the mean Dice(nGT, GT) over the
masks, at the output size a conversion uses (2D 256², BraTS 128³), next to Table 3. It runs the
converter's own code (discovery, scan, split, preset resolution, the per-case random streams), so
with ``--seeds 1`` each row equals the ``dice_vs_clean`` that ``nnunet_gsd convert DATASET --size S
--noise PRESET`` records for the same masks. Kvasir uses the 700 training masks of the seeded split
(what a conversion measures); the other datasets every convertible mask given.

The data are the public releases (see docs/datasets.md), unpacked anywhere:

* Kvasir-SEG (Simula): https://datasets.simula.no/kvasir-seg/ → ``--kvasir .../Kvasir-SEG``
* BUS_UC (Kaggle ``orville/bus-uc-breast-ultrasound``) → ``--bu-suc .../BUS_UC``
* Shenzhen lung masks (Kaggle ``nikhilpandey360/chest-xray-masks-and-labels``) → ``--shenzhen ".../Lung Segmentation"``
* BraTS 2020 training data (CBICA / Kaggle ``awsaf49/brats20-dataset-training-validation``)
  → ``--brats .../MICCAI_BraTS2020_TrainingData``

    python bench/noise_fidelity.py --kvasir DIR --bu-suc DIR --shenzhen DIR --brats DIR [--seeds N] [--both]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from nnunet_gsd.dataset_conversion import brats2020, bu_suc, kvasir, noise, shenzhen
from nnunet_gsd.dataset_conversion.convert import noisy_label, resolve_noise, scan
from nnunet_gsd.dataset_conversion.model import ConvertOptions
from nnunet_gsd.dataset_conversion.resizing import resize_label, target_shape
from nnunet_gsd.dataset_conversion.splitting import TAG_NOISE, rng_for, seeded_split
from nnunet_gsd.errors import UserError

#: Table 3 of the paper: Dice(nGT, GT) in % for S_R, S_E, S_DE
TABLE3 = {"kvasir": (84.97, 88.61, 76.14), "shenzhen": (61.33, 74.68, 74.91), "bu_suc": (61.46, 74.91, 79.34),
          "brats2020": (86.03, 89.52, 82.99)}
MODULES = {"kvasir": kvasir, "bu_suc": bu_suc, "shenzhen": shenzhen, "brats2020": brats2020}
SIZES = {"kvasir": 256, "bu_suc": 256, "shenzhen": 256, "brats2020": 128}


def _masks(key: str, source: Path, seed: int) -> dict[str, np.ndarray]:
    disc = MODULES[key].discover(source)
    cases, problems, _ = scan(disc, show_progress=False)
    if problems:
        print(f"  ({key}: {len(problems)} case(s) skipped as a conversion would: "
              f"{', '.join(sorted(problems))})", file=sys.stderr)
    if key == "kvasir":
        cases, _, _ = seeded_split(cases, 0.7, seed)
    return {c.case_id: c.load().label for c in cases}


def measure(key: str, masks: dict[str, np.ndarray], preset: noise.NoisePreset, noise_at: object, size: int,
            first_seed: int, seeds: int) -> tuple[float, float, float, float]:
    """(mean Dice %, min and max over seeds of the per-seed mean, pixel noise rate %) at ``size``."""
    dim = next(iter(masks.values())).ndim
    per_seed, changed, total = [], 0, 0
    for seed in range(first_seed, first_seed + seeds):
        dices = []
        for cid, m in masks.items():
            clean = resize_label(m, target_shape(size, m.shape, dim))
            noisy = noisy_label(m, clean, preset, noise_at, dim, rng_for(seed, TAG_NOISE, cid))
            dices.append(noise.dice(noisy, clean))
            changed += int(np.count_nonzero(noisy != clean))
            total += clean.size
        per_seed.append(100 * float(np.mean(dices)))
    return float(np.mean(per_seed)), min(per_seed), max(per_seed), 100 * changed / total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvasir", type=Path, metavar="DIR", help="Kvasir-SEG (images/, masks/)")
    ap.add_argument("--bu-suc", type=Path, metavar="DIR", help="BUS_UC (Benign/, Malignant/, any nesting)")
    ap.add_argument("--shenzhen", type=Path, metavar="DIR", help="Shenzhen (CXR_png/, masks/)")
    ap.add_argument("--brats", type=Path, metavar="DIR", help="BraTS 2020 training cases (BraTS20_Training_*/)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split and first noise seed (default 0)")
    ap.add_argument("--seeds", type=int, default=1, help="average over this many noise seeds (default 1)")
    ap.add_argument("--both", action="store_true", help="also measure each preset at the other noise_at")
    ap.add_argument("--sde", nargs="*", default=[], metavar="K1-K2",
                    help="extra S_DE rows with these radii (calibration), e.g. 7-9 8-10")
    args = ap.parse_args(argv)
    sources = {"kvasir": args.kvasir, "bu_suc": args.bu_suc, "shenzhen": args.shenzhen, "brats2020": args.brats}
    if not any(sources.values()):
        ap.print_usage(sys.stderr)
        print("noise_fidelity.py: give at least one dataset folder; where to get them:\n"
              + "\n".join(line for line in (__doc__ or "").splitlines() if line.startswith("* ")), file=sys.stderr)
        return 2

    print("| dataset | masks | preset | notation | noise at | Dice(nGT, GT) % | Table 3 | diff | noise rate % | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, source in sources.items():
        if source is None:
            continue
        masks = _masks(key, source, args.seed)
        discovery = MODULES[key].discover(source)
        for i, name in enumerate(noise.PRESET_NAMES):
            base, default_at, _ = resolve_noise(discovery, ConvertOptions(1, noise=name, size=SIZES[key]))
            rows = [(name, None, default_at, True)]
            if args.both:
                rows += [(name, None, at, False) for at in ("source", "output") if at != default_at]
            if name == "S_DE":
                rows += [(name, tuple(int(k) for k in r.split("-")), default_at, False) for r in args.sde]
            for row_name, radii, at, is_default in rows:
                opts = ConvertOptions(1, noise=row_name, size=SIZES[key], noise_at=at)
                preset, at, _ = resolve_noise(discovery, opts) if radii is None else (base, at, 1.0)
                if radii is not None:
                    preset = replace(base, k1=radii[0], k2=radii[1])
                t0 = time.perf_counter()
                d, lo, hi, rate = measure(key, masks, preset, at, SIZES[key], args.seed, args.seeds)
                spread = f" ({lo:.1f}–{hi:.1f})" if args.seeds > 1 else ""
                tag = f"{at}{' (default)' if is_default else ''}"
                print(f"| {key} | {len(masks)} | {row_name} | {preset.describe()} | {tag} | {d:.2f}{spread} | "
                      f"{TABLE3[key][i]:.2f} | {d - TABLE3[key][i]:+.2f} | {rate:.2f} | "
                      f"{time.perf_counter() - t0:.0f} |", flush=True)
    print(f"\nDice at the output size (2D 256², BraTS 128³); seeds {args.seed}…{args.seed + args.seeds - 1} "
          "for the noise (the split always uses --seed).")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserError as e:
        raise SystemExit(f"noise_fidelity.py: error: {e}") from None
