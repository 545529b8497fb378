"""Radial power spectrum against Parseval, pure cosines and scaling; the plot writes a PNG."""

from __future__ import annotations

import math

import pytest
import torch

from monai_lpuwf.metrics import log_spectral_distance, plot_power_spectra, radial_power_spectrum, save_figure


def test_shapes_and_white_noise_is_flat_at_its_variance():
    g = torch.Generator().manual_seed(0)
    sigma = 0.3
    img = sigma * torch.randn(2, 1, 128, 160, generator=g, dtype=torch.float64)
    freqs, power = radial_power_spectrum(img, num_bins=16)
    assert freqs.shape == (16,) and power.shape == (2, 16)
    torch.testing.assert_close(freqs[0], torch.tensor(0.5 / 32, dtype=torch.float64))
    # E |FFT(x)|^2 / (H W) = sigma^2 at every frequency for white noise (Parseval per coefficient)
    assert float(power[:, 1:].mean()) == pytest.approx(sigma**2, rel=0.03)
    assert (power[:, 1:] / sigma**2 - 1).abs().max() < 0.25


def test_pure_cosine_lands_in_its_ring():
    h = w = 64
    f0 = 8 / 64  # cycles per pixel, along columns
    x = torch.arange(w, dtype=torch.float64)
    img = torch.cos(2 * math.pi * f0 * x).expand(h, w).reshape(1, 1, h, w)
    freqs, power = radial_power_spectrum(img, num_bins=32)
    peak = int(torch.nan_to_num(power[0]).argmax())
    assert freqs[peak] - 0.5 / 64 <= f0 < freqs[peak] + 0.5 / 64
    # two coefficients of power (H*W/2)^2/(H*W) each, averaged over the ring's coefficients (8 <= |k| < 9)
    ring = [(ky, kx) for ky in range(-32, 32) for kx in range(-32, 32) if 8 <= math.hypot(ky, kx) < 9]
    assert float(power[0, peak]) == pytest.approx(2 * (h * w / 2) ** 2 / (h * w) / len(ring))
    others = torch.cat([power[0, :peak], power[0, peak + 1 :]])
    assert torch.nan_to_num(others).abs().max() < 1e-9


def test_log_spectral_distance_oracles():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 1, 40, 40, generator=g)
    _, p = radial_power_spectrum(img)
    assert log_spectral_distance(p, p) == pytest.approx(0.0)
    _, p3 = radial_power_spectrum(3 * img)
    assert log_spectral_distance(p3, p) == pytest.approx(math.log10(9), rel=1e-9)
    with pytest.raises(ValueError, match="rings"):
        log_spectral_distance(p, p[:, :5])


def test_plot_is_written(tmp_path):
    g = torch.Generator().manual_seed(2)
    freqs, p = radial_power_spectrum(torch.rand(2, 1, 32, 32, generator=g))
    fig = plot_power_spectra(freqs, {"real late": p, "model": p[0] * 2})
    out = save_figure(fig, tmp_path / "spectrum.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_band_log_spectral_distance_per_band():
    from monai_lpuwf.metrics import band_log_spectral_distance

    freqs = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    real = torch.ones(2, 6, dtype=torch.float64)
    generated = torch.tensor([[10.0, 10.0, 1.0, 1.0, 100.0, 0.01]], dtype=torch.float64)  # log10 diffs 1 1 0 0 2 2
    bands = band_log_spectral_distance(generated, real, freqs)
    assert bands == pytest.approx({"low": 1.0, "mid": 0.0, "high": 2.0})
    assert band_log_spectral_distance(real, real, freqs) == pytest.approx({"low": 0.0, "mid": 0.0, "high": 0.0})
    with pytest.raises(ValueError, match="rings"):
        band_log_spectral_distance(generated[:, :5], real, freqs)
