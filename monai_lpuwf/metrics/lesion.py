"""Lesion-aware scores: image scores restricted to where early and late phase differ most.

LPUWF-LDM claims better lesions. Lesions in late-phase FA (leakage, staining, non-perfusion) are where the
early and late phases differ, which is what the Cross-temporal Regional Difference (CTRD) map measures. The
lesion region of a frame is the top ``top_percent`` % of its difference map within the field of view; the scores
of :func:`~monai_lpuwf.scores.compute_image_scores` are then computed within that region.

The difference map is an input, so the data layer's ``CrossTemporalDifferenced`` output (key ``"ctrd"``) can be
passed as is; :func:`difference_map` gives the plain ``|early - late|`` where no such map exists.
"""

from __future__ import annotations

import math

import torch

from monai_lpuwf.scores import compute_image_scores

__all__ = ["difference_map", "lesion_mask", "compute_lesion_scores"]


def difference_map(early: torch.Tensor, late: torch.Tensor) -> torch.Tensor:
    """``|early - late|`` per pixel, averaged over channels: (B, C, H, W) x 2 -> (B, 1, H, W)."""
    early, late = torch.as_tensor(early).float(), torch.as_tensor(late).float()
    if early.shape != late.shape:
        raise ValueError(f"early {tuple(early.shape)} and late {tuple(late.shape)} must have the same shape.")
    return (early - late).abs().mean(dim=1, keepdim=True)


def lesion_mask(diff_map: torch.Tensor, fov: torch.Tensor | None = None, top_percent: float = 10.0) -> torch.Tensor:
    """Binary mask of the ``top_percent`` % largest values of ``diff_map`` within the field of view.

    Exactly ``ceil(top_percent / 100 * n)`` pixels are selected per image, ``n`` being the number of
    field-of-view pixels (ties are broken by position, so the count does not depend on ties).

    Args:
        diff_map: (B, 1, H, W) non-negative difference map (CTRD map or :func:`difference_map`).
        fov: optional (B, 1, H, W) field-of-view mask (non-zero = inside); ``None`` = whole frame.
        top_percent: share of field-of-view pixels called lesion, in ``(0, 100]``.

    Returns:
        (B, 1, H, W) float tensor of 0/1.
    """
    diff_map = torch.as_tensor(diff_map).float()
    if diff_map.ndim != 4 or diff_map.shape[1] != 1:
        raise ValueError(f"diff_map must be (B, 1, H, W), got {tuple(diff_map.shape)}.")
    if not 0.0 < float(top_percent) <= 100.0:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}.")
    inside = (
        torch.ones_like(diff_map, dtype=torch.bool) if fov is None else torch.as_tensor(fov).to(diff_map.device) > 0
    )
    if inside.shape != diff_map.shape:
        raise ValueError(f"fov {tuple(inside.shape)} must match diff_map {tuple(diff_map.shape)}.")
    flat = diff_map.flatten(1).masked_fill(~inside.flatten(1), float("-inf"))
    out = torch.zeros_like(flat)
    for b in range(flat.shape[0]):
        k = math.ceil(float(top_percent) / 100.0 * int(inside[b].sum()))
        if k > 0:
            out[b, torch.topk(flat[b], k, sorted=False).indices] = 1.0
    return out.view_as(diff_map)


def compute_lesion_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    diff_map: torch.Tensor,
    fov: torch.Tensor | None = None,
    top_percent: float = 10.0,
    **score_kwargs,
) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, MS-SSIM and MSE within the lesion region (:func:`lesion_mask`) of each frame.

    Args:
        pred, target: (B, C, H, W) images (``[-1, 1]`` unless ``value_range`` says otherwise).
        diff_map: (B, 1, H, W) CTRD / ``|early - late|`` map of the *real* early and late phases.
        fov, top_percent: see :func:`lesion_mask`.
        score_kwargs: ``value_range``, ``kernel_size``, ``kernel_sigma``, ``ms_ssim_weights`` of
            :func:`~monai_lpuwf.scores.compute_image_scores`.

    Returns:
        dict ``{"psnr", "ssim", "ms_ssim", "mse"}`` of (B,) tensors. SSIM-type scores average the windows centred
        on lesion pixels.
    """
    mask = lesion_mask(diff_map, fov=fov, top_percent=top_percent)
    return compute_image_scores(pred, target, mask=mask, **score_kwargs)
