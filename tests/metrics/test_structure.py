"""Issue 18: vessel-band correlation and detail (DoG 0.7 - 2.5 px), against scipy's Gaussian filter and formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from monai_lpuwf.metrics import detail_ratio, vessel_band, vessel_band_correlation


def _vessels(seed: int = 0, size: int = 64) -> torch.Tensor:
    """Thin random lines on a smooth background, (1, 1, size, size)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.float32)
    for _ in range(6):
        r = rng.integers(4, size - 4)
        img[r, :] += 1.0
        img[:, rng.integers(4, size - 4)] += 0.7
    yy, xx = np.mgrid[:size, :size]
    img += 0.3 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 3) ** 2))
    return torch.from_numpy(img)[None, None]


def test_band_is_a_difference_of_gaussians():
    """Against scipy.ndimage.gaussian_filter (centre crop: the two differ only in how they treat the border)."""
    img = _vessels()
    ours = vessel_band(img)[0, 0].numpy()
    ref = gaussian_filter(img[0, 0].numpy(), 0.7) - gaussian_filter(img[0, 0].numpy(), 2.5)
    np.testing.assert_allclose(ours[12:-12, 12:-12], ref[12:-12, 12:-12], atol=2e-3)


def test_correlation_identity_sign_and_independence():
    a, b = _vessels(0), _vessels(1)
    assert float(vessel_band_correlation(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(vessel_band_correlation(-a, a)) == pytest.approx(-1.0, abs=1e-6)
    assert float(vessel_band_correlation(2 * a, a)) == pytest.approx(1.0, abs=1e-6)  # gain
    assert abs(float(vessel_band_correlation(a, b))) < 0.3  # other vessels


def test_blur_keeps_place_but_loses_detail():
    a = _vessels()
    blurred = torch.from_numpy(gaussian_filter(a[0, 0].numpy(), 1.5))[None, None]
    assert float(detail_ratio(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(detail_ratio(2 * a, a)) == pytest.approx(4.0, rel=1e-5)  # energy: squares
    assert float(detail_ratio(blurred, a)) < 0.5  # a blur -> 0
    assert float(vessel_band_correlation(blurred, a)) > 0.6  # what it keeps is in place
    noisy = a + 0.5 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    assert float(detail_ratio(noisy, a)) > 1.3  # added noise counts as detail, not as correlation
    assert float(vessel_band_correlation(noisy, a)) < float(vessel_band_correlation(a, a))


def test_mask_restricts_the_comparison():
    a, b = _vessels(0), _vessels(1)
    mixed = torch.cat([a[..., :32], b[..., 32:]], dim=-1)
    mask = torch.zeros_like(a)
    mask[..., 8:56, 4:26] = 1  # inside a's half, away from the seam
    assert float(vessel_band_correlation(mixed, a, mask)) > 0.95
    assert float(detail_ratio(mixed, a, mask)) == pytest.approx(1.0, abs=0.05)
    assert vessel_band_correlation(torch.cat([a, b]), torch.cat([a, a])).shape == (2,)
