"""Truth diagnostics for simulated-noise runs. They read the clean label and must never feed
the loss; they only report how well selection and refinement work."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["truth_diagnostics"]


def _ratio(num: Tensor, den: Tensor | int) -> Tensor:
    # 0/0 in floating point is NaN, which is what an empty set should report.
    if isinstance(den, Tensor):
        den = den.to(torch.float32)
    else:
        den = float(den)
    return num.to(torch.float32) / den


def truth_diagnostics(noisy: Tensor, clean: Tensor, clean_mask: Tensor, refined: Tensor,
                      annotated: Optional[Tensor] = None) -> dict[str, Tensor]:
    """Scalar diagnostics of selection (Eq. 5) and refinement (Eq. 14) against the clean label.

    Args:
        noisy: ``(B, *spatial)`` nGT as the selection ranked it (after boundary calibration).
        clean: ``(B, *spatial)`` the clean ground truth.
        clean_mask: ``(B, *spatial)`` bool D_clean.
        refined: ``(B, *spatial)`` refined label y.
        annotated: ``(B, *spatial)`` nGT before boundary calibration (None: ``noisy``).

    Returns:
        0-d float32 tensors (NaN where the set is empty), computed without synchronisation:
        ``selection_precision`` (fraction of D_clean whose nGT is correct),
        ``noise_rate_selected`` (1 − that), ``noise_rate_rejected`` (fraction of ¬D_clean whose
        nGT is wrong), ``noise_rate`` (all pixels, annotated nGT), ``refined_accuracy`` (y == clean),
        ``noisy_accuracy`` (annotated nGT == clean), ``calibrated_accuracy`` (calibrated nGT == clean).
    """
    with torch.no_grad():
        sel = clean_mask.bool()
        correct = noisy.long() == clean.long()
        n_all = correct.numel()  # host int from the shape: no transfer
        n_sel = sel.sum()
        n_rej = (~sel).sum()
        correct_sel = (correct & sel).sum()
        wrong_rej = (~correct & ~sel).sum()
        n_correct = (correct if annotated is None else annotated.long() == clean.long()).sum()
        precision = _ratio(correct_sel, n_sel)
        return {
            "selection_precision": precision,
            "noise_rate_selected": 1.0 - precision,
            "noise_rate_rejected": _ratio(wrong_rej, n_rej),
            "noise_rate": _ratio(n_all - n_correct, n_all),
            "refined_accuracy": _ratio((refined.long() == clean.long()).sum(), n_all),
            "noisy_accuracy": _ratio(n_correct, n_all),
            "calibrated_accuracy": _ratio(correct.sum(), n_all),
        }
