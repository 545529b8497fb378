"""UWF image files: reading them into rows-first arrays and writing them back (MONAI readers and writers).

The transforms :class:`~monai_lpuwf.transforms.LoadUWFImage` / :class:`~monai_lpuwf.transforms.LoadUWFImaged`
build on :func:`read_uwf_array` (as MONAI's ``LoadImage`` builds on the readers of :mod:`monai.data`);
:func:`save_uwf_image` is their inverse.

Axis convention
---------------
Arrays come out as ``(H, W)`` or ``(H, W, C)``: image **rows** first (top to bottom, row 0 = top of the picture as
any image viewer shows the file), then **columns** (left to right). This differs on purpose from the defaults of
MONAI's 2D readers, which transpose 2D pictures to ``(W, H)`` (``PILReader(reverse_indexing=True)``,
``ITKReader(reverse_indexing=False)``) so that axis 0 is the physical ``x`` axis. Here the readers are configured
so that no transpose happens (``PILReader(reverse_indexing=False)``, ``ITKReader(reverse_indexing=True)``); NIfTI
files, whose array axes are ``(x, y)`` = (columns, rows), are transposed on reading (and on writing by
:func:`save_uwf_image`) so that a NIfTI file shows the same picture in ITK-SNAP as the PNG does in an image viewer.
A ``load -> save_uwf_image -> load`` round trip gives back the same pixels in the same orientation for PNG, BMP,
TIFF (8/16 bit), NIfTI and DICOM (tested).

Colour and bit depth
--------------------
Palette images are expanded to what they show; CMYK, YCbCr, LAB and HSV JPEGs/TIFFs read through PIL are converted
to RGB (a CMYK file is never taken for RGB + alpha). PIL cuts 16-bit colour PNGs to 8 bits, so those (colour type 2,
4 or 6 at bit depth 16, read from the file header) are decoded by ITK into ``uint16`` (:class:`PNG16Reader`).

Frame size
----------
A frame above ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 50 megapixels: about three times the largest UWF
frame, 4000 x 4000) is refused with a :class:`UWFImageError` that names the file, its size and the option
(``--load_kwargs "{'max_pixels':N}"``), before its pixels are decoded where the format's header gives the size
(PNG, BMP, JPEG, GIF, TIFF, NIfTI, DICOM), so a small file that claims 12000 x 12000 pixels costs no memory.

Intensity scale
---------------
:func:`stored_value_range` gives a file's real value range: ``BitsStored`` for DICOM, otherwise the stored integer
type (uint8 -> 255, uint16 -> 65535, 16-bit PNG read through PIL -> 65535, ...); floating point files must hold
``[0, 1]`` values (any other range has no implied scale and is an error naming the file and the fix).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import PathLike
from monai.data import ImageReader, ITKReader, NibabelReader, PILReader, PydicomReader
from monai.utils import ensure_tuple

from monai_lpuwf.atomic_write import atomic_path
from monai_lpuwf.errors import UserInputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "UWFImageError",
    "PNG16Reader",
    "TiffFileReader",
    "read_uwf_array",
    "stored_value_range",
    "save_uwf_image",
    "load_kwargs_cli",
]

_PIL_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".gif")
_TIFF_SUFFIXES = (".tif", ".tiff")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_DICOM_SUFFIXES = (".dcm", ".dicom")
DEFAULT_MAX_PIXELS = 50_000_000  # pixels (H x W) of one frame; the largest UWF frames are about 16 M (4000 x 4000)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UWFImageError(UserInputError, ValueError):
    """An image file that cannot be used as it is; the message names the file and the fix."""


def load_kwargs_cli(**load_kwargs: Any) -> str:
    """The bundle command-line form of loader arguments, for messages: ``--load_kwargs "{'slo_grey':'repeat'}"``."""
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


class PNG16Reader(ImageReader):
    """MONAI :class:`~monai.data.ImageReader` for 16-bit colour PNG files (RGB, RGBA, grey + alpha) through ITK.

    PIL reads such files as 8-bit ``RGB`` (the low byte dropped); ITK's ``VectorImage`` of ``unsigned short`` keeps
    all 16 bits. The array comes out as ``(H, W, C)`` ``uint16`` (rows first, like the file).
    """

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return all(_suffix(f) == ".png" for f in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> Any:
        import itk

        reader = itk.ImageFileReader[itk.VectorImage[itk.US, 2]].New(FileName=str(data))
        reader.Update()
        return reader.GetOutput()

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        import itk

        arr = np.asarray(itk.array_from_image(img))  # (rows, columns, components)
        return arr, {"spatial_shape": np.asarray(arr.shape[:2]), "original_channel_dim": -1}


def _png_header(path: PathLike) -> tuple[int, int, int, int] | None:
    """``(width, height, bit_depth, colour_type)`` from a PNG's IHDR chunk; ``None`` for anything else."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[24], head[25]


# ``warnings.catch_warnings()`` saves the process-wide filter list on entry and puts it back on exit, so two threads
# inside it at once (CacheDataset's caching threads, ThreadDataLoader) put back each other's lists and can leave a
# blanket "ignore" behind that hides every later warning of the process (a resume warning of the trainer, ...).
# The reading path therefore avoids changing the filters (:class:`_PhotoPydicomReader`); the one block that does
# (the header read of :func:`declared_pixels`) runs under this lock, so such blocks never interleave.
_WARNING_FILTERS_LOCK = threading.Lock()


class _PhotoPydicomReader(PydicomReader):
    """:class:`monai.data.PydicomReader` for photographs: a file without ``ImageOrientationPatient`` /
    ``ImagePositionPatient`` gets the identity affine, as from MONAI's reader, but without its warning (a UWF
    photograph has no patient geometry, so the warning is noise on every frame)."""

    def _get_affine(self, metadata: dict, lps_to_ras: bool = True):
        if not ("00200037" in metadata and "00200032" in metadata):  # orientation, position
            return np.eye(4)
        return super()._get_affine(metadata, lps_to_ras)


def _pil_converter(img):
    """Expand palette images to what they show (grey or RGB) so a palette index is never taken as intensity, and
    convert CMYK / YCbCr / LAB / HSV pictures to RGB (4 CMYK channels are not RGB + alpha)."""
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    return img


def declared_pixels(path: PathLike) -> tuple[int, str] | None:
    """The pixel count of a frame (H x W, channels not counted) and its size in words, read from the file's header
    without decoding the pixels; ``None`` where the format's header is not read here or cannot be read (the
    decoder then reports the file)."""
    suffix = _suffix(path)
    try:
        if suffix in _PIL_SUFFIXES:
            from PIL import Image

            with _WARNING_FILTERS_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: the caller decides
                with Image.open(path) as img:
                    width, height = img.size
            return width * height, f"{width} x {height} pixels (W x H)"
        if suffix in _TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tuple(int(s) for s in tif.series[0].shape)
        elif suffix in _NIFTI_SUFFIXES:
            import nibabel as nib

            shape = tuple(int(s) for s in nib.load(str(path)).shape)
        elif suffix in _DICOM_SUFFIXES:
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            return int(ds.Rows) * int(ds.Columns) * frames, f"{ds.Columns} x {ds.Rows} pixels (W x H)"
        else:
            return None
    except Exception:  # noqa: BLE001 - a damaged header: the decoder names the file
        return None
    channels = shape[-1] if len(shape) >= 3 and shape[-1] <= 4 else 1
    return int(np.prod(shape)) // channels, " x ".join(map(str, shape)) + " array"


def _check_pixels(path: PathLike, pixels: int, size: str, max_pixels: int | None) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise UWFImageError(
            f"{path}: frame of {size} = {pixels / 1e6:.1f} megapixels is above the limit of {max_pixels / 1e6:g} "
            "megapixels (max_pixels; a UWF frame has up to about 16, 4000 x 4000). Check the file; if the frame is "
            f"real, raise the limit: max_pixels={pixels} (command line: {load_kwargs_cli(max_pixels=pixels)})."
        )


def _default_reader(path: PathLike) -> ImageReader:
    suffix = _suffix(path)
    header = _png_header(path) if suffix == ".png" else None
    if header is not None and header[2] == 16 and header[3] in (2, 4, 6):  # 16-bit RGB, grey + alpha, RGBA
        return PNG16Reader()
    if suffix in _PIL_SUFFIXES:
        return PILReader(converter=_pil_converter, reverse_indexing=False)
    if suffix in _TIFF_SUFFIXES:
        return TiffFileReader()
    if suffix in _NIFTI_SUFFIXES:
        return NibabelReader()
    if suffix in _DICOM_SUFFIXES:
        return _PhotoPydicomReader(swap_ij=False)
    return ITKReader(reverse_indexing=True)  # DICOM without suffix, MetaImage, NRRD, ...


def stored_value_range(arr: np.ndarray, meta: dict, path: PathLike) -> tuple[float, float, int]:
    """``(low, high, bit_depth)`` of a file's intensity scale from its header or stored type (floats: NaN ignored).

    Args:
        arr: the array :func:`read_uwf_array` returned.
        meta: its metadata (DICOM ``BitsStored``, PIL ``mode``).
        path: the file, for messages.

    Raises:
        UWFImageError: signed values below 0, or floats outside ``[0, 1]`` (no implied scale).
    """
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
                f"(command line: {load_kwargs_cli(value_range='minmax')})."
            )
        return 0.0, float(info.max), info.bits - (1 if info.min < 0 else 0)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0, arr.dtype.itemsize * 8
    raise UWFImageError(
        f"{path}: floating point intensities in [{lo:g}, {hi:g}] have no implied scale (a float image must hold "
        "[0, 1] values). Say how to scale it: value_range=(low, high), e.g. (0, 255) for unscaled 8-bit values, or "
        f"value_range='minmax' for the file's own range (command line: {load_kwargs_cli(value_range=(0, 255))})."
    )


def read_uwf_array(
    path: PathLike, reader: ImageReader | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, dict]:
    """Read one file through a MONAI image reader, keeping its stored dtype.

    Args:
        path: image file.
        reader: a MONAI reader; by default chosen from the suffix (PIL for PNG/BMP/JPEG, ITK for 16-bit colour PNG,
            ``tifffile`` for TIFF, nibabel for NIfTI, pydicom for DICOM, ITK for the rest), configured for
            rows-first output.
        max_pixels: refuse frames with more pixels (H x W) than this, before decoding where the header gives the
            size; ``None``: no limit.

    Returns:
        ``(array, meta)`` with ``array`` of shape ``(H, W)`` or ``(H, W, C)`` in the file's dtype.

    Raises:
        FileNotFoundError: the file does not exist.
        UWFImageError: the file cannot be decoded (corrupt, truncated, unknown format), or holds a frame above
            ``max_pixels``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file; check the path in your datalist.")
    declared = declared_pixels(path) if max_pixels is not None else None
    if declared is not None:
        _check_pixels(path, *declared, max_pixels)
    reader = _default_reader(path) if reader is None else reader
    try:
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
    if declared is None and max_pixels is not None:  # formats without a header read here: checked once decoded
        _check_pixels(path, arr.shape[0] * arr.shape[1], f"{arr.shape[1]} x {arr.shape[0]} pixels (W x H)", max_pixels)
    meta = dict(meta)
    meta["filename_or_obj"] = str(path)
    return arr, meta


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
    """Write a ``(C, H, W)`` image in ``[-1, 1]`` so that ``LoadUWFImage`` reads the same pixels back.

    The inverse of :class:`~monai_lpuwf.transforms.LoadUWFImage` (same rows-first orientation, ``[-1, 1]`` mapped
    onto ``0..2**bit_depth-1``). The file is written atomically (temporary file + rename).

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
