"""Loading and saving UWF-SLO / UWF-FA frames as channel-first MetaTensors.

Axis convention
---------------
Every image comes out as ``(C, H, W)``: channel first, then image **rows** (top to bottom, row 0 = top of the
picture as any image viewer shows the file), then **columns** (left to right). This differs on purpose from the
defaults of MONAI's 2D readers, which transpose 2D pictures to ``(W, H)`` (``PILReader(reverse_indexing=True)``,
``ITKReader(reverse_indexing=False)``) so that axis 0 is the physical ``x`` axis. Here the readers are
configured so that no transpose happens (``PILReader(reverse_indexing=False)``,
``ITKReader(reverse_indexing=True)``); NIfTI files, whose array axes are ``(x, y)`` = (columns, rows), are
transposed on loading (and on saving by :func:`save_uwf_image`) so that a NIfTI file shows the same picture in
ITK-SNAP as the PNG does in an image viewer. A ``load -> save_uwf_image -> load`` round trip gives back the same
pixels in the same orientation for PNG, BMP, TIFF (8/16 bit), NIfTI and DICOM (tested).

Intensities
-----------
Intensities are scaled to ``[-1, 1]`` from the file's real value range: ``BitsStored`` for DICOM, otherwise the
stored integer type (uint8 -> 255, uint16 -> 65535, 16-bit PNG read through PIL -> 65535, ...).

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
as one row: ``(H, W, C)`` arrays are never taken for a stack of slices.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, ITKReader, MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import MapTransform, Resize, Transform
from monai.utils import ensure_tuple, ensure_tuple_rep, look_up_option

from monai_lpuwf.atomic_write import atomic_path
from monai_lpuwf.keys import UWFKeys

__all__ = [
    "UWFImageError",
    "TiffFileReader",
    "read_uwf_array",
    "LoadUWFImage",
    "LoadUWFImaged",
    "save_uwf_image",
    "MODALITIES",
]

MODALITIES = ("slo", "fa")
_FA_COLOUR = ("auto", "mean", "luminance", "red", "green", "blue")
_PIL_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".gif")
_TIFF_SUFFIXES = (".tif", ".tiff")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_DICOM_SUFFIXES = (".dcm", ".dicom")


class UWFImageError(ValueError):
    """An image file that cannot be used as it is; the message names the file and the fix."""


def _cli(**load_kwargs: Any) -> str:
    """The bundle command-line form of loader arguments: ``--load_kwargs "{'slo_grey':'repeat'}"``."""
    body = ",".join(f"{k!r}:{v!r}".replace(" ", "") for k, v in load_kwargs.items())
    return f'--load_kwargs "{{{body}}}"'


def _suffix(path: PathLike) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


class TiffFileReader(ImageReader):
    """MONAI :class:`~monai.data.ImageReader` for TIFF files based on ``tifffile``.

    PIL silently truncates 16-bit RGB TIFFs to 8 bit and ITK's Python wrapping lacks 16-bit RGB, so TIFFs are
    read with ``tifffile`` (a dependency of MONAI's WSI reader), keeping the stored dtype. The array comes out as
    ``(H, W)`` or ``(H, W, C)`` (rows first, like the file).
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return all(_suffix(f) in _TIFF_SUFFIXES for f in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> Any:
        import tifffile

        return tifffile.imread(str(data), **kwargs)

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):  # planar (C, H, W) storage
            arr = np.moveaxis(arr, 0, -1)
        meta = {"spatial_shape": np.asarray(arr.shape[:2]), "original_channel_dim": -1 if arr.ndim == 3 else np.nan}
        return arr, meta


def _pil_converter(img):
    """Expand palette images to what they show (grey or RGB) so a palette index is never taken as intensity."""
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "1":
        return img.convert("L")
    return img


def _default_reader(path: PathLike) -> ImageReader:
    suffix = _suffix(path)
    if suffix in _PIL_SUFFIXES:
        return PILReader(converter=_pil_converter, reverse_indexing=False)
    if suffix in _TIFF_SUFFIXES:
        return TiffFileReader()
    if suffix in _NIFTI_SUFFIXES:
        return NibabelReader()
    if suffix in _DICOM_SUFFIXES:
        return PydicomReader(swap_ij=False)
    return ITKReader(reverse_indexing=True)  # DICOM without suffix, MetaImage, NRRD, ...


def _value_range(arr: np.ndarray, meta: dict, path: PathLike) -> tuple[float, float, int]:
    """(low, high, bit_depth) of the file's intensity scale from its header or stored type (floats: NaN ignored)."""
    bits_stored = meta.get("bits_stored", meta.get("0028|0101"))  # DICOM BitsStored (pydicom, ITK)
    if bits_stored is not None and np.issubdtype(arr.dtype, np.integer):
        bits = int(str(bits_stored).strip())
        return 0.0, float(2**bits - 1), bits
    mode = str(meta.get("mode", ""))
    if mode.startswith("I;16") or (mode == "I" and _suffix(path) == ".png"):
        return 0.0, 65535.0, 16
    if arr.dtype == np.bool_:
        return 0.0, 1.0, 1
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0 and arr.min() < 0:
            raise UWFImageError(
                f"{path}: signed {arr.dtype} image with negative values; an ophthalmic photograph has none. "
                "Pass value_range=(low, high) or value_range='minmax' to LoadUWFImage to say how to scale it "
                f"(command line: {_cli(value_range='minmax')})."
            )
        return 0.0, float(info.max), info.bits - (1 if info.min < 0 else 0)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0, arr.dtype.itemsize * 8
    raise UWFImageError(
        f"{path}: floating point intensities in [{lo:g}, {hi:g}] have no implied scale (a float image must hold "
        "[0, 1] values). Say how to scale it: value_range=(low, high), e.g. (0, 255) for unscaled 8-bit values, or "
        f"value_range='minmax' for the file's own range (command line: {_cli(value_range=(0, 255))})."
    )


def read_uwf_array(path: PathLike, reader: ImageReader | None = None) -> tuple[np.ndarray, dict]:
    """Read one file through a MONAI image reader, keeping its stored dtype.

    Args:
        path: image file.
        reader: a MONAI reader; by default chosen from the suffix (PIL for PNG/BMP/JPEG, ``tifffile`` for TIFF,
            nibabel for NIfTI, ITK for DICOM and the rest), configured for rows-first output.

    Returns:
        ``(array, meta)`` with ``array`` of shape ``(H, W)`` or ``(H, W, C)`` in the file's dtype.

    Raises:
        FileNotFoundError: the file does not exist.
        UWFImageError: the file cannot be decoded (corrupt, truncated, unknown format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file; check the path in your datalist.")
    reader = _default_reader(path) if reader is None else reader
    try:
        with warnings.catch_warnings():  # photographs carry no patient orientation: pydicom's affine warning is noise
            warnings.filterwarnings("ignore", message=".*ImageOrientationPatient.*")
            img = reader.read(str(path))
            arr, meta = reader.get_data(img)
        arr = np.array(arr)  # forces decoding of lazily-read (possibly truncated) data and owns the memory
    except Exception as e:  # readers raise many different types for corrupt input
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise UWFImageError(
            f"{path}: cannot be read by {type(reader).__name__} ({type(e).__name__}: {reason}). The file is corrupt, "
            "truncated or not an image; re-export it from the device, or remove it from the datalist."
        ) from e
    if isinstance(reader, PydicomReader) and "BitsStored" in img:
        meta["bits_stored"] = int(img.BitsStored)
    if isinstance(reader, NibabelReader):  # NIfTI array axes are (x, y[, z][, c]) = (columns, rows, ...)
        arr = np.swapaxes(arr, 0, 1) if arr.ndim >= 2 else arr
        if arr.ndim == 4 and arr.shape[2] == 1:  # (rows, columns, 1 slice, channels)
            arr = arr[:, :, 0]
    else:  # drop leading singleton slice axes (ITK reads a 2D DICOM as (1, H, W[, C])); a 3D array whose last
        # axis is a channel count (<= 4) is a picture (H, W, C), even of one row (1 x 1 x 3)
        while arr.ndim > 2 and arr.shape[0] == 1 and (arr.ndim == 4 or arr.shape[-1] > 4):
            arr = arr[0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] > 4):
        raise UWFImageError(
            f"{path}: array of shape {arr.shape} is not a 2D picture (H, W) or (H, W, channels<=4); "
            "export a single 2D frame."
        )
    if arr.dtype.kind not in "biuf":
        raise UWFImageError(
            f"{path}: pixel type {arr.dtype} is not an intensity image (expected integers or floats); export the "
            "frame as 8/16-bit integers (PNG, TIFF) or float32 in [0, 1]."
        )
    meta = dict(meta)
    meta["filename_or_obj"] = str(path)
    return arr, meta


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
            f"{_cli(slo_grey='repeat')})."
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
            f"'luminance' or 'green' to convert it to grey (command line: {_cli(fa_colour='green')}), or load it "
            "with modality='slo'."
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

    Raises:
        FileNotFoundError: missing file.
        UWFImageError: corrupt file, wrong channel count, constant (empty) image, unknown intensity scale,
            non-finite values, non-numeric pixel type.
    """

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
    ) -> None:
        self.modality = look_up_option(modality, MODALITIES)
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
                f"nonfinite='black' to set them to black (command line: {_cli(nonfinite='black')})."
            )
        return np.where(bad, np.nan, arr), bad

    def __call__(self, filename: PathLike) -> MetaTensor:
        """
        Args:
            filename: path of the image file.

        Returns:
            MetaTensor ``(3, H, W)`` for SLO or ``(1, H, W)`` for FA, values in ``[-1, 1]``.
        """
        arr, meta = read_uwf_array(filename, self.reader)
        arr, bad = self._finite(arr, filename)
        if arr.size and self.value_range is None:
            low, high, bits = _value_range(arr, meta, filename)
        elif arr.size:
            if self.value_range == "minmax":
                low, high = float(np.nanmin(arr)), float(np.nanmax(arr))
            else:
                low, high = self.value_range
            try:  # the stored bits, recorded only
                bits = _value_range(arr, meta, filename)[2] if arr.dtype.kind != "f" else arr.dtype.itemsize * 8
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


def _to_stored(img: np.ndarray, bit_depth: int) -> np.ndarray:
    high = 2**bit_depth - 1
    dtype = np.uint8 if bit_depth <= 8 else np.uint16
    return np.round((np.clip(img, -1.0, 1.0) + 1.0) / 2.0 * high).astype(dtype)


def _write_dicom(path: str, arr: np.ndarray, bit_depth: int) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=file_meta, preamble=b"\0" * 128)
    ds.SOPClassUID = file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OP"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if arr.ndim == 3 else "MONOCHROME2"
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bit_depth
    ds.HighBit = bit_depth - 1
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.save_as(path, enforce_file_format=True)


def save_uwf_image(img: torch.Tensor | np.ndarray, path: PathLike, bit_depth: int = 8, overwrite: bool = False) -> Path:
    """Write a ``(C, H, W)`` image in ``[-1, 1]`` so that :class:`LoadUWFImage` reads the same pixels back.

    The inverse of :class:`LoadUWFImage` (same rows-first orientation, ``[-1, 1]`` mapped onto ``0..2**bit_depth-1``).
    The file is written atomically (temporary file + rename).

    Args:
        img: ``(1, H, W)`` or ``(3, H, W)`` (or ``(H, W)``) values in ``[-1, 1]``.
        path: output file; the suffix chooses the format: ``.png``/``.bmp``/``.jpg`` (PIL; 16 bit only for grey
            PNG), ``.tif``/``.tiff`` (tifffile, 8/16 bit, any channels), ``.nii``/``.nii.gz`` (nibabel, stored as
            ``(x, y[, c])``), ``.dcm`` (pydicom, Ophthalmic Photography IOD).
        bit_depth: 8 or 16 (DICOM accepts 8..16, stored in BitsStored).
        overwrite: replace an existing file; by default an existing file is an error (never overwrite inputs).

    Returns:
        the path written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; choose another output path or pass overwrite=True.")
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    stored = _to_stored(arr.astype(np.float32), bit_depth)
    suffix = _suffix(path)
    with atomic_path(path) as tmp:
        if suffix in _PIL_SUFFIXES:
            from PIL import Image

            if bit_depth > 8 and (stored.ndim == 3 or suffix != ".png"):
                raise ValueError(f"{path}: PIL writes 16-bit images only as grey PNG; use .tif for 16-bit colour.")
            pil = Image.fromarray(stored)  # uint16 grey -> mode "I;16"
            pil.save(tmp, format={".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix, suffix[1:].upper()))
        elif suffix in _TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(tmp, stored, photometric="rgb" if stored.ndim == 3 else "minisblack")
        elif suffix in _NIFTI_SUFFIXES:
            import nibabel as nib

            nib.save(nib.Nifti1Image(np.swapaxes(stored, 0, 1), np.eye(4)), tmp)
        elif suffix in (".dcm", ".dicom"):
            _write_dicom(tmp, stored, bit_depth)
        else:
            raise ValueError(f"{path}: unsupported suffix {suffix!r}; use .png, .bmp, .tif, .nii.gz or .dcm.")
    return path
