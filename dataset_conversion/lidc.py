"""LIDC-IDRI 128×128 lesion crops with four raters, in the pickled format of the Probabilistic U-Net
PyTorch port, MedicalMatting and D-Persona (``data_lidc.pickle``); 1287/322 split by patient.

The pickle is a dict ``{name: {'image': H×W array, 'masks': [rater masks], …}}``. Raters are named
A1…An in list order; their number is read from the data. The patient is taken from the name
(``LIDC-IDRI-0001…``) or, failing that, from a ``series_uid`` entry; crops of one patient never
straddle the split. Images are float CT crops, so the output is NIfTI (2D), not PNG.

Only open pickles you trust: unpickling can run code.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_gsd.errors import UserError

from .model import Case, DatasetSpec, Discovery, Sample
from .reading import check_same_shape, strict_binary
from .sources import missing_tree_error, safe_case_id

EXPECTED_TREE = """\
SOURCE                       a .pickle/.pkl file, or a folder holding one (e.g. data_lidc.pickle)
    {name: {'image': 128×128 array, 'masks': [A1 mask, A2 mask, A3 mask, A4 mask], 'series_uid': …}, …}
    names like 'LIDC-IDRI-0001_…' (the patient id is read from them); masks {0, 1} or {0, 255}
"""

SPEC = DatasetSpec(
    key="lidc", name="LIDC", dim=2, file_ending=".nii.gz", paper_split=(1287, 322), multi_rater=True,
    channel_names={"0": "CT"}, labels={"background": 0, "nodule": 1},
    description="LIDC-IDRI lung nodule 128x128 crops, four raters (GSD-Net conversion)",
    reference="Armato et al. 2011; crops of Kohl et al. 2018 (Probabilistic U-Net)",
    licence="CC BY 3.0 (TCIA LIDC-IDRI)", allow_empty=True,
)

_PATIENT = re.compile(r"(LIDC-IDRI-\d+)", re.IGNORECASE)


def _find_pickle(source: Path) -> Path:
    if source.is_file():
        return source
    if source.is_dir():
        hits = sorted(p for p in source.iterdir() if p.suffix.lower() in (".pickle", ".pkl"))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise UserError(f"several pickles in {source} ({', '.join(p.name for p in hits)}): "
                            f"pass the file as --source")
    raise missing_tree_error("no LIDC pickle", source, EXPECTED_TREE)


def _load_pickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError, TypeError,
            ValueError) as e:  # what unpickling a damaged or foreign file raises
        raise UserError(f"cannot read LIDC pickle {path}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path} is not a non-empty dict of crops. Expected:\n{EXPECTED_TREE.rstrip()}")
    return data


def _case(path: Path, name: str, entry: Any, raters: list[str]) -> Case:
    where = f"{path}[{name!r}]"
    if not isinstance(entry, dict) or "image" not in entry or "masks" not in entry:
        raise UserError(f"{where} lacks 'image' or 'masks'. Expected:\n{EXPECTED_TREE.rstrip()}")
    if isinstance(entry["masks"], np.ndarray) and entry["masks"].ndim == 3:
        entry = {**entry, "masks": list(entry["masks"])}   # one (raters, H, W) array: the same raters
    if not isinstance(entry["masks"], (list, tuple)):
        raise UserError(f"{where}['masks'] is a {type(entry['masks']).__name__}, not a list of rater masks. "
                        f"Expected:\n{EXPECTED_TREE.rstrip()}")
    if len(entry["masks"]) != len(raters):
        raise UserError(f"{where} has {len(entry['masks'])} rater masks, the first crop has {len(raters)}")
    patient = _PATIENT.search(name)
    group = patient.group(1).upper() if patient else (str(entry["series_uid"]) if "series_uid" in entry else None)

    def load() -> Sample:
        image = np.asarray(entry["image"], dtype=np.float32)
        if image.ndim == 3 and 1 in image.shape:
            image = image.squeeze()
        masks = {}
        for r, m in zip(raters, entry["masks"]):
            m = np.asarray(m)
            check_same_shape(image.shape, m.shape, f"{where}['image']", f"{where}['masks'][{r}]")
            masks[r] = strict_binary(m, f"{where}['masks'][{r}]")
        return Sample(image=image[None], raters=masks)

    return Case(case_id=safe_case_id(Path(name).stem if name.endswith((".png", ".npy")) else name),
                load=load, source=where, group=group)


def discover(source: Path) -> Discovery:
    path = _find_pickle(source)
    data = _load_pickle(path)
    first = next(iter(data.values()))
    n_raters = len(first.get("masks", [])) if isinstance(first, dict) else 0
    if n_raters == 0:
        raise UserError(f"{path}: the first crop has no 'masks'. Expected:\n{EXPECTED_TREE.rstrip()}")
    raters = [f"A{i + 1}" for i in range(n_raters)]
    cases = [_case(path, str(k), v, raters) for k, v in sorted(data.items(), key=lambda kv: str(kv[0]))]
    notes = [] if all(c.group for c in cases) else [
        "some crop names encode no patient: those crops are split individually"]
    return Discovery(spec=SPEC, cases=cases, raters=raters, notes=notes, source=str(path.absolute()))
