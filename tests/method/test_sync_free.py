"""The per-step method functions must not synchronise host and device.

On the ``meta`` device every data-dependent host access (``.item()``, ``bool(tensor)``,
``nonzero()``, data-sized outputs) raises, so running the whole step there proves there is
none. Where CUDA is available, the same step runs under ``torch.cuda.set_sync_debug_mode("error")``.
"""
import dataclasses

import pytest
import torch
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.helpers import softmax_helper_dim1

from nnunet_gsd.method import calibration, step, superpixels, views

DICE = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=True, do_bg=False, smooth=1e-5,
                                   ddp=False)
SCHEDULE = step.StepSchedule(keep=0.9, epoch=3, num_epochs=10, threshold=2.0, use_gda=True, gda_dice=True, lam=0.5,
                             selection="per_class", refinement="superpixel", refine_confidence=0.8,
                             refine_majority=True, ignore_unrefined=True, use_kt=True, kt_prior_correction=True,
                             rho=0.5)


def _step(device: torch.device, spatial, num_classes: int) -> None:
    """The real step functions (both halves, every figure) with random logits standing in for the networks."""
    b = 2
    cpu_gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, 1, *spatial, device=device)
    annotated = torch.randint(0, num_classes, (b, *spatial), device=device)
    # boundary calibration: class 1 grows, the last class shrinks (the trainer's first act on the labels)
    y = calibration.shift_labels(annotated, [0, 2] + [-1] * (num_classes - 2) if num_classes > 2 else [0, -1])
    ids = torch.randint(0, 50, (b, *spatial), device=device)
    enc = torch.stack([ids // 32768, ids % 32768], dim=1).to(torch.int16)
    xv = views.weak_intensity_view(x)
    for schedule in (SCHEDULE, dataclasses.replace(SCHEDULE, selection="pooled", refinement="pixel", use_kt=False,
                                                   refine_majority=False, gda_dice=False)):
        l1 = torch.randn(b, num_classes, *spatial, device=device)
        l2 = torch.randn(b, num_classes, *spatial, device=device)
        half = step.selection_half(l1, l2, y, superpixels.decode_ids(enc), schedule, DICE)
        mixed = step.transfer_inputs(x, xv, half, num_classes, schedule.rho, generator=cpu_gen,
                                     prior_correction=schedule.kt_prior_correction)
        lm1 = torch.randn(b, num_classes, *spatial, device=device)  # stand-ins for f(x_mix), f(x'_mix)
        lm2 = torch.randn(b, num_classes, *spatial, device=device)
        kt, cor = step.transfer_losses(lm1, lm2, mixed, DICE)
        half_size = tuple(s // 2 for s in spatial)  # stand-ins for the lower outputs of deep supervision
        low = [torch.randn(b, num_classes, *half_size, device=device) for _ in range(2)]
        ds = (step.deep_supervision_loss(low, low, half.refined, half.weights, half.supervised, DICE)
              + step.deep_supervision_loss([mixed.adjust(t) for t in low], low, mixed.labels, mixed.weights,
                                           mixed.trusted, DICE))
        figures = step.step_figures(half, kt, cor, ds, half.loss + kt + cor + ds, y, clean=y, annotated=annotated,
                                    logits=(l1, l2)).values()
        total = torch.stack(list(figures.values())).sum()
        assert total.shape == () and mixed.data.shape == x.shape and mixed.view.shape == x.shape


@pytest.mark.parametrize("spatial,num_classes", [((16, 16), 2), ((6, 8, 10), 3)])
def test_step_runs_on_meta_device(spatial, num_classes):
    _step(torch.device("meta"), spatial, num_classes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spatial,num_classes", [((16, 16), 2), ((6, 8, 10), 3)])
def test_step_has_no_cuda_sync(spatial, num_classes):
    dev = torch.device("cuda")
    _step(dev, spatial, num_classes)  # warm-up: lazy CUDA initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _step(dev, spatial, num_classes)
    finally:
        torch.cuda.set_sync_debug_mode(0)
