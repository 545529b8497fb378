"""Every per-image score of one predictor: whole frame, field of view, lesion region, LPIPS."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss
from monai_lpuwf.metrics.lesion import compute_lesion_scores, difference_map
from monai_lpuwf.metrics.lpips import compute_lpips
from monai_lpuwf.scores import compute_image_scores

__all__ = ["score_frames"]


def score_frames(
    pred: torch.Tensor,
    target: torch.Tensor,
    fov: torch.Tensor | None = None,
    diff_map: torch.Tensor | None = None,
    early: torch.Tensor | None = None,
    top_percent: float = 10.0,
    perceptual: OfflinePerceptualLoss | None = None,
    value_range: Sequence[float] | None = (-1.0, 1.0),
) -> dict[str, torch.Tensor]:
    """All per-image scores of ``pred`` against ``target`` (see :mod:`monai_lpuwf.scores`).

    Args:
        pred, target: (B, 1, H, W) generated and real late-phase images in ``value_range``.
        fov: optional (B, 1, H, W) field-of-view mask: adds ``<score>_fov`` columns.
        diff_map: optional (B, 1, H, W) CTRD difference map; when absent and ``early`` is given,
            ``|early - target|`` is used. Either adds ``<score>_lesion`` columns (top ``top_percent`` % in the fov).
        early: optional (B, 1, H, W) real early phase (only used for the difference map).
        top_percent: lesion share of the field of view.
        perceptual: optional :class:`~monai_lpuwf.losses.perceptual.OfflinePerceptualLoss` with LPIPS weights:
            adds an ``lpips`` column.
        value_range: intensity range of the images.

    Returns:
        dict column name -> (B,) tensor: ``psnr, ssim, ms_ssim, mse`` (+ ``_fov``, ``_lesion``, ``lpips``).
    """
    scores = dict(compute_image_scores(pred, target, value_range=value_range))
    if fov is not None:
        for name, value in compute_image_scores(pred, target, mask=fov, value_range=value_range).items():
            scores[f"{name}_fov"] = value
    if diff_map is None and early is not None:
        diff_map = difference_map(early, target)
    if diff_map is not None:
        lesion = compute_lesion_scores(
            pred, target, diff_map, fov=fov, top_percent=top_percent, value_range=value_range
        )
        for name, value in lesion.items():
            scores[f"{name}_lesion"] = value
    if perceptual is not None:
        scores["lpips"] = compute_lpips(pred, target, perceptual)
    return {k: v.detach().float().cpu() for k, v in scores.items()}
