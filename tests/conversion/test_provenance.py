"""The typed reader/writer of dataset.json's "gsd" block."""
from __future__ import annotations

import json

import pytest
from nnunet_gsd.dataset_conversion import synthetic
from nnunet_gsd.dataset_conversion.provenance import (
    Provenance,
    from_dataset_json,
    read,
    with_provenance,
)

from nnunet_gsd.errors import UserError


def test_a_converted_block_round_trips_unchanged(tmp_path):
    ds = synthetic.generate(tmp_path, dataset_id=905, num_train=3, num_test=1, size=24, noise="S_E")
    block = json.loads((ds / "dataset.json").read_text())["gsd"]
    prov = read(ds)
    assert prov.to_dict() == block
    assert prov.pixel_noise_rate == block["noise"]["pixel_noise_rate"] == prov.tau
    assert prov.noise_summary() == "S_E M(19, 0.8, 0.05) at output"   # 200 steps × 24/256 = 18.75 → 19
    assert block["source"] is None and block["raters"] is None       # converter blocks keep these as null


def test_hand_written_blocks_stay_minimal_and_keep_foreign_keys():
    prov = from_dataset_json({"gsd": {"tau": "0.1", "search": {"x": 1}}})
    assert prov.tau == 0.1 and prov.noise is None and prov.pixel_noise_rate is None
    prov.tau = 0.2
    assert with_provenance({"name": "X"}, prov) == {"name": "X", "gsd": {"tau": 0.2, "search": {"x": 1}}}
    assert from_dataset_json({}).to_dict() == {}


@pytest.mark.parametrize("block, message", [({"tau": "high"}, r'"tau": \'high\'\} is not a number'),
                                            ({"noise": [1]}, r'"noise"\} must be an object'),
                                            ([1, 2], '"gsd" must be an object')])
def test_malformed_blocks_are_one_line_errors_naming_the_file(block, message):
    with pytest.raises(UserError, match=message):
        Provenance.from_dict(block, "/x/dataset.json")
