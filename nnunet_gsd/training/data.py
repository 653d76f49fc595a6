"""Per-pixel maps that travel with the image through nnU-Net's data pipeline.

GSD needs, for every training patch, maps aligned pixel for pixel with the augmented image: the SLIC
superpixels of SGLR (docs/decisions.md §5) and, for truth diagnostics, the clean training labels. Both are
computed once per case, cached beside the preprocessed data (each map keyed to the files it was computed from
and to the parameters: a stale map is computed again, :func:`_update_cache`), and appended to the segmentation as
extra channels, so nnU-Net's cropping, padding, rotation, scaling and mirroring move them exactly
like the noisy label. The label files themselves stay untouched (extra channels there break
nnU-Net's dataset verification and foreground sampling).

Target channel layout seen by the trainer (see :class:`TargetLayout`):
``[noisy label, (rater 1 … rater R), (clean label), (superpixel id high, superpixel id low)]`` — the raters only
with soft rater labels (:mod:`nnunet_gsd.training.raters`), the two int16 halves of
:func:`~nnunet_gsd.method.superpixels.encode_ids`, ``id = high·32768 + low``.
"""
from __future__ import annotations

import copy
import glob
import hashlib
import json
import multiprocessing
import os
from dataclasses import dataclass
from os.path import isdir, isfile, join
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from tqdm import tqdm

from nnunet_gsd.errors import UserError
from nnunet_gsd.method.superpixels import encode_ids, slic_superpixels
from nnunet_gsd.utils import atomic_path, write_json_atomic

CACHE_VERSION = 3  # bump when slic_superpixels changes its output for the same parameters (3: per-case sources)


@dataclass(frozen=True)
class TargetLayout:
    """Which channel of the batch's ``target`` holds what."""

    has_clean: bool
    has_superpixels: bool
    num_raters: int = 0  # rater label maps after the noisy label (soft rater labels; 0: none)

    @property
    def num_label_channels(self) -> int:
        """Channels that are label maps (resampled like nnU-Net resamples labels)."""
        return 1 + self.num_raters + int(self.has_clean)

    @property
    def num_channels(self) -> int:
        return self.num_label_channels + 2 * int(self.has_superpixels)

    @property
    def rater_channels(self) -> slice:
        return slice(1, 1 + self.num_raters)

    @property
    def clean_channel(self) -> int:
        return 1 + self.num_raters

    @property
    def superpixel_channels(self) -> slice:
        return slice(self.num_label_channels, self.num_label_channels + 2)


# ------------------------------------------------------------------ what a cached map was computed from
def case_files(preprocessed_folder: str, identifier: str, with_segmentation: bool = False) -> List[str]:
    """The preprocessed case's files: data and properties (nnU-Net's ``ID.b2nd`` / ``ID.npz`` and ``ID.pkl``), and
    with ``with_segmentation`` its label (``ID_seg.b2nd``; an ``.npz`` holds both)."""
    names = glob.glob(join(glob.escape(preprocessed_folder), glob.escape(identifier) + ".*"))
    if with_segmentation:
        names += glob.glob(join(glob.escape(preprocessed_folder), glob.escape(identifier) + "_seg.*"))
    return sorted(names)


def file_stamps(paths: Sequence[str]) -> List[list]:
    """``[[name, size, mtime_ns], …]``: a cheap test whether files may have changed (rewriting changes the mtime)."""
    out = []
    for path in sorted(paths):
        info = os.stat(path)
        out.append([os.path.basename(path), info.st_size, info.st_mtime_ns])
    return out


def content_digest(paths: Sequence[str]) -> str:
    """SHA-256 over the files' names and bytes: the exact test, run only when the stamps differ (nnU-Net writes
    the same bytes for the same case, so preprocessing again without changes rebuilds nothing)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _sources_file(folder: str, identifier: str) -> str:
    return join(folder, identifier + ".sources.json")


def _recorded_sources(folder: str, identifier: str) -> Optional[dict]:
    """What a cached map records it was computed from, or None where there is no usable map."""
    try:
        with open(_sources_file(folder, identifier)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isfile(join(folder, identifier + ".npy")) and isinstance(record, dict) else None


@dataclass(frozen=True)
class CacheJob:
    """One case to bring up to date in ``folder``: its map is computed from ``sources`` (files) unless their content
    is ``recorded_digest``'s, the digest of those the cached map came from (None: no map yet)."""

    identifier: str
    folder: str
    sources: Tuple[str, ...]
    recorded_digest: Optional[str]
    payload: tuple  # the arguments of the function computing the map


def _update_case(job: CacheJob, compute) -> str:
    """Bring one case's map up to date: "unchanged" (same content, the record is refreshed), "stale" or "new"."""
    stamps = file_stamps(job.sources)  # before reading: a change during the build shows up next time
    digest = content_digest(job.sources)
    status = "unchanged" if digest == job.recorded_digest else "stale" if job.recorded_digest else "new"
    if status != "unchanged":
        _atomic_save(join(job.folder, job.identifier + ".npy"), compute(*job.payload))
    # written after the map: a record never describes a map that is not there
    write_json_atomic(_sources_file(job.folder, job.identifier), {"files": stamps, "sha256": digest}, indent=1)
    return status


@dataclass
class CacheReport:
    """What bringing a cache up to date did, for the training log."""

    what: str
    folder: str
    reused: int = 0
    new: int = 0
    stale: int = 0
    unchanged: int = 0
    reset: Optional[str] = None  # why the whole cache was discarded

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)

    def __str__(self) -> str:
        parts = [f"rebuilt {self.stale} stale case(s) (changed since their maps were computed)"] if self.stale else []
        parts += [f"computed {self.new} new"] if self.new else []
        parts += [f"{self.unchanged} rewritten with the same content (kept)"] if self.unchanged else []
        parts += [f"{self.reused} up to date"]
        reset = f"{self.reset}: every map is computed again; " if self.reset else ""
        return f"GSD {self.what} ({self.folder}): {reset}" + ", ".join(parts)


def _atomic_save(path: str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def _open_cache(folder: str, params: dict) -> Optional[str]:
    """Create the cache folder; empty it when it was built with other parameters (then say which differ)."""
    os.makedirs(folder, exist_ok=True)
    params_file = join(folder, "params.json")
    try:
        with open(params_file) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = None
    if old == params:
        return None
    for f in os.listdir(folder):
        if f.endswith((".npy", ".sources.json")):
            os.remove(join(folder, f))
    write_json_atomic(params_file, params, indent=1)
    if old is None:
        return None
    changed = sorted(k for k in set(old) | set(params) if not isinstance(old, dict) or old.get(k) != params.get(k))
    return f"built with other {', '.join(changed)}"


def _update_cache(folder: str, what: str, params: dict, identifiers: Sequence[str], sources_of, payload_of,
                  worker, num_processes: int) -> CacheReport:
    """The one cache procedure: every case's map is keyed to the files it was computed from (stamps, then content)
    and to ``params``; stale and missing maps are computed by ``worker(job)``, in parallel."""
    report = CacheReport(what, folder, reset=_open_cache(folder, params))
    jobs = []
    for identifier in identifiers:
        sources = tuple(sources_of(identifier))
        record = _recorded_sources(folder, identifier)
        if record is not None and record.get("files") == file_stamps(sources):
            report.reused += 1
        else:
            jobs.append(CacheJob(identifier, folder, sources, (record or {}).get("sha256"), payload_of(identifier)))
    for status in _run_parallel(worker, jobs, num_processes, f"GSD: {what}"):
        report.add(status)
    return report


def _run_parallel(worker, jobs: list, num_processes: int, description: str) -> List:
    if num_processes <= 1 or len(jobs) <= 1:
        return [worker(job) for job in tqdm(jobs, desc=description, unit="case")]
    # spawn, like nnU-Net's preprocessing: forking a process that already holds torch threads can hang
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        return list(tqdm(pool.imap_unordered(worker, jobs), total=len(jobs), desc=description, unit="case"))


def _load_dataset_class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


def _superpixels(dataset_class_path: str, preprocessed_folder: str, identifier: str, slic: dict) -> np.ndarray:
    dataset_class = _load_dataset_class(dataset_class_path)
    data = np.asarray(dataset_class(preprocessed_folder, [identifier]).load_case(identifier)[0])
    ids = slic_superpixels(data, n_segments_per_256sq=slic["n_segments_per_256sq"],
                           compactness=slic["compactness"], sigma=slic["sigma"], convert2lab=slic["convert2lab"])
    return encode_ids(ids)


def _superpixel_job(job: CacheJob) -> str:
    return _update_case(job, _superpixels)


def build_superpixel_cache(preprocessed_folder: str, cache_folder: str, dataset_class: type,
                           identifiers: Sequence[str], slic: Dict[str, float], num_processes: int) -> CacheReport:
    """SLIC of every preprocessed case (docs/decisions.md §5), kept until its image or the parameters change.

    SLIC runs on the preprocessed image (after nnU-Net's cropping, resampling and normalisation), so
    the map is aligned with the arrays the data loader crops from; each map records the files of the case it was
    computed from, and a case whose files changed (preprocessed again from other images) is computed again.
    """
    params = {"version": CACHE_VERSION, "kind": "slic", **slic}
    class_path = f"{dataset_class.__module__}.{dataset_class.__name__}"
    return _update_cache(cache_folder, "SLIC superpixels", params, identifiers,
                         lambda i: case_files(preprocessed_folder, i),
                         lambda i: (class_path, preprocessed_folder, i, slic),
                         _superpixel_job, num_processes)


def _clean_labels(image_files: List[str], seg_file: str, plans: dict, dataset_json: dict, configuration: str,
                  dataset_class_path: str, preprocessed_folder: str, identifier: str) -> np.ndarray:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    _, seg, _ = preprocessor.run_case(image_files, seg_file, plans_manager, configuration_manager, dataset_json)
    case = _load_dataset_class(dataset_class_path)(preprocessed_folder, [identifier]).load_case(identifier)[1]
    if tuple(seg.shape[1:]) != tuple(case.shape[1:]):
        # the raw images differ from those the preprocessed case was made from: the labels would not align
        raise UserError(f"clean label {seg_file} preprocesses to shape {tuple(seg.shape[1:])}, the preprocessed case "
                        f"{identifier} has {tuple(case.shape[1:])}: the raw images changed after "
                        f"nnUNetv2_plan_and_preprocess ran; run it again")
    return seg.astype(np.int16)


def _clean_label_job(job: CacheJob) -> str:
    return _update_case(job, _clean_labels)


def clean_label_params(plans: dict, configuration: str) -> dict:
    """What of the plans decides how a label is preprocessed (reader, transposition, spacing, resampling): the
    plans identity of the clean-label cache. Plans variants that change only the batch size share it."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    config = PlansManager(plans).get_configuration(configuration).configuration  # with nnU-Net's inheritance
    return {"image_reader_writer": plans.get("image_reader_writer"),
            "transpose_forward": plans.get("transpose_forward"),
            **{k: config.get(k) for k in ("data_identifier", "preprocessor_name", "spacing", "resampling_fn_seg",
                                          "resampling_fn_seg_kwargs")}}


def build_clean_label_cache(raw_dataset_folder: str, cache_folder: str, identifiers: Sequence[str],
                            plans: dict, configuration: str, dataset_json: dict, num_processes: int,
                            preprocessed_folder: str, dataset_class: type) -> CacheReport:
    """Clean training labels (``labelsTr_clean/``) preprocessed exactly like the noisy ones.

    nnU-Net's own preprocessor crops and resamples them, so they align with the preprocessed case. Each is kept
    until its clean label, its raw images, its preprocessed case or the plans' preprocessing change.
    """
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    files = get_filenames_of_train_images_and_targets(raw_dataset_folder, dataset_json)
    params = {"version": CACHE_VERSION, "kind": "clean_labels", "configuration": configuration,
              **clean_label_params(plans, configuration)}
    clean_folder = join(raw_dataset_folder, "labelsTr_clean")
    for identifier in identifiers:
        clean_file = join(clean_folder, identifier + dataset_json["file_ending"])
        if not isfile(clean_file):
            raise UserError(f"{clean_file} is missing: labelsTr_clean/ must hold one clean label per training case "
                            f"(or remove the folder to train without truth diagnostics)")
    class_path = f"{dataset_class.__module__}.{dataset_class.__name__}"

    def clean_file_of(identifier: str) -> str:
        return join(clean_folder, identifier + dataset_json["file_ending"])

    return _update_cache(
        cache_folder, "clean labels", params, identifiers,
        lambda i: [*files[i]["images"], clean_file_of(i), *case_files(preprocessed_folder, i)],
        lambda i: (files[i]["images"], clean_file_of(i), plans, dataset_json, configuration, class_path,
                   preprocessed_folder, i),
        _clean_label_job, num_processes)


class CaseWrapper:
    """An nnU-Net dataset that changes what ``load_case`` returns for each case of ``base`` (nnU-Net's data loader
    calls only ``identifiers`` and ``load_case``); subclasses override ``load_case``."""

    def __init__(self, base):
        self.base = base

    @property
    def identifiers(self) -> List[str]:
        return self.base.identifiers

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

    def load_case(self, identifier: str):
        return self.base.load_case(identifier)


class AuxChannelDataset(CaseWrapper):
    """An nnU-Net dataset whose ``load_case`` appends the cached maps to the segmentation."""

    def __init__(self, base, layout: TargetLayout, clean_folder: Optional[str], superpixel_folder: Optional[str]):
        super().__init__(base)
        self.layout = layout
        self.clean_folder = clean_folder
        self.superpixel_folder = superpixel_folder

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.base.load_case(identifier)
        channels = [np.asarray(seg)]
        if self.layout.has_clean:
            channels.append(np.load(join(self.clean_folder, identifier + ".npy"), mmap_mode="r"))
        if self.layout.has_superpixels:
            channels.append(np.load(join(self.superpixel_folder, identifier + ".npy"), mmap_mode="r"))
        for extra in channels[1:]:
            if extra.shape[1:] != channels[0].shape[1:]:
                # the caches are checked against the preprocessed files when training starts: only a change
                # while this training runs gets here
                raise RuntimeError(f"cached GSD map for case {identifier} has shape {extra.shape[1:]}, the "
                                   f"preprocessed case {channels[0].shape[1:]}: the data was preprocessed again "
                                   f"while this training ran; restart it (the stale maps are then computed again)")
        return data, np.concatenate([np.asarray(c, dtype=np.int16) for c in channels]), seg_prev, properties


class AuxAwareSpatialTransform(BasicTransform):
    """nnU-Net's spatial transform, with the superpixel channels resampled nearest-neighbour.

    Label channels keep nnU-Net's own label resampling. Superpixel ids are identities, not classes:
    interpolating them would invent ids, and nnU-Net's label path costs time per distinct value
    (thousands of ids). Nearest-neighbour sampling gives every output pixel the id of the input pixel
    it came from, in both id channels at once. Built around nnU-Net's configured transform (``spatial``)
    and a copy of it set to nearest-neighbour, both drawing the same parameters, so every augmentation
    setting nnU-Net chose is kept as it is.
    """

    def __init__(self, spatial: SpatialTransform, layout: TargetLayout):
        super().__init__()
        self.spatial = spatial
        self.nearest = copy.copy(spatial)
        self.nearest.mode_seg = "nearest"
        self.num_label_channels = layout.num_label_channels
        self.num_channels = layout.num_channels

    def get_parameters(self, **data_dict) -> dict:
        return self.spatial.get_parameters(**data_dict)

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        return self.spatial._apply_to_image(img, **params)

    def _apply_to_regr_target(self, regression_target: torch.Tensor, **params) -> torch.Tensor:
        return self.spatial._apply_to_regr_target(regression_target, **params)

    def _apply_to_keypoints(self, keypoints, **params):
        return self.spatial._apply_to_keypoints(keypoints, **params)

    def _apply_to_bbox(self, bbox, **params):
        return self.spatial._apply_to_bbox(bbox, **params)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        # Convert3DTo2DTransform (nnU-Net's dummy 2D augmentation) folds axis 0 into the channels,
        # channel-major, so each of our channels then spans `per_channel` consecutive channels.
        per_channel = segmentation.shape[0] // self.num_channels
        split = self.num_label_channels * per_channel
        labels = self.spatial._apply_to_segmentation(segmentation[:split], **params)
        ids = self.nearest._apply_to_segmentation(segmentation[split:], **params)
        return torch.cat((labels, ids))


def with_aux_spatial_transform(transforms: ComposeTransforms, layout: TargetLayout) -> ComposeTransforms:
    """Replace the SpatialTransform of nnU-Net's training pipeline by :class:`AuxAwareSpatialTransform`."""
    found = False
    for index, transform in enumerate(transforms.transforms):
        if isinstance(transform, SpatialTransform):
            transforms.transforms[index] = AuxAwareSpatialTransform(transform, layout)
            found = True
    if not found:
        raise RuntimeError("nnU-Net's training transforms contain no SpatialTransform; the superpixel channels "
                           "could not be attached to it")
    return transforms


def has_clean_labels(raw_dataset_folder: Optional[str]) -> bool:
    return raw_dataset_folder is not None and isdir(join(raw_dataset_folder, "labelsTr_clean"))
