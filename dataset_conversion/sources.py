"""Finding and pairing a download's files: the part of a dataset module that is the same for all of them.

Real downloads nest their folders one or two levels deeper than the documentation shows (BUS_UC's
``BUS_UC/BUS_UC/BUS_UC/``, Kaggle's ``Lung Segmentation/``), so the finders accept a list of layouts.
Files without a partner are not an error here: they come back as :class:`CaseProblem`\\ s for the scan
to report together with everything else.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from nnunet_gsd.errors import UserError

from .model import CaseProblem


def missing_tree_error(what: str, source: Path, expected_tree: str) -> UserError:
    return UserError(f"{what} in {source}. Expected a tree like:\n{expected_tree.rstrip()}")


def find_dir(source: Path, candidates: Sequence[str], expected_tree: str, what: str) -> Path:
    """First existing ``source/<candidate>`` (candidates may contain ``/``; ``.`` = source)."""
    for c in candidates:
        p = source / c
        if p.is_dir():
            return p
    raise missing_tree_error(f"no {what} folder ({' or '.join(candidates)})", source, expected_tree)


def child_dir(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name``, matched case-insensitively (``Benign`` = ``benign``)."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)


def list_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    sfx = tuple(s.lower() for s in suffixes)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(sfx)
                  and not p.name.startswith("."))


def stem(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return p.stem


def pair_by_stem(images: list[Path], masks: list[Path], case_id: Callable[[Path], str],
                 mask_stem: Callable[[str], str] = lambda s: s,
                 ) -> tuple[list[tuple[Path, Path]], list[Path], list[tuple[str, CaseProblem]]]:
    """Pair image and mask files by stem (``mask_stem`` maps a mask stem to its image stem).

    Returns the pairs and the images without a mask (both in the order of ``images``), and the
    problems: one ``missing partner`` per mask without an image (keyed by the case id its image would
    have had), one ``duplicate name`` per stem that two images or two masks share (``0002.jpg`` and
    ``0002.png``: which file is meant cannot be told, so neither is converted).
    """
    image_groups = _by_stem(images, stem)
    mask_groups = _by_stem(masks, lambda m: mask_stem(stem(m)))
    pairs, unlabelled, problems = [], [], []
    for s, ims in image_groups.items():
        ms = mask_groups.pop(s, [])
        if len(ims) > 1 or len(ms) > 1:
            problems.append((case_id(ims[0]), duplicate_problem(ims + ms, f"the same name {s!r}")))
        elif ms:
            pairs.append((ims[0], ms[0]))
        else:
            unlabelled.append(ims[0])
    for s, ms in sorted(mask_groups.items(), key=lambda kv: kv[1][0]):
        if len(ms) > 1:
            problems.append((case_id(ms[0]), duplicate_problem(ms, f"the same name {s!r} and no image")))
        else:
            problems.append((case_id(ms[0]), CaseProblem("missing partner", ms,
                                                         f"mask {ms[0]} has no image with the same name")))
    return pairs, unlabelled, problems


def _by_stem(files: list[Path], key: Callable[[Path], str]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(key(f), []).append(f)
    return groups


def duplicate_problem(files: Sequence[Path | str], what: str) -> CaseProblem:
    """``duplicate name``: ``files`` share ``what`` (a stem, a case id); one line naming them all."""
    names = [str(f) for f in files]
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    return CaseProblem("duplicate name", names, f"{listed} have {what}: remove or rename all but one")


def unlabelled_problems(images: list[Path], case_id: Callable[[Path], str]) -> list[tuple[str, CaseProblem]]:
    """``missing partner`` problems for images that should have had a mask."""
    return [(case_id(im), CaseProblem("missing partner", [im], f"image {im} has no mask with the same name"))
            for im in images]


def safe_case_id(name: str) -> str:
    """nnU-Net case ids must not confuse its ``_0000`` channel suffix or the file system."""
    cid = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return cid or "case"
