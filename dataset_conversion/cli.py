"""``nnunet_gsd convert DATASET``: a public dataset (or a synthetic one) → nnU-Net raw format.

One sub-parser per dataset, so ``nnunet_gsd convert kvasir --help`` shows that dataset's expected
source tree and noise presets. The dataset modules only discover their files; the work is in
:mod:`.convert`. A module with ``GENERATED = True`` (synthetic) takes no ``--source`` and no
``--subset``, and its ``--size`` is the generated edge.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import signal
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from nnunet_gsd.errors import UserError

from . import noise as noise_mod
from .noise import MARKOV_DEFAULTS
from .resizing import MIN_SIZE

#: DATASET → (module, one-line summary), in the order of the paper's Table 2.
DATASETS: dict[str, tuple[str, str]] = {
    "kvasir": ("kvasir", "Kvasir-SEG polyps (RGB endoscopy), 700/300"),
    "shenzhen": ("shenzhen", "Shenzhen chest X-ray lungs, 453/113"),
    "bu_suc": ("bu_suc", "BU_SUC breast ultrasound tumours, 568/243"),
    "brats2020": ("brats2020", "BraTS2020 glioma (3D, 4 MRI sequences), 296/73"),
    "lidc": ("lidc", "LIDC 128x128 nodule crops, 4 raters, 1287/322"),
    "mmis2024": ("mmis2024", "MMIS-2024 NPC MRI (D-Persona h5), 4 raters"),
    "synthetic": ("synthetic", "generated blobs for demos and tests"),
}


def _fraction(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction: {text!r} (use e.g. 0.25 or 25%)") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (or 1%..100%), got {text!r}")
    return value


def int_at_least(minimum: int, example: str) -> Any:
    """An argparse type: a whole number ≥ ``minimum``; the error names the bound and an ``example``
    (argparse prefixes the option, e.g. ``argument --seed: must be at least 0, got -1 (e.g. --seed 0)``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r} (e.g. {example})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value} (e.g. {example})")
        return value
    return parse


def _noise_at(text: str) -> str | int:
    try:
        return noise_mod.parse_noise_at(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--noise-at ")) from None


def _preset_epilog(module: ModuleType) -> str:
    lines = ["expected source tree:", *("  " + line for line in module.EXPECTED_TREE.rstrip().splitlines())]
    family = getattr(getattr(module, "SPEC", None), "noise_presets", None)
    if family:
        presets = noise_mod.PRESETS[family]
        lines += ["", "noise presets (Table 3; default --noise-at in brackets):"]
        lines += [f"  {n:5s} {p.describe():18s} [{p.noise_at}]" for n, p in presets.items()]
        edge = next(iter(presets.values())).edge
        lines.append(f"  steps and radii are in pixels of {edge}-px images: applied at another size (--noise-at PX, "
                     f"or the output --size S) they are scaled by S/{edge}")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert", help="convert a public dataset (or generate a synthetic one) to nnU-Net raw format",
        description="Convert a dataset of the GSD-Net paper into an nnU-Net v2 raw dataset "
                    "($nnUNet_raw/DatasetNNN_Name) with simulated noisy (or multi-rater) training labels "
                    "and clean test labels. 'nnunet_gsd convert DATASET --help' shows the expected source "
                    "tree and the noise presets of each dataset.")
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET")
    for key, (module_name, summary) in DATASETS.items():
        module = importlib.import_module(f"{__package__}.{module_name}")
        dp = sub.add_parser(key, help=summary, description=(module.__doc__ or "").strip(),
                            epilog=_preset_epilog(module), formatter_class=argparse.RawDescriptionHelpFormatter)
        multi = getattr(getattr(module, "SPEC", None), "multi_rater", False)
        _add_common(dp, multi, getattr(module, "GENERATED", False))
        if hasattr(module, "add_arguments"):
            module.add_arguments(dp)
        dp.set_defaults(func=run, dataset_module=module)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return parser


def _add_common(p: argparse.ArgumentParser, multi: bool, generated: bool) -> None:
    if not generated:
        p.add_argument("--source", type=Path, required=True, metavar="PATH",
                       help="the downloaded dataset (see the expected tree below); never modified")
    p.add_argument("--id", dest="dataset_id", type=int, required=True, metavar="N",
                   help="nnU-Net dataset id (1-999): writes DatasetNNN_<Name>")
    p.add_argument("--noise", default="none", choices=("none", "S_R", "S_E", "S_DE", "markov"),
                   help="simulated training-label noise (docs/noise.md): S_R shrinks (under-annotation), S_E grows "
                        "(over-annotation), S_DE erodes or dilates, markov = M(T, P, V) with the --markov-* "
                        "values; clean labels go to labelsTr_clean/"
                        + (" (not offered for multi-rater sets)" if multi else "") + " (default none)")
    t, pref, var = MARKOV_DEFAULTS
    p.add_argument("--markov-steps", type=int, default=None, metavar="T",
                   help=f"--noise markov: step number T, in pixels of the size the noise is applied at (default {t})")
    p.add_argument("--markov-p", type=float, default=None, metavar="P",
                   help=f"--noise markov: Bernoulli preference P = probability a step grows the mask; the paper's "
                        f"Fig. 11 sweeps 0.2 (shrinks) to 0.8 (grows) (default {pref})")
    p.add_argument("--markov-v", type=float, default=None, metavar="V",
                   help=f"--noise markov: Bernoulli variance V = flip probability of each boundary pixel per step "
                        f"(default {var})")
    p.add_argument("--noise-at", type=_noise_at, default=None, metavar="source|output|PX",
                   help="apply the noise at the source resolution, at the output size, or at PX per spatial axis "
                        "(the clean mask is resized to PX, perturbed, then resized to --size); named presets are "
                        "scaled to PX or the output size, --noise markov never is (default: the preset's, chosen "
                        "to reproduce Table 3; markov: output)")
    if multi:
        p.add_argument("--raters", default="sample", metavar="A1..An|sample|majority|staple|union|intersection",
                       help="the training labels in labelsTr/: one rater's (A1, A2, …); 'sample': one rater drawn "
                            "per image with the seed, among the raters whose mask is not empty (the paper; "
                            "default); or a consensus of all raters: 'majority' (ties of 2 of 4 are foreground), "
                            "'staple' (SimpleITK's STAPLE, probability >= 0.5), 'union', 'intersection'. Every "
                            "rater's labels are kept in labelsTr_<rater>/ and labelsTs_<rater>/; labelsTs/ = "
                            "majority vote")
    # numpy seeds are whole numbers >= 0: a negative one would stop the conversion half-way with a traceback
    p.add_argument("--seed", type=int_at_least(0, "--seed 0"), default=0,
                   help="seed of split, subset, rater sampling and noise, >= 0 (default 0)")
    p.add_argument("--size", type=int_at_least(MIN_SIZE, "--size 64"), default=64 if generated else None, metavar="PX",
                   help="generated image edge (default 64)" if generated else
                   "resize to PX per spatial axis (images bilinear, masks nearest); the paper uses 256 "
                   "(LIDC/MMIS 128, BraTS 128). Default: native size, as nnU-Net prefers")
    if not generated:
        p.add_argument("--subset", type=_fraction, default=1.0, metavar="FRACTION",
                       help="keep this fraction of the training images (e.g. 0.25 or 25%%; nested for one seed; "
                            "default 1)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="raw root to write into instead of $nnUNet_raw (or the DatasetNNN_Name folder itself)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset of the same id and name (a dataset of another name with this "
                        "id is never removed: choose another --id)")
    p.add_argument("--preview", action="store_true",
                   help="also write gsd_preview.png (image, clean and noisy contours) into the dataset folder")
    if not generated:
        p.add_argument("--strict", action="store_true",
                       help="refuse the conversion when any source case has a problem (missing partner, "
                            "unreadable file, size mismatch, unexpected values, empty mask); by default such "
                            "cases are skipped, listed, and recorded in dataset.json")


def run(args: argparse.Namespace) -> int:
    """The ``convert DATASET`` command; Ctrl-C or SIGTERM end it with one line and nothing written."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"nnunet_gsd convert {args.dataset}: interrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through convert(), which removes its partial folder


def _run(args: argparse.Namespace) -> int:
    from .convert import convert
    from .model import ConvertOptions
    module: ModuleType = args.dataset_module
    extra = {name: getattr(args, name) for name in inspect.signature(module.discover).parameters
             if name not in ("source", "seed", "size") and hasattr(args, name)}
    start = time.perf_counter()
    if getattr(module, "GENERATED", False):
        disc = module.discover(size=args.size, seed=args.seed, **extra)
        size = None
    else:
        if not args.source.exists():
            raise UserError(f"--source {args.source} does not exist")
        disc = module.discover(args.source, **extra)
        size = args.size
    given = (args.markov_steps, args.markov_p, args.markov_v)
    markov = None if given == (None, None, None) else \
        tuple(d if g is None else g for g, d in zip(given, MARKOV_DEFAULTS))
    opts = ConvertOptions(dataset_id=args.dataset_id, out=args.out, noise=args.noise, noise_at=args.noise_at,
                          markov=markov,  # type: ignore[arg-type]
                          raters=getattr(args, "raters", None), seed=args.seed, size=size,
                          subset=getattr(args, "subset", 1.0), overwrite=args.overwrite, preview=args.preview,
                          strict=getattr(args, "strict", False))
    target = convert(disc, opts)
    _summary(target, time.perf_counter() - start)
    return 0


def _summary(target: Path, seconds: float) -> None:
    from .provenance import read
    prov = read(target)
    split = prov.split or {}
    parts = [f"wrote {target}", f"{len(split.get('train', []))} train / {len(split.get('test', []))} test"]
    if prov.skipped:
        parts.append(f"{len(prov.skipped)} skipped")
    if prov.repaired:
        parts.append(f"{len(prov.repaired)} repaired")
    label_maps = (prov.mask_values or {}).get("label_value_masks")
    if label_maps:
        parts.append(f"{len(label_maps)} label-value mask(s)")
    if prov.folds:
        parts.append(f"{prov.folds['n_folds']} folds by patient ({prov.folds['file']})")
    if prov.noise:
        parts.append(f"{prov.noise_summary()}: Dice(nGT, GT) {100 * prov.dice_vs_clean:.2f}, "
                     f"pixel noise rate {100 * prov.pixel_noise_rate:.2f} %")
    if prov.raters:
        parts.append(f"raters: {prov.raters['mode']}")
    parts.append(f"tau {prov.tau:.4f}")
    parts.append(f"{seconds:.1f} s")
    print("; ".join(parts))
