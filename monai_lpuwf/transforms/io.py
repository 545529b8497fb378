"""Loading UWF-SLO / UWF-FA frames as channel-first MetaTensors in ``[-1, 1]`` (array + dictionary transforms).

The files are read by :func:`monai_lpuwf.data.image_io.read_uwf_array` (MONAI readers configured for rows-first
arrays; see that module for the axis convention) and written back by
:func:`monai_lpuwf.data.image_io.save_uwf_image`. Every image comes out as ``(C, H, W)``: channel first, then image
rows (row 0 = top of the picture as any image viewer shows the file), then columns.

Intensities
-----------
Intensities are scaled to ``[-1, 1]`` from the file's real value range
(:func:`~monai_lpuwf.data.image_io.stored_value_range`: ``BitsStored`` for DICOM, otherwise the stored integer
type: uint8 -> 255, uint16 -> 65535, 16-bit PNG read through PIL -> 65535, ...).

Floating point files (float16/32/64 TIFF, NIfTI, ...) follow one convention: values already in ``[0, 1]`` are
taken as they are (0 -> -1, 1 -> 1); any other range has no implied scale and is an error naming the file and its
range, unless ``value_range`` says how to scale it: ``value_range=(low, high)`` (e.g. ``(0, 255)`` for unscaled
8-bit values stored as float) or ``value_range="minmax"`` (each file's own minimum and maximum; intensities are
then no longer comparable between files). On the bundle command line: ``--load_kwargs "{'value_range':(0,255)}"``.
Stored values outside an explicit ``value_range`` are clipped, with a warning naming the file and the share of
pixels clipped. Non-finite values (NaN, +-Inf) are an error naming the file and the number of such pixels, unless
``nonfinite="black"`` (they become the low end of the range, e.g. a field-of-view mask stored as NaN); the range
of a float file is then taken from its finite values. Complex, structured and other non-numeric arrays are refused.
The range used is recorded in the metadata (``"value_range"``, and ``"bit_depth"``: the stored integer bits, or
the float's size in bits, e.g. 32, so that items of any format can be collated into one batch).

Channels
--------
``modality="slo"`` gives 3 channels (an alpha channel is dropped; a grey SLO is an error unless
``slo_grey="repeat"``, on the bundle command line ``--load_kwargs "{'slo_grey':'repeat'}"``).
``modality="fa"`` gives 1 channel: grey stored as RGB (all channels equal up to a small tolerance, e.g. the authors'
24-bit BMPs or a JPEG) collapses to one channel; a truly coloured FA is an error unless ``fa_colour`` says how to
make it grey. A picture of one row (1 x W, even 1 x 1, with or without colour) is read
as one row: ``(H, W, C)`` arrays are never taken for a stack of slices. CMYK (and YCbCr, LAB, HSV) files are
converted to RGB; 16-bit colour PNGs keep their 16 bits (:func:`~monai_lpuwf.data.image_io.read_uwf_array`).

Size
----
A frame above ``max_pixels`` (default 50 megapixels) is refused by name before its pixels are decoded where the
file's header gives the size (``--load_kwargs "{'max_pixels':N}"`` raises the limit).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, MetaTensor
from monai.transforms import MapTransform, Resize, Transform
from monai.utils import TransformBackends, ensure_tuple_rep, look_up_option

from monai_lpuwf.data.image_io import (
    DEFAULT_MAX_PIXELS,
    UWFImageError,
    load_kwargs_cli,
    read_uwf_array,
    stored_value_range,
)
from monai_lpuwf.keys import UWFKeys

__all__ = ["LoadUWFImage", "LoadUWFImaged", "LoadUWFImageD", "LoadUWFImageDict", "MODALITIES"]

MODALITIES = ("slo", "fa")
_FA_COLOUR = ("auto", "mean", "luminance", "red", "green", "blue")


def _select_channels(
    arr: np.ndarray, modality: str, path: PathLike, fa_colour: str, slo_grey: str, grey_tolerance: float, high: float
) -> tuple[np.ndarray, int]:
    """(C, H, W) float array with 3 (slo) or 1 (fa) channels, and the number of channels the file stored."""
    img = arr[..., None] if arr.ndim == 2 else arr
    stored = img.shape[-1]
    if stored in (2, 4):  # grey + alpha, RGB + alpha
        img = img[..., : stored - 1]
    img = np.ascontiguousarray(np.moveaxis(img, -1, 0), dtype=np.float32)  # planar: fast channel reductions
    n = img.shape[0]
    if modality == "slo":
        if n == 3:
            return img, stored
        if slo_grey == "repeat":
            return np.repeat(img, 3, axis=0), stored
        raise UWFImageError(
            f"{path}: SLO image has {n} channel(s), expected 3 (Optos pseudo-colour RGB). Load the colour export, "
            "or pass slo_grey='repeat' to use a grey SLO as 3 equal channels (command line: "
            f"{load_kwargs_cli(slo_grey='repeat')})."
        )
    if n == 1:
        return img, stored
    if fa_colour == "auto":
        spread = float(np.abs(img - img.mean(0, keepdims=True)).mean()) / max(high, 1e-12)
        if spread <= grey_tolerance:
            return img.mean(0, keepdims=True), stored
        raise UWFImageError(
            f"{path}: FA image has {n} channels that differ (mean deviation {spread:.3%} of the range, tolerance "
            f"{grey_tolerance:.3%}); is this an SLO or a colour-annotated export? Pass fa_colour='mean', "
            f"'luminance' or 'green' to convert it to grey (command line: {load_kwargs_cli(fa_colour='green')}), or "
            "load it with modality='slo'."
        )
    if fa_colour == "mean":
        return img.mean(0, keepdims=True), stored
    if fa_colour == "luminance":
        return np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), img, axes=1)[None], stored
    return img[("red", "green", "blue").index(fa_colour)][None], stored


class LoadUWFImage(Transform):
    """Load a UWF-SLO or UWF-FA file into a ``(C, H, W)`` float MetaTensor in ``[-1, 1]``.

    See the module docstring for the axis, intensity and channel conventions.

    Args:
        modality: ``"slo"`` (3 channels) or ``"fa"`` (1 channel).
        reader: a MONAI :class:`~monai.data.ImageReader` to use instead of the suffix-based default. It must
            return rows-first arrays (e.g. ``PILReader(reverse_indexing=False)``).
        value_range: ``(low, high)`` stored values mapped to ``-1`` and ``1`` (values outside are clipped, with a
            warning), overriding the file's bit depth; or ``"minmax"``: each file's own (finite) minimum and
            maximum. Needed for floating point files not in ``[0, 1]``.
        fa_colour: how a multi-channel FA becomes grey: ``"auto"`` (collapse if the channels are equal within
            ``grey_tolerance``, else raise), ``"mean"``, ``"luminance"``, ``"red"``, ``"green"``, ``"blue"``.
        slo_grey: ``"raise"`` (default) or ``"repeat"`` for a 1-channel SLO.
        nonfinite: what to do with NaN / +-Inf pixels of a floating point file: ``"raise"`` (default) or
            ``"black"`` (set to the low end of the range; the range is taken from the finite pixels).
        grey_tolerance: mean absolute channel deviation, as a fraction of the value range, still counted as grey.
        dtype: output dtype.
        max_pixels: frames with more pixels (H x W) are refused, before decoding where the file's header gives the
            size (default 50 M, :data:`~monai_lpuwf.data.image_io.DEFAULT_MAX_PIXELS`); ``None``: no limit.

    Raises:
        FileNotFoundError: missing file.
        UWFImageError: corrupt file, wrong channel count, constant (empty) image, unknown intensity scale,
            non-finite values, non-numeric pixel type.
    """

    # the file is decoded and converted in numpy (a path in, nothing to run on a device); the output is a MetaTensor
    backend: ClassVar[list[TransformBackends]] = [TransformBackends.NUMPY]

    def __init__(
        self,
        modality: str = "fa",
        reader: ImageReader | None = None,
        value_range: tuple[float, float] | str | None = None,
        fa_colour: str = "auto",
        slo_grey: str = "raise",
        nonfinite: str = "raise",
        grey_tolerance: float = 0.01,
        dtype: torch.dtype = torch.float32,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.modality = look_up_option(modality, MODALITIES)
        if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 1):
            raise ValueError(f"max_pixels must be a positive number of pixels or None, got {max_pixels!r}.")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
        self.reader = reader
        if value_range is None or isinstance(value_range, str):
            self.value_range = None if value_range is None else look_up_option(value_range, ("minmax",))
        else:
            low, high = (float(v) for v in value_range)
            if not np.isfinite([low, high]).all() or high <= low:
                raise ValueError(f"value_range must be two finite numbers (low, high), low < high; got {value_range}.")
            self.value_range = (low, high)
        self.fa_colour = look_up_option(fa_colour, _FA_COLOUR)
        self.slo_grey = look_up_option(slo_grey, ("raise", "repeat"))
        self.nonfinite = look_up_option(nonfinite, ("raise", "black"))
        self.grey_tolerance = grey_tolerance
        self.dtype = dtype

    def _finite(self, arr: np.ndarray, filename: PathLike) -> tuple[np.ndarray, np.ndarray | None]:
        """``arr`` with non-finite values as NaN, and their mask (``None`` when every value is finite)."""
        if arr.dtype.kind != "f":
            return arr, None
        bad = ~np.isfinite(arr)
        if not bad.any():
            return arr, None
        n, total = int(bad.any(-1).sum() if arr.ndim == 3 else bad.sum()), arr.shape[0] * arr.shape[1]
        if self.nonfinite == "raise" or bad.all():
            kinds = "/".join(k for k, m in (("NaN", np.isnan(arr)), ("Inf", np.isinf(arr))) if m.any())
            raise UWFImageError(
                f"{filename}: {n} of {total} pixels are not finite ({kinds})"
                + (" - no pixel has a value" if bad.all() else "")
                + "; a generated image would be all NaN. Re-export the frame without NaN/Inf, or pass "
                f"nonfinite='black' to set them to black (command line: {load_kwargs_cli(nonfinite='black')})."
            )
        return np.where(bad, np.nan, arr), bad

    def __call__(self, filename: PathLike) -> MetaTensor:
        """
        Args:
            filename: path of the image file.

        Returns:
            MetaTensor ``(3, H, W)`` for SLO or ``(1, H, W)`` for FA, values in ``[-1, 1]``.
        """
        arr, meta = read_uwf_array(filename, self.reader, max_pixels=self.max_pixels)
        arr, bad = self._finite(arr, filename)
        if arr.size and self.value_range is None:
            low, high, bits = stored_value_range(arr, meta, filename)
        elif arr.size:
            if self.value_range == "minmax":
                low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
            else:
                low, high = self.value_range
            try:  # the stored bits, recorded only
                bits = stored_value_range(arr, meta, filename)[2] if arr.dtype.kind != "f" else arr.dtype.itemsize * 8
            except UWFImageError:  # signed values: the type's size
                bits = arr.dtype.itemsize * 8
        if bad is not None:
            arr[bad] = low  # nonfinite="black"
        if arr.size == 0 or float(np.max(arr)) == float(np.min(arr)):
            value = float(np.max(arr)) if arr.size else "none"
            raise UWFImageError(
                f"{filename}: the image is empty or constant (every pixel = {value}); it is a blank or failed "
                "export. Re-export it from the device or remove this triplet from the datalist."
            )
        img, stored = _select_channels(
            arr, self.modality, filename, self.fa_colour, self.slo_grey, self.grey_tolerance, high - low
        )
        img -= low  # in place: (img - low) / (high - low) * 2 - 1, clipped to [-1, 1]
        img *= 2.0 / (high - low)
        img -= 1.0
        if isinstance(self.value_range, tuple):
            outside = float(np.count_nonzero((img < -1.0 - 1e-6) | (img > 1.0 + 1e-6))) / img.size
            if outside:
                warnings.warn(
                    f"{filename}: {outside:.2%} of the values lie outside value_range={self.value_range} and were "
                    "clipped; widen value_range, or use value_range='minmax' for the file's own range.",
                    stacklevel=2,
                )
        np.clip(img, -1.0, 1.0, out=img)
        meta.update(
            {
                "spatial_shape": np.asarray(img.shape[1:]),
                "original_channel_dim": 0,
                "original_channels": stored,
                "value_range": (low, high),
                "bit_depth": int(bits),
                "modality": self.modality,
                "axes": "CHW",
            }
        )
        meta.pop("affine", None)
        meta.pop("original_affine", None)
        return MetaTensor(torch.as_tensor(img, dtype=self.dtype), affine=torch.eye(3, dtype=torch.float64), meta=meta)


class LoadUWFImaged(MapTransform):
    """Dictionary version of :class:`LoadUWFImage` for a UWF triplet.

    Args:
        keys: keys holding file paths, e.g. ``("slo", "early", "late")``.
        modality: ``None`` (key ``"slo"`` -> ``"slo"``, any other key -> ``"fa"``), one modality for all keys, or
            one per key.
        spatial_mismatch: what to do when the loaded keys differ in ``(H, W)``: ``"raise"`` (default, names the
            files), ``"resize"`` (bilinear resize to the first key's size, recorded in the metadata) or
            ``"ignore"`` (e.g. when a registration step resamples moving onto fixed afterwards).
        allow_missing_keys: skip keys absent from the dictionary (inference lists without ``late``).
        kwargs: passed to :class:`LoadUWFImage` (``reader``, ``value_range``, ``fa_colour``, ...).
    """

    backend = LoadUWFImage.backend

    def __init__(
        self,
        keys: KeysCollection,
        modality: str | Sequence[str] | None = None,
        spatial_mismatch: str = "raise",
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if modality is None:
            modality = [("slo" if str(k) == UWFKeys.SLO else "fa") for k in self.keys]
        modality = ensure_tuple_rep(modality, len(self.keys))
        self.loaders = {k: LoadUWFImage(m, **kwargs) for k, m in zip(self.keys, modality)}
        self.spatial_mismatch = look_up_option(spatial_mismatch, ("raise", "resize", "ignore"))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        missing = [k for k in self.keys if d.get(k) is None]
        if missing and not self.allow_missing_keys:
            present = ", ".join(f"{k}={d[k]}" for k in self.keys if d.get(k) is not None) or "no image"
            raise KeyError(
                f"LoadUWFImaged: item ({present}) has no file for {missing}. Complete the datalist (e.g. add the "
                "N.2.ext late phase), drop the item, or pass allow_missing_keys=True (e.g. with_late=False for "
                "SLO + early-phase lists, inference lists without late)."
            )
        loaded = []
        for key in self.key_iterator(d):
            if d[key] is None and self.allow_missing_keys:
                continue
            d[key] = self.loaders[key](d[key])
            loaded.append(key)
        shapes = {k: tuple(d[k].shape[1:]) for k in loaded}
        if len(set(shapes.values())) > 1 and self.spatial_mismatch != "ignore":
            if self.spatial_mismatch == "raise":
                listing = ", ".join(f"{k}={shapes[k]} ({d[k].meta['filename_or_obj']})" for k in loaded)
                raise UWFImageError(
                    f"images of one triplet differ in size (H, W): {listing}. Export them at the same size, or pass "
                    "spatial_mismatch='resize' to LoadUWFImaged (resizes to the first key), or 'ignore' when a "
                    "registration step resamples them onto one grid."
                )
            target = shapes[loaded[0]]
            for k in loaded[1:]:
                if shapes[k] != target:
                    d[k] = Resize(target, mode="bilinear", anti_aliasing=True)(d[k])
                    d[k].meta["resized_from"] = shapes[k]
        return d


LoadUWFImageD = LoadUWFImageDict = LoadUWFImaged
