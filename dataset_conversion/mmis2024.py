"""MMIS-2024 nasopharyngeal carcinoma (NPC) MRI with four raters, as preprocessed by D-Persona
(Wu et al. 2024): 2D training slices and 3D test volumes in HDF5 files.

Training is slice-wise 2D, evaluation per volume (Table 2, note 3): training slices become 2D
NIfTI images (nnU-Net's 2D convention, spacing 999 × 1 × 1), test volumes 3D NIfTI images. Train
with nnU-Net's ``2d`` configuration; ``nnUNetv2_predict -c 2d`` predicts the volumes slice by slice
and ``nnUNetv2_evaluate_folder`` then scores whole volumes. The split is the one of the folders;
nnU-Net's cross-validation folds keep the slices of one patient together (``splits_final.json``):
the patient is the slice file's name without its trailing slice number (``npc_001_slice_12.h5`` and
``npc_001_12.h5`` → ``npc_001``).
Images are float MR (t1, t1c, t2 as three channels), which PNG could not hold without loss.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from nnunet_gsd.errors import UserError

from .model import Case, CaseProblem, DatasetSpec, Discovery, Sample
from .reading import check_same_shape, strict_binary
from .sources import list_files, missing_tree_error, safe_case_id

EXPECTED_TREE = """\
SOURCE/                      (or SOURCE/MMIS2024/, SOURCE/NPC/)
    training_2d/*.h5         one slice each:   t1, t1c, t2 (H×W), label_a1 … label_aN (H×W)
    testing/*.h5             one volume each:  t1, t1c, t2 (D×H×W), label_a1 … label_aN (D×H×W)
    validation/*.h5          (optional; used with --test-split validation|both)
    labels {0, 1} (or {0, 255}); the number of raters is read from the label_a* keys
"""

CHANNELS = ("t1", "t1c", "t2")

SPEC = DatasetSpec(
    key="mmis2024", name="MMIS2024NPC", dim=2, file_ending=".nii.gz", paper_split=None, multi_rater=True,
    test_volumes=True,
    channel_names={"0": "T1", "1": "T1c", "2": "T2"}, labels={"background": 0, "tumour": 1},
    description="MMIS-2024 NPC MRI, four raters; 2D training slices, 3D test volumes (GSD-Net conversion)",
    reference="Luo et al. 2023; Wu et al. 2024 (D-Persona preprocessing)", allow_empty=True,
)

_RATER_KEY = re.compile(r"label_a(\d+)$", re.IGNORECASE)
#: a training slice's stem: the patient (which holds a digit, so that ``npc_001`` is not cut to ``npc``),
#: then a separator, an optional ``slice``, and the slice number
_SLICE_OF = re.compile(r"(?P<patient>.*?\d.*?)[_-]+(?:slice[_-]*)?\d+", re.IGNORECASE)
_LAYOUTS = [".", "MMIS2024", "MMIS-2024", "NPC", "data"]


def _h5py():
    """h5py, an optional dependency (only this converter reads HDF5), or a one-line UserError."""
    try:
        import h5py
    except ModuleNotFoundError:
        raise UserError("convert mmis2024 reads HDF5 files and needs h5py: pip install 'nnunet_gsd[mmis]' "
                        "(or pip install h5py)") from None
    return h5py


def _raters_of(path: Path) -> list[str]:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            keys = list(f.keys())
    except OSError as e:  # h5py's error for missing, truncated or non-HDF5 files
        raise UserError(f"cannot read HDF5 file {path}: {e}") from None
    nums = sorted(int(m.group(1)) for k in keys if (m := _RATER_KEY.fullmatch(k)))
    if not nums:
        raise UserError(f"{path} has no label_a1 … keys (found {keys}). Expected:\n{EXPECTED_TREE.rstrip()}")
    return [f"A{n}" for n in nums]


def patient_of(stem: str) -> str | None:
    """The patient of a training slice file's stem (``npc_001_slice_12`` → ``npc_001``), or ``None``."""
    m = _SLICE_OF.fullmatch(stem)
    return m.group("patient") if m else None


def _case(path: Path, role: str, raters: list[str], volume: bool) -> Case:
    def load() -> Sample:
        h5py = _h5py()
        try:
            with h5py.File(path, "r") as f:
                keys = {k.lower(): k for k in f}
                missing = [k for k in CHANNELS + tuple(f"label_a{r[1:]}" for r in raters) if k not in keys]
                if missing:
                    raise CaseProblem("missing partner", [path], f"{path} lacks key(s) {missing}")
                chans = [np.asarray(f[keys[c]][()], dtype=np.float32) for c in CHANNELS]
                labels = {r: np.asarray(f[keys[f"label_a{r[1:]}"]][()]) for r in raters}
        except CaseProblem:
            raise
        except (OSError, KeyError, ValueError) as e:  # what h5py raises for unreadable files
            raise CaseProblem("unreadable file", [path], f"cannot read HDF5 file {path}: {e}") from None
        want = 3 if volume else 2
        chans = [c.squeeze() if c.ndim > want else c for c in chans]
        if chans[0].ndim != want:
            raise CaseProblem("size mismatch", [path],
                              f"{path}: expected {'D×H×W volumes' if volume else 'H×W slices'}, got {chans[0].shape}")
        for c, a in zip(CHANNELS[1:], chans[1:]):
            check_same_shape(chans[0].shape, a.shape, f"{path}[t1]", f"{path}[{c}]")
        masks = {}
        for r, m in labels.items():
            m = m.squeeze() if m.ndim > want else m
            check_same_shape(chans[0].shape, m.shape, f"{path}[t1]", f"{path}[label_a{r[1:]}]")
            masks[r] = strict_binary(m, f"{path}[label_a{r[1:]}]")
        return Sample(image=np.stack(chans), raters=masks)

    return Case(case_id=safe_case_id(path.stem), load=load, source=str(path), role=role,  # type: ignore[arg-type]
                group=None if volume else patient_of(path.stem))


def discover(source: Path, test_split: str = "testing") -> Discovery:
    root = next((source / layout for layout in _LAYOUTS if (source / layout / "training_2d").is_dir()), None)
    if root is None:
        raise missing_tree_error("no training_2d/ folder", source, EXPECTED_TREE)
    train_files = list_files(root / "training_2d", (".h5", ".hdf5"))
    folders = {"testing": ["testing"], "validation": ["validation"], "both": ["validation", "testing"]}[test_split]
    test_files = []
    for name in folders:
        if not (root / name).is_dir():
            raise missing_tree_error(f"no {name}/ folder", root, EXPECTED_TREE)
        test_files += list_files(root / name, (".h5", ".hdf5"))
    if not train_files or not test_files:
        raise missing_tree_error("no .h5 files in training_2d/ or the test folder", root, EXPECTED_TREE)
    raters = _raters_of(train_files[0])
    cases = [_case(p, "train", raters, volume=False) for p in train_files]
    cases += [_case(p, "test", raters, volume=True) for p in test_files]
    notes = [f"test volumes from {'+'.join(folders)}/; training slices from training_2d/"]
    alone = [p.name for p in train_files if patient_of(p.stem) is None]
    if alone:
        notes.append(f"{len(alone)} training slice name(s) end in no slice number (e.g. {alone[0]}): each is its own "
                     "patient in the cross-validation folds")
    # The test volumes are 3D while the training slices are 2D; the spec's dim is that of training.
    return Discovery(spec=SPEC, cases=cases, raters=raters, source=str(root.absolute()), notes=notes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-split", choices=("testing", "validation", "both"), default="testing",
                        help="which volume folder(s) form the test set (default testing)")
