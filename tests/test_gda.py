import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from nnunet_gsd.method.gda import (
    boundary_mask,
    clipped_boundary_distance,
    default_threshold,
    gda_loss,
    gda_weights,
)


def _square_7x7():
    lab = torch.zeros(1, 7, 7, dtype=torch.long)
    lab[0, 1:6, 1:6] = 1
    return lab


def test_boundary_square_8_connected():
    b = boundary_mask(_square_7x7())[0]
    # 8-connectivity: all of the 7×7 except the 3×3 interior core of the square
    expected = torch.ones(7, 7, dtype=torch.bool)
    expected[2:5, 2:5] = False
    assert torch.equal(b, expected)


def test_boundary_image_border_is_not_boundary():
    lab = torch.zeros(1, 5, 5, dtype=torch.long)
    lab[0, :, 3:] = 1  # vertical edge between columns 2 and 3
    b = boundary_mask(lab)[0]
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[:, 2:4] = True
    assert torch.equal(b, expected)
    assert not boundary_mask(torch.zeros(2, 6, 6, dtype=torch.long)).any()
    assert not boundary_mask(torch.ones(1, 6, 6, dtype=torch.long)).any()


def test_boundary_cube_26_connected():
    lab = torch.zeros(1, 7, 7, 7, dtype=torch.long)
    lab[0, 2:5, 2:5, 2:5] = 1
    b = boundary_mask(lab)[0]
    # 26-connectivity: the cube (3³) minus its centre, plus the 5³ shell around it
    expected = torch.zeros(7, 7, 7, dtype=torch.bool)
    expected[1:6, 1:6, 1:6] = True
    expected[3, 3, 3] = False
    assert torch.equal(b, expected)
    # a diagonal-only neighbour counts in 26-connectivity
    assert b[1, 1, 1]


def test_boundary_three_labels():
    lab = torch.tensor([[[0, 0, 0, 0],
                         [0, 0, 0, 0],
                         [1, 1, 2, 2],
                         [1, 1, 2, 2]]])
    b = boundary_mask(lab)[0].int()
    expected = torch.tensor([[0, 0, 0, 0],
                             [1, 1, 1, 1],
                             [1, 1, 1, 1],
                             [0, 1, 1, 0]])
    assert torch.equal(b, expected)


def test_boundary_batch_independent():
    a = _square_7x7()
    both = torch.cat([a, torch.zeros_like(a)])
    b = boundary_mask(both)
    assert torch.equal(b[0], boundary_mask(a)[0]) and not b[1].any()


def test_clipped_distance_hand_value():
    lab = torch.zeros(1, 1, 9, dtype=torch.long)
    lab[0, 0, 5:] = 1  # boundary at positions 4, 5
    d = clipped_boundary_distance(lab, 3.0)[0, 0]
    assert torch.allclose(d, torch.tensor([3.0, 3, 2, 1, 0, 0, 1, 2, 3]))
    d2 = clipped_boundary_distance(lab, 2.5)[0, 0]
    assert torch.allclose(d2, torch.tensor([2.5, 2.5, 2, 1, 0, 0, 1, 2, 2.5]))


def test_clipped_distance_empty_and_full_get_T():
    lab = torch.stack([torch.zeros(8, 8), torch.ones(8, 8), torch.zeros(8, 8)]).long()
    lab[2, 2:6, 2:6] = 1
    d = clipped_boundary_distance(lab, 4.0)
    assert torch.all(d[0] == 4.0) and torch.all(d[1] == 4.0)
    assert d[2].min() == 0 and d[2].max() <= 4.0


def _edt_to_boundary(lab: np.ndarray) -> np.ndarray:
    b = boundary_mask(torch.from_numpy(lab)[None])[0].numpy()
    if not b.any():
        return np.full(lab.shape, np.inf)
    return distance_transform_edt(~b)


@pytest.mark.parametrize("shape,T", [((40, 33), 5.0), ((40, 33), 2.5), ((64, 64), 10.0), ((17, 20, 23), 3.0),
                                     ((16, 16, 16), 5.0)])
def test_clipped_distance_exact_vs_scipy(shape, T):
    rng = np.random.default_rng(42)
    from scipy.ndimage import gaussian_filter

    labs = []
    for _ in range(3):
        f = gaussian_filter(rng.standard_normal(shape), 3)
        labs.append((f > np.quantile(f, 0.6)).astype(np.int64) + (f > np.quantile(f, 0.9)))
    batch = np.stack(labs)
    got = clipped_boundary_distance(torch.from_numpy(batch), T).numpy()
    for i in range(len(labs)):
        ref = np.minimum(_edt_to_boundary(batch[i]), T)
        np.testing.assert_allclose(got[i], ref, atol=1e-5)


def test_gda_weights_hand_values():
    d = torch.tensor([0.0, 1.0, 2.5, 5.0, 7.0, 100.0])
    T = 5.0
    # epoch 0: min(d, T) floored at 1
    assert torch.allclose(gda_weights(d, 0, 10, T), torch.tensor([1.0, 1.0, 2.5, 5.0, 5.0, 5.0]))
    # epoch 4 of 10: subtract 0.4·5 = 2
    assert torch.allclose(gda_weights(d, 4, 10, T), torch.tensor([1.0, 1.0, 1.0, 3.0, 3.0, 3.0]))
    # epoch E: everything floored at 1
    assert torch.all(gda_weights(d, 10, 10, T) == 1.0)


def test_gda_weights_empty_full_masks_get_T_then_decay():
    lab = torch.stack([torch.zeros(6, 6), torch.ones(6, 6)]).long()
    T = 3.0
    w = gda_weights(clipped_boundary_distance(lab, T), 0, 100, T)
    assert torch.all(w == T)
    w = gda_weights(clipped_boundary_distance(lab, T), 50, 100, T)
    assert torch.allclose(w, torch.full_like(w, 1.5))


def test_gda_loss_hand_value():
    pick = torch.tensor([[1.0, 2.0, 3.0, float("inf")]])
    clean = torch.tensor([[True, True, False, False]])
    w = torch.tensor([[1.0, 3.0, 10.0, 10.0]])
    assert gda_loss(pick, clean, w).item() == pytest.approx((1 * 1 + 2 * 3) / 2)
    none = torch.zeros_like(clean)
    assert gda_loss(pick[:, :3], none[:, :3], w[:, :3]).item() == 0.0


def test_default_threshold():
    assert default_threshold((256, 256)) == 10
    assert default_threshold((128, 128, 128)) == 5
    assert default_threshold((64, 64)) == 2.5
    assert default_threshold((32, 32)) == 2
    assert default_threshold((20, 512, 256)) == 10
    assert default_threshold((320, 256)) == 10
