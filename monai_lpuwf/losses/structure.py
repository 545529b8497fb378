"""The vessel band (a difference of Gaussians) and a regression loss that also asks for it.

:func:`vessel_band` is the band of spatial frequencies where the vessels of a late-phase frame live, a difference
of Gaussians (DoG) between ``sigma_low`` and ``sigma_high`` pixels (0.7 and 2.5 on the main job's 64 x 64 phantoms,
whose vessels are 1-3 pixels wide). The metrics of :mod:`monai_lpuwf.metrics.structure` score it (vessel-band
correlation, detail); :class:`VesselBandL1Loss` trains on it.
"""

from __future__ import annotations

import torch
from monai.networks.layers import GaussianFilter
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["VESSEL_BAND_SIGMAS", "vessel_band", "VesselBandL1Loss"]

#: DoG sigmas (pixels) of the vessel band on the main job's 64 x 64 phantoms
VESSEL_BAND_SIGMAS = (0.7, 2.5)


def vessel_band(images: torch.Tensor, sigmas: tuple[float, float] = VESSEL_BAND_SIGMAS) -> torch.Tensor:
    """Difference of Gaussians ``G(sigma_low) * x - G(sigma_high) * x`` of (B, C, H, W) images (same shape); sampled
    Gaussian kernels truncated at 4 sigma (as ``scipy.ndimage.gaussian_filter``), zero padding at the border.
    Differentiable (two convolutions)."""
    x = torch.as_tensor(images).float()
    spatial = x.ndim - 2
    low = GaussianFilter(spatial, sigma=float(sigmas[0]), approx="sampled").to(x.device)(x)
    high = GaussianFilter(spatial, sigma=float(sigmas[1]), approx="sampled").to(x.device)(x)
    return low - high


class VesselBandL1Loss(_Loss):
    """L1 on the images plus ``band_weight`` x L1 on their DoG vessel bands (:func:`vessel_band`).

    Plain L1 regression from an SLO gives the conditional median, which is smooth where the exact vessel position
    is uncertain; the band term charges a missing or misplaced vessel directly, at the scale of the vessels, so the
    network spends capacity on them (the prior study of issue 18 measures what it buys:
    ``bundle/docs/README.md``).

    Args:
        band_weight: weight of the band term (0 = plain L1).
        sigmas: the DoG sigmas in pixels.
        reduction: ``"mean"`` (returns the terms as a dict, see below), or ``"none"``: the element-wise sum of the
            two terms, shaped like ``pred``.

    ``forward(pred, target)`` with (B, C, H, W) images returns ``{"loss": total, "loss_l1": ..., "loss_band": ...}``
    (a trainer logs every term, :class:`~monai_lpuwf.engines.SupervisedTranslationTrainer`).
    """

    def __init__(
        self,
        band_weight: float = 1.0,
        sigmas: tuple[float, float] = VESSEL_BAND_SIGMAS,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if self.reduction not in (LossReduction.MEAN.value, LossReduction.NONE.value):
            raise ValueError(f"VesselBandL1Loss: reduction={reduction!r}; use 'mean' or 'none'.")
        if band_weight < 0:
            raise ValueError(f"VesselBandL1Loss: band_weight={band_weight} must be >= 0.")
        self.band_weight = float(band_weight)
        self.sigmas = (float(sigmas[0]), float(sigmas[1]))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor] | torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"VesselBandL1Loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ.")
        l1 = (pred - target).abs()
        band = (vessel_band(pred, self.sigmas) - vessel_band(target, self.sigmas)).abs()
        if self.reduction == LossReduction.NONE.value:
            return l1 + self.band_weight * band
        l1, band = l1.mean(), band.mean()
        return {"loss": l1 + self.band_weight * band, "loss_l1": l1.detach(), "loss_band": band.detach()}
