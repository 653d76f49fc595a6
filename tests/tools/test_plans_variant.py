"""plans-variant: a renamed copy of the plans with the batch size replaced or scaled."""
from __future__ import annotations

import pytest

from nnunet_gsd.errors import UserError
from nnunet_gsd.tools.plans_variant import make_variant

PLANS = {"plans_name": "nnUNetPlans", "configurations": {
    "2d": {"batch_size": 35, "patch_size": [64, 64], "data_identifier": "nnUNetPlans_2d"},
    "3d_fullres": {"batch_size": 2, "patch_size": [32, 32, 32]},
    "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}}}


def test_scale_halves_every_configuration_and_keeps_the_rest():
    v = make_variant(PLANS, "half", batch_scale=0.5)
    assert v["plans_name"] == "half"
    assert [v["configurations"][c]["batch_size"] for c in ("2d", "3d_fullres", "3d_cascade_fullres")] == [18, 1, 1]
    assert v["configurations"]["2d"]["data_identifier"] == "nnUNetPlans_2d"  # preprocessed data reused
    assert PLANS["configurations"]["2d"]["batch_size"] == 35  # source untouched


def test_fixed_batch_for_chosen_configurations():
    v = make_variant(PLANS, "bs8", batch_size=8, configurations=["2d"])
    assert v["configurations"]["2d"]["batch_size"] == 8 and v["configurations"]["3d_fullres"]["batch_size"] == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "at least 1"), ({"batch_scale": -1.0}, "> 0"), ({}, "exactly one"),
    ({"batch_size": 4, "configurations": ["3d_lowres"]}, "not in the plans"),
])
def test_bad_requests(kwargs, message):
    with pytest.raises(UserError, match=message):
        make_variant(PLANS, "x", **kwargs)


def test_an_existing_variant_is_replaced_only_with_overwrite(tmp_path, monkeypatch, capsys):
    """plans-variant used to overwrite an existing variant silently (trainings may have been planned with it)."""
    import json

    from nnunet_gsd.cli import main
    folder = tmp_path / "Dataset953_X"
    folder.mkdir()
    (folder / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    argv = ["plans-variant", "-d", "Dataset953_X", "--batch-size", "4", "--name", "small"]
    assert main(argv) == 0
    written = (folder / "small.json").read_text()
    capsys.readouterr()
    assert main(argv[:-3] + ["8", "--name", "small"]) == 2
    assert capsys.readouterr().err == (f"nnunet_gsd plans-variant: error: {folder / 'small.json'} exists: pass "
                                       f"--overwrite to replace it, or choose another --name\n")
    assert (folder / "small.json").read_text() == written
    assert main(argv[:-3] + ["8", "--name", "small", "--overwrite"]) == 0
    assert json.loads((folder / "small.json").read_text())["configurations"]["2d"]["batch_size"] == 8
    assert main(argv[:-1] + ["nnUNetPlans", "--overwrite"]) == 2  # never the source plans themselves
    assert json.loads((folder / "nnUNetPlans.json").read_text()) == PLANS
