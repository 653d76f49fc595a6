"""The conversion: a dataset module's :class:`Discovery` + the user's options → an nnU-Net raw dataset.

Order of work: check the options; **scan** every case (cheaply where the module can) and collect all
problems at once; report them grouped, then skip those cases (``--strict``: refuse); split (seeded,
by patient where known) and take the subset; resize, apply the simulated noise, write into a hidden
folder; measure the noise; write ``dataset.json`` with the ``"gsd"`` provenance
(:mod:`dataset_conversion.provenance`); rename the folder into place (:mod:`dataset_conversion.writing`).

Output layout (nnU-Net v2 raw format)::

    DatasetNNN_Name/
        dataset.json
        imagesTr/CASE_0000.png|.nii.gz …    one file per channel (an RGB PNG is one file, 3 channels)
        labelsTr/CASE.png|.nii.gz           training labels: noisy (simulated) or the chosen rater's
        labelsTr_clean/CASE…                clean training labels, only when noise was simulated
        imagesTs/CASE_0000…
        labelsTs/CASE…                      clean test labels (multi-rater: majority vote of raters)
        labelsTs_A1/ … labelsTs_An/         multi-rater sets only: every rater's test labels
"""
from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_gsd.errors import UserError

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
from .resizing import resize_image, resize_label, resized_spacing, target_shape
from .splitting import (
    TAG_NOISE,
    choose_rater,
    majority_vote,
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
    write_label,
)

#: problems listed per kind on the terminal (all of them go into the provenance)
_SHOWN_PER_KIND = 10


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
    problems: dict[str, CaseProblem] = dict(zip(discovery.problem_ids, discovery.problems))
    reports: dict[str, CaseReport] = {}
    ok: list[Case] = []
    for case in tqdm(discovery.cases, desc=f"scan {spec.key}", unit="case", disable=None if show_progress else True,
                     file=sys.stderr):
        try:
            report = case.check() if case.check else case.load().report
            if report.empty and not spec.allow_empty:
                where = case.label_source or case.source
                raise CaseProblem("empty mask", [where], f"mask {where} is empty (no foreground)")
        except CaseProblem as p:
            problems[case.case_id] = p
            continue
        reports[case.case_id] = report
        ok.append(case)
    return ok, problems, reports


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


def convert(discovery: Discovery, opts: ConvertOptions) -> Path:
    """Write the nnU-Net raw dataset described by ``discovery`` with ``opts``; returns its folder."""
    from tqdm import tqdm

    spec = discovery.spec
    key = spec.key
    target = resolve_target(opts.out, opts.dataset_id, spec.name)
    root = target.parent
    same_id = sorted(p for p in root.glob(f"Dataset{opts.dataset_id:03d}_*") if p.is_dir()) if root.is_dir() else []
    if same_id and not opts.overwrite:
        raise UserError(f"dataset id {opts.dataset_id} already exists: {same_id[0]} (use --overwrite to replace it)")
    if not discovery.cases and not discovery.problems:
        raise UserError(f"no cases found in {discovery.source}")

    # ---- options that depend on the dataset
    preset, noise_at, scaled_by = resolve_noise(discovery, opts)
    rater_mode = None
    if spec.multi_rater:
        rater_mode = opts.raters or "sample"
        if rater_mode != "sample" and rater_mode not in discovery.raters:
            raise UserError(f"--raters {rater_mode}: this dataset has raters {', '.join(discovery.raters)} "
                            "(or use sample)")
    elif opts.raters:
        raise UserError(f"--raters applies to multi-rater datasets (lidc, mmis2024), not {key}")
    if opts.size is not None and opts.size < 8:
        raise UserError(f"--size must be at least 8 pixels, got {opts.size}")

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
    ids = [c.case_id for c in train + test]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"two source files map to the same case id {dup!r}")

    root.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_partials(root):
        print(f"note: removed {stale.name}, left by an interrupted conversion whose process is gone", file=sys.stderr)
    tmp = partial_folder(target)
    try:
        dirs = {n: tmp / n for n in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
        if preset:
            dirs["labelsTr_clean"] = tmp / "labelsTr_clean"
        for r in discovery.raters:
            dirs[f"labelsTs_{r}"] = tmp / f"labelsTs_{r}"
        for d in dirs.values():
            d.mkdir(parents=True)

        dices: list[float] = []
        changed = total = fg = 0
        empty: list[str] = []
        assignment: dict[str, str] = {}
        bar = tqdm(total=len(train) + len(test), desc=f"convert {key}", unit="case", disable=None, file=sys.stderr)
        for role, role_cases in (("train", train), ("test", test)):
            for case in role_cases:
                s = case.load()
                _check_image(s.image, spec, case, role)
                shape = target_shape(opts.size, s.image.shape[1:], spec.dim)
                spacing = resized_spacing(s.spacing, s.image.shape[1:], shape)
                write_image(dirs["imagesTr" if role == "train" else "imagesTs"], case.case_id,
                            resize_image(s.image, shape), spec, spacing)
                if role == "train":
                    if s.raters is not None:
                        rater = choose_rater(rater_mode or "sample", discovery.raters, case.case_id, opts.seed)
                        assignment[case.case_id] = rater
                        lab = resize_label(s.raters[rater], shape)
                        if not np.any(lab):
                            empty.append(case.case_id)
                    else:
                        assert s.label is not None
                        if not np.any(s.label):
                            empty.append(case.case_id)
                        lab = resize_label(s.label, shape)
                        if preset:
                            noisy = noisy_label(s.label, lab, preset, noise_at, spec.dim,
                                                 rng_for(opts.seed, TAG_NOISE, case.case_id))
                            write_label(dirs["labelsTr_clean"] / case.case_id, lab, spec, spacing)
                            dices.append(noise_mod.dice(noisy, lab))
                            changed += int(np.count_nonzero(noisy != lab))
                            lab = noisy
                    total += lab.size
                    fg += int(np.count_nonzero(lab))
                    write_label(dirs["labelsTr"] / case.case_id, lab, spec, spacing)
                else:
                    if s.raters is not None:
                        for r, m in s.raters.items():
                            write_label(dirs[f"labelsTs_{r}"] / case.case_id, resize_label(m, shape), spec, spacing)
                        clean = majority_vote(s.raters)
                    else:
                        assert s.label is not None
                        clean = s.label
                    if not np.any(clean):
                        empty.append(case.case_id)
                    write_label(dirs["labelsTs"] / case.case_id, resize_label(clean, shape), spec, spacing)
                bar.update(1)
        bar.close()

        if empty:
            warn(f"{len(empty)} case(s) have an empty mask (kept: normal for {key}): "
                 f"{', '.join(empty[:5])}{' …' if len(empty) > 5 else ''}")
        prov = _provenance(discovery, opts, train, test, split_method, n_available)
        prov.foreground_fraction = fg / total if total else 0.0
        if preset:
            noise_rate = changed / total if total else 0.0
            prov.noise = {**preset.params(), "noise_at": noise_at, "scaled_by": scaled_by,
                          "rng": f"numpy default_rng([seed, {TAG_NOISE}, crc32(case_id)]) per case",
                          "dice_vs_clean": float(np.mean(dices)) if dices else 1.0, "pixel_noise_rate": noise_rate}
            prov.tau, prov.tau_source = noise_rate, "pixel_noise_rate (docs/decisions.md §8)"
            prov.clean_labels = "labelsTr_clean"
        elif spec.multi_rater:
            prov.raters = {"mode": rater_mode, "available": discovery.raters, "assignment": assignment,
                           "test_consensus": "majority",
                           "test_rater_folders": [f"labelsTs_{r}" for r in discovery.raters]}
            prov.tau = 0.15 * prov.foreground_fraction
            prov.tau_source = "0.15 x training foreground fraction (docs/decisions.md §8)"
        else:
            prov.tau, prov.tau_source = 0.0, "clean labels"
        prov.empty_masks = empty
        prov.skipped = [{"case": cid, "problem": p.kind, "files": list(p.files), "detail": p.detail}
                        for cid, p in sorted(problems.items())]
        prov.repaired = [{"case": cid, "repair": r} for cid, rep in sorted(reports.items()) for r in rep.repairs]
        if spec.file_ending == ".png" and not spec.multi_rater:
            prov.mask_values = {"rule": "one channel, then 0/1 as is, else > 127",
                                "soft_pixels": sum(r.soft_pixels for r in reports.values()),
                                "soft_masks": sum(1 for r in reports.values() if r.soft_pixels)}
        prov.release_count = release
        dataset_json = {
            "name": spec.name, "description": spec.description, "reference": spec.reference,
            "licence": spec.licence, "channel_names": spec.channel_names, "labels": spec.labels,
            "numTraining": len(train), "file_ending": spec.file_ending, "gsd": prov.to_dict(),
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        if opts.preview:
            from .preview import write_preview
            write_preview(tmp, tmp / "gsd_preview.png", n_cases=4, seed=opts.seed)
        install(tmp, target, same_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


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
    n = image.shape[0]
    dims = {spec.dim, spec.dim + 1} if (spec.test_volumes and role == "test") else {spec.dim}
    if image.ndim - 1 not in dims:
        raise UserError(f"{case.source}: expected a {spec.dim}D image, got shape {image.shape[1:]}")
    if n != len(spec.channel_names):
        raise UserError(f"{case.source}: {n} channel(s), but this dataset has {len(spec.channel_names)} "
                        f"({', '.join(spec.channel_names.values())})")

