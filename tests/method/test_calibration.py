import numpy as np
import pytest
import torch

from nnunet_gsd.method.calibration import (calibration_offset, estimate_offset, median_profile, ring_profile,
                                          shift_labels)


def disk(size: int, radius: float, centre=None) -> np.ndarray:
    c = (size - 1) / 2 if centre is None else centre
    yy, xx = np.mgrid[:size, :size]
    return (yy - c) ** 2 + (xx - c) ** 2 <= radius ** 2


def test_ring_profile_of_a_step_edge_on_the_outline():
    # a bright square (value 10) on 0, labelled exactly: every inside ring is 1, every outside ring 0
    image = np.zeros((1, 40, 40))
    image[0, 10:30, 10:30] = 10
    mask = image[0] > 0
    p = ring_profile(image, mask, rings=3)
    np.testing.assert_allclose(p, [1, 1, 1, 0, 0, 0])


def test_ring_profile_of_an_eroded_label():
    # the label lies 2 pixels inside the bright square: outside rings 1 and 2 are still object
    image = np.zeros((1, 40, 40))
    image[0, 10:30, 10:30] = 10
    mask = np.zeros((40, 40), bool)
    mask[12:28, 12:28] = True
    p = ring_profile(image, mask, rings=3)
    np.testing.assert_allclose(p[:3], 1)
    assert p[3] == 1 and p[4] == 1   # outside rings 1-2: distances (0, 1] and (1, 2] from the label
    assert 0 <= p[5] < 1             # ring 3 holds corner pixels farther than 2 along a diagonal: background


def test_ring_profile_needs_both_references():
    image = np.ones((1, 20, 20))
    image[0, 8:12, 8:12] = 5
    mask = np.zeros((20, 20), bool)
    mask[8:12, 8:12] = True           # 4×4: no pixel deeper than 3 rings
    assert ring_profile(image, mask, rings=3) is None
    assert ring_profile(np.ones((1, 20, 20)), disk(20, 8), rings=3) is None  # no contrast


def test_estimate_offset_finds_the_steepest_fall():
    # median curve 1,1,1 | 1,1,0 → the fall between outside rings 2 and 3 → the edge 2 voxels outside
    profiles = [np.array([1, 1, 1, 1, 1, 0.0])] * 20
    assert estimate_offset(profiles) == pytest.approx(2.0)
    # a fall between the last inside and first outside ring is the outline itself
    assert estimate_offset([np.array([1, 1, 1, 0, 0, 0.0])] * 20) == pytest.approx(0.0)
    # inside: 1, 0.5 | 0 … falls 0.5 at −1 and 0.5 at 0: the parabola through (0, 0.5, 0.5) is flat at the max,
    # the vertex lies midway: −0.5
    assert estimate_offset([np.array([1, 1, 0.5, 0, 0, 0.0])] * 20) == pytest.approx(-0.5)


def test_estimate_offset_wants_evidence():
    assert estimate_offset([np.array([1, 1, 1, 0, 0, 0.0])] * 19) is None
    assert estimate_offset([None] * 30) is None
    assert estimate_offset([np.array([0, 0, 0, 1, 1, 1.0])] * 20) is None  # rises: not an edge


def test_median_profile_trusts_only_one_step_between_the_references():
    step = np.array([0.9, 0.85, 0.8, 0.4, 0.3, 0.25])
    curve, why = median_profile([step] * 11 + [step - 0.02] * 10)
    np.testing.assert_allclose(curve, step)   # 21 cases: the 11th smallest is one of the eleven
    assert why == ""
    assert median_profile([step] * 5 + [None] * 20)[1] == "too few outlines (5 < 20)"
    # lungs: dark inside, a background of dark air and bright body — the inside is never object-like
    assert median_profile([np.array([0.04, -0.5, -1.4, -1.9, -2.0, -2.0])] * 20)[1].startswith(
        "not one edge (innermost ring 0.04, needs ≥ 0.7")
    # shadowing below a lesion: the outside keeps falling far below the background
    _, why = median_profile([np.array([0.9, 0.8, 0.4, 0.1, -0.3, -0.59])] * 20)
    assert "outermost -0.59, needs within ±0.35" in why
    assert estimate_offset([np.array([0.9, 0.8, 0.4, 0.1, -0.3, -0.59])] * 20) is None


def test_calibration_offset_has_a_dead_zone_and_adds_half_a_voxel():
    assert calibration_offset(None) == 0
    assert calibration_offset(-0.99) == 0    # clean Kvasir-SEG at 64²
    assert calibration_offset(-1.16) == 0    # clean Kvasir-SEG at 256²: within 1.5 voxels nothing moves
    assert calibration_offset(0.8) == 0
    assert calibration_offset(-1.74) == -1   # heavy over-annotation of the synthetic thin class
    assert calibration_offset(2.15) == 3     # heavy under-annotation
    assert calibration_offset(-3.9) == -3    # heavy over-annotation
    assert calibration_offset(-4.06) == -4


def test_the_dead_zone_grows_with_the_rings():
    # 1.5 voxels at six rings (or fewer), 1.5 · 12 / 6 = 3 at twelve, 1.5 · 20 / 6 = 5 at twenty
    assert calibration_offset(-1.6, rings=4) == -1 and calibration_offset(-1.6, rings=6) == -1
    assert calibration_offset(-2.9, rings=12) == 0 and calibration_offset(-3.1, rings=12) == -3
    assert calibration_offset(4.9, rings=20) == 0 and calibration_offset(5.1, rings=20) == 6
    assert calibration_offset(None, rings=20) == 0


def test_shift_labels_grows_and_shrinks_by_euclidean_distance():
    y = torch.zeros(1, 9, 9, dtype=torch.long)
    y[0, 4, 4] = 1
    grown = shift_labels(y, [0, 1])
    # distance ≤ 1 from the centre: the centre and its 4 neighbours
    assert grown.sum() == 5 and grown[0, 3, 4] == 1 and grown[0, 3, 3] == 0
    assert shift_labels(y, [0, 2]).sum() == 13   # lattice points within radius 2: 1 + 4 + 4 + 4
    square = torch.zeros(1, 9, 9, dtype=torch.long)
    square[0, 2:7, 2:7] = 1
    shrunk = shift_labels(square, [0, -1])
    assert shrunk.sum() == 9 and shrunk[0, 3:6, 3:6].all()


def test_shift_labels_keeps_other_classes_and_vanishing_ones():
    y = torch.zeros(2, 7, 7, dtype=torch.long)
    y[0, 3, 1:6] = 2          # a thin line: shrinking would erase it, so sample 0 keeps it
    y[0, 3, 0] = 1
    y[1, 1:6, 1:6] = 2        # a 5×5 square shrinks to 3×3
    out = shift_labels(y, [0, 3, -1])
    assert torch.equal(out[0] == 2, y[0] == 2)
    assert (out[1] == 2).sum() == 9
    # class 1 grows by 3 into background only: the line of class 2 stays
    assert (out[0, 3, 1:6] == 2).all() and out[0, 0, 0] == 1


def test_shift_labels_respects_anisotropic_spacing():
    y = torch.zeros(1, 7, 7, 7, dtype=torch.long)
    y[0, 3, 3, 3] = 1
    out = shift_labels(y, [0, 2], spacing=(2.0, 1.0, 1.0))  # axis 0 voxels are twice as long
    assert out[0, 4, 3, 3] == 1 and out[0, 5, 3, 3] == 0   # 2 units along axis 0 = one voxel
    assert out[0, 3, 5, 3] == 1 and out[0, 3, 3, 5] == 1


def test_outline_distances_on_crops_equal_the_whole_volume_transforms():
    from scipy import ndimage

    from nnunet_gsd.method.calibration import _outline_distances
    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.normal(size=(18, 30, 26)), 2) > 0.1   # blobs, some touching the border
    mask[:, :, 20:] = False                                                  # and a wide background on one side
    sampling = np.array([2.5, 1.0, 1.0])
    inside, outside = _outline_distances(mask, sampling, rings=3)
    np.testing.assert_array_equal(inside, ndimage.distance_transform_edt(mask, sampling=sampling))
    full = ndimage.distance_transform_edt(~mask, sampling=sampling)
    np.testing.assert_array_equal(outside[full <= 3], full[full <= 3])
    assert np.all(outside[full > 3] > 3)


def test_equivalent_radius_is_the_radius_of_the_disk_or_ball_of_the_same_size():
    from nnunet_gsd.method.calibration import equivalent_radius
    # a 20×20 square: area 400 = π r² → r = √(400/π) = 11.28
    square = np.zeros((30, 30), bool)
    square[5:25, 5:25] = True
    assert equivalent_radius(square) == pytest.approx(np.sqrt(400 / np.pi))
    # a lattice disk of radius 40 holds π·40² voxels up to its rim's rounding
    assert equivalent_radius(disk(101, 40)) == pytest.approx(40, abs=0.1)
    # 3D: 1000 voxels = 4/3 π r³ → r = 6.20; voxels twice as long on axis 0 double the volume → r · 2^(1/3)
    cube = np.ones((10, 10, 10), bool)
    assert equivalent_radius(cube) == pytest.approx((3 * 1000 / (4 * np.pi)) ** (1 / 3))
    assert equivalent_radius(cube, spacing=(2.0, 1.0, 1.0)) == pytest.approx((3 * 2000 / (4 * np.pi)) ** (1 / 3))
    assert equivalent_radius(np.zeros((5, 5), bool)) == 0


def test_ring_count_follows_the_median_radius_with_a_floor():
    from nnunet_gsd.method.calibration import RING_FRACTION, RINGS, ring_count
    assert RINGS == 6
    assert ring_count([]) == RINGS and ring_count([0.0, 0.0]) == RINGS   # no outlines: the floor
    assert ring_count([10.0, 12.0, 14.0]) == RINGS                       # small objects: the floor
    # the median of 30, 40 and 200 is 40; empty masks (0) do not count
    assert ring_count([30.0, 40.0, 200.0, 0.0]) == round(RING_FRACTION * 40)
    assert ring_count([80.0] * 3) == round(RING_FRACTION * 80)


def imaged_disks(true_radius: float, label_radius: float, n: int = 20, size: int = 128):
    """``n`` cases of a bright disk of ``true_radius`` imaged with partial volume (4× supersampled) and mild noise,
    labelled by the disk of ``label_radius`` around the same centre (label < true: an outline drawn inside)."""
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(n):
        cy, cx = rng.uniform(size / 2 - 4, size / 2 + 4, 2)
        yy, xx = (np.mgrid[:4 * size, :4 * size] + 0.5) / 4
        cover = (((yy - cy) ** 2 + (xx - cx) ** 2) <= true_radius ** 2).reshape(size, 4, size, 4).mean((1, 3))
        image = (cover + rng.normal(0, 0.05, cover.shape))[None]
        yy, xx = np.mgrid[:size, :size] + 0.5
        label = ((yy - cy) ** 2 + (xx - cx) ** 2) <= label_radius ** 2
        cases.append((image, label))
    return cases


def _auto(cases, rings):
    estimate = estimate_offset([ring_profile(image, label, rings) for image, label in cases])
    return estimate, calibration_offset(estimate, rings)


def test_rings_scaled_with_the_object_find_a_displacement_six_rings_cannot():
    from nnunet_gsd.method.calibration import equivalent_radius, ring_count
    # a disk of radius 40 labelled 10 voxels inside (radius 30): the edge lies 10 voxels outside the outline
    cases = imaged_disks(40, 30)
    rings = ring_count([equivalent_radius(label) for _, label in cases])
    assert rings >= 12                             # 0.4 of the label's radius (30)
    estimate, offset = _auto(cases, rings)
    assert estimate == pytest.approx(10, abs=0.5) and offset in (10, 11)
    # six rings all lie inside the object: the outermost is object-like, not background — no estimate, no move
    curve, why = median_profile([ring_profile(image, label, 6) for image, label in cases])
    assert curve[-1] > 0.9 and why.startswith("not one edge")
    assert _auto(cases, 6) == (None, 0)
    # drawn 10 voxels outside (radius 50 around a disk of 40): the edge lies 10 voxels inside
    grown = imaged_disks(40, 50)
    estimate, offset = _auto(grown, ring_count([equivalent_radius(label) for _, label in grown]))
    assert estimate == pytest.approx(-10, abs=0.5) and offset in (-10, -9)


def test_scaled_rings_leave_a_clean_large_disk_unmoved():
    from nnunet_gsd.method.calibration import equivalent_radius, ring_count
    cases = imaged_disks(40, 40)
    rings = ring_count([equivalent_radius(label) for _, label in cases])
    assert rings > 6
    estimate, offset = _auto(cases, rings)
    assert abs(estimate) < 0.5 and offset == 0
    # drawn 2 voxels outside a disk of radius 40 (5 % of it, within how experts draw): the edge is found, and
    # the dead zone of the scaled rings (1.5 · 17 / 6 = 4.25) leaves it; six rings' 1.5 would move it
    loose = imaged_disks(40, 42)
    rings = ring_count([equivalent_radius(label) for _, label in loose])
    assert rings == 17
    estimate, offset = _auto(loose, rings)
    assert estimate == pytest.approx(-2, abs=0.5) and offset == 0
    assert calibration_offset(estimate) in (-1, -2)
