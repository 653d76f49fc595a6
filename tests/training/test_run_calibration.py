import json

import numpy as np
import torch

from nnunet_gsd.method.calibration import shift_labels
from nnunet_gsd.training.calibration import (OFFSETS_FILE, estimate_class_offsets, load_or_estimate,
                                             parse_offset_setting)


class DisksDataset:
    """nnU-Net's dataset interface: bright disks, imaged with partial volume (drawn at 4× and averaged down),
    labelled where they cover half a pixel, then shrunk by ``shrink`` pixels (2D, stored as nnU-Net stores 2D
    cases: one slice)."""

    def __init__(self, shrink: int):
        self.shrink = shrink

    def load_case(self, identifier):
        rng = np.random.default_rng(int(identifier))
        cy, cx, r = rng.uniform(20, 28, 2).tolist() + [rng.uniform(10, 14)]
        yy, xx = (np.mgrid[:192, :192] + 0.5) / 4
        cover = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r ** 2).reshape(48, 4, 48, 4).mean((1, 3))
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
