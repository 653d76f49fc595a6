"""``nnunet_gsd``: the umbrella command (``nnunet_gsd --help``).

Each sub-command lives in its own module, which exposes ``add_parser(subparsers)``; the parser it
adds sets ``func`` (called with the parsed namespace, returns an exit code). Modules are imported
lazily only when their sub-command is registered, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_gsd.errors import UserError

#: (module, description) of every sub-command, in the order ``--help`` lists them.
SUBCOMMANDS = [
    ("nnunet_gsd.tools.demo", "the whole pipeline on a small generated noisy dataset (CPU, minutes)"),
    ("nnunet_gsd.dataset_conversion.cli", "convert a public dataset (or generate a synthetic one) to nnU-Net raw format"),
    ("nnunet_gsd.dataset_conversion.preview", "PNG grid of image, clean and noisy contours of a converted dataset"),
    ("nnunet_gsd.tools.evaluate_raters", "Dice of predictions against every rater's test labels"),
    ("nnunet_gsd.tools.last_k", "the paper's protocol: predict with the last K epochs' weights, mean ± std Dice"),
    ("nnunet_gsd.tools.search_tau", "choose the forget rate tau by short trainings (paper Eq. 20)"),
    ("nnunet_gsd.tools.plans_variant", "copy nnU-Net plans with another batch size (GPU memory, benchmarks)"),
    ("nnunet_gsd.tools.overlay", "PNG overlays of image, ground-truth and prediction contours"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet_gsd",
        description="GSD-Net for nnU-Net v2: dataset conversion with reproducible label noise, and analysis "
                    "tools. Training and prediction use nnU-Net's own commands with -tr nnUNetTrainerGSD.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name, _ in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # sub-command not built yet
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"nnunet_gsd {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
