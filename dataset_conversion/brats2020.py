"""BraTS2020 training data (Menze et al. 2015; Bakas et al.): 369 cases, four MRI sequences; 296/73.

Tumour sub-regions (labels 1, 2, 4) are merged into one tumour label. The release names the
segmentation of case 355 ``W39_1998.09.19_Segm.nii``: any single ``*seg*``/``*Segm*`` NIfTI in a
case folder is accepted as its segmentation. Images keep their voxel spacing (1 mm), or the
spacing implied by ``--size``; origin and direction are reset (images and labels stay aligned).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .model import Case, CaseProblem, CaseReport, DatasetSpec, Discovery, Sample
from .reading import check_same_shape, check_values, nifti_shape, read_nifti
from .sources import missing_tree_error, safe_case_id

EXPECTED_TREE = """\
SOURCE/                      (or SOURCE/MICCAI_BraTS2020_TrainingData/, SOURCE/BraTS2020_TrainingData/…)
    BraTS20_Training_001/
        BraTS20_Training_001_t1.nii.gz   _t1ce.nii.gz   _t2.nii.gz   _flair.nii.gz   (.nii also accepted)
        BraTS20_Training_001_seg.nii.gz                 labels {0, 1, 2, 4}
    BraTS20_Training_002/ …
"""

MODALITIES = ("t1", "t1ce", "t2", "flair")

SPEC = DatasetSpec(
    key="brats2020", name="BraTS2020", dim=3, file_ending=".nii.gz", paper_split=(296, 73),
    channel_names={"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}, labels={"background": 0, "tumour": 1},
    description="BraTS2020 glioma, all tumour sub-regions merged (GSD-Net conversion)",
    reference="Menze et al. 2015; Bakas et al. 2017, 2018",
    licence="BraTS data usage agreement",
    noise_presets="brats2020", release_count=369,
)

_LAYOUTS = [".", "MICCAI_BraTS2020_TrainingData", "BraTS2020_TrainingData",
            "BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData"]


def _nifti(folder: Path, suffix: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        hits = sorted(folder.glob(f"*_{suffix}{ext}"))
        if hits:
            return hits[0]
    return None


def _segmentation(folder: Path) -> Path:
    found = _nifti(folder, "seg")
    if found:
        return found
    candidates = [p for p in sorted(folder.iterdir()) if p.name.endswith((".nii", ".nii.gz"))
                  and "seg" in p.name.lower() and not any(p.name.lower().endswith(f"_{m}{e}")
                                                          for m in MODALITIES for e in (".nii", ".nii.gz"))]
    if len(candidates) != 1:
        raise CaseProblem("missing partner", [folder], f"{folder}: no segmentation file (*_seg.nii.gz)"
                          + (f"; ambiguous: {[p.name for p in candidates]}" if candidates else ""))
    return candidates[0]


def _case(folder: Path) -> Case:
    paths = []
    for m in MODALITIES:
        p = _nifti(folder, m)
        if p is None:
            raise CaseProblem("missing partner", [folder], f"{folder}: missing the {m} image (*_{m}.nii.gz)")
        paths.append(p)
    seg_path = _segmentation(folder)

    def read_seg(shape: tuple[int, ...]) -> np.ndarray:
        seg, _ = read_nifti(seg_path)
        check_same_shape(shape, seg.shape, paths[0], seg_path)
        check_values(seg, (0, 1, 2, 4), seg_path)
        return (seg > 0).astype(np.uint8)

    def check() -> CaseReport:
        shape = nifti_shape(paths[0])
        for p in paths[1:]:
            check_same_shape(shape, nifti_shape(p), paths[0], p)
        return CaseReport(empty=not read_seg(shape).any())

    def load() -> Sample:
        chans = []
        spacing = None
        for p in paths:
            arr, spacing = read_nifti(p)
            if chans:
                check_same_shape(chans[0].shape, arr.shape, paths[0], p)
            chans.append(arr)
        label = read_seg(chans[0].shape)
        return Sample(image=np.stack(chans), label=label, spacing=spacing, report=CaseReport(empty=not label.any()))

    return Case(case_id=safe_case_id(folder.name), load=load, source=str(folder), check=check)


def discover(source: Path) -> Discovery:
    for layout in _LAYOUTS:
        root = source / layout
        folders = sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"BraTS20_[A-Za-z]+_\d+", p.name)) \
            if root.is_dir() else []
        if folders:
            cases, problems, ids = [], [], []
            for f in folders:
                try:
                    cases.append(_case(f))
                except CaseProblem as p:
                    problems.append(p)
                    ids.append(safe_case_id(f.name))
            return Discovery(spec=SPEC, cases=cases, source=str(root.absolute()), problems=problems, problem_ids=ids)
    raise missing_tree_error("no BraTS20_Training_XXX/ case folders", source, EXPECTED_TREE)
