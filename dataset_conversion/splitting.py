"""Which cases go where: the seeded train/test split (by patient where known), the nested training
subset, nnU-Net's cross-validation folds by patient, and the rater of each training image (consensus labels
of all raters: :mod:`.consensus`).

Every draw comes from :func:`rng_for`, which depends only on (seed, purpose, case id): changing the
subset never changes the noise, and adding a case never changes another case's draws.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from nnunet_gsd.errors import UserError

from .model import Case

# Distinct sub-streams of the seed, so that e.g. changing the subset never changes the noise.
TAG_SPLIT, TAG_SUBSET, TAG_RATER, TAG_NOISE, TAG_SYNTHETIC, TAG_FOLDS = 1, 2, 3, 4, 5, 6

#: nnU-Net's cross-validation folds (nnUNetv2_train DATASET CONFIG FOLD, FOLD in 0..4)
N_FOLDS = 5


def rng_for(seed: int, tag: int, case_id: str = "") -> np.random.Generator:
    """A generator that depends only on (seed, purpose, case): order- and subset-independent."""
    return np.random.default_rng([seed, tag, zlib.crc32(case_id.encode())])


def seeded_split(cases: list[Case], train_fraction: float, seed: int) -> tuple[list[Case], list[Case], str]:
    """Seeded train/test split. Cases with a ``group`` (patient) stay together."""
    rng = rng_for(seed, TAG_SPLIT)
    if any(c.group for c in cases):
        groups = sorted({c.group or c.case_id for c in cases})
        order = [groups[i] for i in rng.permutation(len(groups))]
        target = round(len(cases) * train_fraction)
        sizes: dict[str, int] = {}
        for c in cases:
            sizes[c.group or c.case_id] = sizes.get(c.group or c.case_id, 0) + 1
        train_groups: set[str] = set()
        n = 0
        for g in order:
            if n >= target:
                break
            train_groups.add(g)
            n += sizes[g]
        train = [c for c in cases if (c.group or c.case_id) in train_groups]
        test = [c for c in cases if (c.group or c.case_id) not in train_groups]
        return train, test, "seeded_by_patient"
    perm = rng.permutation(len(cases))
    n_train = round(len(cases) * train_fraction)
    train_idx = set(perm[:n_train].tolist())
    train = [c for i, c in enumerate(cases) if i in train_idx]
    test = [c for i, c in enumerate(cases) if i not in train_idx]
    return train, test, "seeded"


def take_subset(train: list[Case], fraction: float, seed: int) -> list[Case]:
    """The first ``fraction`` of one seeded permutation: 25 % ⊂ 50 % ⊂ 100 % for a given seed."""
    if not 0 < fraction <= 1:
        raise UserError(f"--subset must be in (0, 1], got {fraction}")
    if fraction == 1:
        return train
    n = max(1, round(len(train) * fraction))
    keep = set(rng_for(seed, TAG_SUBSET).permutation(len(train))[:n].tolist())
    return [c for i, c in enumerate(train) if i in keep]


def grouped_folds(cases: Sequence[Case], seed: int, n_folds: int = N_FOLDS) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` for ``cases``: [{"train": [...], "val": [...]}] per fold, every
    patient (``group``; a case without one is its own) wholly on one side of every fold.

    nnU-Net's own 5 folds are drawn over case ids, which puts crops or slices of one patient into both
    training and validation: validation Dice and ``checkpoint_best`` come out optimistic. Here the
    patients go, largest first (equal sizes in an order shuffled with the seed), each to the fold whose
    validation set holds the fewest cases so far (ties: the lowest fold): the folds come out as even as
    whole patients allow. With fewer patients than ``n_folds`` there is one fold per patient.
    """
    groups: dict[str, list[str]] = {}
    for c in cases:
        groups.setdefault(c.group or c.case_id, []).append(c.case_id)
    names = sorted(groups)
    shuffled = [names[i] for i in rng_for(seed, TAG_FOLDS).permutation(len(names))]
    order = sorted(shuffled, key=lambda g: -len(groups[g]))   # stable: the shuffle orders equal sizes
    val: list[list[str]] = [[] for _ in range(min(n_folds, len(names)))]
    for g in order:
        min(val, key=len).extend(groups[g])   # min() returns the first of equal lengths: the lowest fold
    ids = sorted(c.case_id for c in cases)
    folds = []
    for v in val:
        held_out = set(v)
        folds.append({"train": [i for i in ids if i not in held_out], "val": sorted(v)})
    return folds


def patients(cases: Sequence[Case]) -> dict[str, list[str]]:
    """{patient: [case ids]} of the cases that name one (the grouping recorded in the provenance)."""
    out: dict[str, list[str]] = {}
    for c in cases:
        if c.group:
            out.setdefault(c.group, []).append(c.case_id)
    return out


def choose_rater(mode: str, available: Sequence[str], case_id: str, seed: int,
                 drawn: Sequence[str] | None = None) -> str:
    """The training rater of one case: ``mode`` itself, or for ``sample`` one drawn with the seed among
    the raters who drew something on this case (``drawn``), or among all when none did.

    Drawing an empty mask while another rater outlined the object would teach "nothing here".
    """
    if mode != "sample":
        return mode
    pool = [r for r in available if r in drawn] if drawn else list(available)
    return pool[int(rng_for(seed, TAG_RATER, case_id).integers(len(pool)))]
