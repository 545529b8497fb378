"""SLO sharpening (unsharp mask), as the paper applies to the SLO before use."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = ["UnsharpMask", "UnsharpMaskd", "UnsharpMaskD", "UnsharpMaskDict", "gaussian_blur"]


def gaussian_blur(img: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Per-channel Gaussian blur with edge replication, in torch on the tensor's device.

    The filter of :func:`scipy.ndimage.gaussian_filter` with ``mode="nearest"``: the sampled kernel
    ``exp(-x^2 / (2 sigma^2))``, normalised, of radius ``int(truncate * sigma + 0.5)``, along each spatial axis in
    turn; the border pixels are repeated beyond the edge (no dark or grey rim), unlike
    :class:`monai.transforms.GaussianSmooth` (zero padding). Each axis is a weighted sum of shifted views: on one
    CPU thread 2.5x faster than scipy and 10x faster than a grouped convolution for ``sigma=2`` on 853 x 682.

    Args:
        img: ``(C, *spatial)`` float tensor.
        sigma: standard deviation in pixels (> 0), the same on every spatial axis.
        truncate: kernel radius in standard deviations.

    Returns:
        ``(C, *spatial)`` tensor of ``img``'s dtype and device.
    """
    radius = int(truncate * float(sigma) + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / float(sigma)) ** 2)
    weights = (taps / taps.sum()).tolist()
    out = img
    for axis in range(1, img.ndim):
        n = out.shape[axis]
        edge = [radius if i == axis else size for i, size in enumerate(out.shape)]
        padded = torch.cat([out.narrow(axis, 0, 1).expand(edge), out, out.narrow(axis, n - 1, 1).expand(edge)], axis)
        acc = padded.narrow(axis, 0, n) * weights[0]
        for shift, weight in enumerate(weights[1:], start=1):
            acc.add_(padded.narrow(axis, shift, n), alpha=weight)
        out = acc
    return out


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

    Input and output ``(C, H, W)``; type, device and metadata are kept. Runs in torch (:func:`gaussian_blur`) on the
    input's device: a numpy input gives the same values as the same image as a tensor.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

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
        """
        Args:
            img: ``(C, H, W)`` image (numpy array or tensor on any device).

        Returns:
            ``(C, H, W)`` float32 of the input's type and device (MetaTensor metadata kept).
        """
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        detail = x - gaussian_blur(x, self.radius)
        if self.threshold > 0:
            detail = torch.where(detail.abs() > self.threshold, detail, torch.zeros_like(detail))
        out = x + self.amount * detail
        if self.clip_range is not None:
            out = out.clamp(*self.clip_range)
        result, *_ = convert_to_dst_type(
            out, dst=img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32
        )
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
