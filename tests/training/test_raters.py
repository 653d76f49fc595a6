"""Training from every rater (issue 23, item 2): hand-computed targets on a 2-rater 4×4 case, the raters through
nnU-Net's own data loader and augmentation, the rater cache (nnU-Net's preprocessor, keyed to its files), the
checks, the stock soft trainer's targets and loss, and GSD's selection half on soft labels."""
from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from PIL import Image

from helpers import tiny_2d_plans
from nnunet_gsd.errors import UserError
from nnunet_gsd.method.soft_labels import rater_fractions
from nnunet_gsd.method.step import StepSchedule, deep_supervision_loss, selection_half
from nnunet_gsd.settings import GSDSettings
from nnunet_gsd.training.schedule import step_schedule
from nnunet_gsd.training.data import TargetLayout
from nnunet_gsd.training.raters import (RaterDataset, SoftRaterLoss, build_rater_cache, deep_supervision_shapes,
                                        majority_label, plan_raters, rater_fraction_map, soft_target_pyramid)

NAME = "Dataset000_X"
DATASET_JSON = {"channel_names": {"0": "grey"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 2,
                "file_ending": ".png"}
DICE = {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}

# the 2-rater 4×4 case: rater A marks the top-left pixel, rater B the top-left 2×2 block but its last pixel
RATER_A = np.zeros((4, 4), np.int16)
RATER_A[0, 0] = 1
RATER_B = np.zeros((4, 4), np.int16)
RATER_B[0, :2] = RATER_B[1, 0] = 1
#: foreground fraction by hand: both raters at (0, 0), one of two at (0, 1) and (1, 0), nobody elsewhere
FOREGROUND = np.zeros((4, 4), np.float32)
FOREGROUND[0, 0], FOREGROUND[0, 1], FOREGROUND[1, 0] = 1.0, 0.5, 0.5


class TinyCases:
    """An nnU-Net dataset of 2D cases as the preprocessed files hold them: data (1, 1, 4, 4), seg (1, 1, 4, 4)."""

    def __init__(self, label: np.ndarray, identifiers=("a",)):
        self.label = label
        self.identifiers = list(identifiers)

    def load_case(self, identifier):
        data = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        return data, self.label[None, None].astype(np.int8), None, {"class_locations": {1: np.zeros((0, 4))}}


@pytest.fixture
def rater_cache(tmp_path: Path) -> Path:
    folder = tmp_path / "gsd_raters_x"
    folder.mkdir()
    np.save(folder / "a.npy", np.stack([RATER_A, RATER_B])[:, None])  # (R, 1, 4, 4), as build_rater_cache writes
    return folder


def drawn(target: np.ndarray) -> str:
    for name, rater in (("A", RATER_A), ("B", RATER_B)):
        if np.array_equal(np.asarray(target).reshape(4, 4), rater):
            return name
    raise AssertionError(f"the target is neither rater:\n{target}")


# ------------------------------------------------------------------ rater sampling
def test_sampled_target_is_always_one_of_the_raters_and_both_appear(rater_cache: Path):
    dataset = RaterDataset(TinyCases(np.full((4, 4), 7)), str(rater_cache), "sample")  # labelsTr: neither rater
    np.random.seed(0)  # noqa: NPY002 - the draw uses numpy's global generator, which nnU-Net's workers seed
    draws = []
    for _ in range(200):
        data, seg, seg_prev, _ = dataset.load_case("a")
        assert seg.shape == (1, 1, 4, 4) and seg.dtype == np.int16 and seg_prev is None
        draws.append(drawn(seg))
    assert 60 < draws.count("A") < 140 and draws.count("A") + draws.count("B") == 200  # uniform over 2 raters
    np.random.seed(0)  # noqa: NPY002
    assert [drawn(dataset.load_case("a")[1]) for _ in range(200)] == draws  # seeded as nnU-Net seeds its workers


def test_each_sample_of_an_nnunet_batch_draws_its_own_rater(rater_cache: Path):
    """nnU-Net's own data loader: every sample of a batch loads its case, so each draws a rater."""
    dataset = RaterDataset(TinyCases(np.zeros((4, 4))), str(rater_cache), "sample")
    loader = nnUNetDataLoader(dataset, 16, (4, 4), (4, 4), LabelManager({"background": 0, "lesion": 1}, None))
    np.random.seed(1)  # noqa: NPY002
    batch = loader.generate_train_batch()
    names = [drawn(t) for t in batch["target"].numpy()]
    assert set(names) == {"A", "B"}


# ------------------------------------------------------------------ soft labels
def test_soft_target_is_the_fraction_map():
    maps = torch.from_numpy(np.stack([RATER_A, RATER_B]))[None]  # (B=1, R=2, 4, 4)
    fractions = rater_fraction_map(maps, 2)
    np.testing.assert_array_equal(fractions[0, 1].numpy(), FOREGROUND)
    np.testing.assert_array_equal(fractions[0, 0].numpy(), 1 - FOREGROUND)
    torch.testing.assert_close(fractions, rater_fractions(maps, 2))  # the loss module's definition
    # the raters' majority, ties to the higher label as in the converters (1 of 2 raters: foreground)
    np.testing.assert_array_equal(majority_label(fractions)[0].numpy(), FOREGROUND > 0)


def test_deep_supervision_soft_targets_are_area_averages():
    fractions = rater_fraction_map(torch.from_numpy(np.stack([RATER_A, RATER_B]))[None], 2)
    shapes = deep_supervision_shapes((4, 4), [[1, 1], [0.5, 0.5], [0.25, 0.25]])
    assert shapes == [(4, 4), (2, 2), (1, 1)]
    full, half, quarter = soft_target_pyramid(fractions, shapes)
    assert full is fractions
    # by hand: the top-left 2×2 block averages (1 + ½ + ½ + 0) / 4, the other blocks 0; the whole image 2 / 16
    np.testing.assert_allclose(half[0, 1].numpy(), [[0.5, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(quarter[0, 1].numpy(), [[0.125]])
    torch.testing.assert_close(half.sum(1), torch.ones(1, 2, 2))  # still class probabilities
    # nnU-Net's DownsampleSegForDSTransform (nearest) could not make them: on the fraction map it keeps one pixel
    nearest = DownsampleSegForDSTransform([[1, 1], [0.5, 0.5]])(segmentation=fractions[0])["segmentation"][1]
    assert not torch.allclose(nearest[1], half[0, 1])


def test_soft_rater_channels_get_nnunets_spatial_augmentation():
    """Soft mode: the raters follow the label as channels 1 … R through nnU-Net's real training pipeline."""
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    transforms = nnUNetTrainer.get_training_transforms((32, 32), (-np.pi, np.pi), None, (0, 1), False)
    yy, xx = np.mgrid[:32, :32]
    label = ((yy - 12) ** 2 + (xx - 18) ** 2 < 49).astype(np.int16)
    seg = torch.from_numpy(np.stack([label, label, np.roll(label, 3, 0)]))
    for _ in range(10):
        out = transforms(image=torch.randn(1, 32, 32), segmentation=seg.clone())["segmentation"]
        assert out.shape == (3, 32, 32)
        assert torch.equal(out[1], out[0])  # same augmentation as the label
        assert set(out.unique().tolist()) <= {0, 1}


def test_soft_rater_loss_is_nnunets_on_integer_targets_and_soft_ce_on_fractions():
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, generator=g)
    labels = torch.randint(0, 2, (2, 1, 8, 8), generator=g).short()
    nnunet = DC_and_CE_loss(DICE, {}, weight_ce=1, weight_dice=1, dice_class=MemoryEfficientSoftDiceLoss)
    torch.testing.assert_close(SoftRaterLoss(DICE)(logits, labels), nnunet(logits, labels.long()))
    # one pixel, fraction ½ / ½, logits (0, ln 3): CE = ½ ln 4 + ½ ln 4/3 (the Dice term switched off)
    one = torch.tensor([[[[0.0]], [[math.log(3)]]]])
    loss = SoftRaterLoss(DICE, weight_dice=0)(one, torch.full((1, 2, 1, 1), 0.5))
    assert loss.item() == pytest.approx(0.5 * math.log(4) + 0.5 * math.log(4 / 3))


# ------------------------------------------------------------------ which raters, and bad input
@pytest.fixture
def raw_root(tmp_path: Path, monkeypatch) -> Path:
    for key in list(os.environ):
        if key.startswith("nnUNet_GSD_"):
            monkeypatch.delenv(key)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name / NAME).mkdir(parents=True)
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path / "nnUNet_raw" / NAME


def test_rater_modes_need_rater_folders_one_folder_trains_as_one_rater_set(raw_root: Path):
    assert not plan_raters("off", NAME, "x").active  # nothing is looked at
    with pytest.raises(UserError) as info:
        plan_raters("soft", NAME, "nnUNetTrainerSoftRaters (raters='soft')")
    message = str(info.value)
    assert "\n" not in message and str(raw_root) in message and "labelsTr_A1" in message
    assert "nnunet_gsd convert lidc" in message
    (raw_root / "labelsTr_A1").mkdir()
    plan = plan_raters("sample", NAME, "x")
    assert plan.mode == "off" and "single-rater" in plan.note
    for rater in ("A10", "A2"):
        (raw_root / f"labelsTr_{rater}").mkdir()
    plan = plan_raters("sample", NAME, "x")
    assert plan.mode == "sample" and plan.folders == ("labelsTr_A1", "labelsTr_A2", "labelsTr_A10")


def test_trainers_refuse_rater_modes_without_rater_folders_before_writing_anything(raw_root: Path, monkeypatch):
    from nnunet_gsd.training.trainer import nnUNetTrainerGSD
    from nnunet_gsd.training.variants import nnUNetTrainerRaterSampling
    plans = dict(tiny_2d_plans(NAME), continue_training=False)
    results = raw_root.parent.parent / "nnUNet_results" / NAME
    with pytest.raises(SystemExit, match=r"^nnUNetTrainerRaterSampling: this trainer \(raters='sample'\) trains "
                                         r"from every rater's labels, but .* has no rater folders.*Budget"):
        nnUNetTrainerRaterSampling(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))
    monkeypatch.setenv("nnUNet_GSD_RATERS", "soft")
    with pytest.raises(SystemExit, match=r"^nnUNetTrainerGSD: raters='soft' \(environment variable "
                                         r"nnUNet_GSD_RATERS\) trains from every rater's labels"):
        nnUNetTrainerGSD(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))
    assert not list(results.iterdir())  # no output folder, no training log
    monkeypatch.setenv("nnUNet_GSD_RATERS", "all")
    with pytest.raises(SystemExit, match=r"nnUNet_GSD_RATERS.*one of \('off', 'sample', 'soft'\)"):
        nnUNetTrainerGSD(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))


# ------------------------------------------------------------------ the cache
def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def square(shape, top: int, size: int = 8) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top:top + size, 4:12] = 1
    return mask


@pytest.fixture
def raw_dataset(tmp_path: Path):
    """Two PNG cases, labelsTr and two raters, preprocessed by nnU-Net's own preprocessor."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    raw, preprocessed = tmp_path / "raw" / NAME, tmp_path / "preprocessed" / NAME / "x"
    preprocessed.mkdir(parents=True)
    plans = tiny_2d_plans(NAME)
    plans["transpose_forward"] = plans["transpose_backward"] = [0, 1, 2]  # PNG: (1, H, W), 3 axes
    plans["foreground_intensity_properties_per_channel"] = {"0": {"mean": 128.0, "std": 64.0}}
    manager = PlansManager(plans)
    configuration = manager.get_configuration("2d")
    rng = np.random.default_rng(0)
    for identifier in ("a", "b"):
        write_png(raw / "imagesTr" / f"{identifier}_0000.png", rng.integers(1, 255, (32, 32)))
        write_png(raw / "labelsTr" / f"{identifier}.png", square((32, 32), 4))
        write_png(raw / "labelsTr_A1" / f"{identifier}.png", square((32, 32), 4))
        write_png(raw / "labelsTr_A2" / f"{identifier}.png", square((32, 32), 6, size=10))
        data, seg, properties = configuration.preprocessor_class(verbose=False).run_case(
            [str(raw / "imagesTr" / f"{identifier}_0000.png")], str(raw / "labelsTr" / f"{identifier}.png"),
            manager, configuration, DATASET_JSON)
        nnUNetDatasetBlosc2.save_case(data, seg, properties, str(preprocessed / identifier),
                                      chunks=data.shape, blocks=data.shape)
    return raw, preprocessed, plans


def build(raw_dataset, cache: Path, folders=("labelsTr_A1", "labelsTr_A2")):
    raw, preprocessed, plans = raw_dataset
    return build_rater_cache(str(raw), list(folders), str(cache), ["a", "b"], plans, "2d", DATASET_JSON, 1,
                             str(preprocessed), nnUNetDatasetBlosc2)


def test_rater_cache_is_every_rater_preprocessed_and_keyed_to_its_files(raw_dataset, tmp_path: Path):
    raw, preprocessed, _ = raw_dataset
    cache = tmp_path / "gsd_raters_x"
    report = build(raw_dataset, cache)
    assert report.new == 2 and str(report).startswith(f"GSD rater labels ({cache}): ")
    maps = np.load(cache / "b.npy")
    assert maps.shape == (2, 1, 32, 32) and maps.dtype == np.int16
    assert maps[0, 0, 4:12, 4:12].all() and maps[0].sum() == 64       # A1: 8×8 at row 4
    assert maps[1, 0, 6:16, 4:12].all() and maps[1].sum() == 80       # A2: 10×8 at row 6
    # the soft dataset: label, then the raters, aligned with the preprocessed case
    _, seg, _, _ = RaterDataset(nnUNetDatasetBlosc2(str(preprocessed)), str(cache), "soft").load_case("b")
    assert seg.shape == (3, 1, 32, 32) and np.array_equal(seg[1], seg[0])
    assert build(raw_dataset, cache).reused == 2
    write_png(raw / "labelsTr_A2" / "b.png", square((32, 32), 20))    # a corrected rater label
    report = build(raw_dataset, cache)
    assert (report.stale, report.reused) == (1, 1)
    assert np.load(cache / "b.npy")[1, 0, 20:28, 4:12].all()
    # another set of rater folders discards the cache
    assert build(raw_dataset, cache, ("labelsTr_A2", "labelsTr_A1")).reset == "built with other raters"


def test_rater_folder_covering_part_of_the_cases_is_one_line_naming_the_file(raw_dataset, tmp_path: Path):
    raw, _, _ = raw_dataset
    (raw / "labelsTr_A2" / "b.png").unlink()
    with pytest.raises(UserError) as info:
        build(raw_dataset, tmp_path / "cache")
    assert str(info.value) == (f"rater label {raw / 'labelsTr_A2' / 'b.png'} is missing (1 of 2 training cases lack "
                               f"one in labelsTr_A2/): every rater folder must hold one label per training case; "
                               f"convert the dataset again with its multi-rater converter, or remove labelsTr_A2/")


def test_rater_of_another_shape_or_with_unknown_labels_is_one_line_naming_the_file(raw_dataset, tmp_path: Path):
    raw, _, _ = raw_dataset
    write_png(raw / "labelsTr_A1" / "a.png", square((30, 32), 4))
    with pytest.raises(UserError) as info:
        build(raw_dataset, tmp_path / "cache")
    assert str(info.value).startswith(f"rater label {raw / 'labelsTr_A1' / 'a.png'} has shape (1, 30, 32), its "
                                      f"case's images (1, 32, 32)")
    write_png(raw / "labelsTr_A1" / "a.png", square((32, 32), 4) * 3)
    with pytest.raises(UserError, match=r"labelsTr_A1/a.png has label values \[3\]"):
        build(raw_dataset, tmp_path / "cache")


# ------------------------------------------------------------------ the stock soft trainer
def three_stage_plans() -> dict:
    """The tiny 2D plans with four stages: deep supervision at 1, ½ and ¼ (nnU-Net drops the lowest stage's)."""
    plans = tiny_2d_plans(NAME)
    arch = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    arch.update(n_stages=4, features_per_stage=[4, 8, 8, 8], kernel_sizes=[[3, 3]] * 4,
                strides=[[1, 1], [2, 2], [2, 2], [2, 2]], n_conv_per_stage=[1] * 4, n_conv_per_stage_decoder=[1] * 3)
    plans["configurations"]["2d"]["patch_size"] = [16, 16]
    return dict(plans, continue_training=False)


def two_rater_trainer(raw_root: Path, trainer_class):
    """An initialised ``trainer_class`` on the test dataset with two rater folders (A1, A2)."""
    for rater in ("A1", "A2"):
        (raw_root / f"labelsTr_{rater}").mkdir()
    (raw_root.parent.parent / "nnUNet_preprocessed" / NAME / "x").mkdir()
    (raw_root.parent.parent / "nnUNet_preprocessed" / NAME / "x" / "case.b2nd").touch()
    trainer = trainer_class(three_stage_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))
    trainer.initialize()
    return trainer


def test_stock_soft_trainer_learns_area_averaged_fractions_at_every_output(raw_root: Path):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunet_gsd.training.variants import nnUNetTrainerSoftRaters
    trainer = two_rater_trainer(raw_root, nnUNetTrainerSoftRaters)
    assert isinstance(trainer.loss, DeepSupervisionWrapper) and isinstance(trainer.loss.loss, SoftRaterLoss)
    # the training pipeline leaves the targets at full resolution (the validation pipeline does not)
    tr = trainer.get_training_transforms((16, 16), (0, 0), trainer._get_deep_supervision_scales(), (0, 1), False)
    assert not any(isinstance(t, DownsampleSegForDSTransform) for t in tr.transforms)
    val = trainer.get_validation_transforms(trainer._get_deep_supervision_scales())
    assert any(isinstance(t, DownsampleSegForDSTransform) for t in val.transforms)

    seen = []
    loss = trainer.loss
    trainer.loss = lambda output, target: (seen.append((output, target)), loss(output, target))[1]
    a, b = np.zeros((16, 16), np.int16), np.zeros((16, 16), np.int16)
    a[4:12, 4:12], b[4:12, 4:8] = 1, 1
    target = torch.from_numpy(np.stack([a, a, b]))[None].repeat(2, 1, 1, 1)   # [labelsTr, A1, A2]
    trainer.train_step({"data": torch.randn(2, 1, 16, 16), "target": target})
    output, pyramid = seen[0]
    assert [tuple(t.shape) for t in pyramid] == [(2, 2, 16, 16), (2, 2, 8, 8), (2, 2, 4, 4)]
    fg = (a + b) / 2
    for t, k in zip(pyramid, (1, 2, 4)):   # each output: the area average of the fractions
        expected = fg.reshape(16 // k, k, 16 // k, k).mean((1, 3))
        np.testing.assert_allclose(t[0, 1].numpy(), expected)
    # when the raters agree (here on 4×4 blocks) it is nnU-Net's own deep-supervised Dice + CE loss
    pyramid = soft_target_pyramid(rater_fraction_map(target[:, :2], 2), [(16, 16), (8, 8), (4, 4)])
    hard = DownsampleSegForDSTransform([[1, 1], [0.5, 0.5], [0.25, 0.25]])(segmentation=target[0, :1])
    hard = [h[None].repeat(2, 1, 1, 1).long() for h in hard["segmentation"]]
    nnunet = DeepSupervisionWrapper(DC_and_CE_loss(DICE, {}, weight_ce=1, weight_dice=1,
                                                   dice_class=MemoryEfficientSoftDiceLoss), loss.weight_factors)
    output = [o.detach() for o in output]
    torch.testing.assert_close(loss(output, pyramid), nnunet(output, hard))


def test_soft_ce_trainer_is_nnunets_ce_alone_where_raters_agree(raw_root: Path):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunet_gsd.training.variants import nnUNetTrainerSoftRatersCE
    trainer = two_rater_trainer(raw_root, nnUNetTrainerSoftRatersCE)
    loss = trainer.loss
    assert loss.loss.weight_dice == 0 and loss.loss.weight_ce == 1
    a = np.zeros((16, 16), np.int16)
    a[4:12, 4:12] = 1
    target = torch.from_numpy(np.stack([a, a]))[None].repeat(2, 1, 1, 1)   # A1, A2 agree
    pyramid = soft_target_pyramid(rater_fraction_map(target, 2), [(16, 16), (8, 8), (4, 4)])
    hard = DownsampleSegForDSTransform([[1, 1], [0.5, 0.5], [0.25, 0.25]])(segmentation=target[0, :1])
    hard = [h[None].repeat(2, 1, 1, 1).long() for h in hard["segmentation"]]
    output = [torch.randn(2, 2, k, k) for k in (16, 8, 4)]
    nnunet = DeepSupervisionWrapper(DC_and_CE_loss(DICE, {}, weight_ce=1, weight_dice=0), loss.weight_factors)
    torch.testing.assert_close(loss(output, pyramid), nnunet(output, hard))
    # a pixel the two raters split and a network unsure of it: CE = log 2, the least any prediction can reach
    half = torch.full((1, 2, 1, 1), 0.5)
    torch.testing.assert_close(loss.loss(torch.zeros(1, 2, 1, 1), half), torch.tensor(np.log(2.0), dtype=torch.float32))


# ------------------------------------------------------------------ GSD on soft labels
def schedule(keep: float = 1.0, refinement: str = "none", selection: str = "per_class") -> StepSchedule:
    s = step_schedule(GSDSettings.from_values(tau=1 - keep, ramp_fraction=0.01), 5, 10, 2.0, 0, 0)
    return replace(s, refinement=refinement, selection=selection)


def _dice():
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1
    return MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, **DICE)


def test_gsd_selection_on_agreeing_raters_is_gsd_on_their_label():
    g = torch.Generator().manual_seed(0)
    logits1, logits2 = torch.randn(2, 2, 2, 8, 8, generator=g)
    noisy = torch.randint(0, 2, (2, 8, 8), generator=g)
    soft = rater_fraction_map(noisy[:, None].repeat(1, 3, 1, 1), 2)
    hard = selection_half(logits1, logits2, noisy, None, schedule(0.9), _dice())
    ours = selection_half(logits1, logits2, noisy, None, schedule(0.9), _dice(), soft=soft)
    torch.testing.assert_close(ours.loss, hard.loss)
    assert torch.equal(ours.clean_mask, hard.clean_mask) and torch.equal(ours.target, soft)
    assert hard.target is hard.refined and hard.soft_target is None


def test_gsd_selection_ranks_the_soft_ce_and_refined_pixels_become_one_hot():
    """Two pixels, both networks' logits (0, 0): the one the raters agree on as background has soft CE ln 2, the
    one they split ½ / ½ ln 2 too — but logits (2, 0) make the split pixel cost more (its CE is the mean of both
    classes' CE), so the small-loss selection keeps the agreed pixel."""
    logits = torch.tensor([[[2.0, 2.0]], [[0.0, 0.0]]])[None]   # (B=1, C=2, 1, 2): both pixels favour background
    soft = torch.tensor([[[1.0, 0.5]], [[0.0, 0.5]]])[None]
    noisy = majority_label(soft)
    assert noisy.tolist() == [[[0, 1]]]   # the tie goes to the foreground
    half = selection_half(logits, logits, noisy, None, schedule(0.5, selection="pooled"), _dice(), soft=soft)
    assert half.clean_mask.tolist() == [[[True, False]]]
    ce = [math.log(1 + math.exp(-2)), 0.5 * math.log(1 + math.exp(-2)) + 0.5 * math.log(1 + math.exp(2))]
    assert ce[0] < ce[1]
    # refinement to background where the majority said foreground: that pixel's target becomes one-hot
    half = selection_half(logits, logits, noisy, None, schedule(0.5, "pixel", "pooled"), _dice(), soft=soft)
    assert half.refined.tolist() == [[[0, 0]]]
    torch.testing.assert_close(half.target, torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])[None])


def test_gsd_deep_supervision_of_soft_targets_uses_area_averages():
    fractions = rater_fraction_map(torch.from_numpy(np.stack([RATER_A, RATER_B]))[None], 2)
    seen = []

    def dice(logits, target, loss_mask=None):
        seen.append(target)
        return logits.new_zeros(())
    lower = [torch.zeros(1, 2, 2, 2, requires_grad=True)] * 2
    deep_supervision_loss(lower, lower, fractions, torch.ones(1, 4, 4), None, dice)
    np.testing.assert_allclose(seen[0][0, 1].numpy(), [[0.5, 0.0], [0.0, 0.0]])


def test_target_layout_puts_the_raters_after_the_label():
    layout = TargetLayout(has_clean=True, has_superpixels=True, num_raters=3)
    assert layout.rater_channels == slice(1, 4) and layout.clean_channel == 4
    assert layout.num_label_channels == 5 and layout.superpixel_channels == slice(5, 7)
    assert TargetLayout(True, False).clean_channel == 1

