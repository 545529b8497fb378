"""The pixel scale a model was trained at, recorded in its model file, and the check generation runs against it.

Generation runs on whole native-resolution frames, so a model works at the scale it was trained at only if
training saw the frames at that same scale. The training preset crops at the native resolution by default
(``crop_scale=None``); with ``crop_scale=s`` every frame is first resized to ``ceil(s * image_size)``, i.e. to
another scale. :class:`TrainingScaleRecord` stores, next to the model's architecture, the median native frame
size of the training SLOs, the resize factor training applied to them (1 for native crops) and the SLO's mean
colour; :class:`CheckTrainingScaled` (part of :func:`~monai_lpuwf.transforms.uwf_inference_transforms` when the
record is given) warns for an input frame whose size, in training pixels, is far from the training frames' (a
model trained on 64 x 64 phantoms applied to a 640 x 512 photograph) or whose colour is far from theirs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import TransformBackends, ensure_tuple_rep

from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.transforms.io import LoadUWFImage

__all__ = [
    "TRAINING_SCALE_KEY",
    "training_scale",
    "training_frame_size",
    "TrainingScaleRecord",
    "CheckTrainingScaled",
    "CheckTrainingScaleD",
    "CheckTrainingScaleDict",
]

TRAINING_SCALE_KEY = "training_scale"  # the model file's entry written by TrainingScaleRecord
MAX_COLOUR_IMAGES = 32  # frames loaded for the colour statistics (spread evenly over the list)


def _frame_size(path: str, load_kwargs: Mapping[str, Any]) -> tuple[int, int]:
    """``(H, W)`` of an image file: from the header for formats PIL reads, else by loading it."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except (ImportError, OSError, ValueError):  # not a format PIL reads (e.g. DICOM, NIfTI)
        return tuple(int(s) for s in LoadUWFImage(UWFKeys.SLO.value, **dict(load_kwargs))(path).shape[-2:])


def training_scale(
    items: Iterable[Mapping[str, Any]],
    spatial_size: int | Sequence[int],
    crop_scale: float | None = None,
    key: str = UWFKeys.SLO.value,
    load_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Pixel scale and colour of the frames a training run sees.

    Args:
        items: the training datalist (dicts with a ``key`` path).
        spatial_size: the training crop ``(H, W)`` (``image_size``).
        crop_scale: the preset's ``crop_scale``: ``None`` = random crops of the native frames (scale 1), else
            frames resized to ``ceil(crop_scale * spatial_size)`` before the crop.
        key: SLO key.
        load_kwargs: :class:`~monai_lpuwf.transforms.LoadUWFImage` arguments.

    Returns:
        ``{"frame_size": [H, W]`` (median native size), ``"pixel_scale": [sy, sx]`` (median resize factor, 1 for
        native crops), ``"crop_size": [h, w]``, ``"crop_scale"``, ``"slo_mean": [r, g, b]`` (mean of each
        channel in ``[-1, 1]``), ``"slo_mean_spread"`` (largest standard deviation of a channel's mean between
        frames), ``"num_images"}``.
    """
    load_kwargs = dict(load_kwargs or {})
    paths = [str(item[key]) for item in items if item.get(key)]
    if not paths:
        raise ValueError(f"training_scale: no item has a {key!r} path; the training datalist is empty.")
    crop = [int(s) for s in ensure_tuple_rep(spatial_size, 2)]
    sizes = np.array([_frame_size(p, load_kwargs) for p in paths], dtype=np.float64)
    if crop_scale is None:
        factors = np.ones_like(sizes)
    else:
        resized = np.array([math.ceil(float(crop_scale) * s) for s in crop], dtype=np.float64)
        factors = resized[None] / sizes
    step = max(1, len(paths) // MAX_COLOUR_IMAGES)
    loader = LoadUWFImage(UWFKeys.SLO.value, **load_kwargs)
    means = np.array(
        [torch.as_tensor(loader(p)).reshape(3, -1).double().mean(1).numpy() for p in paths[::step][:MAX_COLOUR_IMAGES]]
    )
    return {
        "frame_size": [float(v) for v in np.median(sizes, 0)],
        "pixel_scale": [float(v) for v in np.median(factors, 0)],
        "crop_size": crop,
        "crop_scale": None if crop_scale is None else float(crop_scale),
        "slo_mean": [float(v) for v in means.mean(0)],
        "slo_mean_spread": float(means.std(0).max()) if len(means) > 1 else 0.0,
        "num_images": len(paths),
    }


def training_frame_size(record: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """The ``(H, W)`` every frame was resized to before the training crops, from a :func:`training_scale` record.

    Args:
        record: the model file's training-scale record (``None``: no record).

    Returns:
        ``ceil(crop_scale * crop_size)`` per axis for a model trained on resized frames (``crop_scale`` set), the
        size generation must resize an SLO to for the model to see its anatomy at the trained scale; ``None`` for
        native-resolution crops (or no record): generation runs at the native resolution.
    """
    if record is None or record.get("crop_scale") is None:
        return None
    return tuple(math.ceil(float(record["crop_scale"]) * int(s)) for s in record["crop_size"])


class TrainingScaleRecord:
    """Checkpoint entry ``"training_scale"``: the pixel scale and SLO colour of the training frames.

    Listed in a training config's model dictionary (``{"model": ..., "config": ..., "training_scale": record}``),
    it is computed with :func:`training_scale` the first time a checkpoint is written and kept;
    ``load_state_dict`` takes a saved value instead. Generation reads it back from the model file's
    :class:`~monai_lpuwf.networks.ModelFile` (:attr:`~monai_lpuwf.networks.ModelFile.training_scale`).

    Args:
        items: the training datalist.
        spatial_size: the training crop size (``image_size``).
        crop_scale: the training preset's ``crop_scale`` (``None``: native crops).
        key: SLO key.
        load_kwargs: :class:`~monai_lpuwf.transforms.LoadUWFImage` arguments.
    """

    def __init__(
        self,
        items: Iterable[Mapping[str, Any]],
        spatial_size: int | Sequence[int],
        crop_scale: float | None = None,
        key: str = UWFKeys.SLO.value,
        load_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.items = list(items)
        self.spatial_size = spatial_size
        self.crop_scale = crop_scale
        self.key = key
        self.load_kwargs = dict(load_kwargs or {})
        self._state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        if self._state is None:
            self._state = training_scale(self.items, self.spatial_size, self.crop_scale, self.key, self.load_kwargs)
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._state = dict(state)


class CheckTrainingScaled(MapTransform):
    """Warn when a generation input is far, in scale or colour, from the frames the model was trained on.

    The input is used at its native resolution; in training pixels a training frame measured
    ``pixel_scale * frame_size``. When the two differ by more than ``tolerance`` on either axis, vessels and
    lesions appear at a size the model never saw, and a warning names the file, both sizes and the fix. The
    colour check compares the frame's mean of each channel with the training frames' (``slo_mean``) and warns
    when one differs by more than ``max(colour_tolerance, 4 * slo_mean_spread)``. Data pass unchanged.

    Args:
        keys: the SLO key.
        record: :func:`training_scale`'s dictionary (the model file's
            :attr:`ModelFile.training_scale <monai_lpuwf.networks.ModelFile.training_scale>`);
            ``None`` checks nothing.
        tolerance: largest accepted size ratio (default 1.5).
        colour_tolerance: smallest accepted difference of a channel's mean, in ``[-1, 1]`` units.
        allow_missing_keys: skip absent keys.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keys: KeysCollection = UWFKeys.SLO.value,
        record: Mapping[str, Any] | None = None,
        tolerance: float = 1.5,
        colour_tolerance: float = 0.25,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if tolerance < 1:
            raise ValueError(f"CheckTrainingScaled: tolerance is a size ratio >= 1, got {tolerance}.")
        self.record = None if record is None else dict(record)
        self.tolerance = float(tolerance)
        self.colour_tolerance = float(colour_tolerance)

    def problems(self, image: torch.Tensor) -> list[str]:
        """What is far from the training frames, one phrase each (empty: nothing)."""
        if self.record is None:
            return []
        out = []
        size = [int(s) for s in image.shape[-2:]]
        trained = [f * s for f, s in zip(self.record["pixel_scale"], self.record["frame_size"])]
        ratios = [s / t for s, t in zip(size, trained)]
        if any(max(r, 1 / r) > self.tolerance for r in ratios):
            how = "native crops" if self.record.get("crop_scale") is None else f"crop_scale {self.record['crop_scale']}"
            out.append(
                f"it is {size[1]} x {size[0]} pixels, {max(ratios, key=lambda r: max(r, 1 / r)):.2g} times the "
                f"{trained[1]:.0f} x {trained[0]:.0f} pixels the training frames measured as the model saw them "
                f"(median frame {self.record['frame_size'][1]:.0f} x {self.record['frame_size'][0]:.0f}, {how}): "
                "vessels and lesions are at a scale the model never saw; train on frames of this size (crop_scale "
                "null crops them at native resolution) or resize the inputs to the training frames' size"
            )
        if "slo_mean" in self.record and image.shape[0] == len(self.record["slo_mean"]):
            means = image.reshape(image.shape[0], -1).float().mean(1).tolist()
            limit = max(self.colour_tolerance, 4 * float(self.record.get("slo_mean_spread", 0.0)))
            gaps = [abs(m - t) for m, t in zip(means, self.record["slo_mean"])]
            if max(gaps) > limit:
                fmt = ", ".join(f"{v:.2f}" for v in means)
                ref = ", ".join(f"{v:.2f}" for v in self.record["slo_mean"])
                out.append(
                    f"its mean colour ({fmt}, in [-1, 1]) is far from the training SLOs' ({ref}): another device, "
                    "colour scheme or data set than the model was trained on"
                )
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            found = self.problems(torch.as_tensor(image))
            if found:
                meta = getattr(image, "meta", {}) or {}
                name = meta.get("filename_or_obj", key)
                message = f"input '{name}' is far from the model's training data: " + "; ".join(found) + "."
                warnings.warn(message, stacklevel=2)
        return d


CheckTrainingScaleD = CheckTrainingScaleDict = CheckTrainingScaled
