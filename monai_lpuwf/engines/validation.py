"""Validation pieces for the stage configs: batch preparation by key, a reconstruction inferer, image metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatchExtraInput
from monai.handlers import IgniteMetricHandler
from monai.inferers import Inferer
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, SSIMMetric
from monai.utils import CommonKeys as Keys
from monai.utils import ensure_tuple_rep
from torch import nn

from monai_lpuwf.engines.prepare_batch import get_batch_item
from monai_lpuwf.scores import ms_ssim_min_size, to_unit_range

__all__ = [
    "KeyedPrepareBatch",
    "ReconstructionInferer",
    "image_quality_metrics",
    "ms_ssim_min_size",  # monai_lpuwf.scores.ms_ssim_min_size, re-exported
    "unit_range_pairs",
]


class KeyedPrepareBatch(PrepareBatchExtraInput):
    """``(batch[image_key], batch[label_key], args, kwargs)`` for MONAI evaluators, extra inputs as in the parent.

    Args:
        image_key: key of the network input (``"slo"`` for generation, an FA key for reconstruction).
        label_key: key of the reference image (``None``: no reference, e.g. for inference).
        extra_keys: see :class:`monai.engines.PrepareBatchExtraInput` (e.g. ``{"cond": "slo"}`` for stage 2).
        keep_meta: pass image and label on as MetaTensors (default: generation and validation need their file
            names and applied transforms); ``False`` for a training step (plain tensors, see
            :func:`~monai_lpuwf.engines.get_batch_item`).
    """

    def __init__(
        self,
        image_key: str,
        label_key: str | None = None,
        extra_keys: str | Sequence[str] | dict[str, str] | None = None,
        keep_meta: bool = True,
    ):
        super().__init__(extra_keys=() if extra_keys is None else extra_keys)
        self.image_key = image_key
        self.label_key = label_key
        self.keep_meta = keep_meta

    def __call__(self, batchdata: dict[str, torch.Tensor], device=None, non_blocking: bool = False, **kwargs: Any):
        remapped = dict(batchdata)
        remapped[Keys.IMAGE] = get_batch_item(batchdata, self.image_key, None, keep_meta=self.keep_meta)
        if self.label_key is not None:
            remapped[Keys.LABEL] = get_batch_item(batchdata, self.label_key, None, keep_meta=self.keep_meta)
        else:
            remapped.pop(Keys.LABEL, None)
        return super().__call__(remapped, device, non_blocking, **kwargs)


class ReconstructionInferer(Inferer):
    """``network(inputs, *args, **kwargs)[0]``.

    The reconstruction of an autoencoder returning ``(recon, mu, sigma)``.
    """

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        return network(inputs, *args, **kwargs)[0]


def unit_range_pairs(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred, label)`` of an evaluator output mapped from [-1, 1] to [0, 1] and clipped (the metrics' range)."""
    items = output if isinstance(output, list) else [output]

    def _stack(key: str) -> torch.Tensor:
        values = [item[key] if isinstance(item, Mapping) else item for item in items]
        tensor = torch.stack(values) if values[0].ndim == 3 else torch.cat(values)
        return to_unit_range(tensor)

    return _stack(Keys.PRED), _stack(Keys.LABEL)


def image_quality_metrics(spatial_size: int | Sequence[int], prefix: str = "val_") -> dict[str, IgniteMetricHandler]:
    """PSNR, SSIM and (on images of at least :func:`~monai_lpuwf.scores.ms_ssim_min_size` pixels a side) MS-SSIM
    handlers.

    Computed with MONAI's metric classes on intensities mapped to [0, 1] (``data_range=1``). The first entry
    (PSNR) is meant as the evaluator's key metric.

    Args:
        spatial_size: validation image size (H, W) (or one int for both).
        prefix: name prefix of the metrics.

    Returns:
        ``{"val_psnr": ..., "val_ssim": ..., ["val_ms_ssim": ...]}`` ignite metrics (MONAI ``IgniteMetricHandler``).
    """
    size = ensure_tuple_rep(spatial_size, 2)
    metrics = {
        f"{prefix}psnr": IgniteMetricHandler(metric_fn=PSNRMetric(max_val=1.0), output_transform=unit_range_pairs),
        f"{prefix}ssim": IgniteMetricHandler(
            metric_fn=SSIMMetric(spatial_dims=2, data_range=1.0), output_transform=unit_range_pairs
        ),
    }
    if min(size) >= ms_ssim_min_size():
        metrics[f"{prefix}ms_ssim"] = IgniteMetricHandler(
            metric_fn=MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0), output_transform=unit_range_pairs
        )
    return metrics
