"""The ``"gsd"`` block of dataset.json: one typed reader and writer for everyone who uses it.

The converter writes it; the trainer reads ``tau``; ``search-tau`` reads the noise rate and writes a
new ``tau``; ``preview`` and ``demo`` show the noise; ``evaluate-raters`` reads ``test_slices``. A
hand-made dataset may carry only ``{"gsd": {"tau": 0.1}}`` or no block at all, so every field is
optional; a field of the wrong type is a one-line error naming the file. Keys this version does not
know are kept and written back unchanged.

=================== ==========================================================================
key                 meaning
=================== ==========================================================================
format_version      1
dataset             converter used (``kvasir`` …)
source              absolute path of the source folder/file (``null`` for generated data)
seed                the seed of split, subset, rater sampling and noise
size                output spatial shape (list) or ``null`` for the native size
subset              fraction of the training images kept (1.0 = all)
split               ``method`` (seeded / seeded_by_patient / predefined), ``train`` and ``test``
                    case ids, ``n_train_available`` (training cases before ``subset``)
folds               absent, or (cases that name their patient: LIDC, MMIS-2024) the cross-validation
                    folds written to ``file`` (splits_final.json): ``n_folds``, ``grouped_by``
                    ("patient"), ``rule``, ``n_patients``, ``patients`` {patient: [training case ids]}
noise               ``null``, or ``preset`` (S_R/S_E/S_DE/markov), ``kind``, ``notation`` (e.g.
                    M(200, 0.2, 0.05)), its parameters, ``noise_at`` (source, output or a size in
                    pixels), ``scaled_by`` (factor applied to a named preset's steps/radii),
                    ``rng`` (how each case's generator derives from ``seed``), ``dice_vs_clean``
                    (mean Dice(nGT, GT) over training cases, fraction) and ``pixel_noise_rate``
                    (fraction of training pixels whose label changed)
raters              ``null``, or ``mode`` (A1…An, sample, majority, staple, union or intersection),
                    ``available`` raters, ``train_rater_folders`` (labelsTr_A1 …: every rater's
                    training labels), for A1…An and sample ``assignment`` {case: rater}, for a
                    consensus ``consensus`` (its rule), ``test_consensus`` ("majority"),
                    ``test_rater_folders``, and for sample ``sample_among`` (the raters drawn from:
                    those whose mask is not empty)
tau                 forget rate (docs/decisions.md §8): the pixel noise rate for simulated noise; 15 % of the
                    training foreground proportion for multi-rater sets; 0 for clean labels
tau_source          how ``tau`` was obtained
foreground_fraction mean fraction of foreground pixels in the training labels
clean_labels        ``"labelsTr_clean"`` when written, else absent
empty_masks         ids of kept cases whose clean label is empty (where empty masks are normal)
skipped             ``[{case, problem, files, detail}]``: source pairs that could not be converted
repaired            ``[{case, repair}]``: what was changed to convert a case (e.g. a mask resized)
mask_values         ``rule`` used to binarise 2D masks, ``soft_pixels`` (edge pixels neither 0 nor 255),
                    ``soft_masks`` (masks holding any), ``label_value_masks`` ``[{case, file, values}]``:
                    masks read as label maps, with the pixel count of every non-zero value
release_count       ``{expected, found}`` when the source held another number of cases than the release
test_slices         {test case: [slice case ids]} (sliced test volumes, evaluate-raters)
notes               anything the converter skipped or assumed
=================== ==========================================================================
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nnunet_gsd.errors import UserError

FORMAT_VERSION = 1
#: keys a converter-written block always has, ``null`` when they do not apply
_CONVERTER_NULLS = ("source", "size", "noise", "raters")


@dataclass
class Provenance:
    """The ``"gsd"`` block. ``None`` means the key is absent (and stays absent when written back)."""

    format_version: int | None = None
    dataset: str | None = None
    source: str | None = None
    seed: int | None = None
    size: list[int] | None = None
    subset: float | None = None
    split: dict[str, Any] | None = None
    folds: dict[str, Any] | None = None
    noise: dict[str, Any] | None = None
    raters: dict[str, Any] | None = None
    tau: float | None = None
    tau_source: str | None = None
    foreground_fraction: float | None = None
    clean_labels: str | None = None
    empty_masks: list[str] | None = None
    skipped: list[dict[str, Any]] | None = None
    repaired: list[dict[str, str]] | None = None
    mask_values: dict[str, Any] | None = None
    release_count: dict[str, int] | None = None
    test_slices: dict[str, list[str]] | None = None
    notes: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # keys of other writers (search-tau …)

    # -- what the readers ask --------------------------------------------------------------------
    @property
    def pixel_noise_rate(self) -> float | None:
        """The measured pixel noise rate of simulated noise, or ``None``."""
        return None if not self.noise else self.noise.get("pixel_noise_rate")

    @property
    def dice_vs_clean(self) -> float | None:
        return None if not self.noise else self.noise.get("dice_vs_clean")

    def noise_summary(self) -> str:
        """E.g. ``S_R M(200, 0.2, 0.05) at 256``; empty without simulated noise."""
        if not self.noise:
            return ""
        n = self.noise
        return f"{n.get('preset', '')} {n.get('notation', '')} at {n.get('noise_at', '?')}".strip()

    # -- (de)serialisation -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, block: Any, where: str) -> Provenance:
        """Parse a ``"gsd"`` block; ``where`` names the file in errors."""
        if block is None:
            return cls()
        if not isinstance(block, dict):
            raise UserError(f'{where}: "gsd" must be an object, got {type(block).__name__}; fix or remove it')
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in block.items() if k in known}
        for key in ("tau", "foreground_fraction", "subset"):
            if values.get(key) is not None:
                try:
                    values[key] = float(values[key])
                except (TypeError, ValueError):
                    raise UserError(f'{where}: "gsd": {{"{key}": {values[key]!r}}} is not a number; fix it'
                                    + (" or set nnUNet_GSD_TAU" if key == "tau" else "")) from None
        for key in ("split", "folds", "noise", "raters", "mask_values", "release_count", "test_slices"):
            if values.get(key) is not None and not isinstance(values[key], dict):
                raise UserError(f'{where}: "gsd": {{"{key}"}} must be an object, got {values[key]!r}')
        return cls(**values, extra={k: v for k, v in block.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The block as written: absent (``None``) keys are left out, other writers' keys kept."""
        nullable = _CONVERTER_NULLS if self.format_version is not None else ()
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name != "extra" and (getattr(self, f.name) is not None or f.name in nullable)}
        return {**out, **self.extra}


def from_dataset_json(dataset_json: dict[str, Any], where: str = "dataset.json") -> Provenance:
    """The provenance of a loaded dataset.json (empty when it has no ``"gsd"`` block)."""
    return Provenance.from_dict(dataset_json.get("gsd"), where)


def read(dataset_folder: Path | str) -> Provenance:
    """The provenance in ``dataset_folder/dataset.json``."""
    path = Path(dataset_folder) / "dataset.json"
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: is {dataset_folder} an nnU-Net dataset folder?") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); fix or regenerate it") from None
    return from_dataset_json(content, str(path))


def with_provenance(dataset_json: dict[str, Any], prov: Provenance) -> dict[str, Any]:
    """A copy of ``dataset_json`` whose ``"gsd"`` block is ``prov``."""
    return {**dataset_json, "gsd": prov.to_dict()}
