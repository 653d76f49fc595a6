import torch

from nnunet_gsd.method.views import weak_intensity_view


def _image(b=4, c=2, spatial=(32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, *spatial, generator=g)
    # smooth structure so the view can be compared with the original
    yy, xx = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in spatial[-2:]], indexing="ij")
    return x * 0.2 + 3 * (xx**2 + yy**2 < 0.3).float()


def test_weak_view_shape_not_identity_correlated():
    x = _image()
    v = weak_intensity_view(x, generator=torch.Generator().manual_seed(1))
    assert v.shape == x.shape and v.dtype == x.dtype
    assert not torch.allclose(v, x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            r = torch.corrcoef(torch.stack([x[i, c].flatten(), v[i, c].flatten()]))[0, 1]
            assert r > 0.9


def test_weak_view_3d_reproducible_and_no_grad():
    x = torch.randn(2, 1, 8, 9, 10, requires_grad=True)
    a = weak_intensity_view(x, generator=torch.Generator().manual_seed(3))
    b = weak_intensity_view(x, generator=torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not a.requires_grad


def test_weak_view_differs_per_sample():
    x = _image(b=2).clone()
    x[1] = x[0]
    v = weak_intensity_view(x, generator=torch.Generator().manual_seed(4), noise_std=0.0)
    assert not torch.allclose(v[0], v[1])


def test_weak_view_identity_when_disabled_and_constant_channel():
    x = _image()
    v = weak_intensity_view(x, brightness=0.0, contrast=0.0, gamma=(1.0, 1.0), noise_std=0.0)
    assert torch.allclose(v, x, atol=1e-5)
    const = torch.full((1, 1, 4, 4), 2.0)
    out = weak_intensity_view(const, noise_std=0.0)
    assert torch.isfinite(out).all()
