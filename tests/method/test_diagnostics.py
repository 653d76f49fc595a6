import math

import pytest
import torch

from nnunet_gsd.method.diagnostics import truth_diagnostics


def test_truth_diagnostics_hand_values():
    noisy = torch.tensor([[0, 1, 1, 0, 1, 0]])
    clean = torch.tensor([[0, 1, 0, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False, False, False]])
    refined = torch.tensor([[0, 1, 1, 0, 0, 0]])
    d = truth_diagnostics(noisy, clean, mask, refined)
    assert d["selection_precision"].item() == pytest.approx(2 / 3)
    assert d["noise_rate_selected"].item() == pytest.approx(1 / 3)
    assert d["noise_rate_rejected"].item() == pytest.approx(1 / 3)
    assert d["noise_rate"].item() == pytest.approx(2 / 6)
    assert d["refined_accuracy"].item() == pytest.approx(5 / 6)
    assert d["noisy_accuracy"].item() == pytest.approx(4 / 6)
    assert all(v.ndim == 0 for v in d.values())


def test_truth_diagnostics_empty_sets_are_nan():
    y = torch.zeros(2, 3, 3, dtype=torch.long)
    d = truth_diagnostics(y, y, torch.ones_like(y, dtype=torch.bool), y)
    assert math.isnan(d["noise_rate_rejected"].item())
    assert d["selection_precision"].item() == 1.0
    d = truth_diagnostics(y, y, torch.zeros_like(y, dtype=torch.bool), y)
    assert math.isnan(d["selection_precision"].item()) and math.isnan(d["noise_rate_selected"].item())
    assert d["noise_rate_rejected"].item() == 0.0


def test_truth_diagnostics_with_calibrated_labels():
    annotated = torch.tensor([[0, 0, 1, 0]])   # the annotator missed pixel 1
    calibrated = torch.tensor([[0, 1, 1, 0]])  # boundary calibration grew the label by one
    clean = torch.tensor([[0, 1, 1, 0]])
    mask = torch.tensor([[True, True, False, False]])
    d = truth_diagnostics(calibrated, clean, mask, calibrated, annotated)
    assert d["noisy_accuracy"].item() == pytest.approx(3 / 4)
    assert d["noise_rate"].item() == pytest.approx(1 / 4)
    assert d["calibrated_accuracy"].item() == 1.0
    assert d["selection_precision"].item() == 1.0  # the selection ranked the calibrated labels
