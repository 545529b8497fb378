"""Radially averaged power spectra of late-phase images, and a spectral distance between two sets.

Does the low-frequency enhanced noise of LPUWF-LDM do what it claims? Compare where generated and real
late-phase images put their power across spatial frequencies.

* Power spectrum of a (H, W) image: ``|FFT2(x - mean(x))|^2 / (H * W)``, averaged over channels. By Parseval,
  its sum over all frequencies equals ``sum((x - mean(x)) ** 2)``.
* Radial average: the frequency of a coefficient is ``sqrt(fy ** 2 + fx ** 2)`` in cycles per pixel
  (``numpy.fft.fftfreq`` per axis, so non-square frames are handled isotropically); coefficients are averaged
  within ``num_bins`` equal-width rings from 0 to 0.5 cycles/pixel (Nyquist); the DC term and the corners
  beyond 0.5 are left out (a ring with no coefficient is NaN).
* Spectral distance (:func:`log_spectral_distance`): the mean over the rings of
  ``|log10 P_generated(f) - log10 P_real(f)|``, the spectra being first averaged over the images of each set.
  It is 0 for equal spectra and ``log10(a ** 2)`` when one set is the other scaled by ``a``; 1 means a tenfold
  power difference on average.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

__all__ = ["radial_power_spectrum", "log_spectral_distance", "band_log_spectral_distance", "plot_power_spectra"]

#: frequency bands (cycles/pixel) of :func:`band_log_spectral_distance`: thirds of the Nyquist range
SPECTRAL_BANDS = {"low": (0.0, 1 / 6), "mid": (1 / 6, 1 / 3), "high": (1 / 3, 0.5)}


def radial_power_spectrum(images: torch.Tensor, num_bins: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of each image.

    Args:
        images: (B, C, H, W) images (any intensity range; the mean is removed per image and channel).
        num_bins: number of frequency rings in ``[0, 0.5]`` cycles/pixel; default ``min(H, W) // 2``.

    Returns:
        ``(freqs, power)``: (num_bins,) ring centres in cycles/pixel and (B, num_bins) mean power per ring
        (NaN for a ring that holds no coefficient).
    """
    images = torch.as_tensor(images).double()
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}.")
    h, w = images.shape[2:]
    num_bins = int(num_bins or max(1, min(h, w) // 2))
    centred = images - images.mean(dim=(2, 3), keepdim=True)
    power = (torch.fft.fft2(centred).abs() ** 2 / (h * w)).mean(dim=1)  # (B, H, W)
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    ring = torch.floor(radius / 0.5 * num_bins).long().flatten()
    keep = (ring < num_bins) & (radius.flatten() > 0)  # the DC term (removed mean) is left out
    ring, flat = ring[keep], power.flatten(1)[:, keep]
    sums = torch.zeros(power.shape[0], num_bins, dtype=torch.float64).index_add_(1, ring, flat)
    counts = torch.bincount(ring, minlength=num_bins).double()
    freqs = (torch.arange(num_bins, dtype=torch.float64) + 0.5) * 0.5 / num_bins
    return freqs, sums / counts  # 0 / 0 -> NaN for an empty ring


def log_spectral_distance(generated: torch.Tensor, real: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean absolute difference of the log10 mean spectra of two sets (see the module docstring).

    Args:
        generated: (B, N) or (N,) radial spectra of generated images (from :func:`radial_power_spectrum`).
        real: (M, N) or (N,) radial spectra of real images, same rings.
        eps: floor added to the power before the logarithm.
    """
    diff = _log_mean_spectrum_difference(generated, real, eps)
    return float(diff[torch.isfinite(diff)].mean())


def _log_mean_spectrum_difference(generated: torch.Tensor, real: torch.Tensor, eps: float) -> torch.Tensor:
    """Per ring ``|log10 mean P_generated - log10 mean P_real|`` of two sets of radial spectra."""
    generated, real = torch.as_tensor(generated).double(), torch.as_tensor(real).double()
    g = generated.reshape(-1, generated.shape[-1]).mean(0)
    r = real.reshape(-1, real.shape[-1]).mean(0)
    if g.shape != r.shape:
        raise ValueError(f"spectra have different numbers of rings: {g.shape[0]} and {r.shape[0]}.")
    return (torch.log10(g + eps) - torch.log10(r + eps)).abs()


def band_log_spectral_distance(
    generated: torch.Tensor,
    real: torch.Tensor,
    freqs: torch.Tensor,
    bands: dict[str, tuple[float, float]] | None = None,
    eps: float = 1e-12,
) -> dict[str, float]:
    """:func:`log_spectral_distance` within frequency bands: is the error in the coarse layout or in the detail?

    Args:
        generated: (B, N) radial spectra of generated images; real: (M, N) of real images (same rings).
        freqs: (N,) ring centres in cycles/pixel (from :func:`radial_power_spectrum`).
        bands: ``{name: (low, high)}`` in cycles/pixel, ``low <= f < high`` (the last band includes 0.5);
            default :data:`SPECTRAL_BANDS` (low / mid / high thirds of the Nyquist range).
        eps: floor added to the power before the logarithm.

    Returns:
        ``{name: mean |log10 P_generated - log10 P_real|}`` over the rings of each band (NaN for a band with no
        ring, e.g. "high" on very small images).
    """
    diff = _log_mean_spectrum_difference(generated, real, eps)
    freqs = torch.as_tensor(freqs).double()
    if diff.shape != freqs.shape:
        raise ValueError(f"spectra and freqs must have the same rings: {diff.shape} vs {freqs.shape}.")
    out = {}
    for name, (lo, hi) in (bands or SPECTRAL_BANDS).items():
        sel = (freqs >= lo) & ((freqs < hi) | ((hi >= 0.5) & (freqs <= hi))) & torch.isfinite(diff)
        out[name] = float(diff[sel].mean()) if sel.any() else float("nan")
    return out


def plot_power_spectra(freqs: torch.Tensor, spectra: dict[str, torch.Tensor], title: str = "") -> plt.Figure:
    """Log-log plot of the mean radial power spectrum of each named set (e.g. ``{"real late": ..., "model": ...}``).

    Args:
        freqs: (N,) ring centres (cycles/pixel).
        spectra: name -> (B, N) or (N,) spectra; the mean over B is drawn, with the min-max band when B > 1.
        title: figure title.

    Returns:
        a matplotlib Figure (Agg backend); save it with :func:`monai_lpuwf.metrics.report.save_figure`.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    f = torch.as_tensor(freqs).double().numpy()
    for name, spec in spectra.items():
        spec = torch.as_tensor(spec).double().reshape(-1, len(f))
        (line,) = ax.loglog(f, spec.mean(0).numpy(), label=f"{name} (n={spec.shape[0]})")
        if spec.shape[0] > 1:
            ax.fill_between(
                f, spec.min(0).values.numpy(), spec.max(0).values.numpy(), color=line.get_color(), alpha=0.2
            )
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("radially averaged power")
    ax.set_title(title or "Radially averaged power spectrum")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
