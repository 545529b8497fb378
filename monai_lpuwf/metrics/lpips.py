"""LPIPS as an evaluation score, where the user has the network and LPIPS weights locally."""

from __future__ import annotations

import torch

from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss

__all__ = ["compute_lpips"]


@torch.no_grad()
def compute_lpips(pred: torch.Tensor, target: torch.Tensor, perceptual: OfflinePerceptualLoss) -> torch.Tensor:
    """LPIPS distance per image (lower is better).

    Args:
        pred: (B, 1 or 3, H, W) generated images in the module's ``value_range`` (``[-1, 1]`` by default).
        target: reference images, same shape.
        perceptual: an :class:`~monai_lpuwf.losses.perceptual.OfflinePerceptualLoss` built with both the network
            weights and the LPIPS linear-layer weights (``lpips_weights_path``); without the latter the distance
            is not LPIPS and this function refuses it.

    Returns:
        (B,) tensor.
    """
    if not perceptual.lpips:
        raise ValueError(
            "LPIPS needs the LPIPS v0.1 linear-layer weights: build OfflinePerceptualLoss(network, weights_path=..., "
            "lpips_weights_path='.../alex.pth' or '.../vgg.pth'); the unweighted distance is not LPIPS."
        )
    reduction, perceptual.reduction = perceptual.reduction, "none"
    try:
        return perceptual(pred, target).float().cpu()
    finally:
        perceptual.reduction = reduction
