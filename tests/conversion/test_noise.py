"""Noise module (docs/noise.md): hand-computed steps, seeding, grow/shrink direction, multi-class, 3D."""
from __future__ import annotations

import numpy as np
import pytest
from nnunet_gsd.dataset_conversion import noise
from nnunet_gsd.dataset_conversion.noise import (
    apply_noise,
    dice,
    erode_dilate,
    get_preset,
    markov_chain,
    markov_perturb,
    smooth_threshold,
)

from nnunet_gsd.errors import UserError


def _square(n: int = 5, lo: int = 1, hi: int = 4) -> np.ndarray:
    m = np.zeros((n, n), bool)
    m[lo:hi, lo:hi] = True
    return m


def _disk(shape: tuple[int, ...], radius: float) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    return sum(g ** 2 for g in grid) <= radius ** 2


def test_one_grow_step_with_theta2_one_gives_the_cross():
    out = markov_chain(_square(), 1, theta1=1.0, theta2=1.0, rng=np.random.default_rng(0))
    expected = np.array([[0, 1, 1, 1, 0],
                         [1, 1, 1, 1, 1],
                         [1, 1, 1, 1, 1],
                         [1, 1, 1, 1, 1],
                         [0, 1, 1, 1, 0]], bool)
    np.testing.assert_array_equal(out, expected)


def test_one_shrink_step_with_theta2_one_keeps_only_the_centre():
    out = markov_chain(_square(), 1, theta1=0.0, theta2=1.0, rng=np.random.default_rng(0))
    expected = np.zeros((5, 5), bool)
    expected[2, 2] = True
    np.testing.assert_array_equal(out, expected)


def test_theta2_zero_changes_nothing():
    m = _disk((40, 40), 12)
    np.testing.assert_array_equal(markov_chain(m, 50, 0.5, 0.0, np.random.default_rng(1)), m)


def test_3d_grow_step_uses_6_adjacency():
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    out = markov_chain(m, 1, 1.0, 1.0, np.random.default_rng(0))
    assert out.sum() == 7
    assert out[1, 1, 1] and out[0, 1, 1] and out[1, 0, 1] and out[1, 1, 2]
    assert not out[0, 0, 1] and not out[0, 0, 0]


def test_smoothing_removes_isolated_pixels_and_keeps_solid_regions():
    m = np.zeros((20, 20), bool)
    m[2, 2] = True          # speck
    m[8:16, 8:16] = True    # 8×8 square
    out = smooth_threshold(m)
    assert not out[2, 2]
    assert out[9:15, 9:15].all()
    assert out.sum() == pytest.approx(64, abs=8)


def test_cropping_equals_the_whole_array_computation():
    m = np.zeros((120, 90), bool)
    m[40:70, 30:55] = True
    steps = 60
    a = markov_perturb(m, steps, 0.5, 0.3, np.random.default_rng(7))
    b = smooth_threshold(markov_chain(m, steps, 0.5, 0.3, np.random.default_rng(7)))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("radius, dilate, expected_sum", [(1, True, 5), (2, True, 13)])
def test_dilation_of_a_point_is_the_euclidean_disk(radius, dilate, expected_sum):
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    assert erode_dilate(m, radius, dilate).sum() == expected_sum


def test_erosion_of_a_square_by_one():
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    expected = np.zeros((9, 9), bool)
    expected[3:6, 3:6] = True
    np.testing.assert_array_equal(erode_dilate(m, 1, dilate=False), expected)


def test_erosion_does_not_eat_from_the_image_border():
    m = np.zeros((9, 9), bool)
    m[0:5, 0:5] = True      # touches the top-left corner
    out = erode_dilate(m, 1, dilate=False)
    expected = np.zeros((9, 9), bool)
    expected[0:4, 0:4] = True
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("preset_name", ["S_R", "S_E", "S_DE"])
def test_same_seed_same_mask_bit_for_bit(preset_name):
    m = _disk((96, 96), 25).astype(np.uint8)
    p = get_preset("shenzhen", preset_name)
    a = apply_noise(m, p, np.random.default_rng(123))
    b = apply_noise(m, p, np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    others = [apply_noise(m, p, np.random.default_rng(s)) for s in range(1, 6)]
    assert any(not np.array_equal(a, o) for o in others)


@pytest.mark.parametrize("dataset", ["kvasir", "shenzhen", "bu_suc"])
def test_s_r_shrinks_and_s_e_grows_the_foreground(dataset):
    m = _disk((256, 256), 60).astype(np.uint8)
    for seed in range(3):
        shrunk = apply_noise(m, get_preset(dataset, "S_R"), np.random.default_rng(seed))
        grown = apply_noise(m, get_preset(dataset, "S_E"), np.random.default_rng(seed))
        assert shrunk.sum() < 0.9 * m.sum()
        assert grown.sum() > 1.1 * m.sum()
        assert 0.5 < dice(shrunk, m) < 0.98
        assert 0.5 < dice(grown, m) < 0.98


def test_s_de_erodes_or_dilates_by_a_radius_in_range():
    m = _disk((128, 128), 30).astype(np.uint8)
    p = get_preset("shenzhen", "S_DE")
    assert (p.k1, p.k2) == (8, 10)
    areas = set()
    for seed in range(12):
        out = apply_noise(m, p, np.random.default_rng(seed)).astype(bool)
        # A disk of radius 30 eroded/dilated by r is the disk of radius 30 ∓ r (up to pixelation).
        r_eff = np.sqrt(out.sum() / np.pi) - np.sqrt(m.sum() / np.pi)
        assert 7.5 <= abs(r_eff) <= 10.5
        areas.add(np.sign(r_eff))
    assert areas == {-1.0, 1.0}  # both coin outcomes occur


def test_multiclass_labels_stay_valid_and_one_label_per_pixel():
    lab = np.zeros((80, 80), np.uint8)
    lab[10:40, 10:40] = 1
    lab[40:70, 25:60] = 2   # touches class 1
    for name in ("S_R", "S_E", "S_DE"):
        out = apply_noise(lab, get_preset("bu_suc", name), np.random.default_rng(0))
        assert out.dtype == lab.dtype and out.shape == lab.shape
        assert set(np.unique(out)) <= {0, 1, 2}
        assert (out == 1).any() and (out == 2).any()
    grown = apply_noise(lab, get_preset("bu_suc", "S_E"), np.random.default_rng(3))
    # Where both grown classes compete, the correct class keeps its pixels.
    assert np.all(grown[lab == 2] != 1)


def test_multiclass_overlap_resolution_prefers_the_correct_class():
    lab = np.zeros((7, 7), np.uint8)
    lab[1:6, 1:3] = 1
    lab[1:6, 3:6] = 2
    # One dilation by 1 of each class: class 1 claims column 3, class 2 column 2; each keeps its own.
    p = noise.NoisePreset(name="S_DE", kind="morph", k1=1, k2=1)

    class Always:  # rng stub: dilation (draw < 0.5) with radius 1
        def random(self, *a):
            return 0.0

        def integers(self, lo, hi):
            return 1

    out = apply_noise(lab, p, Always())  # type: ignore[arg-type]
    np.testing.assert_array_equal(out[1:6, 1:3], 1)
    np.testing.assert_array_equal(out[1:6, 3:6], 2)
    assert out[0, 1] == 1 and out[0, 4] == 2 and out[3, 0] == 1 and out[3, 6] == 2


def test_3d_presets_shrink_and_grow():
    m = _disk((32, 32, 32), 9).astype(np.uint8)
    shrunk = apply_noise(m, get_preset("brats2020", "S_R"), np.random.default_rng(0))
    grown = apply_noise(m, get_preset("brats2020", "S_E"), np.random.default_rng(0))
    de = apply_noise(m, get_preset("brats2020", "S_DE"), np.random.default_rng(0))
    assert shrunk.sum() < m.sum() < grown.sum()
    assert de.sum() != m.sum()
    assert shrunk.shape == m.shape and shrunk.ndim == 3


def test_empty_and_full_masks_are_left_alone():
    for name in ("S_R", "S_E", "S_DE"):
        p = get_preset("kvasir", name)
        assert not apply_noise(np.zeros((30, 30), np.uint8), p, np.random.default_rng(0)).any()


class CountingRng:
    """A numpy Generator that counts its ``random`` calls."""

    def __init__(self, seed: int):
        self.rng, self.calls = np.random.default_rng(seed), 0

    def random(self, *args, **kwargs):
        self.calls += 1
        return self.rng.random(*args, **kwargs)


def test_markov_work_is_one_draw_per_step_on_the_crop_only(monkeypatch):
    """What keeps source-resolution noise cheap, counted instead of timed: the chain runs on the foreground's box
    grown by steps + 3 (a 4×6 object, 10 steps: 4 + 2·13 = 30 by 6 + 2·13 = 32, not the 1000×1200 array), and each
    step draws its flips in one call (a vectorised chain: 1 + 10 calls, not one per candidate pixel)."""
    seen = []
    chain = noise.markov_chain

    def recording(mask, *args):
        seen.append(mask.shape)
        return chain(mask, *args)

    monkeypatch.setattr(noise, "markov_chain", recording)
    m = np.zeros((1000, 1200), bool)
    m[500:504, 600:606] = True
    rng = CountingRng(0)
    out = markov_perturb(m, 10, 0.8, 0.5, rng)
    assert seen == [(30, 32)]
    assert rng.calls <= 11
    assert not out[:480].any() and not out[520:].any()  # nothing outside the box can change


def test_presets_match_table_3():
    k = noise.PRESETS["kvasir"]
    assert (k["S_R"].steps, k["S_R"].theta1, k["S_R"].theta2, k["S_R"].noise_at) == (200, 0.2, 0.05, "source")
    assert (k["S_E"].steps, k["S_E"].theta1, k["S_E"].noise_at) == (200, 0.8, "source")
    assert (k["S_DE"].k1, k["S_DE"].k2, k["S_DE"].noise_at) == (9, 11, "output")
    # BraTS: the effective reading on the native 1-mm grid (docs/datasets.md): S_R with 50 steps, S_DE K(1-2)
    b = noise.PRESETS["brats2020"]
    assert (b["S_R"].steps, b["S_R"].theta1, b["S_R"].noise_at, b["S_R"].edge) == (50, 0.4, "source", 240)
    assert (b["S_E"].steps, b["S_E"].theta1) == (50, 0.6)
    assert (b["S_DE"].k1, b["S_DE"].k2) == (1, 2)
    for ds in ("shenzhen", "bu_suc"):
        assert all(p.noise_at == "output" for p in noise.PRESETS[ds].values())


def test_generated_data_scales_the_presets_to_its_edge():
    from nnunet_gsd.dataset_conversion import synthetic
    from nnunet_gsd.dataset_conversion.convert import resolve_noise
    from nnunet_gsd.dataset_conversion.model import ConvertOptions
    for name, expected in (("S_R", (50, 0.25)), ("S_DE", ((2, 3), 0.25))):
        preset, at, factor = resolve_noise(synthetic.discover(size=64), ConvertOptions(1, noise=name))
        got = preset.steps if name == "S_R" else (preset.k1, preset.k2)
        assert (got, factor) == expected and at == "output"
    preset, at, factor = resolve_noise(synthetic.discover(size=48, dim=3), ConvertOptions(1, noise="S_E"))
    assert (preset.steps, at, factor) == (10, "source", 48 / 240)   # round(50 * 0.2) = 10


def test_unknown_preset_and_multi_rater_dataset_are_user_errors():
    with pytest.raises(UserError, match="unknown noise preset"):
        get_preset("kvasir", "S_X")
    with pytest.raises(UserError, match="raters"):
        get_preset("lidc", "S_R")


def test_dice_hand_values():
    a = np.array([1, 1, 0, 0])
    b = np.array([1, 0, 1, 0])
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(4), np.zeros(4)) == 1.0
    assert dice(np.array([1, 2, 0]), np.array([1, 0, 2])) == pytest.approx(0.5)  # class 1: 1, class 2: 0


def test_presets_scale_with_the_output_edge():
    from nnunet_gsd.dataset_conversion.noise import get_preset, scale_preset
    sde = get_preset("kvasir", "S_DE")
    assert (sde.k1, sde.k2) == (9, 11)
    small = scale_preset(sde, 64 / 256)
    assert (small.k1, small.k2) == (2, 3)  # round(2.25), round(2.75)
    assert scale_preset(get_preset("shenzhen", "S_R"), 0.5).steps == 100
    assert scale_preset(get_preset("kvasir", "S_R"), 1.0) == get_preset("kvasir", "S_R")
