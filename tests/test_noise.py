"""Low-frequency enhanced noise: the spectrum gains low-frequency power as the variance formula predicts."""

from __future__ import annotations

import pytest
import torch

from monai_lpuwf.noise import LowFrequencyEnhancedNoise


def _dc_and_rest_power(noise: torch.Tensor) -> tuple[float, float]:
    """Mean |FFT|^2 / N of the DC coefficient and of all other coefficients, per (sample, channel)."""
    dims = tuple(range(2, noise.ndim))
    n = noise[0, 0].numel()
    power = torch.fft.fftn(noise.double(), dim=dims).abs() ** 2 / n
    flat = power.flatten(2)
    return float(flat[..., 0].mean()), float(flat[..., 1:].mean())


def _expected_dc(mode, scale, spatial, discount=0.8):
    n = 1
    for s in spatial:
        n *= s
    if mode == "offset":
        return 1 + scale**2 * n
    levels = max(spatial).bit_length() - 1
    d = len(spatial)
    return 1 + scale**2 * sum(discount ** (2 * (i - 1)) * 2 ** (i * d) for i in range(1, levels + 1))


@pytest.mark.parametrize("mode", ["offset", "pyramid"])
@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_low_frequency_power_follows_formula(mode, spatial):
    like = torch.zeros(2048, 2, *spatial)
    excess, base = {}, None
    for scale in (0.0, 0.05, 0.1, 0.2):
        gen = torch.Generator().manual_seed(0)
        dc, rest = _dc_and_rest_power(LowFrequencyEnhancedNoise(scale=scale, mode=mode)(like, generator=gen))
        expected = _expected_dc(mode, scale, spatial)
        assert dc == pytest.approx(expected, rel=0.1)
        base = dc if base is None else base
        excess[scale] = dc - base  # gained over plain noise of the same draws
        if mode == "offset":
            assert rest == pytest.approx(1.0, rel=0.02)  # only the DC term changes
    # the added low-frequency power grows with scale ** 2 (same seed: same underlying draws)
    assert excess[0.2] / excess[0.1] == pytest.approx(4.0, rel=0.1)
    assert excess[0.1] / excess[0.05] == pytest.approx(4.0, rel=0.1)


def test_pyramid_energy_sits_at_low_frequencies():
    noise = LowFrequencyEnhancedNoise(scale=0.3, mode="pyramid")(torch.zeros(256, 1, 32, 32))
    power = (torch.fft.fft2(noise.double()).abs() ** 2 / 1024).mean((0, 1))
    freq = torch.fft.fftfreq(32).abs()
    radius = torch.maximum(freq[:, None], freq[None, :])
    low, high = float(power[(radius > 0) & (radius <= 1 / 16)].mean()), float(power[radius >= 0.375].mean())
    assert low > 3 * high and high == pytest.approx(1.0, rel=0.15)


@pytest.mark.parametrize("mode", ["offset", "pyramid"])
def test_scale_zero_is_gaussian_and_seeded(mode):
    like = torch.zeros(3, 4, 8, 8)
    plain = torch.randn(like.shape, generator=torch.Generator().manual_seed(7))
    got = LowFrequencyEnhancedNoise(scale=0.0, mode=mode)(like, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, plain)
    noise = LowFrequencyEnhancedNoise(scale=0.1, mode=mode)
    a = noise(like, generator=torch.Generator().manual_seed(1))
    b = noise(like, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.shape == like.shape and a.dtype == like.dtype


def test_offset_is_the_authors_form():
    like = torch.zeros(2, 4, 8, 8)
    gen = torch.Generator().manual_seed(3)
    expected = torch.randn(like.shape, generator=gen)
    expected = expected + 0.1 * torch.randn(2, 4, 1, 1, generator=gen)
    torch.testing.assert_close(LowFrequencyEnhancedNoise()(like, generator=torch.Generator().manual_seed(3)), expected)


def test_pyramid_odd_sizes_and_bilinear():
    for interp in ("nearest", "bilinear"):
        out = LowFrequencyEnhancedNoise(mode="pyramid", interp_mode=interp)(torch.zeros(1, 4, 13, 21))
        assert out.shape == (1, 4, 13, 21) and torch.isfinite(out).all()


def test_errors():
    with pytest.raises(ValueError):
        LowFrequencyEnhancedNoise(scale=-1)
    with pytest.raises(ValueError):
        LowFrequencyEnhancedNoise(mode="pink")
    with pytest.raises(ValueError, match="B, C"):
        LowFrequencyEnhancedNoise()(torch.zeros(4, 4))
