"""The per-case caches (SLIC superpixels, clean labels, boundary offsets) are keyed to what they were computed from:
a preprocessed case rewritten with other content, or another shape, is computed again and the log says so; the
same bytes written again, and an unchanged case, are reused. Real nnU-Net files (blosc2 cases, its preprocessor)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from PIL import Image

from helpers import tiny_2d_plans
from nnunet_gsd.errors import UserError
from nnunet_gsd.method.superpixels import encode_ids, slic_superpixels
from nnunet_gsd.training.data import (AuxChannelDataset, TargetLayout, build_clean_label_cache,
                                      build_superpixel_cache)

SLIC = {"n_segments_per_256sq": 1024, "compactness": 10.0, "sigma": 1.0, "convert2lab": False}


def stripes(shape, axis: int, period: int = 8) -> np.ndarray:
    """An image of bright and dark bands across ``axis``: SLIC follows the bands, so the axis shows in the map."""
    index = np.indices(shape)[axis]
    return ((index // period) % 2).astype(np.float32)[None, None] + np.linspace(0, 0.01, shape[-1], dtype=np.float32)


def write_case(folder: Path, identifier: str, data: np.ndarray, seg: np.ndarray = None) -> None:
    """A preprocessed case as nnUNetv2_plan_and_preprocess writes it (blosc2 can not overwrite: remove first)."""
    for f in folder.glob(f"{identifier}.*"):
        f.unlink()
    for f in folder.glob(f"{identifier}_seg.*"):
        f.unlink()
    seg = np.zeros(data.shape, np.int16) if seg is None else seg
    nnUNetDatasetBlosc2.save_case(data, seg, {"spacing": [1, 1]}, str(folder / identifier),
                                  chunks=data.shape, blocks=data.shape)


def cached(cache: Path, identifier: str) -> np.ndarray:
    return np.load(cache / f"{identifier}.npy")


def expected_ids(data: np.ndarray) -> np.ndarray:
    return encode_ids(slic_superpixels(data, **{k: v for k, v in SLIC.items()}))


@pytest.fixture
def preprocessed(tmp_path: Path) -> Path:
    folder = tmp_path / "nnUNetPlans_2d"
    folder.mkdir()
    for identifier in ("a", "b", "c"):
        write_case(folder, identifier, stripes((32, 32), 0))
    return folder


def build(preprocessed: Path, cache: Path, slic=SLIC):
    return build_superpixel_cache(str(preprocessed), str(cache), nnUNetDatasetBlosc2,
                                  nnUNetDatasetBlosc2.get_identifiers(str(preprocessed)), slic, 1)


def test_superpixels_are_computed_again_for_a_case_whose_image_changed(preprocessed: Path, tmp_path: Path):
    cache = tmp_path / "gsd_superpixels"
    first = build(preprocessed, cache)
    np.testing.assert_array_equal(cached(cache, "b"), expected_ids(stripes((32, 32), 0)))
    again = build(preprocessed, cache)

    # other images, same ids and size (what regenerating a dataset and preprocessing it again does)
    write_case(preprocessed, "b", stripes((32, 32), 1))
    report = build(preprocessed, cache)
    np.testing.assert_array_equal(cached(cache, "b"), expected_ids(stripes((32, 32), 1)))  # was: the old image's
    assert not np.array_equal(cached(cache, "b"), cached(cache, "a"))
    assert (first.new, first.stale, first.reused) == (3, 0, 0)
    assert (again.new, again.stale, again.reused) == (0, 0, 3)
    assert (report.stale, report.reused) == (1, 2)
    assert "rebuilt 1 stale case(s)" in str(report) and str(cache) in str(report) and "\n" not in str(report)

    # the same bytes written again (preprocessing again without changes): kept, nothing computed
    before = os.stat(cache / "c.npy").st_mtime_ns
    write_case(preprocessed, "c", stripes((32, 32), 0))
    report = build(preprocessed, cache)
    assert (report.unchanged, report.stale, report.reused) == (1, 0, 2)
    assert os.stat(cache / "c.npy").st_mtime_ns == before
    assert build(preprocessed, cache).reused == 3


def test_a_case_of_another_size_is_computed_again_instead_of_crashing_the_data_loader(preprocessed, tmp_path):
    cache = tmp_path / "gsd_superpixels"
    build(preprocessed, cache)
    write_case(preprocessed, "a", stripes((40, 24), 1))
    report = build(preprocessed, cache)
    dataset = AuxChannelDataset(nnUNetDatasetBlosc2(str(preprocessed)), TargetLayout(False, True), None, str(cache))
    data, target, _, _ = dataset.load_case("a")  # used to raise RuntimeError "... has shape (1, 32, 32) ..."
    assert data.shape == (1, 1, 40, 24) and target.shape == (3, 1, 40, 24)
    np.testing.assert_array_equal(target[1:], expected_ids(stripes((40, 24), 1)))
    assert report.stale == 1


def test_other_slic_parameters_discard_the_whole_cache_and_say_which(preprocessed, tmp_path):
    cache = tmp_path / "gsd_superpixels"
    build(preprocessed, cache)
    report = build(preprocessed, cache, dict(SLIC, compactness=20.0))
    assert report.new == 3 and report.reset == "built with other compactness"
    assert str(report).startswith(f"GSD SLIC superpixels ({cache}): built with other compactness: every map is "
                                  f"computed again; ")


# ------------------------------------------------------------------ clean labels
NAME = "Dataset000_X"
DATASET_JSON = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
                "file_ending": ".png"}


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def square(shape, top: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top:top + 8, 4:12] = 1
    return mask


def preprocess(raw: Path, preprocessed: Path, identifier: str, plans: dict) -> None:
    """One case through nnU-Net's own preprocessor, saved as nnUNetv2_plan_and_preprocess saves it."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    manager = PlansManager(plans)
    configuration = manager.get_configuration("2d")
    data, seg, properties = configuration.preprocessor_class(verbose=False).run_case(
        [str(raw / "imagesTr" / f"{identifier}_0000.png")], str(raw / "labelsTr" / f"{identifier}.png"), manager,
        configuration, DATASET_JSON)
    for f in list(preprocessed.glob(f"{identifier}.*")) + list(preprocessed.glob(f"{identifier}_seg.*")):
        f.unlink()
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(preprocessed / identifier),
                                  chunks=data.shape, blocks=data.shape)


@pytest.fixture
def raw_dataset(tmp_path: Path):
    raw, preprocessed = tmp_path / "raw" / NAME, tmp_path / "preprocessed" / NAME / "x"
    preprocessed.mkdir(parents=True)
    (raw).mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps(DATASET_JSON))
    plans = tiny_2d_plans(NAME)
    # PNG cases are read as (1, H, W) with spacing (999, 1, 1): nnU-Net plans them with a 3-axis transposition
    plans["transpose_forward"] = plans["transpose_backward"] = [0, 1, 2]
    plans["foreground_intensity_properties_per_channel"] = {"0": {"mean": 128.0, "std": 64.0}}
    rng = np.random.default_rng(0)
    for identifier in ("a", "b"):
        write_png(raw / "imagesTr" / f"{identifier}_0000.png", rng.integers(1, 255, (32, 32)))
        write_png(raw / "labelsTr" / f"{identifier}.png", square((32, 32), 4))
        write_png(raw / "labelsTr_clean" / f"{identifier}.png", square((32, 32), 6))
        preprocess(raw, preprocessed, identifier, plans)
    return raw, preprocessed, plans


def build_clean(raw_dataset, cache: Path):
    raw, preprocessed, plans = raw_dataset
    return build_clean_label_cache(str(raw), str(cache), ["a", "b"], plans, "2d", DATASET_JSON, 1,
                                   str(preprocessed), nnUNetDatasetBlosc2)


def test_clean_labels_are_computed_again_when_the_clean_label_or_the_case_changed(raw_dataset, tmp_path):
    raw, preprocessed, plans = raw_dataset
    cache = tmp_path / "gsd_clean_labels"
    assert build_clean(raw_dataset, cache).new == 2
    assert cached(cache, "b")[0, 0, 6:14, 4:12].all() and cached(cache, "b").sum() == 64
    assert build_clean(raw_dataset, cache).reused == 2

    write_png(raw / "labelsTr_clean" / "b.png", square((32, 32), 20))  # a corrected clean label
    report = build_clean(raw_dataset, cache)
    assert (report.stale, report.reused) == (1, 1) and "rebuilt 1 stale case(s)" in str(report)
    assert cached(cache, "b")[0, 0, 20:28, 4:12].all() and cached(cache, "b").sum() == 64

    # case a regenerated at another size and preprocessed again: the cache follows (was: RuntimeError in training)
    write_png(raw / "imagesTr" / "a_0000.png", np.full((40, 24), 100))
    write_png(raw / "labelsTr" / "a.png", square((40, 24), 4))
    write_png(raw / "labelsTr_clean" / "a.png", square((40, 24), 30))
    preprocess(raw, preprocessed, "a", plans)
    assert build_clean(raw_dataset, cache).stale == 1
    assert cached(cache, "a").shape == (1, 1, 40, 24) and cached(cache, "a")[0, 0, 30:38, 4:12].all()


def test_raw_images_changed_without_preprocessing_again_is_one_line(raw_dataset, tmp_path):
    raw, _, _ = raw_dataset
    cache = tmp_path / "gsd_clean_labels"
    build_clean(raw_dataset, cache)
    write_png(raw / "imagesTr" / "b_0000.png", np.full((40, 24), 100))
    write_png(raw / "labelsTr_clean" / "b.png", square((40, 24), 4))
    with pytest.raises(UserError) as info:
        build_clean(raw_dataset, cache)
    assert str(info.value) == (f"clean label {raw / 'labelsTr_clean' / 'b.png'} preprocesses to shape (1, 40, 24), the "
                               f"preprocessed case b has (1, 32, 32): the raw images changed after "
                               f"nnUNetv2_plan_and_preprocess ran; run it again")


def test_other_plans_preprocessing_discards_the_clean_labels_but_a_batch_size_variant_does_not(raw_dataset, tmp_path):
    raw, preprocessed, plans = raw_dataset
    cache = tmp_path / "gsd_clean_labels"
    build_clean(raw_dataset, cache)
    variant = json.loads(json.dumps(plans))
    variant["plans_name"], variant["configurations"]["2d"]["batch_size"] = "nnUNetPlans_bs8", 8
    assert build_clean_label_cache(str(raw), str(cache), ["a", "b"], variant, "2d", DATASET_JSON, 1,
                                   str(preprocessed), nnUNetDatasetBlosc2).reused == 2
    variant["configurations"]["2d"]["resampling_fn_seg_kwargs"] = {"order": 1}
    report = build_clean_label_cache(str(raw), str(cache), ["a", "b"], variant, "2d", DATASET_JSON, 1,
                                     str(preprocessed), nnUNetDatasetBlosc2)
    assert report.new == 2 and report.reset == "built with other resampling_fn_seg_kwargs"


# ------------------------------------------------------------------ boundary offsets
def test_boundary_offsets_are_estimated_again_when_the_training_cases_changed(preprocessed: Path, tmp_path: Path):
    from nnunet_gsd.training.calibration import OFFSETS_FILE, run_boundary_offsets
    log = []
    trainer = SimpleNamespace(
        label_manager=SimpleNamespace(foreground_labels=[1]), do_split=lambda: (["a", "b", "c"], []),
        configuration_manager=SimpleNamespace(spacing=[1.0, 1.0]), local_rank=0, is_ddp=False,
        output_folder=str(tmp_path / "fold_0"), dataset_class=nnUNetDatasetBlosc2,
        preprocessed_dataset_folder=str(preprocessed), print_to_log_file=log.append)
    run_boundary_offsets(trainer, "auto")
    record = tmp_path / "fold_0" / OFFSETS_FILE
    written = record.stat().st_mtime_ns
    run_boundary_offsets(trainer, "auto")  # the same cases: the record is reused (a --c keeps its offsets)
    assert record.stat().st_mtime_ns == written and not [m for m in log if "estimated again" in m]
    seg = np.zeros((1, 1, 32, 32), np.int16)
    seg[..., 8:24, 8:24] = 1
    write_case(preprocessed, "b", stripes((32, 32), 1), seg)
    run_boundary_offsets(trainer, "auto")
    assert [m for m in log if "estimated again" in m] == [
        f"GSD boundary calibration: {record} was estimated with other data (the preprocessed cases changed): "
        f"estimated again"]
    assert json.loads(record.read_text())["classes"]["1"]["cases"] == 1  # b's new label is in the estimate
