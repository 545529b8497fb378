"""Cross-temporal regional difference (CTRD) map between early- and late-phase FA.

The map is ``|early - late|`` of the two ``[-1, 1]`` frames (after registration), optionally smoothed, then
normalised. The authors' code uses the raw absolute difference (range ``[0, 2]``); its scale then depends on the
exposure of each pair, so the default here divides it by a robust per-image maximum (the ``percentile``-th
percentile inside the field of view) and clips to ``[0, 1]``: the strongest ~1 % of changes (leaking lesions)
weigh 1 in every pair, unchanged retina ~0, and the map is zero outside the field of view. The authors' map is
``CrossTemporalDifference(normalize="none", restrict_to_fov=False)`` (``bundle/configs/recipes/paper.json``);
``"max"`` divides by the maximum.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, look_up_option

from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.transforms.enhance import gaussian_blur

__all__ = [
    "CrossTemporalDifference",
    "CrossTemporalDifferenced",
    "CrossTemporalDifferenceD",
    "CrossTemporalDifferenceDict",
    "NORMALIZATIONS",
]

NORMALIZATIONS = ("percentile", "max", "none")


def _percentile(x: torch.Tensor, inside: torch.Tensor, q: float) -> float:
    """``np.percentile(x[inside], q)`` (linear interpolation) of a tensor.

    CPU tensors: numpy on the same memory (no copy; torch's sort-based ``quantile`` and boolean indexing are 10x
    slower on one thread). Other devices: :func:`_kth_percentile` on the device.
    """
    if x.device.type == "cpu":
        return float(np.percentile(x.detach().numpy()[inside.numpy()], q))
    return float(_kth_percentile(x[inside], q))


def _kth_percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``np.percentile(values, q)`` (linear interpolation) from the two order statistics around the position
    (``torch.kthvalue``: no size limit, unlike ``torch.quantile``); a 0-d tensor on ``values``' device."""
    values = values.flatten()
    pos = q / 100 * (values.numel() - 1)
    low = int(pos)
    below = torch.kthvalue(values, low + 1).values
    if pos == low:
        return below
    return below + (torch.kthvalue(values, low + 2).values - below) * (pos - low)


class CrossTemporalDifference(Transform):
    """CTRD weight map from early- and late-phase FA.

    Args:
        normalize: ``"percentile"`` (default; divide by the ``percentile``-th percentile within the fov and clip
            to ``[0, 1]``), ``"max"`` (divide by the maximum) or ``"none"`` (raw ``|early - late|``, the authors'
            choice, range ``[0, 2]``).
        percentile: percentile used by ``"percentile"``.
        smooth_sigma: Gaussian sigma in pixels applied to the absolute difference (0 = off); suppresses pixel
            noise and small residual misalignment of vessels.
        match_mean: subtract the mean intensity change inside the fov before taking the absolute value (late
            frames are globally dimmer; off by default as in the paper).
        restrict_to_fov: ``True`` (default): with a ``fov`` mask the map is zero outside it and normalised over
            the pixels inside it. ``False``: ``fov`` is ignored and the map covers the whole frame (the authors'
            ``|early - late|`` of the whole crop, eyelashes and frame border included).

    ``__call__(early, late, fov=None)`` with ``(1, H, W)`` images returns ``(1, H, W)`` float32 ``>= 0``, zero outside
    ``fov`` (with ``restrict_to_fov``), of the type and device of ``early`` (MetaTensor metadata copied from it).
    Runs in torch on ``early``'s device (on the CPU the percentile is taken by numpy on the same memory); numpy
    inputs give the same values.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        normalize: str = "percentile",
        percentile: float = 99.0,
        smooth_sigma: float = 0.0,
        match_mean: bool = False,
        restrict_to_fov: bool = True,
    ) -> None:
        self.normalize = look_up_option(normalize, NORMALIZATIONS)
        self.restrict_to_fov = bool(restrict_to_fov)
        self.percentile = percentile
        self.smooth_sigma = smooth_sigma
        self.match_mean = match_mean

    def __call__(
        self, early: NdarrayOrTensor, late: NdarrayOrTensor, fov: NdarrayOrTensor | None = None
    ) -> NdarrayOrTensor:
        """
        Args:
            early: ``(1, H, W)`` early-phase frame in ``[-1, 1]`` (numpy array or tensor on any device).
            late: ``(1, H, W)`` late-phase frame, registered onto ``early``.
            fov: optional ``(1, H, W)`` (or broadcastable) mask, ``> 0.5`` inside the field of view.

        Returns:
            ``(1, H, W)`` float32 map of ``early``'s type and device.
        """
        e = convert_to_tensor(early, dtype=torch.float32, track_meta=False)
        lt = convert_to_tensor(late, dtype=torch.float32, device=e.device, track_meta=False)
        if e.shape != lt.shape:
            raise ValueError(
                f"CTRD: early {tuple(e.shape)} and late {tuple(lt.shape)} differ in shape; register or resize them "
                "first (RegisterElastixd resamples the moving frame onto the fixed grid)."
            )
        use_fov = fov is not None and self.restrict_to_fov
        if use_fov:
            inside = convert_to_tensor(fov, device=e.device, track_meta=False) > 0.5
            inside = inside.expand(e.shape) if inside.shape != e.shape else inside
        else:
            inside = torch.ones(e.shape, dtype=torch.bool, device=e.device)
        zero = torch.zeros_like(e)
        diff = lt - e
        if self.match_mean and inside.any():
            diff = diff - torch.where(inside, diff, zero).sum() / inside.sum()
        diff = diff.abs()
        if self.smooth_sigma > 0:
            diff = gaussian_blur(diff, self.smooth_sigma)
        diff = torch.where(inside, diff, zero)
        if self.normalize != "none" and inside.any():
            # diff >= 0 and 0 outside: its maximum is the maximum inside
            scale = _percentile(diff, inside, self.percentile) if self.normalize == "percentile" else diff.max()
            diff = (diff / max(float(scale), 1e-6)).clamp(0.0, 1.0)
        out, *_ = convert_to_dst_type(
            diff, dst=early, dtype=np.float32 if isinstance(early, np.ndarray) else torch.float32
        )
        if isinstance(out, MetaTensor):
            out.meta["ctrd"] = {
                "normalize": self.normalize,
                "percentile": self.percentile,
                "smooth_sigma": self.smooth_sigma,
                "restrict_to_fov": self.restrict_to_fov,
            }
        return out


class CrossTemporalDifferenced(MapTransform):
    """Dictionary version of :class:`CrossTemporalDifference`.

    Args:
        early_key: early-phase key.
        late_key: late-phase key.
        output_key: where the map is stored (default ``"ctrd"``).
        fov_key: optional mask key; the map is zero outside it and normalised inside it (unless
            ``restrict_to_fov=False``).
        allow_missing_keys: when ``late`` (or ``early``) is absent, do nothing (inference lists).
        kwargs: passed to :class:`CrossTemporalDifference`.
    """

    backend = CrossTemporalDifference.backend

    def __init__(
        self,
        early_key: str = UWFKeys.EARLY.value,
        late_key: str = UWFKeys.LATE.value,
        output_key: str = UWFKeys.CTRD.value,
        fov_key: str | None = None,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        super().__init__([early_key, late_key], allow_missing_keys)
        self.early_key, self.late_key, self.output_key, self.fov_key = early_key, late_key, output_key, fov_key
        self.ctrd = CrossTemporalDifference(**kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        missing = [k for k in (self.early_key, self.late_key) if k not in d]
        if missing:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"CrossTemporalDifferenced: key(s) {missing} missing; the CTRD map needs both phases.")
        fov = d.get(self.fov_key) if self.fov_key is not None else None
        if self.fov_key is not None and fov is None:
            raise KeyError(
                f"CrossTemporalDifferenced: fov_key {self.fov_key!r} not in the data; add FieldOfViewd first."
            )
        d[self.output_key] = self.ctrd(d[self.early_key], d[self.late_key], fov)
        return d


CrossTemporalDifferenceD = CrossTemporalDifferenceDict = CrossTemporalDifferenced
