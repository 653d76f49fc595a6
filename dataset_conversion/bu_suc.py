"""BU_SUC breast ultrasound (Iqbal & Sharif 2024, Kaggle orville/bus-uc-breast-ultrasound); 568/243.

Benign and malignant tumours are merged into one label; the class is kept in the case id
(``benign_…``, ``malignant_…``), which also keeps equal file names of the two folders apart.
"""
from __future__ import annotations

from pathlib import Path

from dataset_conversion.core import (Case, Discovery, DatasetSpec, list_files, missing_tree_error, paired_2d_case,
                                     pair_by_stem, safe_case_id)

EXPECTED_TREE = """\
SOURCE/                      (or SOURCE/BUS_UC/, SOURCE/BUS_UC/BUS_UC/)
    Benign/images/*.png      Benign/masks/*.png      (same file names)
    Malignant/images/*.png   Malignant/masks/*.png
    (folder names are matched case-insensitively; masks {0, 255} or {0, 1})
"""

SPEC = DatasetSpec(
    key="bu_suc", name="BUSUC", dim=2, file_ending=".png", paper_split=(568, 243),
    channel_names={"0": "US"}, labels={"background": 0, "tumour": 1},
    description="BU_SUC breast ultrasound tumour segmentation, benign+malignant merged (GSD-Net conversion)",
    reference="Iqbal & Sharif 2024; https://www.kaggle.com/datasets/orville/bus-uc-breast-ultrasound",
)

_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _child(folder: Path, name: str) -> Path | None:
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name), None) \
        if folder.is_dir() else None


def discover(source: Path) -> Discovery:
    root = next((r for r in (source, source / "BUS_UC", source / "BUS_UC" / "BUS_UC")
                 if _child(r, "benign") or _child(r, "malignant")), None)
    if root is None:
        raise missing_tree_error("no Benign/ or Malignant/ folder", source, EXPECTED_TREE)
    cases: list[Case] = []
    for cls in ("benign", "malignant"):
        folder = _child(root, cls)
        if folder is None:
            raise missing_tree_error(f"no {cls.capitalize()}/ folder", root, EXPECTED_TREE)
        img_dir, mask_dir = _child(folder, "images"), _child(folder, "masks")
        if img_dir is None or mask_dir is None:
            raise missing_tree_error(f"{folder} lacks images/ or masks/", root, EXPECTED_TREE)
        pairs, _ = pair_by_stem(list_files(img_dir, _SUFFIXES), list_files(mask_dir, _SUFFIXES))
        cases += [paired_2d_case(safe_case_id(f"{cls}_{im.stem}"), im, m, channels=1, mask_rule="strict")
                  for im, m in pairs]
    return Discovery(spec=SPEC, cases=cases, source=str(root.absolute()))
