"""Trivial predictors that set the floor under every score.

On real UWF frames a constant image already reaches an MS-SSIM near 0.65 (large dark background, smooth
field of view), so a model's score means something only beside these:

* ``constant``: every pixel at the training set's mean late-phase intensity (:func:`mean_intensity`);
* ``early``: the real early phase of the same eye, where it is given (what a model that ignores the late-phase
  changes could at best produce).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from monai_lpuwf.metrics.frame_scores import score_frames

__all__ = ["BASELINE_NAMES", "mean_intensity", "constant_prediction", "score_with_baselines"]

BASELINE_NAMES: tuple[str, ...] = ("constant", "early")


def mean_intensity(images: Iterable[torch.Tensor], masks: Iterable[torch.Tensor] | None = None) -> float:
    """Pixel-weighted mean intensity of a set of images (e.g. the training split's late phases).

    Args:
        images: iterable of (C, H, W) or (B, C, H, W) tensors (frames of different sizes are fine).
        masks: optional matching iterable of field-of-view masks (same spatial size, 1 channel): only masked
            pixels count.

    Returns:
        the mean, in the images' own intensity units (``[-1, 1]`` for loaded FA).
    """
    total, count = 0.0, 0.0
    mask_iter = iter(masks) if masks is not None else None
    for image in images:
        image = torch.as_tensor(image).double()
        if mask_iter is None:
            total, count = total + float(image.sum()), count + image.numel()
            continue
        try:
            mask = torch.as_tensor(next(mask_iter)).double().expand_as(image)
        except StopIteration:
            raise ValueError("masks has fewer items than images.") from None
        total, count = total + float((image * mask).sum()), count + float(mask.sum())
    if count == 0:
        raise ValueError("mean_intensity got no pixels: the image list (or every mask) is empty.")
    return total / count


def constant_prediction(like: torch.Tensor, value: float) -> torch.Tensor:
    """An image of ``like``'s shape, dtype and device with every pixel ``value``."""
    return torch.full_like(torch.as_tensor(like), float(value))


def score_with_baselines(
    pred: torch.Tensor,
    target: torch.Tensor,
    constant_value: float | None = None,
    early: torch.Tensor | None = None,
    **score_kwargs,
) -> dict[str, dict[str, torch.Tensor]]:
    """Scores of the model next to the trivial predictors, on the same frames.

    Args:
        pred: (B, 1, H, W) generated late phase; ``None`` scores the baselines only.
        target: (B, 1, H, W) real late phase.
        constant_value: training-set mean late intensity (:func:`mean_intensity`); ``None`` skips ``constant``.
        early: (B, 1, H, W) real early phase; ``None`` skips ``early``. Also feeds the lesion difference map
            unless ``diff_map`` is given.
        score_kwargs: ``fov``, ``diff_map``, ``top_percent``, ``perceptual``, ``value_range`` of
            :func:`~monai_lpuwf.metrics.frame_scores.score_frames`.

    Returns:
        ``{"model": scores, "constant": scores, "early": scores}`` (those available), each a dict of (B,) tensors.
    """
    predictors = {"model": pred}
    if constant_value is not None:
        predictors["constant"] = constant_prediction(target, constant_value)
    if early is not None:
        predictors["early"] = early
    return {
        name: score_frames(p, target, early=early, **score_kwargs) for name, p in predictors.items() if p is not None
    }
