"""Shenzhen chest X-ray (NLM) with the public lung masks (Stirenko et al. 2018); 453/113 split.

The masks cover 566 of the 662 Shenzhen images; images without a mask are skipped (and counted in
the provenance notes). When the folder also holds Montgomery images (``MCUCXR_*``, as in the
Kaggle "Chest X-ray masks and labels" bundle), only the Shenzhen ones (``CHNCXR_*``) are used; the
bundle's ``test/`` folder (images without masks) is not read. Downscaled copies of the masks are
anti-aliased: they are binarised at > 127 and the soft pixels counted.
"""
from __future__ import annotations

from pathlib import Path

from .model import DatasetSpec, Discovery
from .reading import paired_2d_case
from .sources import find_dir, list_files, pair_by_stem, safe_case_id

EXPECTED_TREE = """\
SOURCE/                      (or SOURCE/Lung Segmentation/, SOURCE/data/, as the Kaggle bundle unpacks)
    CXR_png/CHNCXR_0001_0.png …           grey (or grey-as-RGB) chest X-rays
    masks/CHNCXR_0001_0_mask.png …        (or mask/; also accepted: the same stem without _mask)
                                          lung masks, binarised at > 127
    test/ …                               (ignored: no masks)
"""

SPEC = DatasetSpec(
    key="shenzhen", name="ShenzhenCXR", dim=2, file_ending=".png", paper_split=(453, 113),
    channel_names={"0": "X-ray"}, labels={"background": 0, "lungs": 1},
    description="Shenzhen chest X-ray lung segmentation (GSD-Net conversion)",
    reference="Jaeger et al. 2014; Candemir et al. 2013; masks: Stirenko et al. 2018",
    noise_presets="shenzhen", release_count=566,
)

_LAYOUTS = [".", "Lung Segmentation", "data", "Lung Segmentation/Lung Segmentation"]


def _mask_stem(stem: str) -> str:
    return stem.removesuffix("_mask")


def _case_id(path: Path) -> str:
    return safe_case_id(_mask_stem(path.stem))


def discover(source: Path) -> Discovery:
    root = next((source / layout for layout in _LAYOUTS if (source / layout / "CXR_png").is_dir()), None)
    if root is None:
        root = find_dir(source, [layout + "/CXR_png" for layout in _LAYOUTS], EXPECTED_TREE, "CXR_png").parent
    images = list_files(root / "CXR_png", (".png",))
    masks = list_files(find_dir(root, ["masks", "mask"], EXPECTED_TREE, "masks"), (".png",))
    notes = []
    if any(p.name.startswith("CHNCXR_") for p in images):
        n_before = len(images), len(masks)
        images = [p for p in images if p.name.startswith("CHNCXR_")]
        masks = [p for p in masks if p.name.startswith("CHNCXR_")]
        if (len(images), len(masks)) != n_before:
            notes.append(f"kept only Shenzhen (CHNCXR_*) files: {len(images)} of {n_before[0]} images, "
                         f"{len(masks)} of {n_before[1]} masks")
    pairs, unlabelled, orphans = pair_by_stem(images, masks, _case_id, mask_stem=_mask_stem)
    if unlabelled:
        notes.append(f"skipped {len(unlabelled)} image(s) without a lung mask (the release masks 566 of 662)")
    cases = [paired_2d_case(_case_id(im), im, m, channels=1) for im, m in pairs]
    return Discovery(spec=SPEC, cases=cases, notes=notes, source=str(root.absolute()),
                     problem_ids=[cid for cid, _ in orphans], problems=[p for _, p in orphans])
