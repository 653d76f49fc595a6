import json

import numpy as np
import pytest
import torch

from nnunet_gsd.method.calibration import shift_labels
from nnunet_gsd.training.calibration import (OFFSETS_FILE, calibrated_targets, estimate_class_offsets,
                                             load_or_estimate, parse_offset_setting)
from nnunet_gsd.training.variants import nnUNetTrainerBudget, nnUNetTrainerBudgetCalibrated


class DisksDataset:
    """nnU-Net's dataset interface: bright disks, imaged with partial volume (drawn at 4× and averaged down),
    labelled where they cover half a pixel, then shrunk by ``shrink`` pixels (2D, stored as nnU-Net stores 2D
    cases: one slice)."""

    def __init__(self, shrink: int, scale: int = 1):
        self.shrink, self.scale = shrink, scale   # scale: image size, disk and centre × scale

    def load_case(self, identifier):
        rng = np.random.default_rng(int(identifier))
        n = 48 * self.scale
        cy, cx, r = (self.scale * np.array(rng.uniform(20, 28, 2).tolist() + [rng.uniform(10, 14)])).tolist()
        yy, xx = (np.mgrid[:4 * n, :4 * n] + 0.5) / 4
        cover = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r ** 2).reshape(n, 4, n, 4).mean((1, 3))
        data = (cover + rng.normal(0, 0.05, cover.shape))[None, None]
        seg = (cover >= 0.5).astype(np.int16)
        if self.shrink:
            seg = shift_labels(torch.from_numpy(seg).long()[None], [0, -self.shrink])[0].numpy()
        return data, seg[None, None], None, {}


def test_parse_offset_setting():
    assert parse_offset_setting("auto") is None
    assert parse_offset_setting("off") == 0
    assert parse_offset_setting("-2") == -2


def test_estimate_class_offsets_finds_the_shrinkage():
    ids = [str(i) for i in range(25)]
    tight = estimate_class_offsets(DisksDataset(2), ids, [1], [1.0, 1.0])
    assert tight[1]["offset"] == 2 and tight[1]["cases"] == 25
    exact = estimate_class_offsets(DisksDataset(0), ids, [1], [1.0, 1.0])
    assert exact[1]["offset"] == 0
    few = estimate_class_offsets(DisksDataset(2), ids[:5], [1], [1.0, 1.0])
    assert {k: few[1][k] for k in ("estimate", "offset", "cases")} == {"estimate": None, "offset": 0, "cases": 5}
    assert len(tight[1]["profile"]) == 12 and tight[1]["profile"][0] > 0.9 > 0.1 > tight[1]["profile"][-1]
    assert tight[1]["rings"] == 6   # disks of radius 10-14: the six-ring floor


def test_estimate_class_offsets_scales_the_rings_with_the_objects():
    # the same disks four times larger (radius 40-56) labelled 10 pixels inside: six rings cannot reach the edge
    ids = [str(i) for i in range(20)]
    large = estimate_class_offsets(DisksDataset(10, scale=4), ids, [1], [1.0, 1.0])[1]
    assert large["radius"] == pytest.approx(38, abs=3)             # the labels' radius: 48 ± 8 − 10
    assert large["rings"] > 12 and len(large["profile"]) == 2 * large["rings"]
    assert large["estimate"] == pytest.approx(10, abs=0.7) and large["offset"] in (10, 11)
    six = estimate_class_offsets(DisksDataset(10, scale=4), ids, [1], [1.0, 1.0], rings=6)[1]
    assert six["rings"] == 6 and six["offset"] == 0 and six["abstained"].startswith("not one edge")
    clean = estimate_class_offsets(DisksDataset(0, scale=4), ids, [1], [1.0, 1.0])[1]
    assert clean["rings"] > 12 and clean["offset"] == 0


def test_load_or_estimate_reuses_the_record_of_the_same_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {1: {"estimate": 2.1, "offset": 3, "cases": 30}}

    key = {"cases": 30}
    assert load_or_estimate(str(tmp_path), key, compute)[1]["offset"] == 3
    assert load_or_estimate(str(tmp_path), key, compute)[1]["offset"] == 3 and len(calls) == 1
    load_or_estimate(str(tmp_path), {"cases": 31}, compute)
    assert len(calls) == 2 and json.loads((tmp_path / OFFSETS_FILE).read_text())["key"] == {"cases": 31}


def _one_pixel_targets():
    """nnU-Net's deep-supervision targets of a 4×4 image whose only foreground pixel is (1, 2): full size, 2×2."""
    full = torch.zeros(1, 1, 4, 4)
    full[0, 0, 1, 2] = 1
    return [full, torch.zeros(1, 1, 2, 2)]  # nearest-exact at half size samples (1,1), (1,3), (3,1), (3,3)


def test_calibrated_targets_grow_the_full_resolution_and_resample_the_lower_outputs():
    full, half = calibrated_targets(_one_pixel_targets(), [0, 1], [1.0, 1.0])
    # growing by one voxel: the pixel and its four neighbours (the diagonals lie √2 away)
    expected = torch.zeros(4, 4)
    for y, x in [(1, 2), (0, 2), (2, 2), (1, 1), (1, 3)]:
        expected[y, x] = 1
    assert torch.equal(full[0, 0], expected) and full.dtype == torch.float32
    assert torch.equal(half[0, 0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))  # the unshifted labels give none there
    single = calibrated_targets(_one_pixel_targets()[0], [0, 1], [1.0, 1.0])
    assert isinstance(single, torch.Tensor) and torch.equal(single, full)


def test_budget_calibrated_trains_stock_nnunet_on_shifted_targets(monkeypatch):
    seen = []
    monkeypatch.setattr(nnUNetTrainerBudget, "train_step", lambda self, batch: seen.append(batch) or {"loss": 0})
    trainer = object.__new__(nnUNetTrainerBudgetCalibrated)
    trainer.configuration_manager = type("Configuration", (), {"spacing": [1.0, 1.0]})()
    trainer.device = torch.device("cpu")
    batch = {"data": torch.zeros(1, 1, 4, 4), "target": _one_pixel_targets()}
    trainer._offsets = [0, 0]  # nothing to move: the batch goes through untouched
    trainer.train_step(batch)
    trainer._offsets = [0, 1]
    trainer.train_step(batch)
    assert seen[0] is batch
    assert seen[1]["target"][0].sum() == 5 and seen[1]["target"][1].sum() == 2 and seen[1]["data"] is batch["data"]


def test_calibrated_trainer_is_found_by_nnunet_under_its_user_name():
    """``-tr nnUNetTrainerCalibrated`` resolves through nnU-Net's own trainer search (the start-up hook's folder),
    and the benchmark name is the same trainer."""
    import nnunet_gsd
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunet_gsd.training.variants import nnUNetTrainerCalibrated
    found = recursive_find_python_class(nnunet_gsd.TRAINER_DIR, "nnUNetTrainerCalibrated", None)
    assert found is nnUNetTrainerCalibrated
    assert issubclass(nnUNetTrainerBudgetCalibrated, nnUNetTrainerCalibrated)
    assert nnUNetTrainerCalibrated.train_step is not nnUNetTrainerBudget.train_step
