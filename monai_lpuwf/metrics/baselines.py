"""Trivial predictors that set the floor under every score.

On real UWF frames a constant image already reaches an MS-SSIM near 0.65 (large dark background, smooth
field of view), so a model's score means something only beside these:

* ``constant``: every pixel at the training set's mean late-phase intensity (:func:`mean_intensity`); training
  stores it in the model file (:class:`TrainingIntensityRecord`, entry ``"data_stats"``), so that an evaluation
  on any test folder knows it;
* ``early``: the real early phase of the same eye, where it is given (what a model that ignores the late-phase
  changes could at best produce).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from monai_lpuwf.metrics.frame_scores import score_frames
from monai_lpuwf.transforms import LoadUWFImage

__all__ = [
    "BASELINE_NAMES",
    "DATA_STATS_KEY",
    "TrainingIntensityRecord",
    "mean_intensity",
    "training_mean_intensity",
    "constant_prediction",
    "score_with_baselines",
]

BASELINE_NAMES: tuple[str, ...] = ("constant", "early")
DATA_STATS_KEY = "data_stats"  # the model file's entry written by TrainingIntensityRecord


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


def training_mean_intensity(
    items: Iterable[Mapping[str, Any]], key: str = "late", load_kwargs: Mapping[str, Any] | None = None
) -> float:
    """Mean intensity (``[-1, 1]`` units, whole frames at their native size) of the ``key`` images of a datalist:
    the constant predictor's value (the training set's mean late-phase intensity)."""
    loader = LoadUWFImage("slo" if key == "slo" else "fa", **dict(load_kwargs or {}))
    paths = [item[key] for item in items if item.get(key)]
    if not paths:
        raise ValueError(f"no '{key}' image in the datalist to compute the constant predictor's intensity from.")
    return mean_intensity(loader(p) for p in paths)


class TrainingIntensityRecord:
    """Checkpoint entry ``"data_stats"``: the training set's mean late-phase intensity, for the constant baseline.

    Listed in a training config's checkpoint dictionary (``{"model": ..., "config": ..., "data_stats": record}``),
    it is computed with :func:`training_mean_intensity` the first time a checkpoint is written (whole frames, as
    the evaluation loads them) and kept; ``load_state_dict`` (a resumed run) takes the saved value instead. The
    evaluation reads it back from the model file's :class:`~monai_lpuwf.networks.ModelFile`
    (:meth:`~monai_lpuwf.networks.ModelFile.training_mean`).

    Args:
        items: the training datalist (dicts with a ``key`` path).
        key: image key (``"late"``).
        load_kwargs: :class:`~monai_lpuwf.transforms.LoadUWFImage` arguments.

    ``state_dict()`` is ``{"late_mean": float, "num_images": int}``.
    """

    def __init__(
        self, items: Iterable[Mapping[str, Any]], key: str = "late", load_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        self.items = list(items)
        self.key = key
        self.load_kwargs = dict(load_kwargs or {})
        self._state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        if self._state is None:
            value = training_mean_intensity(self.items, self.key, self.load_kwargs)
            count = sum(1 for item in self.items if item.get(self.key))
            self._state = {f"{self.key}_mean": float(value), "num_images": int(count)}
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._state = dict(state)


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
