"""The conversion: a dataset module's :class:`Discovery` + the user's options → an nnU-Net raw dataset.

Order of work: check the options; **scan** every case (cheaply where the module can) and collect all
problems at once; report them grouped, then skip those cases (``--strict``: refuse); split (seeded,
by patient where known) and take the subset; resize, apply the simulated noise, write into a hidden
folder (a case whose file turns out unreadable only now is skipped and reported like the others);
measure the noise; write ``dataset.json`` with the ``"gsd"`` provenance
(:mod:`dataset_conversion.provenance`) and, where cases name their patient, nnU-Net's
``splits_final.json``; rename the folder into place (:mod:`dataset_conversion.writing`).

Output layout (nnU-Net v2 raw format)::

    DatasetNNN_Name/
        dataset.json
        imagesTr/CASE_0000.png|.nii.gz …    one file per channel (an RGB PNG is one file, 3 channels)
        labelsTr/CASE.png|.nii.gz           training labels: noisy (simulated), or (multi-rater) the chosen
                                            rater's or the raters' consensus (--raters)
        labelsTr_clean/CASE…                clean training labels, only when noise was simulated
        labelsTr_A1/ … labelsTr_An/         multi-rater sets only: every rater's training labels (nnU-Net
                                            reads only labelsTr/; these are for rater-aware tools)
        imagesTs/CASE_0000…
        labelsTs/CASE…                      clean test labels (multi-rater: majority vote of raters)
        labelsTs_A1/ … labelsTs_An/         multi-rater sets only: every rater's test labels
        splits_final.json                   where cases name their patient (LIDC, MMIS-2024): nnU-Net's
                                            5 folds with no patient on both sides; nnU-Net's planner
                                            copies it to $nnUNet_preprocessed/DatasetNNN_Name/
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_gsd.errors import UserError

from . import consensus
from . import noise as noise_mod
from .model import (
    PROBLEM_KINDS,
    Case,
    CaseProblem,
    CaseReport,
    ConvertOptions,
    DatasetSpec,
    Discovery,
)
from .provenance import FORMAT_VERSION, Provenance
from .reading import LABEL_MAP_MAX_VALUES, describe_values
from .resizing import MIN_SIZE, resize_image, resize_label, resized_spacing, target_shape
from .sources import duplicate_problem
from .splitting import (
    N_FOLDS,
    TAG_NOISE,
    choose_rater,
    grouped_folds,
    patients,
    rng_for,
    seeded_split,
    take_subset,
)
from .writing import (
    install,
    partial_folder,
    remove_stale_partials,
    resolve_target,
    warn,
    write_image,
    write_json_atomic,
    write_label,
)

#: problems listed per kind on the terminal (all of them go into the provenance)
_SHOWN_PER_KIND = 10
#: nnU-Net's cross-validation split, in the raw folder: its planner copies it into the preprocessed one
SPLITS_FILE = "splits_final.json"
#: ``--raters`` values besides a rater's name: one seeded rater per image, or a consensus of all of them
RATER_MODES = ("sample", *consensus.METHODS)


def resolve_noise(discovery: Discovery, opts: ConvertOptions) -> tuple[noise_mod.NoisePreset | None, Any, float]:
    """(preset as applied, where it is applied, the factor its steps/radii were scaled by).

    A named preset's steps and radii are in pixels of ``preset.edge``-pixel images; applied at
    another known edge (``--noise-at PX``, the output ``--size``, or a generated dataset's native
    edge) they are scaled by edge/preset.edge. ``--noise markov`` is applied as given.
    """
    spec = discovery.spec
    if opts.markov is not None and opts.noise != "markov":
        raise UserError(f"--markov-steps/--markov-p/--markov-v need --noise markov (got --noise {opts.noise})")
    if opts.noise != "none" and spec.multi_rater:
        raise UserError(f"{spec.key} has real multi-rater noise; simulated --noise is not offered for it "
                        "(use --raters)")
    preset = None
    if opts.noise == "markov":
        preset = noise_mod.custom_markov(*(opts.markov or noise_mod.MARKOV_DEFAULTS))
    elif opts.noise != "none":
        preset = noise_mod.get_preset(spec.noise_presets, opts.noise, spec.key)
    noise_at = noise_mod.parse_noise_at(str(opts.noise_at)) if opts.noise_at is not None else \
        (preset.noise_at if preset else "output")
    if isinstance(noise_at, int):
        edge = noise_at
    elif noise_at == "output" and opts.size:
        edge = opts.size
    else:
        edge = discovery.native_edge
    if preset is None or preset.name == "markov" or not edge or edge == preset.edge:
        return preset, noise_at, 1.0
    factor = edge / preset.edge
    return noise_mod.scale_preset(preset, factor), noise_at, factor


def scan(discovery: Discovery, show_progress: bool = True) -> tuple[list[Case], dict[str, CaseProblem],
                                                                  dict[str, CaseReport]]:
    """Check every case; returns the convertible cases, {case id: problem} and {case id: report}."""
    from tqdm import tqdm
    spec = discovery.spec
    problems: dict[str, CaseProblem] = {}
    for cid, p in zip(discovery.problem_ids, discovery.problems):
        _add_problem(problems, cid, p)
    reports: dict[str, CaseReport] = {}
    ok: list[Case] = []
    for case in tqdm(_unique_ids(discovery.cases, problems), desc=f"scan {spec.key}", unit="case",
                     disable=None if show_progress else True, file=sys.stderr):
        try:
            report = case.check() if case.check else case.load().report
            if report.empty and not spec.allow_empty:
                where = case.label_source or case.source
                raise CaseProblem("empty mask", [where], f"mask {where} is empty (no foreground)")
        except CaseProblem as p:
            _add_problem(problems, case.case_id, p)
            continue
        reports[case.case_id] = report
        ok.append(case)
    return ok, problems, reports


def _same_id(cid: str) -> str:
    return f"the same case id {cid!r} (nnU-Net case ids keep only letters, digits, - and _)"


def _add_problem(problems: dict[str, CaseProblem], cid: str, p: CaseProblem) -> None:
    """Record ``p`` under ``cid``; two problems of one id (files whose names sanitise alike) become one
    ``duplicate name`` naming all their files, instead of the second hiding the first."""
    old = problems.get(cid)
    problems[cid] = p if old is None else duplicate_problem([*old.files, *p.files], _same_id(cid))


def _unique_ids(cases: list[Case], problems: dict[str, CaseProblem]) -> list[Case]:
    """The cases whose id no other case has. Cases sharing an id (``a b.png`` and ``a_b.png``) would
    overwrite each other's files: they become one ``duplicate name`` problem."""
    by_id: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_id[c.case_id].append(c)
    for cid, group in by_id.items():
        if len(group) > 1:
            _add_problem(problems, cid, duplicate_problem([c.source for c in group], _same_id(cid)))
    return [c for c in cases if len(by_id[c.case_id]) == 1]


def format_problems(problems: dict[str, CaseProblem], limit: int | None) -> list[str]:
    """Grouped by kind, one line per case (``limit`` lines per kind)."""
    by_kind: dict[str, list[tuple[str, CaseProblem]]] = defaultdict(list)
    for cid, p in problems.items():
        by_kind[p.kind].append((cid, p))
    lines = []
    for kind in PROBLEM_KINDS:
        items = sorted(by_kind.get(kind, []))
        if not items:
            continue
        lines.append(f"  {kind} ({len(items)}):")
        shown = items if limit is None else items[:limit]
        lines += [f"    {cid}: {p.detail}" for cid, p in shown]
        if len(items) > len(shown):
            lines.append(f"    … and {len(items) - len(shown)} more (all listed in dataset.json \"gsd\": \"skipped\")")
    return lines


def existing_datasets(target: Path, dataset_id: int, overwrite: bool) -> list[Path]:
    """The folder ``--overwrite`` replaces: ``target`` itself, never a dataset of another name.

    nnU-Net allows one name per id (two folders of one id stop its commands), so a dataset of another
    name is refused whether or not ``--overwrite`` is given: it is someone's data, not this one's
    previous version.
    """
    root = target.parent
    same_id = sorted(p for p in root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir()) if root.is_dir() else []
    other = next((p for p in same_id if p.name != target.name), None)
    if other is not None:
        flag = f"--overwrite replaces only {target.name}; " if overwrite else ""
        raise UserError(f"dataset id {dataset_id} is taken by {other} (another dataset): {flag}nothing was removed. "
                        f"Choose another --id, or delete {other} yourself if it is no longer needed")
    if same_id and not overwrite:
        raise UserError(f"{target} already exists (use --overwrite to replace it)")
    return same_id


def convert(discovery: Discovery, opts: ConvertOptions) -> Path:
    """Write the nnU-Net raw dataset described by ``discovery`` with ``opts``; returns its folder."""
    spec = discovery.spec
    key = spec.key
    target = resolve_target(opts.out, opts.dataset_id, spec.name)
    root = target.parent
    replaced = existing_datasets(target, opts.dataset_id, opts.overwrite)
    if not discovery.cases and not discovery.problems:
        raise UserError(f"no cases found in {discovery.source}")

    # ---- options that depend on the dataset
    preset, noise_at, scaled_by = resolve_noise(discovery, opts)
    rater_mode = None
    if spec.multi_rater:
        rater_mode = opts.raters or "sample"
        if rater_mode not in RATER_MODES and rater_mode not in discovery.raters:
            raise UserError(f"--raters {rater_mode}: this dataset has raters {', '.join(discovery.raters)}; "
                            f"or use one of {', '.join(RATER_MODES)}")
    elif opts.raters:
        raise UserError(f"--raters applies to multi-rater datasets (lidc, mmis2024), not {key}")
    if opts.size is not None and opts.size < MIN_SIZE:
        raise UserError(f"--size must be at least {MIN_SIZE} pixels, got {opts.size}")

    # ---- scan: every problem at once
    cases, problems, reports = scan(discovery)
    n_found = len(discovery.cases) + len(discovery.problems)
    if problems:
        head = f"{len(problems)} of {n_found} source case(s) cannot be converted:"
        if opts.strict:
            raise UserError("\n".join([head + " (--strict: nothing written; fix them, or drop --strict to skip "
                                              "them)", *format_problems(problems, None)]))
        warn("\n".join([head + " skipped (--strict refuses instead)", *format_problems(problems, _SHOWN_PER_KIND)]))
    if not cases:
        raise UserError(f"no convertible cases in {discovery.source} (see the problems above)")
    _report_label_values(cases, reports, key)
    release = None
    if spec.release_count and n_found != spec.release_count:
        release = {"expected": spec.release_count, "found": n_found}
        warn(f"{discovery.source} holds {n_found} case(s); the full {key} release has {spec.release_count}: "
             "an incomplete download, or a subset on purpose?")

    # ---- split and subset
    if any(c.role for c in cases):
        train = [c for c in cases if c.role == "train"]
        test = [c for c in cases if c.role == "test"]
        split_method = "predefined"
    else:
        frac = spec.paper_split[0] / sum(spec.paper_split) if spec.paper_split else 0.8
        train, test, split_method = seeded_split(cases, frac, opts.seed)
    n_available = len(train)
    train = take_subset(train, opts.subset, opts.seed)

    root.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_partials(root):
        print(f"note: removed {stale.name}, left by an interrupted conversion whose process is gone", file=sys.stderr)
    tmp = partial_folder(target)
    try:
        written = _write_cases(tmp, discovery, opts, preset, noise_at, train, test, rater_mode, problems)
        train = [c for c in train if c.case_id in written.ids]
        test = [c for c in test if c.case_id in written.ids]
        if not train:
            raise UserError(f"no training case of {discovery.source} could be converted (see the problems above)")

        if written.empty:
            warn(f"{len(written.empty)} case(s) have an empty mask (kept: normal for {key}): "
                 f"{', '.join(written.empty[:5])}{' …' if len(written.empty) > 5 else ''}")
        prov = _provenance(discovery, opts, train, test, split_method, n_available)
        total = written.total
        prov.foreground_fraction = written.fg / total if total else 0.0
        if preset:
            noise_rate = written.changed / total if total else 0.0
            prov.noise = {**preset.params(), "noise_at": noise_at, "scaled_by": scaled_by,
                          "rng": f"numpy default_rng([seed, {TAG_NOISE}, crc32(case_id)]) per case",
                          "dice_vs_clean": float(np.mean(written.dices)) if written.dices else 1.0,
                          "pixel_noise_rate": noise_rate}
            prov.tau, prov.tau_source = noise_rate, "pixel_noise_rate (docs/decisions.md §8)"
            prov.clean_labels = "labelsTr_clean"
        elif spec.multi_rater:
            prov.raters = {"mode": rater_mode, "available": discovery.raters,
                           "train_rater_folders": [f"labelsTr_{r}" for r in discovery.raters],
                           "test_consensus": "majority",
                           "test_rater_folders": [f"labelsTs_{r}" for r in discovery.raters]}
            if rater_mode in consensus.METHODS:
                prov.raters["consensus"] = consensus.RULES[rater_mode]
            else:
                prov.raters["assignment"] = written.assignment
            if rater_mode == "sample":
                prov.raters["sample_among"] = ("the raters whose mask of the case is not empty (all raters "
                                               "where every mask is empty)")
            prov.tau = 0.15 * prov.foreground_fraction
            prov.tau_source = "0.15 x training foreground fraction (docs/decisions.md §8)"
        else:
            prov.tau, prov.tau_source = 0.0, "clean labels"
        prov.empty_masks = written.empty
        prov.skipped = [{"case": cid, "problem": p.kind, "files": list(p.files), "detail": p.detail}
                        for cid, p in sorted(problems.items())]
        kept = {c.case_id for c in train + test}
        prov.repaired = [{"case": cid, "repair": r} for cid, rep in sorted(reports.items()) if cid in kept
                         for r in rep.repairs]
        if spec.file_ending == ".png" and not spec.multi_rater:
            kept_cases = [c for c in cases if c.case_id in kept]
            prov.mask_values = {
                "rule": f"one channel; 0/1 and 0/255 as they are; a label map (at most {LABEL_MAP_MAX_VALUES} "
                        "distinct values) keeps every pixel of each value that fills a 3x3 block somewhere; "
                        "other values are edge pixels, foreground when > 127 (docs/datasets.md)",
                "soft_pixels": sum(reports[c.case_id].soft_pixels for c in kept_cases),
                "soft_masks": sum(1 for c in kept_cases if reports[c.case_id].soft_pixels),
                "label_value_masks": [{"case": c.case_id, "file": c.label_source,
                                       "values": {str(v): n for v, n in sorted(values.items())}}
                                      for c in kept_cases if (values := reports[c.case_id].label_values)]}
        prov.release_count = release
        folds = _write_folds(tmp, train, opts.seed)
        if folds:
            prov.folds = folds
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
        generate_dataset_json(str(tmp), dict(spec.channel_names), dict(spec.labels), len(train), spec.file_ending,
                              dataset_name=spec.name, description=spec.description, reference=spec.reference,
                              license=spec.licence, converted_by="nnunet_gsd convert", gsd=prov.to_dict())
        if opts.preview:
            from .preview import write_preview
            write_preview(tmp, tmp / "gsd_preview.png", n_cases=4, seed=opts.seed)
        install(tmp, target, replaced)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in replaced:
        print(f"note: --overwrite: removed the previous {old} (its preprocessed data, if any, is stale now: "
              "rerun nnUNetv2_plan_and_preprocess)", file=sys.stderr)
    if folds:
        _update_preprocessed_splits(target)
    return target


class _Written:
    """What writing the cases produced: the ids written and the numbers the provenance reports."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.dices: list[float] = []
        self.changed = self.total = self.fg = 0
        self.empty: list[str] = []
        self.assignment: dict[str, str] = {}


def _write_cases(tmp: Path, discovery: Discovery, opts: ConvertOptions, preset: noise_mod.NoisePreset | None,
                 noise_at: Any, train: list[Case], test: list[Case], rater_mode: str | None,
                 problems: dict[str, CaseProblem]) -> _Written:
    """Resize, perturb and write every case into ``tmp``. A case that cannot be read now although the scan
    passed it (a truncated JPEG: the scan reads only image headers) is skipped and added to ``problems``,
    or, with ``--strict``, refuses the conversion."""
    from tqdm import tqdm
    spec = discovery.spec
    dirs = {n: tmp / n for n in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    if preset:
        dirs["labelsTr_clean"] = tmp / "labelsTr_clean"
    for r in discovery.raters:
        dirs[f"labelsTr_{r}"] = tmp / f"labelsTr_{r}"
        dirs[f"labelsTs_{r}"] = tmp / f"labelsTs_{r}"
    for d in dirs.values():
        d.mkdir(parents=True)
    out = _Written()
    bar = tqdm(total=len(train) + len(test), desc=f"convert {spec.key}", unit="case", disable=None, file=sys.stderr)
    for role, role_cases in (("train", train), ("test", test)):
        for case in role_cases:
            bar.update(1)
            try:   # nothing of the case is written before it is read and checked
                s = case.load()
                _check_image(s.image, spec, case, role)
            except CaseProblem as p:
                if opts.strict:
                    raise UserError(f"{case.case_id}: {p} (--strict: nothing written)") from None
                warn(f"{case.case_id}: {p}: skipped")
                _add_problem(problems, case.case_id, p)
                continue
            out.ids.add(case.case_id)
            shape = target_shape(opts.size, s.image.shape[1:], spec.dim)
            spacing = resized_spacing(s.spacing, s.image.shape[1:], shape)
            write_image(dirs["imagesTr" if role == "train" else "imagesTs"], case.case_id,
                        resize_image(s.image, shape), spec, spacing)
            if role == "train":
                if s.raters is not None:
                    masks = {r: resize_label(m, shape) for r, m in s.raters.items()}
                    for r, m in masks.items():
                        write_label(dirs[f"labelsTr_{r}"] / case.case_id, m, spec, spacing)
                    if rater_mode in consensus.METHODS:
                        # of the resized maps, so that labelsTr is exactly the consensus of labelsTr_A*
                        lab = consensus.combine(rater_mode, masks)
                    else:
                        rater = choose_rater(rater_mode or "sample", discovery.raters, case.case_id, opts.seed,
                                             drawn=[r for r, m in masks.items() if m.any()])
                        out.assignment[case.case_id] = rater
                        lab = masks[rater]
                    if not np.any(lab):
                        out.empty.append(case.case_id)
                else:
                    assert s.label is not None
                    if not np.any(s.label):
                        out.empty.append(case.case_id)
                    lab = resize_label(s.label, shape)
                    if preset:
                        noisy = noisy_label(s.label, lab, preset, noise_at, spec.dim,
                                            rng_for(opts.seed, TAG_NOISE, case.case_id))
                        write_label(dirs["labelsTr_clean"] / case.case_id, lab, spec, spacing)
                        out.dices.append(noise_mod.dice(noisy, lab))
                        out.changed += int(np.count_nonzero(noisy != lab))
                        lab = noisy
                out.total += lab.size
                out.fg += int(np.count_nonzero(lab))
                write_label(dirs["labelsTr"] / case.case_id, lab, spec, spacing)
            else:
                if s.raters is not None:
                    for r, m in s.raters.items():
                        write_label(dirs[f"labelsTs_{r}"] / case.case_id, resize_label(m, shape), spec, spacing)
                    clean = consensus.majority(s.raters)
                else:
                    assert s.label is not None
                    clean = s.label
                if not np.any(clean):
                    out.empty.append(case.case_id)
                write_label(dirs["labelsTs"] / case.case_id, resize_label(clean, shape), spec, spacing)
    bar.close()
    return out


def _report_label_values(cases: list[Case], reports: dict[str, CaseReport], key: str) -> None:
    """One line per mask read as a label map (values such as 1, 2 and 255), with its value counts: a
    binary dataset holding several labels is worth a look, and the old > 127 rule dropped them."""
    hits = [(c, reports[c.case_id].label_values) for c in cases if reports[c.case_id].label_values]
    if not hits:
        return
    lines = [f"{len(hits)} mask(s) hold label values, not only 0 and 255 (or 0 and 1): every pixel of a label "
             f"value is kept as foreground ({key} has one foreground label; values as read in one channel):"]
    lines += [f"    {c.case_id}: {c.label_source or c.source}: {describe_values(v)}" for c, v in hits[:_SHOWN_PER_KIND]]
    if len(hits) > _SHOWN_PER_KIND:
        lines.append(f"    … and {len(hits) - _SHOWN_PER_KIND} more (all listed in dataset.json \"gsd\": "
                     "\"mask_values\": \"label_value_masks\")")
    warn("\n".join(lines))


def _write_folds(folder: Path, train: list[Case], seed: int) -> dict[str, Any] | None:
    """``splits_final.json`` grouped by patient when the training cases name their patient; the
    provenance's ``folds`` block, or ``None`` (nnU-Net's own folds over case ids are then right)."""
    if not any(c.group for c in train):
        return None
    folds = grouped_folds(train, seed)
    if len(folds) < N_FOLDS:
        warn(f"only {len(folds)} patient(s) in training: {SPLITS_FILE} has {len(folds)} fold(s); nnUNetv2_train "
             f"folds {len(folds)}..{N_FOLDS - 1} would use nnU-Net's random 80:20 split, which mixes patients")
    (folder / SPLITS_FILE).write_text(json.dumps(folds, indent=2))
    groups = patients(train)
    return {"file": SPLITS_FILE, "n_folds": len(folds), "grouped_by": "patient",
            "rule": "patients largest first (equal sizes shuffled with the seed), each into the fold with the "
                    "fewest validation cases; a case without a patient is its own group",
            "n_patients": len({c.group or c.case_id for c in train}), "patients": groups}


def _update_preprocessed_splits(target: Path) -> None:
    """Keep ``$nnUNet_preprocessed/<name>/splits_final.json`` equal to the raw one.

    nnU-Net's planner copies the raw file there only when none exists, and stops with a bare
    AssertionError when the one there differs; its trainer reads only that copy. So a copy left by an
    earlier conversion (or nnU-Net's own folds over case ids) is replaced now. Only when the dataset
    was written into ``$nnUNet_raw`` and has been preprocessed before; otherwise planning copies it.
    """
    pre, raw = os.environ.get("nnUNet_preprocessed"), os.environ.get("nnUNet_raw")
    if not pre or not raw or Path(raw).absolute() != target.parent:
        return
    dest = Path(pre) / target.name / SPLITS_FILE
    if not dest.parent.is_dir():
        return
    new = json.loads((target / SPLITS_FILE).read_text())
    try:
        if json.loads(dest.read_text()) == new:
            return
    except (OSError, ValueError):   # absent or unreadable: written below
        pass
    existed = dest.is_file()
    write_json_atomic(dest, new)
    print(f"note: {'replaced' if existed else 'wrote'} {dest} with the raw dataset's patient-grouped folds"
          + (" (it held other folds, from an earlier conversion or nnU-Net's default split)" if existed else ""),
          file=sys.stderr)


def _provenance(discovery: Discovery, opts: ConvertOptions, train: list[Case], test: list[Case],
                split_method: str, n_available: int) -> Provenance:
    spec = discovery.spec
    return Provenance(
        format_version=FORMAT_VERSION, dataset=spec.key, source=discovery.source, seed=opts.seed,
        size=[opts.size] * spec.dim if opts.size else None, subset=opts.subset,
        split={"method": split_method, "n_train_available": n_available,
               "train": [c.case_id for c in train], "test": [c.case_id for c in test]},
        notes=list(discovery.notes))


def noisy_label(source_label: np.ndarray, out_label: np.ndarray, preset: noise_mod.NoisePreset, noise_at: Any,
                 dim: int, rng: np.random.Generator) -> np.ndarray:
    """The noisy training label at the output shape, perturbed where ``noise_at`` says."""
    if noise_at == "source":
        return resize_label(noise_mod.apply_noise(source_label, preset, rng), out_label.shape)
    if isinstance(noise_at, int):
        at = target_shape(noise_at, source_label.shape, dim)
        return resize_label(noise_mod.apply_noise(resize_label(source_label, at), preset, rng), out_label.shape)
    return noise_mod.apply_noise(out_label, preset, rng)


def _check_image(image: np.ndarray, spec: DatasetSpec, case: Case, role: str) -> None:
    """A case problem (skipped and reported like the scan's) when the image has the wrong shape."""
    n = image.shape[0]
    dims = {spec.dim, spec.dim + 1} if (spec.test_volumes and role == "test") else {spec.dim}
    if image.ndim - 1 not in dims:
        raise CaseProblem("size mismatch", [case.source],
                          f"{case.source}: expected a {spec.dim}D image, got shape {image.shape[1:]}")
    if n != len(spec.channel_names):
        raise CaseProblem("size mismatch", [case.source],
                          f"{case.source}: {n} channel(s), but this dataset has {len(spec.channel_names)} "
                          f"({', '.join(spec.channel_names.values())})")

