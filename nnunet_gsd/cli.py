"""``nnunet_gsd``: the umbrella command (``nnunet_gsd --help``).

Each sub-command lives in its own module, which exposes ``add_parser(subparsers)``; the parser it
adds sets ``func`` (called with the parsed namespace, returns an exit code). Sub-command modules keep
their heavy imports (torch, nnU-Net) inside functions, so ``--help`` stays fast. A module that fails to
import fails the command loudly: a broken sub-command must never vanish from ``--help``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from nnunet_gsd.errors import UserError

#: The module of every sub-command, in the order ``--help`` lists them (each writes its own help line).
SUBCOMMANDS = [
    "nnunet_gsd.tools.demo",
    "nnunet_gsd.dataset_conversion.cli",
    "nnunet_gsd.dataset_conversion.preview",
    "nnunet_gsd.tools.evaluate_raters",
    "nnunet_gsd.tools.last_k",
    "nnunet_gsd.tools.search_tau",
    "nnunet_gsd.tools.plans_variant",
    "nnunet_gsd.tools.boundary_offset",
    "nnunet_gsd.tools.overlay",
    "nnunet_gsd.tools.audit",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet_gsd",
        description="GSD-Net for nnU-Net v2: dataset conversion with reproducible label noise, and analysis "
                    "tools. Training and prediction use nnU-Net's own commands with -tr nnUNetTrainerGSD.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(sub)
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
