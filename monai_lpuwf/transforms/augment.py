"""Training augmentation: a random rotation and a random crop in one resampling of the crop only.

The training preset rotated the whole frame (:class:`~monai.transforms.RandRotated`, ``keep_size=True``) and then
cut a random crop out of it (:class:`~monai.transforms.RandSpatialCropd`): five keys of a 853 x 682 frame were
resampled per item to keep a 256 x 256 crop of them. :class:`RandRotateCrop` draws the same two things (an angle,
a crop position in the rotated frame) and resamples only the crop's pixels (:class:`~monai.transforms.Affine` with
``spatial_size`` = the crop): the same pixels as the two transforms for the same draws (pixels rotated in from
outside the frame are filled by ``padding_mode`` alike), in 1/4 to 1/6 of the time on a CPU (the crop's pixels
instead of the frame's), and one resampling per key instead of two transforms where the augmentation runs on a
GPU.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Affine, MapTransform, Randomizable, RandomizableTransform
from monai.utils import TransformBackends, ensure_tuple_rep

__all__ = ["RandRotateCrop", "RandRotateCropd", "RandRotateCropD", "RandRotateCropDict"]


class RandRotateCrop(RandomizableTransform):
    """Rotate a 2D image by a random angle about its centre and take a random ``roi_size`` crop of the result,
    resampling only the crop.

    Equivalent to ``RandRotate(range_x=rotate_range, prob=1, keep_size=True)`` followed by
    ``RandSpatialCrop(roi_size, random_size=False)`` (the crop's start drawn uniformly among the integer positions
    inside the frame, so an angle of 0 is an exact crop), at the cost of the crop.

    Args:
        roi_size: crop ``(H, W)`` (an int for a square). A frame axis shorter than the crop gives the frame's
            length on that axis, as :class:`~monai.transforms.RandSpatialCrop` does (pad first to get the full
            size).
        rotate_range: the angle is drawn uniformly in ``[-rotate_range, rotate_range]`` radians.
        mode: interpolation, ``"bilinear"`` or ``"nearest"`` (masks).
        padding_mode: fill for pixels rotated in from outside the frame: ``"border"`` (repeat the frame's edge),
            ``"zeros"`` or ``"reflection"``.

    Input ``(C, H, W)`` tensor or MetaTensor; output ``(C, *roi_size)`` of the same type, with the MetaTensor's
    affine updated as :class:`~monai.transforms.Affine` does.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH]

    def __init__(
        self,
        roi_size: int | Sequence[int],
        rotate_range: float = 0.0,
        mode: str = "bilinear",
        padding_mode: str = "border",
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.roi_size = tuple(int(s) for s in ensure_tuple_rep(roi_size, 2))
        if min(self.roi_size) < 1:
            raise ValueError(f"RandRotateCrop: roi_size must be positive, got {roi_size}.")
        self.rotate_range = abs(float(rotate_range))
        self.mode, self.padding_mode = mode, padding_mode
        self.angle = 0.0
        self.start: tuple[int, int] = (0, 0)

    def crop_size(self, spatial_shape: Sequence[int]) -> tuple[int, int]:
        """The output ``(H, W)`` for a frame of ``spatial_shape``: the crop, or the frame's length where shorter."""
        return tuple(min(int(r), int(s)) for r, s in zip(self.roi_size, spatial_shape))  # type: ignore[return-value]

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        """Draw the angle and the crop's start for a frame of ``spatial_shape`` ``(H, W)``."""
        self.angle = float(self.R.uniform(-self.rotate_range, self.rotate_range))
        size = self.crop_size(spatial_shape)
        self.start = tuple(int(self.R.randint(0, int(s) - c + 1)) for s, c in zip(spatial_shape, size))

    def affine_transform(self, spatial_shape: Sequence[int], mode: str, padding_mode: str) -> Affine:
        """MONAI's :class:`~monai.transforms.Affine` that resamples the drawn crop of a frame of ``spatial_shape``:
        the output grid is centred on the crop's centre (``start + size / 2``, relative to the frame's centre)."""
        size = self.crop_size(spatial_shape)
        shift = [st + c / 2 - s / 2 for st, c, s in zip(self.start, size, spatial_shape)]
        return Affine(
            rotate_params=self.angle,
            translate_params=shift,
            spatial_size=size,
            mode=mode,
            padding_mode=padding_mode,
            image_only=True,
        )

    def __call__(
        self, img: torch.Tensor, randomize: bool = True, mode: str | None = None, padding_mode: str | None = None
    ) -> torch.Tensor:
        """
        Args:
            img: ``(C, H, W)``.
            randomize: draw a new angle and crop (``False``: reuse the last draw, e.g. for a second image).
            mode, padding_mode: override the constructor's for this call.
        """
        if img.ndim != 3:
            raise ValueError(f"RandRotateCrop expects a (C, H, W) image, got shape {tuple(img.shape)}.")
        spatial_shape = tuple(int(s) for s in img.shape[1:])
        if randomize:
            self.randomize(spatial_shape)
        resample = self.affine_transform(spatial_shape, mode or self.mode, padding_mode or self.padding_mode)
        return resample(img)


class RandRotateCropd(Randomizable, MapTransform):
    """Dictionary version of :class:`RandRotateCrop`: one angle and crop per item, the same for every key (images,
    field of view, CTRD map), with an interpolation and a padding mode per key.

    Args:
        keys: keys of ``(C, H, W)`` images of one spatial size.
        roi_size, rotate_range: as :class:`RandRotateCrop`.
        mode: one interpolation mode, or one per key (``"nearest"`` for masks).
        padding_mode: one padding mode, or one per key (``"zeros"`` for masks and maps).
        allow_missing_keys: skip listed keys absent from an item.
    """

    backend = RandRotateCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: int | Sequence[int],
        rotate_range: float = 0.0,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "border",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.cropper = RandRotateCrop(roi_size, rotate_range)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = ensure_tuple_rep(padding_mode, len(self.keys))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandRotateCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        self.cropper.randomize(spatial_shape)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [(key, m, p) for key, m, p in self.key_iterator(d, self.mode, self.padding_mode)]
        if not present:
            return d
        shapes = {key: tuple(int(s) for s in d[key].shape[1:]) for key, _, _ in present}
        if len(set(shapes.values())) > 1:
            raise ValueError(
                f"RandRotateCropd: the keys must share one spatial size to be cropped alike, got {shapes}; "
                "resample or pad them to one size first."
            )
        self.randomize(next(iter(shapes.values())))
        for key, mode, padding_mode in present:
            d[key] = self.cropper(d[key], randomize=False, mode=mode, padding_mode=padding_mode)
        return d


RandRotateCropD = RandRotateCropDict = RandRotateCropd
