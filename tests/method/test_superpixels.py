"""SLIC superpixels and their id encoding (nnunet_gsd.method.superpixels)."""
import numpy as np
import pytest
import torch

from nnunet_gsd.method.superpixels import decode_ids, encode_ids, slic_superpixels



def test_encode_decode_round_trip():
    ids = np.array([[0, 1, 32767], [32768, 70000, 2**30 - 1]])
    enc = encode_ids(ids)
    assert enc.dtype == np.int16 and enc.shape == (2, 2, 3)
    dec = decode_ids(torch.from_numpy(enc)[None])
    assert dec.dtype == torch.long and torch.equal(dec[0], torch.from_numpy(ids))
    # every real id has a non-zero channel, so nnU-Net's (-1 → 0) padding never aliases an id
    assert np.all((enc[0] != 0) | (enc[1] != 0) | (ids == 0))
    padded = torch.full((1, 2, 2, 2), -1, dtype=torch.int16)
    assert torch.equal(decode_ids(padded), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        encode_ids(np.array([2**30]))


def test_slic_2d_shapes_ids_and_count():
    rng = np.random.default_rng(0)
    img = rng.random((1, 128, 128)).astype(np.float32) * 5 - 2  # z-scored-like range
    s = slic_superpixels(img)
    assert s.shape == (128, 128) and s.dtype == np.int32 and s.min() == 1
    n = len(np.unique(s))
    assert 128 <= n <= 400  # requested round(1024·128²/256²) = 256
    s4 = slic_superpixels(img[:, None])  # nnU-Net 2D layout (C, 1, H, W)
    assert s4.shape == (1, 128, 128) and np.array_equal(s4[0], s)


def test_slic_follows_a_strong_edge_and_handles_constant_channels():
    img = np.zeros((2, 64, 64), dtype=np.float32)
    img[0, :, 29:] = 1.0  # a step edge off the sampling grid; channel 1 constant
    s = slic_superpixels(img, n_segments_per_256sq=4096, sigma=0.0)
    left, right = set(np.unique(s[:, :29])), set(np.unique(s[:, 29:]))
    assert not (left & right)


def _mixed_fraction(s, lab):
    ids = s.ravel()
    cnt = np.bincount(ids)
    fg = np.bincount(ids, lab.ravel())
    return np.minimum(fg, cnt - fg)[1:].sum() / ids.size


def test_slic_intensity_range_makes_superpixels_follow_edges():
    # compactness 10 on a [0, 1] image (intensity_range=1, skimage's raw meaning) is a grid;
    # the Lab-like default range adheres to object boundaries far better.
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    lab = (gaussian_filter(rng.standard_normal((128, 128)), 5) > 0).astype(np.int64)
    img = (lab * 2.0 + rng.normal(0, 0.1, lab.shape))[None].astype(np.float32)
    good = _mixed_fraction(slic_superpixels(img), lab)
    grid = _mixed_fraction(slic_superpixels(img, intensity_range=1.0), lab)
    assert good < 0.6 * grid


def test_slic_3d_and_rgb():
    rng = np.random.default_rng(1)
    vol = rng.random((2, 16, 20, 24)).astype(np.float32)
    s = slic_superpixels(vol, spacing=(2.0, 1.0, 1.0))
    assert s.shape == (16, 20, 24) and s.min() == 1 and s.dtype == np.int32
    rgb = rng.random((3, 32, 32)).astype(np.float32)
    assert slic_superpixels(rgb).shape == (32, 32)
    assert slic_superpixels(rgb, convert2lab=False).shape == (32, 32)


