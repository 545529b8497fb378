"""Writing generated images: rounding to the levels of the output file and the ``SaveImaged`` chain.

* :class:`QuantizeIntensity` / :class:`QuantizeIntensityd`: intensities rounded (not truncated) to the levels an
  8/16-bit file holds, in the image's own range, so that scoring quantized predictions gives the scores of the
  written files (``evaluate.json``).
* :func:`save_generated`: images written with MONAI's :class:`~monai.transforms.SaveImaged` in the orientation and
  size of the input (rows first, as :class:`~monai_lpuwf.transforms.LoadUWFImage` reads them back), rounded to the
  output dtype (``inference.json``, ``evaluate.json``), each through a temporary file and one rename
  (:func:`atomic_writer`), so no half-written image is ever readable.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    CopyItemsd,
    DeleteItemsd,
    MapTransform,
    SaveImaged,
    ScaleIntensityRanged,
    Transform,
    Transposed,
)
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, look_up_option

from monai_lpuwf.atomic_write import atomic_path

__all__ = [
    "OUTPUT_DTYPES",
    "output_levels",
    "QuantizeIntensity",
    "QuantizeIntensityd",
    "QuantizeIntensityD",
    "QuantizeIntensityDict",
    "atomic_writer",
    "save_generated",
]

OUTPUT_DTYPES = ("uint8", "uint16", "float32")
_NIFTI_EXTS = (".nii", ".nii.gz")


def output_levels(dtype: str) -> float | None:
    """Largest stored value of an output dtype (255, 65535), ``None`` for ``"float32"`` (``[0, 1]`` values)."""
    dtype = look_up_option(str(dtype), OUTPUT_DTYPES)
    return float(np.iinfo(dtype).max) if dtype != "float32" else None


class QuantizeIntensity(Transform):
    """Round intensities to the levels an integer image file can hold, in the image's own range.

    ``x`` in ``value_range`` -> ``low + round((x - low) / (high - low) * levels) / levels * (high - low)``,
    clipped to ``value_range``: the values a ``levels + 1``-level file written from ``x`` holds (rounded to the
    nearest level, as :func:`~monai_lpuwf.data.save_uwf_image` does). Scoring quantized predictions gives
    the scores of the written files.

    Args:
        levels: 255 (8 bit), 65535 (16 bit); ``None`` only clips.
        value_range: ``(low, high)`` of the input.

    Input and output ``(C, *spatial)`` of the same type, dtype and device (numpy in, numpy out; MetaTensor metadata
    kept); computed in torch on the input's device.
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, levels: float | None = 255, value_range: Sequence[float] = (-1.0, 1.0)) -> None:
        self.levels = None if levels is None else float(levels)
        self.low, self.high = float(value_range[0]), float(value_range[1])

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        x = convert_to_tensor(img, track_meta=False).clamp(self.low, self.high)
        if self.levels is not None:
            unit = (x - self.low) / (self.high - self.low)
            x = torch.round(unit * self.levels) / self.levels * (self.high - self.low) + self.low
        return convert_to_dst_type(x, dst=img)[0]


class QuantizeIntensityd(MapTransform):
    """Dictionary version of :class:`QuantizeIntensity`."""

    backend = QuantizeIntensity.backend

    def __init__(
        self,
        keys: KeysCollection,
        levels: float | None = 255,
        value_range: Sequence[float] = (-1.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.quantize = QuantizeIntensity(levels, value_range)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.quantize(d[key])
        return d


QuantizeIntensityD = QuantizeIntensityDict = QuantizeIntensityd


@functools.cache
def atomic_writer(writer: type) -> type:
    """A subclass of the MONAI :class:`~monai.data.ImageWriter` ``writer`` whose ``write`` goes through a temporary
    file in the target folder and one rename (:func:`~monai_lpuwf.atomic_write.atomic_path`): a reader never sees
    half an image, and a write that fails leaves no file behind."""

    def write(self, filename, verbose: bool = True, **kwargs):
        with atomic_path(filename) as tmp:
            return writer.write(self, tmp, verbose=verbose, **kwargs)

    return type(f"Atomic{writer.__name__}", (writer,), {"write": write, "__doc__": atomic_writer.__doc__})


def save_generated(
    key: str,
    output_dir: str | os.PathLike,
    output_postfix: str = "late",
    output_ext: str = ".png",
    output_dtype: str = "uint8",
    data_root_dir: str | os.PathLike = "",
    value_range: Sequence[float] = (-1.0, 1.0),
) -> Compose:
    """Dictionary transforms writing ``data[key]`` ((1, H, W) rows first) with :class:`monai.transforms.SaveImaged`.

    The image is mapped from ``value_range`` to ``[0, 1]`` (``float32``) or rounded to ``0..255`` (``uint8``) /
    ``0..65535`` (``uint16``), written as ``<output_dir>/<sub-folder of the SLO under data_root_dir>/
    <SLO name>_<output_postfix><output_ext>`` in the orientation of the input picture (PNG/TIFF/BMP through PIL
    without MONAI's default row/column swap; NIfTI with ``(x, y)`` = (columns, rows), as
    :class:`~monai_lpuwf.transforms.LoadUWFImage` expects), so that loading the output gives a frame of the input's
    size and orientation. ``data[key]`` itself is left unchanged.

    Args:
        key: key of the image to write (``"pred"``, ``"pred_std"``).
        output_dir: output folder.
        output_postfix: name postfix.
        output_ext: ``".png"`` (default), ``".tif"``, ``".nii.gz"``, ...
        output_dtype: ``"uint8"``, ``"uint16"`` or ``"float32"`` (``[0, 1]`` values; e.g. for NIfTI).
        data_root_dir: see :class:`~monai.transforms.SaveImaged` (sub-folders of inputs are mirrored).
        value_range: intensity range of ``data[key]``.
    """
    levels = output_levels(output_dtype)
    tmp = f"_{key}_to_save"
    xforms: list = [
        CopyItemsd(keys=key, names=tmp),
        ScaleIntensityRanged(
            tmp, a_min=value_range[0], a_max=value_range[1], b_min=0.0, b_max=levels or 1.0, clip=True
        ),
    ]
    if levels is not None:
        xforms.append(QuantizeIntensityd(tmp, levels=levels, value_range=(0.0, levels)))
    xforms.append(CastToTyped(tmp, dtype=np.dtype(output_dtype)))
    nifti = str(output_ext).lower() in _NIFTI_EXTS
    if nifti:
        xforms.append(Transposed(tmp, indices=(0, 2, 1)))  # (1, H, W) -> (1, W, H): NIfTI x = columns
    saver = SaveImaged(
        keys=tmp,
        output_dir=str(output_dir),
        output_postfix=output_postfix,
        output_ext=output_ext,
        output_dtype=np.dtype(output_dtype),
        resample=False,
        scale=None,
        separate_folder=False,
        data_root_dir=str(data_root_dir or ""),
        squeeze_end_dims=not nifti,  # MONAI 1.6 cannot write a squeezed 2D NIfTI with resample=False: (x, y, 1, 1)
        print_log=False,
    )
    if not nifti:
        saver.set_options(write_kwargs={"reverse_indexing": False})  # PIL: the array is already (rows, columns)
    # every writer MONAI would try for this suffix, writing through a temporary file + rename
    saver.saver.writers = tuple(atomic_writer(w) for w in saver.saver.writers)
    xforms += [saver, DeleteItemsd(keys=tmp)]
    return Compose(xforms)
