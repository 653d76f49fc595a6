"""Fidelity of the simulated noise to the paper's Table 3 on the real Kvasir-SEG masks.

For each preset (S_R, S_E, S_DE) and each place the noise can be applied (source resolution, then
resize; or at the output size), prints the mean Dice(nGT, GT) at 256² over the masks, next to
Table 3. The per-case random streams are those of ``nnunet_gsd convert kvasir`` (same seed, same
case ids), so the "default" rows equal the ``dice_vs_clean`` that a conversion records.

    .venv/bin/python bench/noise_fidelity.py --source PATH/Kvasir-SEG --split train

Kvasir-SEG is downloaded by you: docs/datasets.md says where from and which folder to pass.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dataset_conversion import core, kvasir, noise
from nnunet_gsd.errors import UserError

TABLE3 = {"S_R": 84.97, "S_E": 88.61, "S_DE": 76.14}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True,
                    help="your Kvasir-SEG download, the folder holding images/ and masks/ (docs/datasets.md)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("train", "all"), default="train",
                    help="the 700 training masks of the seeded split (what a conversion measures) or all 1000")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N masks (quick look)")
    ap.add_argument("--both", action="store_true", help="also measure the non-default noise_at of each preset")
    args = ap.parse_args(argv)

    disc = kvasir.discover(args.source)
    cases = disc.cases
    if args.split == "train":
        cases, _, _ = core.seeded_split(cases, 0.7, args.seed)
    cases = cases[: args.limit] if args.limit else cases
    # Reading only the masks: the images play no part in the noise.
    masks = {}
    for c in cases:
        path = Path(c.source).parent.parent / "masks" / Path(c.source).name
        masks[c.case_id] = core.binary_mask(core.to_grey(core.read_2d(path)), path, "threshold")
    shape = (args.size, args.size)
    print(f"Kvasir-SEG, {len(masks)} masks ({args.split}), Dice(nGT, GT) at {args.size}², seed {args.seed}")
    print(f"{'preset':6s} {'notation':18s} {'noise_at':8s} {'Dice %':>7s} {'Table 3':>8s} {'diff':>6s} "
          f"{'noise rate %':>12s} {'s':>6s}")
    for name in noise.PRESET_NAMES:
        preset = noise.PRESETS["kvasir"][name]
        places = [preset.noise_at] + ([p for p in ("source", "output") if p != preset.noise_at] if args.both else [])
        for at in places:
            t0 = time.perf_counter()
            dices, changed, total = [], 0, 0
            for cid, m in masks.items():
                rng = core.rng_for(args.seed, core._TAG_NOISE, cid)
                clean = core.resize_label(m, shape)
                if at == "source":
                    noisy = core.resize_label(noise.apply_noise(m, preset, rng), shape)
                else:
                    noisy = noise.apply_noise(clean, preset, rng)
                dices.append(noise.dice(noisy, clean))
                changed += int(np.count_nonzero(noisy != clean))
                total += clean.size
            d = 100 * float(np.mean(dices))
            tag = at + ("*" if at == preset.noise_at else "")
            print(f"{name:6s} {preset.describe():18s} {tag:8s} {d:7.2f} {TABLE3[name]:8.2f} {d - TABLE3[name]:+6.2f} "
                  f"{100 * changed / total:12.2f} {time.perf_counter() - t0:6.1f}")
    print("* = the preset's default (what `nnunet_gsd convert kvasir` uses)")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserError as e:
        raise SystemExit(f"noise_fidelity.py: error: {e}") from None
