"""Per-pixel maps that travel with the image through nnU-Net's data pipeline.

GSD needs, for every training patch, maps aligned pixel for pixel with the augmented image: the SLIC
superpixels of SGLR (docs/decisions.md §5) and, for truth diagnostics, the clean training labels. Both are
computed once per case, cached beside the preprocessed data, and appended to the segmentation as
extra channels, so nnU-Net's cropping, padding, rotation, scaling and mirroring move them exactly
like the noisy label. The label files themselves stay untouched (extra channels there break
nnU-Net's dataset verification and foreground sampling).

Target channel layout seen by the trainer (see :class:`TargetLayout`):
``[noisy label, (clean label), (superpixel id low, superpixel id high)]``.
"""
from __future__ import annotations

import copy
import json
import multiprocessing
import os
from dataclasses import dataclass
from os.path import isdir, isfile, join
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from tqdm import tqdm

from nnunet_gsd.method.superpixels import encode_ids, slic_superpixels

CACHE_VERSION = 2  # bump when slic_superpixels changes its output for the same parameters


@dataclass(frozen=True)
class TargetLayout:
    """Which channel of the batch's ``target`` holds what."""

    has_clean: bool
    has_superpixels: bool

    @property
    def num_label_channels(self) -> int:
        """Channels that are label maps (resampled like nnU-Net resamples labels)."""
        return 1 + int(self.has_clean)

    @property
    def num_channels(self) -> int:
        return self.num_label_channels + 2 * int(self.has_superpixels)

    @property
    def clean_channel(self) -> int:
        return 1

    @property
    def superpixel_channels(self) -> slice:
        return slice(self.num_label_channels, self.num_label_channels + 2)


def _atomic_save(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.npy"  # unique: two trainings on one dataset may build the cache at once
    np.save(tmp, array)
    os.replace(tmp, path)


def _cache_is_current(folder: str, params: dict) -> bool:
    params_file = join(folder, "params.json")
    if not isfile(params_file):
        return False
    with open(params_file) as f:
        return json.load(f) == params


def _write_params(folder: str, params: dict) -> None:
    tmp = join(folder, f"params.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(params, f, indent=1)
    os.replace(tmp, join(folder, "params.json"))


def _open_cache(folder: str, params: dict) -> None:
    """Create the cache folder; empty it when it was built with other parameters."""
    os.makedirs(folder, exist_ok=True)
    if not _cache_is_current(folder, params):
        for f in os.listdir(folder):
            if f.endswith(".npy"):
                os.remove(join(folder, f))
        _write_params(folder, params)


def _missing(folder: str, identifiers: Sequence[str]) -> List[str]:
    return [i for i in identifiers if not isfile(join(folder, i + ".npy"))]


def _run_parallel(worker, jobs: list, num_processes: int, description: str) -> None:
    if num_processes <= 1 or len(jobs) <= 1:
        for job in tqdm(jobs, desc=description, unit="case"):
            worker(job)
        return
    # spawn, like nnU-Net's preprocessing: forking a process that already holds torch threads can hang
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        for _ in tqdm(pool.imap_unordered(worker, jobs), total=len(jobs), desc=description, unit="case"):
            pass


def _superpixel_job(job: Tuple[str, str, str, str, dict]) -> None:
    dataset_class_path, preprocessed_folder, identifier, out_folder, slic = job
    module, name = dataset_class_path.rsplit(".", 1)
    dataset_class = getattr(__import__(module, fromlist=[name]), name)
    data = np.asarray(dataset_class(preprocessed_folder, [identifier]).load_case(identifier)[0])
    ids = slic_superpixels(data, n_segments_per_256sq=slic["n_segments_per_256sq"],
                           compactness=slic["compactness"], sigma=slic["sigma"], convert2lab=slic["convert2lab"])
    _atomic_save(join(out_folder, identifier + ".npy"), encode_ids(ids))


def build_superpixel_cache(preprocessed_folder: str, cache_folder: str, dataset_class: type,
                           identifiers: Sequence[str], slic: Dict[str, float], num_processes: int) -> None:
    """SLIC of every preprocessed case (docs/decisions.md §5), computed once; rebuilt when its parameters change.

    SLIC runs on the preprocessed image (after nnU-Net's cropping, resampling and normalisation), so
    the map is aligned with the arrays the data loader crops from.
    """
    params = {"version": CACHE_VERSION, "kind": "slic", **slic}
    _open_cache(cache_folder, params)
    todo = _missing(cache_folder, identifiers)
    jobs = [(f"{dataset_class.__module__}.{dataset_class.__name__}", preprocessed_folder, i, cache_folder, slic)
            for i in todo]
    _run_parallel(_superpixel_job, jobs, num_processes, "GSD: SLIC superpixels")


def _clean_label_job(job: Tuple[List[str], str, str, dict, dict, str]) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    image_files, seg_file, out_file, plans, dataset_json, configuration = job
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    _, seg, _ = preprocessor.run_case(image_files, seg_file, plans_manager, configuration_manager, dataset_json)
    _atomic_save(out_file, seg.astype(np.int16))


def build_clean_label_cache(raw_dataset_folder: str, cache_folder: str, identifiers: Sequence[str],
                            plans: dict, configuration: str, dataset_json: dict, num_processes: int) -> None:
    """Clean training labels (``labelsTr_clean/``) preprocessed exactly like the noisy ones.

    nnU-Net's own preprocessor crops and resamples them, so they align with the preprocessed case.
    """
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    files = get_filenames_of_train_images_and_targets(raw_dataset_folder, dataset_json)
    params = {"version": CACHE_VERSION, "kind": "clean_labels", "configuration": configuration}
    _open_cache(cache_folder, params)
    clean_folder = join(raw_dataset_folder, "labelsTr_clean")
    jobs = []
    for identifier in _missing(cache_folder, identifiers):
        clean_file = join(clean_folder, identifier + dataset_json["file_ending"])
        if not isfile(clean_file):
            raise FileNotFoundError(f"{clean_file} is missing: labelsTr_clean/ must hold one clean label per "
                                    f"training case (or remove the folder to train without truth diagnostics)")
        jobs.append((files[identifier]["images"], clean_file, join(cache_folder, identifier + ".npy"),
                     plans, dataset_json, configuration))
    _run_parallel(_clean_label_job, jobs, num_processes, "GSD: clean labels")


class AuxChannelDataset:
    """An nnU-Net dataset whose ``load_case`` appends the cached maps to the segmentation."""

    def __init__(self, base, layout: TargetLayout, clean_folder: Optional[str], superpixel_folder: Optional[str]):
        self.base = base
        self.layout = layout
        self.clean_folder = clean_folder
        self.superpixel_folder = superpixel_folder

    @property
    def identifiers(self) -> List[str]:
        return self.base.identifiers

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.base.load_case(identifier)
        channels = [np.asarray(seg)]
        if self.layout.has_clean:
            channels.append(np.load(join(self.clean_folder, identifier + ".npy"), mmap_mode="r"))
        if self.layout.has_superpixels:
            channels.append(np.load(join(self.superpixel_folder, identifier + ".npy"), mmap_mode="r"))
        for extra in channels[1:]:
            if extra.shape[1:] != channels[0].shape[1:]:
                raise RuntimeError(f"cached GSD map for case {identifier} has shape {extra.shape[1:]}, the "
                                   f"preprocessed case {channels[0].shape[1:]}: the data was preprocessed again. "
                                   f"Delete the gsd_* folders in the preprocessed dataset and restart.")
        return data, np.concatenate([np.asarray(c, dtype=np.int16) for c in channels]), seg_prev, properties


class AuxAwareSpatialTransform(SpatialTransform):
    """nnU-Net's spatial transform; the superpixel channels are resampled nearest-neighbour.

    Label channels keep nnU-Net's own label resampling. Superpixel ids are identities, not classes:
    interpolating them would invent ids, and nnU-Net's label path costs time per distinct value
    (thousands of ids). Nearest-neighbour sampling gives every output pixel the id of the input pixel
    it came from, in both id channels at once.
    """

    num_label_channels: int
    num_channels: int

    @classmethod
    def wrap(cls, transform: SpatialTransform, layout: TargetLayout) -> AuxAwareSpatialTransform:
        wrapped = copy.copy(transform)
        wrapped.__class__ = cls
        wrapped.num_label_channels = layout.num_label_channels
        wrapped.num_channels = layout.num_channels
        wrapped._nearest = copy.copy(transform)
        wrapped._nearest.mode_seg = "nearest"
        return wrapped

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        # Convert3DTo2DTransform (nnU-Net's dummy 2D augmentation) folds axis 0 into the channels,
        # channel-major, so each of our channels then spans `per_channel` consecutive channels.
        per_channel = segmentation.shape[0] // self.num_channels
        split = self.num_label_channels * per_channel
        labels = super()._apply_to_segmentation(segmentation[:split], **params)
        ids = self._nearest._apply_to_segmentation(segmentation[split:], **params)
        return torch.cat((labels, ids))


def with_aux_spatial_transform(transforms: ComposeTransforms, layout: TargetLayout) -> ComposeTransforms:
    """Replace the SpatialTransform of nnU-Net's training pipeline by :class:`AuxAwareSpatialTransform`."""
    found = False
    for index, transform in enumerate(transforms.transforms):
        if isinstance(transform, SpatialTransform):
            transforms.transforms[index] = AuxAwareSpatialTransform.wrap(transform, layout)
            found = True
    if not found:
        raise RuntimeError("nnU-Net's training transforms contain no SpatialTransform; the superpixel channels "
                           "could not be attached to it")
    return transforms


def is_rgb(channel_names: Dict[str, str]) -> bool:
    """RGB photographs (e.g. Kvasir) get SLIC in Lab space, as skimage intends; other channels do not."""
    names = [str(v).lower() for _, v in sorted(channel_names.items(), key=lambda kv: int(kv[0]))]
    return names in (["r", "g", "b"], ["red", "green", "blue"])


def has_clean_labels(raw_dataset_folder: Optional[str]) -> bool:
    return raw_dataset_folder is not None and isdir(join(raw_dataset_folder, "labelsTr_clean"))
