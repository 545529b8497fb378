"""SLO sharpening (unsharp mask), as the paper applies to the SLO before use."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy
from scipy import ndimage as ndi

__all__ = ["UnsharpMask", "UnsharpMaskd", "UnsharpMaskD", "UnsharpMaskDict"]


class UnsharpMask(Transform):
    """Unsharp masking: ``out = img + amount * (img - gaussian(img, radius))``, clipped to ``clip_range``.

    The blur is a per-channel Gaussian of standard deviation ``radius`` pixels with edge replication (no dark or
    grey rim at the image border), the definition of :func:`skimage.filters.unsharp_mask` and of PIL's
    ``ImageFilter.UnsharpMask`` (there with ``amount = percent / 100``).

    Args:
        radius: Gaussian standard deviation in pixels (> 0).
        amount: strength; 0 returns the input unchanged.
        threshold: only sharpen where ``|img - blurred|`` exceeds this (in image units), as PIL's threshold.
        clip_range: output range, ``None`` for no clipping. Default ``(-1, 1)``, the range of UWF images here.

    Input and output ``(C, H, W)``; type and metadata are kept.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.NUMPY]

    def __init__(
        self,
        radius: float = 2.0,
        amount: float = 1.0,
        threshold: float = 0.0,
        clip_range: tuple[float, float] | None = (-1.0, 1.0),
    ) -> None:
        if radius <= 0:
            raise ValueError(f"UnsharpMask radius must be > 0 pixels, got {radius}.")
        self.radius = radius
        self.amount = amount
        self.threshold = threshold
        self.clip_range = clip_range

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_numpy(img, dtype=np.float32)
        blurred = ndi.gaussian_filter(x, sigma=(0,) + (self.radius,) * (x.ndim - 1), mode="nearest", truncate=4.0)
        detail = x - blurred
        if self.threshold > 0:
            detail = np.where(np.abs(detail) > self.threshold, detail, 0.0)
        out = x + self.amount * detail
        if self.clip_range is not None:
            out = np.clip(out, *self.clip_range)
        result, *_ = convert_to_dst_type(out, dst=img, dtype=torch.float32 if isinstance(img, torch.Tensor) else None)
        return result


class UnsharpMaskd(MapTransform):
    """Dictionary version of :class:`UnsharpMask` (typically ``keys="slo"``)."""

    backend = UnsharpMask.backend

    def __init__(
        self,
        keys: KeysCollection,
        radius: float = 2.0,
        amount: float = 1.0,
        threshold: float = 0.0,
        clip_range: tuple[float, float] | None = (-1.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.sharpen = UnsharpMask(radius, amount, threshold, clip_range)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.sharpen(d[key])
        return d


UnsharpMaskD = UnsharpMaskDict = UnsharpMaskd
