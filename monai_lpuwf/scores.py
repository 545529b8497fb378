"""PSNR, SSIM, MS-SSIM and MSE of generated late-phase FA, on the whole frame or within a mask.

Pure functions of tensors (torch and MONAI only), in the layer below the engines and the metrics so both share
them: the training engines' validation metrics (:func:`monai_lpuwf.engines.image_quality_metrics`) and the
evaluation (:mod:`monai_lpuwf.metrics`, which re-exports every name here) use the same size rule and weights.

Scores are computed on ``[0, 1]`` intensities (``data_range=1``): network outputs and loaded images live in
``[-1, 1]`` and are mapped with :func:`to_unit_range` first (clamped, as an image writer would).

* Whole frame (``mask=None``): MONAI's own :class:`~monai.metrics.PSNRMetric`, :class:`~monai.metrics.SSIMMetric`,
  :class:`~monai.metrics.MultiScaleSSIMMetric` and :class:`~monai.metrics.MSEMetric`.
* Within a mask (field of view, lesion region): the same quantities with every spatial average replaced by a
  mask-weighted average. MSE/PSNR average the squared error over the masked pixels. SSIM averages MONAI's SSIM
  map (:func:`monai.metrics.regression.compute_ssim_and_cs`) over the windows whose *centre* lies in the mask.
  MS-SSIM does the same at every scale, the mask being downsampled with the same 2x2 average pooling as the
  images (fractional weights at region borders). A mask of ones gives exactly MONAI's whole-frame scores.

MS-SSIM size rule: MONAI's MS-SSIM needs ``min(H, W) >= kernel_size * (len(weights) - 1) ** 2`` (176 pixels for
the default 11-pixel window and 5 scales; see :func:`ms_ssim_min_size`); it raises below. Here a frame below
that size gets ``NaN`` for ``ms_ssim`` (ignored by the report's ``nanmean``) instead of an exception.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.metrics import MSEMetric, MultiScaleSSIMMetric, PSNRMetric, SSIMMetric
from monai.metrics.regression import compute_ssim_and_cs
from monai.utils import ensure_tuple_rep

__all__ = [
    "MS_SSIM_WEIGHTS",
    "SCORE_NAMES",
    "to_unit_range",
    "ms_ssim_min_size",
    "ms_ssim_weights_for",
    "compute_image_scores",
    "compute_masked_image_scores",
]

#: MONAI's (and Wang et al.'s) default MS-SSIM scale weights.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

#: Names of the scores returned by :func:`compute_image_scores`, in report order.
SCORE_NAMES: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "mse")


def to_unit_range(image: torch.Tensor, value_range: Sequence[float] | None = (-1.0, 1.0)) -> torch.Tensor:
    """Map intensities from ``value_range`` to ``[0, 1]`` and clamp.

    Args:
        image: tensor of any shape.
        value_range: ``(low, high)`` of the input intensities; ``None`` means the input is already in ``[0, 1]``
            (it is still clamped).
    """
    image = torch.as_tensor(image).float()
    if value_range is not None:
        low, high = float(value_range[0]), float(value_range[1])
        if high <= low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}.")
        image = (image - low) / (high - low)
    return image.clamp(0.0, 1.0)


def ms_ssim_min_size(kernel_size: int = 11, num_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Smallest image side that MONAI's MS-SSIM accepts: ``kernel_size * max(1, num_scales - 1) ** 2``.

    MONAI raises unless ``side // (num_scales - 1) ** 2 > kernel_size - 1`` for every spatial side, which is
    ``side >= kernel_size * (num_scales - 1) ** 2`` (176 for the defaults).
    """
    return int(kernel_size) * max(1, int(num_scales) - 1) ** 2


def ms_ssim_weights_for(size: Sequence[int], kernel_size: int = 11) -> tuple[float, ...]:
    """MONAI's MS-SSIM scale weights (:data:`MS_SSIM_WEIGHTS`) for an image of spatial ``size``: the first scales
    that :func:`ms_ssim_min_size` allows (4 at 128 x 128, 2 at 32 x 32), renormalised to sum to 1.

    Args:
        size: the image's spatial size; its smallest side decides.
        kernel_size: the SSIM window.
    """
    side = min(int(s) for s in size)
    scales = len(MS_SSIM_WEIGHTS)
    while scales > 1 and side < ms_ssim_min_size(kernel_size, scales):
        scales -= 1
    weights = MS_SSIM_WEIGHTS[:scales]
    total = sum(weights)
    return tuple(w / total for w in weights)


def _check_pair(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> None:
    if pred.ndim != 4 or target.ndim != 4:
        raise ValueError(
            f"pred and target must be (B, C, H, W) tensors, got shapes {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape.")
    if mask is not None and (mask.ndim != 4 or mask.shape[0] != pred.shape[0] or mask.shape[2:] != pred.shape[2:]):
        raise ValueError(
            f"mask must be (B, 1, H, W) matching pred {tuple(pred.shape)}, got {tuple(mask.shape)}; "
            "pass the field-of-view / lesion mask of the same frame."
        )


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-batch mean of ``values`` (B, C, ...) weighted by ``weights`` (B, 1, ...); NaN where the weights are 0."""
    weights = weights.expand_as(values)
    total = weights.flatten(1).sum(1)
    return (values * weights).flatten(1).sum(1) / total  # 0 / 0 -> NaN for an empty mask


def _crop_to_valid(mask: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """Crop a full-size mask to the centres of the 'valid' windows of a ``kernel_size`` convolution."""
    h0, w0 = (kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2
    h1, w1 = kernel_size[0] - 1 - h0, kernel_size[1] - 1 - w0
    return mask[:, :, h0 : mask.shape[2] - h1, w0 : mask.shape[3] - w1]


def compute_masked_image_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    data_range: float = 1.0,
    kernel_size: int | Sequence[int] = 11,
    kernel_sigma: float | Sequence[float] = 1.5,
    ms_ssim_weights: Sequence[float] = MS_SSIM_WEIGHTS,
) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, MS-SSIM and MSE averaged over a mask, for images already in ``[0, data_range]``.

    Args:
        pred: (B, C, H, W) generated images.
        target: (B, C, H, W) reference images.
        mask: (B, 1, H, W) weights in ``[0, 1]`` (a binary field-of-view or lesion mask).
        data_range, kernel_size, kernel_sigma, ms_ssim_weights: as in MONAI's SSIM/MS-SSIM metrics.

    Returns:
        dict ``{"psnr", "ssim", "ms_ssim", "mse"}`` of (B,) float tensors; NaN for an image whose mask is empty
        (and for ``ms_ssim`` when the frame is smaller than :func:`ms_ssim_min_size`).
    """
    _check_pair(pred, target, mask)
    pred, target, mask = pred.float(), target.float(), mask.float().to(pred.device)
    ks = ensure_tuple_rep(kernel_size, 2)
    sigma = ensure_tuple_rep(kernel_sigma, 2)
    mse = _weighted_mean((pred - target) ** 2, mask)
    psnr = 20 * torch.log10(torch.tensor(float(data_range))) - 10 * torch.log10(mse)

    def ssim_cs(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ssim_map, cs_map = compute_ssim_and_cs(
            x, y, spatial_dims=2, kernel_size=ks, kernel_sigma=sigma, data_range=data_range
        )
        valid = _crop_to_valid(m, ks)
        return _weighted_mean(ssim_map, valid), _weighted_mean(cs_map, valid)

    ssim, _ = ssim_cs(pred, target, mask)

    if min(pred.shape[2:]) < ms_ssim_min_size(min(ks), len(ms_ssim_weights)):
        ms_ssim = torch.full_like(ssim, float("nan"))
    else:
        factors = []
        x, y, m = pred, target, mask
        for scale in range(len(ms_ssim_weights)):
            s, cs = ssim_cs(x, y, m)
            factors.append(torch.relu(s if scale == len(ms_ssim_weights) - 1 else cs))
            x, y, m = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), F.avg_pool2d(m, 2)
        w = torch.tensor(ms_ssim_weights, dtype=pred.dtype, device=pred.device).view(-1, 1)
        ms_ssim = torch.prod(torch.stack(factors) ** w, dim=0)
    return {"psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim, "mse": mse}


def compute_image_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    value_range: Sequence[float] | None = (-1.0, 1.0),
    kernel_size: int | Sequence[int] = 11,
    kernel_sigma: float | Sequence[float] = 1.5,
    ms_ssim_weights: Sequence[float] = MS_SSIM_WEIGHTS,
) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, MS-SSIM and MSE per image, on ``[0, 1]`` intensities, whole frame or within ``mask``.

    Args:
        pred: (B, C, H, W) generated images, intensities in ``value_range`` (``[-1, 1]`` for network outputs).
        target: (B, C, H, W) reference images, same range.
        mask: optional (B, 1, H, W) field-of-view (or lesion) mask; ``None`` scores the whole frame with MONAI's
            metric classes.
        value_range: input intensity range mapped to ``[0, 1]`` (``None``: inputs are already in ``[0, 1]``).
        kernel_size, kernel_sigma, ms_ssim_weights: SSIM window and MS-SSIM scale weights (MONAI defaults).

    Returns:
        dict ``{"psnr", "ssim", "ms_ssim", "mse"}`` of (B,) float tensors. ``ms_ssim`` is NaN for frames smaller
        than :func:`ms_ssim_min_size` on either side.

    Example:
        >>> scores = compute_image_scores(pred, late, mask=fov)   # doctest: +SKIP
        >>> scores["ms_ssim"].mean()                               # doctest: +SKIP
    """
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    _check_pair(pred, target, mask)
    pred, target = to_unit_range(pred, value_range), to_unit_range(target, value_range)
    if mask is not None:
        return compute_masked_image_scores(
            pred, target, torch.as_tensor(mask), 1.0, kernel_size, kernel_sigma, ms_ssim_weights
        )
    ks = ensure_tuple_rep(kernel_size, 2)
    metrics = {
        "psnr": PSNRMetric(max_val=1.0, reduction="none"),
        "ssim": SSIMMetric(spatial_dims=2, data_range=1.0, win_size=ks, kernel_sigma=kernel_sigma, reduction="none"),
        "mse": MSEMetric(reduction="none"),
    }
    scores = {name: metric(pred, target).flatten() for name, metric in metrics.items()}
    if min(pred.shape[2:]) < ms_ssim_min_size(min(ks), len(ms_ssim_weights)):
        scores["ms_ssim"] = torch.full_like(scores["ssim"], float("nan"))
    else:
        ms = MultiScaleSSIMMetric(
            spatial_dims=2,
            data_range=1.0,
            kernel_size=ks,
            kernel_sigma=kernel_sigma,
            weights=ms_ssim_weights,
            reduction="none",
        )
        scores["ms_ssim"] = ms(pred, target).flatten()
    return {name: scores[name] for name in SCORE_NAMES}
