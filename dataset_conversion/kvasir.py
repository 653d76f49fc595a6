"""Kvasir-SEG (Jha et al. 2019): 1000 RGB colonoscopy images and JPEG polyp masks; 700/300 split."""
from __future__ import annotations

from pathlib import Path

from .model import DatasetSpec, Discovery
from .reading import paired_2d_case
from .sources import (
    find_dir,
    list_files,
    pair_by_stem,
    safe_case_id,
    unlabelled_problems,
)

EXPECTED_TREE = """\
Kvasir-SEG/                  (--source points here, or at its parent)
    images/cju0qkwl35piu0993l0dewei2.jpg …
    masks/cju0qkwl35piu0993l0dewei2.jpg …   (same file names; JPEG masks are binarised at > 127)
    kavsir_bboxes.json       (optional, ignored)
"""

SPEC = DatasetSpec(
    key="kvasir", name="KvasirSEG", dim=2, file_ending=".png", paper_split=(700, 300),
    channel_names={"0": "R", "1": "G", "2": "B"}, labels={"background": 0, "polyp": 1},
    description="Kvasir-SEG polyp segmentation (GSD-Net conversion)",
    reference="Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020",
    licence="open access for research and education (cite Jha et al.)",
    noise_presets="kvasir", release_count=1000,
)

_SUFFIXES = (".jpg", ".jpeg", ".png")


def _case_id(path: Path) -> str:
    return safe_case_id(path.stem)


def discover(source: Path) -> Discovery:
    root = find_dir(source, ["images", "Kvasir-SEG/images", "Kvasir-SEG/Kvasir-SEG/images"], EXPECTED_TREE,
                    "images").parent
    images = list_files(root / "images", _SUFFIXES)
    masks = list_files(find_dir(root, ["masks"], EXPECTED_TREE, "masks/"), _SUFFIXES)
    pairs, unlabelled, orphans = pair_by_stem(images, masks, _case_id)
    problems = orphans + unlabelled_problems(unlabelled, _case_id)
    cases = [paired_2d_case(_case_id(im), im, m, channels=3) for im, m in pairs]
    return Discovery(spec=SPEC, cases=cases, source=str(root.absolute()),
                     problem_ids=[cid for cid, _ in problems], problems=[p for _, p in problems])
