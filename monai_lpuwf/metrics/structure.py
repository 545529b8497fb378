"""Is the structure in place and as sharp as the real frame's? Vessel-band correlation and detail.

PSNR rewards a blurry mean; these two figures look at the band of spatial frequencies where vessels live, a
difference of Gaussians (DoG) between ``sigma_low`` and ``sigma_high`` pixels (0.7 and 2.5 on the main job's
64 x 64 phantoms, whose vessels are 1-3 pixels wide):

- :func:`vessel_band_correlation`: the Pearson correlation of the generated and the real frame's DoG bands
  (1 = the same vessels at the same places; 0 = no common structure; a blur keeps a high correlation if what
  it keeps is in place).
- :func:`detail_ratio`: the DoG band's energy (sum of squares) of the generated frame over the real frame's
  (1 = as much fine structure, a blur -> 0, added noise or texture > 1). It does not ask where the structure is.

Both are per image, optionally within a mask (the field of view). Inputs in any common intensity range. The band
itself, :func:`vessel_band`, lives with the loss that trains on it (:mod:`monai_lpuwf.losses.structure`).
"""

from __future__ import annotations

import torch

from ..losses.structure import VESSEL_BAND_SIGMAS, vessel_band

__all__ = ["VESSEL_BAND_SIGMAS", "vessel_band", "vessel_band_correlation", "detail_ratio"]


def _flat(band: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    b = band.flatten(1)
    m = torch.ones_like(b) if mask is None else torch.as_tensor(mask).to(b).expand_as(band).flatten(1)
    return b, (m > 0).to(b)


def vessel_band_correlation(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    sigmas: tuple[float, float] = VESSEL_BAND_SIGMAS,
) -> torch.Tensor:
    """Per-image Pearson correlation of the DoG vessel bands of ``pred`` and ``target``.

    Args:
        pred, target: (B, C, H, W).
        mask: optional (B, 1, H, W) region (e.g. the field of view) where the bands are compared.
        sigmas: DoG sigmas in pixels.

    Returns:
        (B,) correlations in [-1, 1] (0 where a band is constant).
    """
    p, m = _flat(vessel_band(pred, sigmas), mask)
    t, _ = _flat(vessel_band(target, sigmas), mask)
    n = m.sum(1).clamp_min(1)
    pc = (p - (p * m).sum(1, keepdim=True) / n[:, None]) * m
    tc = (t - (t * m).sum(1, keepdim=True) / n[:, None]) * m
    den = (pc.pow(2).sum(1) * tc.pow(2).sum(1)).sqrt()
    return torch.where(den > 0, (pc * tc).sum(1) / den.clamp_min(1e-12), torch.zeros_like(den))


def detail_ratio(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    sigmas: tuple[float, float] = VESSEL_BAND_SIGMAS,
) -> torch.Tensor:
    """Per-image energy of ``pred``'s DoG vessel band over ``target``'s (1 = as sharp; blur -> 0).

    Args:
        pred, target: (B, C, H, W).
        mask: optional (B, 1, H, W) region.
        sigmas: DoG sigmas in pixels.

    Returns:
        (B,) ratios (NaN where the target's band is zero).
    """
    p, m = _flat(vessel_band(pred, sigmas), mask)
    t, _ = _flat(vessel_band(target, sigmas), mask)
    num, den = (p.pow(2) * m).sum(1), (t.pow(2) * m).sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.full_like(den, float("nan")))
