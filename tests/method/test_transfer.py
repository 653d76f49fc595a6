import math

import torch

from nnunet_gsd.method.transfer import derangement, mix, prior_logit_shift, transfer_masks


def test_derangement_no_fixed_points_many_draws():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for b in (2, 3, 4, 7):
        for _ in range(200):
            p = derangement(b, generator=g)
            assert p.dtype == torch.long and sorted(p.tolist()) == list(range(b))
            assert not (p == torch.arange(b)).any()
            if b == 3:
                seen.add(tuple(p.tolist()))
    assert seen == {(1, 2, 0), (2, 0, 1)}  # both derangements of 3 occur


def test_derangement_small_batches_and_device():
    assert derangement(1).tolist() == [0]
    assert derangement(0).numel() == 0
    assert derangement(2).tolist() == [1, 0]
    assert derangement(4, device="cpu").device.type == "cpu"


def test_derangement_reproducible():
    a = derangement(6, generator=torch.Generator().manual_seed(5))
    b = derangement(6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_transfer_masks_binary_rule():
    y = torch.zeros(3, 4, 4, dtype=torch.long)
    y[0, :1] = 1  # 25 % foreground → mask = foreground
    y[1, :3] = 1  # 75 % foreground → mask = background
    y[2, :2] = 1  # exactly 50 % → foreground (≤ ρ)
    m = transfer_masks(y, num_classes=2, rho=0.5)
    assert m.shape == (3, 1, 4, 4) and m.dtype == torch.float32
    assert torch.equal(m[0, 0], (y[0] == 1).float())
    assert torch.equal(m[1, 0], (y[1] == 0).float())
    assert torch.equal(m[2, 0], (y[2] == 1).float())
    # empty label: foreground (empty) has fraction 0 ≤ ρ → empty mask
    assert transfer_masks(torch.zeros(1, 3, 3, dtype=torch.long), 2).sum() == 0
    assert transfer_masks(torch.ones(1, 3, 3, dtype=torch.long), 2).sum() == 0


def test_transfer_masks_multiclass_one_present_class():
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(2, 6, 6, dtype=torch.long)
    y[0, :2, :2] = 1
    y[0, 4:, 4:] = 3  # classes 1 and 3 present, 2 absent
    y[1, :, :] = 0    # nothing present → class 1 → empty mask
    chosen = set()
    for _ in range(100):
        m = transfer_masks(y, num_classes=4, generator=g)
        m0 = m[0, 0].bool()
        if torch.equal(m0, y[0] == 1):
            chosen.add(1)
        elif torch.equal(m0, y[0] == 3):
            chosen.add(3)
        else:
            raise AssertionError("mask is not one present foreground class")
        assert m[1].sum() == 0
    assert chosen == {1, 3}


def test_transfer_masks_multiclass_large_class_takes_background():
    y = torch.full((1, 4, 4), 2, dtype=torch.long)
    y[0, 0, 0] = 0
    m = transfer_masks(y, num_classes=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m[0, 0], (y[0] != 2).float())


def test_transfer_masks_3d():
    y = torch.zeros(2, 3, 4, 5, dtype=torch.long)
    y[:, 1, 1, 1] = 1
    m = transfer_masks(y, 2)
    assert m.shape == (2, 1, 3, 4, 5) and torch.equal(m[:, 0], (y == 1).float())


def test_mix_matches_eq15():
    x = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).view(2, 2, 2, 2)
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 1.0], [1.0, 1.0]]]])
    partner = torch.tensor([1, 0])
    out = mix(x, masks, partner)
    for i, j in ((0, 1), (1, 0)):
        expected = x[j] * (1 - masks[i]) + x[i] * masks[i]
        assert torch.equal(out[i], expected)
    # labels (long) and weights (float) without a channel axis
    y = torch.tensor([[[1, 1], [1, 1]], [[2, 2], [2, 2]]])
    assert torch.equal(mix(y, masks, partner), torch.tensor([[[1, 2], [2, 2]], [[1, 2], [2, 2]]]))
    assert mix(y, masks, partner).dtype == torch.long
    w = y.float() * 1.5
    assert torch.equal(mix(w, masks, partner), mix(y, masks, partner).float() * 1.5)


def test_mix_with_transfer_masks_and_gradient():
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(4, 8, 8, generator=g) > 0.7).long()
    x = torch.randn(4, 3, 8, 8, generator=g, requires_grad=True)
    m = transfer_masks(y, 2)
    p = derangement(4, generator=g)
    out = mix(x, m, p)
    ym = mix(y, m, p)
    for i in range(4):
        j = int(p[i])
        sel = m[i, 0].bool()
        assert torch.equal(out[i][:, sel], x[i][:, sel]) and torch.equal(out[i][:, ~sel], x[j][:, ~sel])
        assert torch.equal(ym[i][sel], y[i][sel]) and torch.equal(ym[i][~sel], y[j][~sel])
    out.sum().backward()
    assert x.grad is not None


def test_mix_batch_of_one_is_identity():
    x = torch.randn(1, 2, 3, 3)
    m = transfer_masks(torch.ones(1, 3, 3, dtype=torch.long), 2)
    assert torch.equal(mix(x, m, derangement(1)), x)


def test_prior_logit_shift_hand_computed():
    # unmixed: 2 of 8 pixels foreground (π = 6/8, 2/8); mixed: 4 of 8 (π_mix = 4/8, 4/8)
    labels = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 1]])
    mixed = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])
    shift = prior_logit_shift(mixed, labels, num_classes=2)
    expected = torch.tensor([math.log((4 / 8) / (6 / 8)), math.log((4 / 8) / (2 / 8))])
    assert torch.allclose(shift, expected)


def test_prior_logit_shift_counts_only_masked_pixels_and_skips_absent_classes():
    labels = torch.tensor([[0, 0, 1, 1]])
    mixed = torch.tensor([[0, 1, 1, 1]])
    # the masks drop the last pixel of each: unmixed 2 bg / 1 fg, mixed 1 bg / 2 fg
    mask = torch.tensor([[True, True, True, False]])
    shift = prior_logit_shift(mixed, labels, 3, mask, mask)
    assert torch.allclose(shift, torch.tensor([math.log((1 / 3) / (2 / 3)), math.log((2 / 3) / (1 / 3)), 0.0]))


def test_prior_logit_shift_is_zero_when_mixing_keeps_the_prior():
    labels = torch.tensor([[0, 1], [1, 0]])
    assert torch.equal(prior_logit_shift(labels.flip(0), labels, 2), torch.zeros(2))
