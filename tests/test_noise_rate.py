import math

import pytest
import torch
import torch.nn.functional as F

from nnunet_gsd.method.noise_rate import not_label_ce, search_loss


def test_search_loss_hand_value_binary():
    # two pixels; f1: p_fg = 0.5, 0.75; f2: p_fg = 0.75, 0.5; nGT = 1, 1; pixel 0 clean, pixel 1 not
    l1 = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]]).T.reshape(1, 2, 2)
    l2 = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]]).T.reshape(1, 2, 2)
    ngt = torch.tensor([[1, 1]])
    clean = torch.tensor([[True, False]])
    clean_term = -math.log(0.5) - math.log(0.75)         # CE toward nGT = 1
    rejected_term = -math.log(0.25) - math.log(0.5)      # CE toward 1 − nGT = 0
    assert search_loss(l1, l2, ngt, clean).item() == pytest.approx((clean_term + rejected_term) / 2, rel=1e-6)


def test_not_label_ce_equals_inverted_ce_for_binary():
    logits = torch.randn(3, 2, 5, 5)
    t = torch.randint(0, 2, (3, 5, 5))
    ref = F.cross_entropy(logits, 1 - t, reduction="none")
    assert torch.allclose(not_label_ce(logits, t), ref, atol=1e-6)


def test_not_label_ce_multiclass_and_stable():
    logits = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1)
    p = torch.softmax(logits, 1)[0, :, 0]
    assert not_label_ce(logits, torch.tensor([[2]])).item() == pytest.approx(-math.log(1 - p[2].item()), rel=1e-5)
    big = torch.tensor([0.0, 100.0]).view(1, 2, 1)
    v = not_label_ce(big, torch.tensor([[1]]))
    assert torch.isfinite(v).all() and v.item() == pytest.approx(100.0, rel=1e-5)


def test_search_loss_all_clean_is_mean_sup():
    l1, l2 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    ref = F.cross_entropy(l1, t) + F.cross_entropy(l2, t)
    assert search_loss(l1, l2, t, torch.ones_like(t, dtype=torch.bool)).item() == pytest.approx(ref.item(), rel=1e-5)


def test_confident_disagreement_counts_pixels_both_networks_contradict():
    from nnunet_gsd.method.noise_rate import confident_disagreement
    # 4 pixels labelled 0; net 1 predicts class 1 at pixels 0, 1; net 2 at pixels 1, 2 → only pixel 1 counts
    l1 = torch.zeros(1, 2, 4)
    l1[0, 1] = torch.tensor([10.0, 10.0, -10.0, -10.0])
    l2 = torch.zeros(1, 2, 4)
    l2[0, 1] = torch.tensor([-10.0, 10.0, 10.0, -10.0])
    noisy = torch.zeros(1, 4, dtype=torch.long)
    assert confident_disagreement(l1, l2, noisy).item() == pytest.approx(0.25)
    # p(nGT) = 0.5 is not "confident" at the default 0.2
    assert confident_disagreement(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), noisy).item() == 0.0
