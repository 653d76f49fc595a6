"""The per-step method functions must not synchronise host and device.

On the ``meta`` device every data-dependent host access (``.item()``, ``bool(tensor)``,
``nonzero()``, data-sized outputs) raises, so running the whole step there proves there is
none. Where CUDA is available, the same step runs under ``torch.cuda.set_sync_debug_mode("error")``.
"""
import pytest
import torch

from nnunet_gsd.method import diagnostics, gda, losses, noise_rate, selection, superpixels, transfer, views


def _step(device: torch.device, spatial, num_classes: int) -> None:
    b = 2
    cpu_gen = torch.Generator().manual_seed(0)
    l1 = torch.randn(b, num_classes, *spatial, device=device)
    l2 = torch.randn(b, num_classes, *spatial, device=device)
    x = torch.randn(b, 1, *spatial, device=device)
    y = torch.randint(0, num_classes, (b, *spatial), device=device)
    ids = torch.randint(0, 50, (b, *spatial), device=device)

    xv = views.weak_intensity_view(x)
    pick = selection.pick_loss(l1, l2, y)
    clean = selection.small_loss_mask(pick, selection.retention_rate(3, 10, 0.1))
    t = gda.default_threshold(spatial)
    w = gda.gda_weights(gda.clipped_boundary_distance(y, t), 3, 10, t)
    l_gda = gda.gda_loss(pick, clean, w)
    probs = superpixels.fuse_probabilities(l1, l2, torch.rand((), device=device))
    enc = torch.stack([ids // 32768, ids % 32768], dim=1).to(torch.int16)
    dec = superpixels.decode_ids(enc)
    refined = superpixels.refine_labels(y, clean, superpixels.superpixel_argmax(probs, dec))
    superpixels.refine_labels(y, clean, superpixels.superpixel_argmax(probs, dec, max_id=49))
    superpixels.pixel_argmax(probs)
    masks = transfer.transfer_masks(refined, num_classes, generator=cpu_gen)
    partner = transfer.derangement(b, generator=cpu_gen, device=device)
    xm, xvm = transfer.mix(x, masks, partner), transfer.mix(xv, masks, partner)
    ym, wm = transfer.mix(refined, masks, partner), transfer.mix(w, masks, partner)
    lm1, lm2 = transfer.mix(l1, masks, partner), transfer.mix(l2, masks, partner)  # stand-ins for f(xm)
    dice = lambda logits, target: (logits.softmax(1) * 0).sum()  # noqa: E731 - nnU-Net's Dice is tested elsewhere
    total = l_gda + losses.kt_loss(lm1, ym, wm, dice) + losses.kt_loss(lm2, ym, wm, dice)
    total = total + losses.correlation_loss(lm1, lm2, wm) + noise_rate.search_loss(l1, l2, y, clean)
    diagnostics.truth_diagnostics(y, y, clean, refined)
    assert total.shape == () and xm.shape == x.shape and xvm.shape == x.shape


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
