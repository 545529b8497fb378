"""Retinal field-of-view (FOV) mask of UWF frames.

The mask is 1 on the retina and 0 on what a loss or a metric should ignore:

- FA: the dark border outside the retina (threshold between the border level, estimated on the image frame, and
  the retina level, estimated on the central region, of a smoothed image) and burnt-in annotation boxes (flat,
  rectangular regions of near-zero local variation, e.g. the dark box bottom right of Optos FA exports).
- SLO: additionally the bright eyelids that touch the image border (bright in both red and green: Otsu split of
  the smoothed ``min(red, green)``; bright components that touch the frame edge and lie mostly outside the central
  ellipse are removed) and large dark eyelash shadows. Thin eyelashes crossing the retina stay inside the mask
  (they cannot be told from vessels by intensity alone). Limitation: on real Optos SLOs the eyelid housing is
  often no brighter than the peripheral retina and is then kept (the mask covers ~93-96 % of the frame on the
  samples in ``../shared/uwf-samples``); the FA masks, which the losses and metrics use, do not have this problem.

The retina is then the largest connected component with its holes filled (dark lesions inside stay in).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, look_up_option
from scipy import ndimage as ndi

from monai_lpuwf.keys import UWFKeys

__all__ = ["FieldOfView", "FieldOfViewd", "FieldOfViewD", "FieldOfViewDict", "flat_box_mask"]


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def _largest_filled(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = ndi.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def flat_box_mask(
    grey: np.ndarray, min_area_fraction: float = 0.002, fill_ratio: float = 0.85, max_range: float = 8 / 255
) -> np.ndarray:
    """Burnt-in boxes: rectangular regions where the image is (nearly) constant.

    A box is a connected region where neighbouring pixels differ by less than 1.5 grey levels (of 255), whose
    values span at most ``max_range`` (a smooth ramp of the retina is not a box), that fills at least
    ``fill_ratio`` of its bounding box and covers at least ``min_area_fraction`` of the image.

    Args:
        grey: ``(H, W)`` image in ``[0, 1]``.
        min_area_fraction: smallest box area as a fraction of the image.
        fill_ratio: smallest (component area / bounding box area) to count as a rectangle.
        max_range: largest spread (max - min) of the values inside a box.

    Returns:
        bool ``(H, W)``, True inside the detected boxes (grown by 2 pixels).
    """
    gy, gx = np.abs(np.diff(grey, axis=0, append=grey[-1:])), np.abs(np.diff(grey, axis=1, append=grey[:, -1:]))
    flat = ndi.maximum_filter(np.maximum(gy, gx), size=3) < 1.5 / 255.0
    flat &= grey > 0.5 / 255.0  # exact-black borders are handled by the threshold, not as boxes
    labels, _ = ndi.label(flat)
    out = np.zeros_like(flat)
    min_area = min_area_fraction * grey.size
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        comp = labels[sl] == i
        area = comp.sum()
        if area >= min_area and area / comp.size >= fill_ratio and np.ptp(grey[sl][comp]) <= max_range:
            out[sl] |= comp
    return ndi.binary_dilation(out, iterations=2) if out.any() else out


class FieldOfView(Transform):
    """Compute the retinal field-of-view mask of a UWF frame.

    Args:
        modality: ``"fa"``, ``"slo"`` or ``"auto"`` (3 channels -> SLO, 1 channel -> FA).
        smooth_fraction: Gaussian sigma of the smoothing as a fraction of ``min(H, W)``.
        border_fraction: relative position of the threshold between the border level (0) and the retina level (1).
        remove_boxes: exclude burnt-in annotation boxes.
        remove_eyelids: (SLO) exclude bright regions connected to the image edge.
        erode: pixels eroded from the final mask (keeps losses away from the retina's edge).

    Input ``(C, H, W)`` in ``[-1, 1]``; output ``(1, H, W)`` float mask in ``{0, 1}`` of the same type and device
    (MetaTensor metadata kept).

    Backend: numpy only. The mask needs connected-component labelling, hole filling and the box detector's
    per-component bounding boxes (``scipy.ndimage``), which torch does not provide; a tensor input is computed on
    the CPU and the mask returned on the input's device. It is computed once per frame (cached datasets), and its
    thresholds depend on the smoothing, so a partial torch port would change masks without a speed need.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.NUMPY]

    def __init__(
        self,
        modality: str = "auto",
        smooth_fraction: float = 0.015,
        border_fraction: float = 0.12,
        remove_boxes: bool = True,
        remove_eyelids: bool = True,
        erode: int = 0,
    ) -> None:
        self.modality = look_up_option(modality, ("auto", "fa", "slo"))
        self.smooth_fraction = smooth_fraction
        self.border_fraction = border_fraction
        self.remove_boxes = remove_boxes
        self.remove_eyelids = remove_eyelids
        self.erode = erode

    def mask(self, img: np.ndarray) -> np.ndarray:
        """Bool ``(H, W)`` mask of a ``(C, H, W)`` numpy image in ``[-1, 1]``."""
        x = (np.clip(img.astype(np.float32), -1, 1) + 1) / 2
        slo = self.modality == "slo" or (self.modality == "auto" and x.shape[0] == 3)
        h, w = x.shape[1:]
        sigma = max(1.0, self.smooth_fraction * min(h, w))
        bright = x[:2].max(0) if slo else x.mean(0)  # SLO: red/green (blue is near-constant in Optos images)
        smooth = ndi.gaussian_filter(bright, sigma)
        e = max(2, int(0.02 * min(h, w)))
        frame = np.concatenate([smooth[:e].ravel(), smooth[-e:].ravel(), smooth[:, :e].ravel(), smooth[:, -e:].ravel()])
        centre = smooth[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
        bg, fg = float(np.percentile(frame, 20)), float(np.median(centre))
        fg = max(fg, bg + 1e-3)
        mask = smooth > bg + self.border_fraction * (fg - bg)
        if self.remove_boxes:
            mask &= ~flat_box_mask(x.mean(0))
        if slo and self.remove_eyelids and mask.any():
            # eyelids: bright in both red and green, touching the frame edge, mostly outside the central ellipse
            both = ndi.gaussian_filter(x[:2].min(0), sigma)
            rr, cc = np.ogrid[:h, :w]
            central = ((rr - h / 2) / (0.42 * h)) ** 2 + ((cc - w / 2) / (0.42 * w)) ** 2 < 1
            level = max(_otsu(both[mask]), float(np.percentile(both[central & mask], 95)))
            labels, _ = ndi.label(mask & (both > level))
            edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            edge_labels = edge_labels[edge_labels > 0]
            if len(edge_labels):
                inside = ndi.mean(central, labels, index=edge_labels)
                mask &= ~np.isin(labels, edge_labels[np.asarray(inside) < 0.5])
            # large dark shadows (eyelash bundles): much darker than the retina even after heavy smoothing
            shadow = ndi.gaussian_filter(bright, 3 * sigma) < bg + 0.5 * self.border_fraction * (fg - bg)
            mask &= ~shadow
        mask = ndi.binary_opening(mask, iterations=2)
        mask = _largest_filled(mask)
        if self.erode > 0:
            mask = ndi.binary_erosion(mask, iterations=self.erode)
        return mask

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        """
        Args:
            img: ``(C, H, W)`` image in ``[-1, 1]``.

        Returns:
            ``(1, H, W)`` float32 mask (MetaTensor with the input's metadata when the input is one).
        """
        mask = self.mask(convert_to_numpy(img))[None].astype(np.float32)
        out, *_ = convert_to_dst_type(
            mask, dst=img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32
        )
        if isinstance(out, MetaTensor):
            out.meta["fov_modality"] = self.modality
        return out


class FieldOfViewd(MapTransform):
    """Dictionary version of :class:`FieldOfView`: the mask of ``keys`` is stored under ``mask_key``.

    With several keys, the masks are intersected (the retina visible in every frame), e.g.
    ``FieldOfViewd(keys=("early", "late"), mask_key="fov")``. Modality ``"auto"`` treats key ``"slo"`` as SLO.

    Args:
        keys: image keys the mask is computed from.
        mask_key: output key (default ``"fov"``).
        allow_missing_keys: skip absent keys (the mask then comes from the present ones).
        kwargs: passed to :class:`FieldOfView`.
    """

    backend = FieldOfView.backend

    def __init__(
        self, keys: KeysCollection, mask_key: str = UWFKeys.FOV.value, allow_missing_keys: bool = False, **kwargs
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.kwargs = kwargs

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        combined = None
        for key in self.key_iterator(d):
            modality = self.kwargs.get("modality", "auto")
            if modality == "auto":
                modality = "slo" if str(key) == UWFKeys.SLO else "fa"
            mask = FieldOfView(**{**self.kwargs, "modality": modality})(d[key])
            combined = mask if combined is None else combined * mask
        if combined is None:
            raise KeyError(
                f"FieldOfViewd: none of the keys {self.keys} is in the data; nothing to compute a mask from."
            )
        d[self.mask_key] = combined
        return d


FieldOfViewD = FieldOfViewDict = FieldOfViewd
