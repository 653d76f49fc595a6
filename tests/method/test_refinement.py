"""Superpixel and pixel refinement on the training device (nnunet_gsd.method.refinement, Eq. 11–14)."""
import numpy as np
import pytest
import torch

from nnunet_gsd.method.refinement import fuse_probabilities, pixel_argmax, refine_labels, superpixel_argmax



def _probs_fg(p_fg):
    p = torch.as_tensor(p_fg, dtype=torch.float32)
    return torch.stack([1 - p, p], dim=1)


def test_superpixel_argmax_hand_example():
    # superpixel 1: fg probs 0.9, 0.2 → mean 0.55 → fg; superpixel 2: 0.4, 0.45 → bg
    probs = _probs_fg([[[0.9, 0.2], [0.4, 0.45]]])
    ids = torch.tensor([[[1, 1], [2, 2]]])
    assert torch.equal(superpixel_argmax(probs, ids), torch.tensor([[[1, 1], [0, 0]]]))
    assert torch.equal(pixel_argmax(probs), torch.tensor([[[1, 0], [0, 0]]]))
    assert torch.equal(superpixel_argmax(probs, ids, max_id=2), torch.tensor([[[1, 1], [0, 0]]]))


def test_superpixel_argmax_ids_are_per_sample_and_zero_is_per_pixel():
    probs = _probs_fg([[[0.9, 0.2], [0.4, 0.45]],
                       [[0.1, 0.2], [0.9, 0.6]]])
    ids = torch.tensor([[[1, 1], [2, 2]],
                        [[1, 1], [0, 0]]])
    # sample 1: superpixel 1 mean 0.15 → bg; id 0 → per-pixel (0.9 → 1, 0.6 → 1)
    expected = torch.tensor([[[1, 1], [0, 0]],
                             [[0, 0], [1, 1]]])
    assert torch.equal(superpixel_argmax(probs, ids), expected)
    assert torch.equal(superpixel_argmax(probs, ids, max_id=2), expected)


def test_superpixel_argmax_large_ids():
    probs = _probs_fg([[[0.9, 0.2], [0.4, 0.45]]])
    ids = torch.tensor([[[2**30 - 1, 2**30 - 1], [70000, 70000]]])
    assert torch.equal(superpixel_argmax(probs, ids), torch.tensor([[[1, 1], [0, 0]]]))


@pytest.mark.parametrize("spatial", [(12, 13), (5, 6, 7)])
def test_superpixel_argmax_matches_loop_reference(spatial):
    g = torch.Generator().manual_seed(1)
    b, c = 3, 4
    probs = torch.softmax(torch.randn(b, c, *spatial, generator=g), dim=1)
    ids = torch.randint(0, 9, (b, *spatial), generator=g) * 1000
    out = superpixel_argmax(probs, ids)
    ref = probs.argmax(1)
    for i in range(b):
        for s in ids[i].unique().tolist():
            if s == 0:
                continue
            sel = ids[i] == s
            mean = probs[i][:, sel].mean(dim=1)
            ref[i][sel] = mean.argmax()
    assert torch.equal(out, ref)
    assert torch.equal(superpixel_argmax(probs, ids, max_id=8000), ref)


def test_refine_labels_constant_in_superpixels_off_clean_and_ngt_on_clean():
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(2, 3, 10, 10, generator=g), dim=1)
    ids = (torch.arange(10).view(10, 1) // 5 * 2 + torch.arange(10).view(1, 10) // 5 + 1).expand(2, 10, 10)
    # nGT as the data loader delivers it (int16), the proposal as int16 too: the refined labels are long anyway
    noisy = torch.randint(0, 3, (2, 10, 10), generator=g).to(torch.int16)
    annotated = noisy.clone()
    clean = torch.rand(2, 10, 10, generator=g) < 0.5
    y = refine_labels(noisy, clean, superpixel_argmax(probs, ids).to(torch.int16))
    assert torch.equal(y[clean], noisy[clean].long())
    for i in range(2):
        for s in range(1, 5):
            vals = y[i][(ids[i] == s) & ~clean[i]]
            assert vals.numel() > 0 and (vals == vals[0]).all()
    assert y.dtype == torch.long
    # nGT itself is left as it was: the step compares y with it (refined_fraction, the pixels L_KT trusts)
    assert torch.equal(noisy, annotated) and bool((y != noisy).any())


def test_fuse_probabilities():
    l1 = torch.tensor([0.0, 0.0]).view(1, 2, 1, 1)
    l2 = torch.tensor([0.0, float(np.log(3.0))]).view(1, 2, 1, 1)
    p = fuse_probabilities(l1, l2, 0.25)
    assert torch.allclose(p.flatten(), torch.tensor([0.25 * 0.5 + 0.75 * 0.25, 0.25 * 0.5 + 0.75 * 0.75]))
    assert torch.allclose(fuse_probabilities(l1, l2, torch.tensor(0.25)), p)
    lb1 = torch.randn(2, 3, 4, 4, requires_grad=True)
    lb2 = torch.randn(2, 3, 4, 4)
    pa = fuse_probabilities(lb1, lb2, torch.tensor([1.0, 0.0]))
    assert torch.allclose(pa[0], torch.softmax(lb1[0], 0)) and torch.allclose(pa[1], torch.softmax(lb2[1], 0))
    assert torch.allclose(pa.sum(1), torch.ones(2, 4, 4)) and not pa.requires_grad


@pytest.mark.parametrize("c", [1, 2, 3, 5, 40])
def test_class_argmax_matches_torch_argmax_including_ties(c):
    from nnunet_gsd.method.refinement import _class_argmax

    g = torch.Generator().manual_seed(c)
    t = torch.randint(0, 3, (2, c, 7, 5), generator=g).float()  # many ties
    assert torch.equal(_class_argmax(t, 1), t.argmax(dim=1))
    assert torch.equal(_class_argmax(t[0], 0), t[0].argmax(dim=0))
    assert torch.equal(pixel_argmax(t), t.argmax(dim=1))


def test_superpixel_vote_gives_label_and_mean_probability():
    from nnunet_gsd.method.refinement import superpixel_vote
    # one sample, 4 pixels, superpixels {1: pixels 0-2, 2: pixel 3}; p(class 1) = .9 .8 .1 | .3
    p1 = torch.tensor([0.9, 0.8, 0.1, 0.3])
    probs = torch.stack([1 - p1, p1]).view(1, 2, 1, 4)
    ids = torch.tensor([1, 1, 1, 2]).view(1, 1, 4)
    label, conf = superpixel_vote(probs, ids)
    assert label.view(-1).tolist() == [1, 1, 1, 0]
    assert torch.allclose(conf.view(-1), torch.tensor([0.6, 0.6, 0.6, 0.7]))
    assert torch.equal(label, superpixel_argmax(probs, ids))


def test_confident_refinement_keeps_weak_votes():
    """A rejected pixel takes ŷ only with a confident vote that both networks share; the paper's rule is
    κ = 0 without a gate."""
    from nnunet_gsd.method.refinement import confident_refinement
    noisy = torch.tensor([0, 0, 1, 1, 1])
    clean_mask = torch.tensor([True, False, False, False, False])
    proposal = torch.tensor([1, 1, 0, 0, 0])
    confidence = torch.tensor([0.99, 0.6, 0.95, 0.95, 0.81])
    gate = torch.tensor([True, True, True, False, True])
    refined = confident_refinement(noisy, clean_mask, proposal, confidence, 0.8, gate)
    # selected: nGT; weak vote: nGT; confident and gated: ŷ; gate closed: nGT; just above κ: ŷ
    assert refined.tolist() == [0, 0, 0, 1, 0]
    assert torch.equal(confident_refinement(noisy, clean_mask, proposal, confidence, 0.0),
                       refine_labels(noisy, clean_mask, proposal))


def test_superpixel_majority_gate():
    """The labels' own vote per superpixel: a pixel labelled against its region's majority is flagged."""
    from nnunet_gsd.method.refinement import superpixel_majority
    labels = torch.tensor([[0, 1, 1, 1, 0, 0]])
    ids = torch.tensor([[1, 1, 1, 1, 2, 0]])  # superpixel 1: 0,1,1,1 → 1; superpixel 2: 0 → 0; id 0 keeps its own
    assert superpixel_majority(labels, ids, 2).tolist() == [[1, 1, 1, 1, 0, 0]]
    labels3 = torch.tensor([[2, 2, 1, 0]])
    assert superpixel_majority(labels3, torch.ones(1, 4, dtype=torch.long), 3).tolist() == [[2, 2, 2, 2]]
