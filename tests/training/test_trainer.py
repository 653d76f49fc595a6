"""Trainer checks that run before any training: unsupported label definitions stop with a clear message."""
from __future__ import annotations

import pytest
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_gsd.errors import UserError
from nnunet_gsd.training.trainer import nnUNetTrainerGSD


def test_plain_binary_and_multiclass_labels_are_accepted():
    nnUNetTrainerGSD._check_labels(LabelManager({"background": 0, "lesion": 1}, None))
    nnUNetTrainerGSD._check_labels(LabelManager({"background": 0, "a": 1, "b": 2}, None))


def test_region_labels_are_refused():
    regions = LabelManager({"background": 0, "whole": (1, 2), "core": 2}, regions_class_order=[1, 2])
    with pytest.raises(UserError, match="region-based"):
        nnUNetTrainerGSD._check_labels(regions)


def test_ignore_label_is_refused():
    with pytest.raises(UserError, match="'ignore' label"):
        nnUNetTrainerGSD._check_labels(LabelManager({"background": 0, "lesion": 1, "ignore": 2}, None))
