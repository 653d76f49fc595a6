"""The conversion's data model: what a dataset module finds (:class:`Discovery` of :class:`Case`\\ s), what
one case holds in memory (:class:`Sample`), what the user chose (:class:`ConvertOptions`), and what can be
wrong with a case (:class:`CaseProblem`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from nnunet_gsd.errors import UserError

FileEnding = Literal[".png", ".nii.gz"]

#: what can make a source pair unconvertible, in the order the scan reports them
PROBLEM_KINDS = ("missing partner", "duplicate name", "unreadable file", "size mismatch", "unexpected values",
                 "empty mask")


class CaseProblem(UserError):
    """One case cannot be converted; the scan collects these instead of stopping at the first."""

    def __init__(self, kind: str, files: tuple[str, ...] | list[str], detail: str) -> None:
        assert kind in PROBLEM_KINDS, kind
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.files = tuple(str(f) for f in files)
        self.detail = detail


@dataclass
class CaseReport:
    """What checking a case learned without converting it.

    ``repairs``: what was changed to make it convertible (e.g. a mask resized by one pixel);
    ``soft_pixels``: mask pixels that were neither 0 nor 255 (anti-aliased edges) before binarising;
    ``label_values``: {value: pixels} of every non-zero value of a mask read as a label map (values
    such as 1, 2 and 255 in a binary dataset, all kept as foreground), empty for a plain binary mask;
    ``empty``: the (merged) label has no foreground.
    """

    repairs: list[str] = field(default_factory=list)
    soft_pixels: int = 0
    label_values: dict[int, int] = field(default_factory=dict)
    empty: bool = False


@dataclass
class Sample:
    """One case in memory. ``image`` is channels-first ``(C, *spatial)``; labels are integer maps.

    Single-annotation sets fill ``label``; multi-rater sets fill ``raters`` ({"A1": map, …}).
    ``spacing`` (array axis order) matters only for NIfTI output; ``None`` means 1 per axis.
    ``report`` says what reading it repaired or noticed.
    """

    image: np.ndarray
    label: np.ndarray | None = None
    raters: dict[str, np.ndarray] | None = None
    spacing: tuple[float, ...] | None = None
    report: CaseReport = field(default_factory=CaseReport)


@dataclass
class Case:
    """A case found in the source: its id, how to read it, and what to name in error messages.

    ``check`` (optional) validates the case more cheaply than ``load`` (e.g. image headers and the
    mask only); without it the scan calls ``load``. Both raise :class:`CaseProblem`.
    """

    case_id: str
    load: Callable[[], Sample]
    source: str
    group: str | None = None           # patient id: cases of one group land on the same side of the split
    role: Literal["train", "test"] | None = None  # fixed by the source layout (MMIS), else None
    check: Callable[[], CaseReport] | None = None
    label_source: str | None = None    # the mask file, where it is not ``source``


@dataclass
class DatasetSpec:
    """What nnU-Net's dataset.json needs, plus the paper's split sizes (Table 2).

    ``noise_presets`` names the preset family in :data:`dataset_conversion.noise.PRESETS` (``None``: no
    simulated noise, e.g. multi-rater sets); ``release_count`` is the number of cases of the full public
    release (a different count is warned about); ``allow_empty``: empty masks are normal here (raters
    who saw nothing), not a defect to skip.
    """

    key: str
    name: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: FileEnding
    dim: int
    paper_split: tuple[int, int] | None
    description: str = ""
    reference: str = ""
    licence: str = "see the source dataset's terms"
    multi_rater: bool = False
    test_volumes: bool = False   # 2D training slices but (dim+1)-D test volumes (MMIS-2024)
    noise_presets: str | None = None
    release_count: int | None = None
    allow_empty: bool = False


@dataclass
class Discovery:
    """A dataset module's answer: the spec, the cases, problems found while pairing files, and notes.

    ``native_edge``: the image edge when every case has the same known size (generated data); presets
    applied at the output size are scaled to it when no ``--size`` is given.
    """

    spec: DatasetSpec
    cases: list[Case]
    raters: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    native_edge: int | None = None
    problems: list[CaseProblem] = field(default_factory=list)
    problem_ids: list[str] = field(default_factory=list)   # case id of each entry of ``problems``


@dataclass
class ConvertOptions:
    """The user's choices (the ``convert`` command's options)."""

    dataset_id: int
    out: Path | None = None
    noise: str = "none"
    noise_at: str | int | None = None
    markov: tuple[int, float, float] | None = None   # --noise markov: (T, P, V)
    raters: str | None = None
    seed: int = 0
    size: int | None = None
    subset: float = 1.0
    overwrite: bool = False
    preview: bool = False
    strict: bool = False
