import math

import pytest
import torch

from nnunet_gsd.method.selection import pick_loss, retention_rate, small_loss_mask, symmetric_kl


def test_symmetric_kl_zero_for_equal_logits():
    x = torch.randn(2, 3, 4, 5)
    assert torch.allclose(symmetric_kl(x, x), torch.zeros(2, 4, 5), atol=1e-7)
    assert symmetric_kl(x, x.clone()).shape == (2, 4, 5)


def test_symmetric_kl_hand_value_two_classes():
    # p_a = (0.5, 0.5) (logits 0, 0); p_b = softmax(0, log 3) = (0.25, 0.75)
    a = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)
    b = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    kl_ba = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    kl_ab = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    out = symmetric_kl(a, b)
    assert out.shape == (1, 1, 1)
    assert out.item() == pytest.approx(kl_ba + kl_ab, rel=1e-6)
    assert symmetric_kl(b, a).item() == pytest.approx(kl_ba + kl_ab, rel=1e-6)


def test_symmetric_kl_stable_for_huge_logits():
    a = torch.tensor([0.0, 200.0]).view(1, 2, 1)
    b = torch.tensor([200.0, 0.0]).view(1, 2, 1)
    v = symmetric_kl(a, b)
    assert torch.isfinite(v).all()
    assert v.item() == pytest.approx(400.0, rel=1e-4)  # 2 · 200


def test_pick_loss_hand_value():
    l1 = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)
    l2 = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    t = torch.tensor([[[1]]])
    ce1 = -math.log(0.5)
    ce2 = -math.log(0.75)
    kl = symmetric_kl(l1, l2).item()
    assert pick_loss(l1, l2, t, lam=0.5).item() == pytest.approx(ce1 + ce2 + 0.5 * kl, rel=1e-6)
    assert pick_loss(l1, l2, t, lam=0.0).item() == pytest.approx(ce1 + ce2, rel=1e-6)


def test_pick_loss_3d_shape_and_grad():
    l1 = torch.randn(2, 3, 3, 4, 5, requires_grad=True)
    l2 = torch.randn(2, 3, 3, 4, 5, requires_grad=True)
    t = torch.randint(0, 3, (2, 3, 4, 5))
    out = pick_loss(l1, l2, t)
    assert out.shape == (2, 3, 4, 5)
    out.sum().backward()
    assert l1.grad is not None and l2.grad is not None


def test_retention_rate_values():
    assert retention_rate(0, 100, 0.2) == pytest.approx(1.0)
    assert retention_rate(5, 100, 0.2) == pytest.approx(0.9)
    assert retention_rate(10, 100, 0.2) == pytest.approx(0.8)
    assert retention_rate(50, 100, 0.2) == pytest.approx(0.8)
    assert retention_rate(50, 1000, 0.1) == pytest.approx(0.95)  # ramp over 100 epochs
    assert retention_rate(3, 5, 0.1) == pytest.approx(0.9)  # e_ramp floored at 1
    assert retention_rate(3, 100, 0.2, ramp_fraction=0.2) == pytest.approx(1 - 0.2 * 3 / 20)
    assert isinstance(retention_rate(1, 10, 0.1), float)


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.3, 0.5, 0.77, 0.95, 1.0])
def test_small_loss_mask_exact_count_and_smallest(keep):
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(3, 7, 11, generator=g)
    n = loss.numel()
    m = small_loss_mask(loss, keep)
    k = min(max(math.floor(keep * n + 0.5), 1), n)
    assert m.dtype == torch.bool and m.shape == loss.shape
    assert int(m.sum()) == k
    if k < n:
        assert loss[m].max() <= loss[~m].min()


def test_small_loss_mask_is_batch_pooled():
    # sample 0 all small, sample 1 all large: keeping half keeps exactly sample 0
    loss = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])
    m = small_loss_mask(loss, 0.5)
    assert m[0].all() and not m[1].any()


def test_small_loss_mask_ties_exact_count():
    loss = torch.zeros(2, 5, 5)
    for keep in (0.1, 0.5, 0.9):
        assert int(small_loss_mask(loss, keep).sum()) == math.floor(keep * 50 + 0.5)


def test_l_gda_gradient_reaches_only_the_selected_pixels():
    """Four pixels labelled 0; f1 = f2, logits (0, 0) on three pixels and (0, 3) on the last, whose L_pick is the
    largest: R = 0.75 keeps the first three (k = 3). Without GDA weights or the Dice term L_GDA is the mean L_pick
    over D_clean, 2·ln 2 (two CE terms of −ln ½, KL 0), and its gradient with respect to f1's logits is
    (softmax − onehot)/|D_clean| = (−1/6, +1/6) on each kept pixel and 0 on the rejected one (the KL term's
    gradient vanishes where f1 = f2)."""
    from nnunet_gsd.method.step import StepSchedule, selection_half
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, 3] = 3.0
    l1, l2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    schedule = StepSchedule(keep=0.75, epoch=0, num_epochs=10, threshold=2.0, use_gda=False, gda_dice=False, lam=0.5,
                            selection="pooled", refinement="none", refine_confidence=0.0, refine_majority=False,
                            ignore_unrefined=False, use_kt=False, kt_prior_correction=False, rho=0.5)
    half = selection_half(l1, l2, torch.zeros(1, 1, 4, dtype=torch.long), None, schedule, dice=None)
    assert half.clean_mask.tolist() == [[[True, True, True, False]]]
    assert half.loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    half.loss.backward()
    expected = torch.tensor([[-1 / 6] * 3 + [0.0], [1 / 6] * 3 + [0.0]]).view(1, 2, 1, 4)
    assert torch.allclose(l1.grad, expected, atol=1e-6) and torch.allclose(l2.grad, expected, atol=1e-6)


def test_class_balanced_selection_keeps_each_class_share():
    """Hand-made: class 1 (the minority) has every high loss; pooled selection drops all of it, per-class
    selection keeps round(0.5·n_c) of each class — the smallest losses within the class."""
    from nnunet_gsd.method.selection import class_balanced_small_loss_mask
    loss = torch.tensor([[0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0]])
    labels = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    pooled = small_loss_mask(loss, 0.5)
    assert pooled.tolist() == [[True, True, True, True, False, False, False, False]]
    per_class = class_balanced_small_loss_mask(loss, labels, 0.5, 2)
    assert per_class.tolist() == [[True, True, False, False, True, True, False, False]]
    # a class with one pixel keeps it (k_c ≥ 1); an absent class is no problem
    one = class_balanced_small_loss_mask(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[1, 0, 0]]), 0.5, 3)
    assert one.tolist() == [[True, True, False]]
    # a single class: identical to the pooled rule
    x = torch.rand(2, 5, 7)
    assert torch.equal(class_balanced_small_loss_mask(x, torch.zeros(2, 5, 7, dtype=torch.long), 0.8, 2),
                       small_loss_mask(x, 0.8))
