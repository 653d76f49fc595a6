"""BU_SUC breast ultrasound (Iqbal & Sharif 2024, Kaggle orville/bus-uc-breast-ultrasound); 568/243.

Benign and malignant tumours are merged into one label; the class is kept in the case id
(``benign_…``, ``malignant_…``), which also keeps equal file names of the two folders apart. The
release's masks are anti-aliased RGB PNGs (binarised at > 127); its known defects — a mask one pixel
taller than its image (``Benign/0319``, repaired), an RGBA image whose mask has another size
(``Malignant/0049``) and an all-zero mask (``Malignant/00476``) — are skipped or repaired and recorded.
"""
from __future__ import annotations

from pathlib import Path

from .model import DatasetSpec, Discovery
from .reading import paired_2d_case
from .sources import (
    child_dir,
    list_files,
    missing_tree_error,
    pair_by_stem,
    safe_case_id,
    unlabelled_problems,
)

EXPECTED_TREE = """\
SOURCE/                      (or SOURCE/BUS_UC/, …/BUS_UC/BUS_UC/, …/BUS_UC/BUS_UC/BUS_UC/ as Kaggle unpacks it)
    Benign/images/*.png      Benign/masks/*.png      (same file names)
    Malignant/images/*.png   Malignant/masks/*.png
    (folder names are matched case-insensitively; masks grey or RGB, binarised at > 127)
"""

SPEC = DatasetSpec(
    key="bu_suc", name="BUSUC", dim=2, file_ending=".png", paper_split=(568, 243),
    channel_names={"0": "US"}, labels={"background": 0, "tumour": 1},
    description="BU_SUC breast ultrasound tumour segmentation, benign+malignant merged (GSD-Net conversion)",
    reference="Iqbal & Sharif 2024; https://www.kaggle.com/datasets/orville/bus-uc-breast-ultrasound",
    noise_presets="bu_suc", release_count=811,
)

_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_LAYOUTS = (".", "BUS_UC", "BUS_UC/BUS_UC", "BUS_UC/BUS_UC/BUS_UC")


def discover(source: Path) -> Discovery:
    root = next((source / layout for layout in _LAYOUTS
                 if child_dir(source / layout, "benign") or child_dir(source / layout, "malignant")), None)
    if root is None:
        raise missing_tree_error("no Benign/ or Malignant/ folder", source, EXPECTED_TREE)
    cases, problems = [], []
    for cls in ("benign", "malignant"):
        folder = child_dir(root, cls)
        if folder is None:
            raise missing_tree_error(f"no {cls.capitalize()}/ folder", root, EXPECTED_TREE)
        img_dir, mask_dir = child_dir(folder, "images"), child_dir(folder, "masks")
        if img_dir is None or mask_dir is None:
            raise missing_tree_error(f"{folder} lacks images/ or masks/", root, EXPECTED_TREE)

        def case_id(path: Path, cls: str = cls) -> str:
            return safe_case_id(f"{cls}_{path.stem}")

        pairs, unlabelled, orphans = pair_by_stem(list_files(img_dir, _SUFFIXES), list_files(mask_dir, _SUFFIXES),
                                                  case_id)
        problems += orphans + unlabelled_problems(unlabelled, case_id)
        cases += [paired_2d_case(case_id(im), im, m, channels=1) for im, m in pairs]
    return Discovery(spec=SPEC, cases=cases, source=str(root.absolute()),
                     problem_ids=[cid for cid, _ in problems], problems=[p for _, p in problems])
