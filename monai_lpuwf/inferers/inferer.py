"""MONAI ``Inferer`` wrapper of :class:`LPUWFSampler` for evaluators, MONAI Label and MONAI Deploy."""

from __future__ import annotations

import os
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from .sampler import LPUWFSampler

__all__ = ["LPUWFInferer"]


class LPUWFInferer(Inferer):
    """``inferer(slo, network) -> pred``: generation as a MONAI inferer (``SupervisedEvaluator(inferer=...)``).

    Args:
        sampler: the :class:`LPUWFSampler` to run; ``None`` builds one from ``sampler_kwargs``.
        with_std: return ``(B, 2, H, W)``: channel 0 the prediction, channel 1 the per-pixel standard deviation
            over ``num_samples`` (> 1) draws; split them with ``monai.transforms.SplitDimd(keys="pred",
            output_postfixes=["", "std"])`` or similar. ``False``: ``(B, 1, H, W)`` prediction only.
        id_key: metadata key of a MetaTensor input whose values identify the images (``"filename_or_obj"``: the
            file name, without its folder, is mixed into each image's seed, so different images get different
            noise); ``None`` (default): every image's noise comes from ``seed`` alone. Either way an image's output
            does not depend on the batch size or on the other images of its batch.
        sampler_kwargs: arguments of :class:`LPUWFSampler` (``scheduler``, ``num_inference_steps``, ``seed``...).

    A MetaTensor input gives a MetaTensor output with the input's metadata and applied operations, so that
    ``monai.transforms.Invertd`` can undo the inference transforms (e.g. crop the padding) on the prediction.
    """

    def __init__(
        self,
        sampler: LPUWFSampler | None = None,
        with_std: bool = False,
        id_key: str | None = None,
        **sampler_kwargs: Any,
    ) -> None:
        super().__init__()
        if sampler is not None and sampler_kwargs:
            raise ValueError("give either a sampler or sampler keyword arguments, not both.")
        self.sampler = sampler if sampler is not None else LPUWFSampler(**sampler_kwargs)
        if with_std and self.sampler.num_samples < 2:
            raise ValueError("with_std=True needs a sampler with num_samples >= 2.")
        self.with_std = with_std
        self.id_key = id_key

    def item_ids(self, inputs: torch.Tensor) -> list[str] | None:
        """The images' identities from ``inputs.meta[id_key]`` (file names without folders), or ``None``."""
        if self.id_key is None or not isinstance(inputs, MetaTensor) or self.id_key not in inputs.meta:
            return None
        values = inputs.meta[self.id_key]
        if isinstance(values, (str, bytes, os.PathLike)) or not hasattr(values, "__len__"):
            values = [values]
        if len(values) != inputs.shape[0]:
            return None
        return [os.path.basename(os.fspath(v)) if isinstance(v, (str, os.PathLike)) else str(v) for v in values]

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """
        Args:
            inputs: SLO images (B, 3, H, W) in [-1, 1].
            network: an :class:`~monai_lpuwf.networks.LPUWFModel`.

        Returns:
            (B, 1, H, W) generated late-phase FA in [-1, 1], or (B, 2, H, W) with ``with_std``.
        """
        out = self.sampler(inputs, network, ids=self.item_ids(inputs))
        pred = out["pred"]
        if self.with_std:
            pred = torch.cat([pred, out["pred_std"]], dim=1)  # type: ignore[list-item]
        if isinstance(inputs, MetaTensor):
            result = MetaTensor(pred.as_tensor() if isinstance(pred, MetaTensor) else pred)
            result.copy_meta_from(inputs, copy_attr=True)
            return result
        return pred
