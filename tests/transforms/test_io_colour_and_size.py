"""Pixels read right or refused by name: CMYK files, 16-bit colour PNGs and frames above the pixel cap.

Oracles: the RGB picture a CMYK JPEG was made from (PIL's RGB -> CMYK conversion, JPEG error allowed), the uint16
array a hand-written 16-bit PNG holds (its own encoder below, independent of the readers), and the declared frame
size of files whose pixels must never be decoded (a spy on the decoders).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from monai_lpuwf.data import UWFImageError, save_uwf_image
from monai_lpuwf.data.image_io import DEFAULT_MAX_PIXELS, read_uwf_array
from monai_lpuwf.transforms import LoadUWFImage

H, W = 64, 72


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, arr: np.ndarray, rows=None) -> Path:
    """A PNG written by hand (filter 0 on every row): ``arr`` (H, W[, C]) of uint8 or uint16, or ``rows``: an
    iterator of ``(height, width, one row as bytes)`` for frames too large to hold in memory."""
    if rows is None:
        colour = {1: 0, 2: 4, 3: 2, 4: 6}[1 if arr.ndim == 2 else arr.shape[-1]]
        height, width, depth = arr.shape[0], arr.shape[1], arr.dtype.itemsize * 8
        raw = b"".join(b"\0" + row.astype(f">u{arr.dtype.itemsize}").tobytes() for row in arr)
        data = zlib.compress(raw)
    else:
        height, width, row = rows
        colour, depth = 0, 8
        packer = zlib.compressobj(1)
        data = b"".join(packer.compress(b"\0" + row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def _smooth_rgb(seed: int = 0) -> np.ndarray:
    """A smooth colour picture (JPEG keeps it within a few grey levels)."""
    y, x = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    rng = np.random.default_rng(seed)
    channels = [np.sin(2 * np.pi * (f * x + g * y) + p) for f, g, p in rng.uniform(0.3, 1.2, (3, 3))]
    return np.round(np.stack(channels, -1) * 100 + 128).astype(np.uint8)


def test_cmyk_jpeg_is_read_as_the_rgb_picture(tmp_path):
    rgb = _smooth_rgb()
    path = tmp_path / "slo_cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=98)
    assert Image.open(path).mode == "CMYK"
    img = LoadUWFImage("slo")(path)
    assert tuple(img.shape) == (3, H, W) and img.meta["original_channels"] == 3
    levels = (img.numpy().transpose(1, 2, 0) + 1) / 2 * 255
    error = np.abs(levels - rgb)
    # JPEG at quality 98 on a smooth picture: about 1 grey level on average; the colours read as C, M, Y (the
    # inverted picture) would be off by 100 on average
    assert error.mean() < 2.0 and np.percentile(error, 99) < 8, (error.mean(), error.max())


def test_16_bit_colour_png_keeps_16_bits(tmp_path):
    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    rgba16 = np.dstack([rgb16, np.full((H, W), 65535, np.uint16)])
    for name, arr in {"rgb16.png": rgb16, "rgba16.png": rgba16}.items():
        path = write_png(tmp_path / name, arr)
        raw, _ = read_uwf_array(path)
        assert raw.dtype == np.uint16 and np.array_equal(raw, arr), name  # every bit, rows first
        img = LoadUWFImage("slo")(path)
        expected = rgb16.transpose(2, 0, 1).astype(np.float64) / 65535 * 2 - 1
        assert img.meta["bit_depth"] == 16 and img.meta["value_range"] == (0.0, 65535.0)
        # float32 resolution at 1: 6e-8; one 16-bit level is 3e-5 and one 8-bit level 8e-3
        assert np.abs(img.numpy() - expected).max() < 1e-6, name
    grey_alpha = np.dstack([rgb16[..., 1], np.full((H, W), 65535, np.uint16)])
    fa = LoadUWFImage("fa")(write_png(tmp_path / "la16.png", grey_alpha))
    assert np.abs(fa.numpy()[0] - (rgb16[..., 1] / 65535 * 2 - 1)).max() < 1e-6
    grey8 = LoadUWFImage("slo")(write_png(tmp_path / "rgb8.png", (rgb16 >> 8).astype(np.uint8)))
    assert grey8.meta["bit_depth"] == 8  # 8-bit colour stays on PIL


def _formats(tmp_path: Path) -> dict[str, Path]:
    rgb = _smooth_rgb()
    files = {}
    for ext in (".png", ".bmp", ".jpg", ".tif", ".nii.gz", ".dcm"):
        files[ext] = save_uwf_image(rgb.transpose(2, 0, 1) / 127.5 - 1, tmp_path / f"frame{ext}")
    return files


def test_frames_above_max_pixels_are_refused_by_name_before_decoding(tmp_path, monkeypatch):
    """Every format whose header gives the frame size: refused without decoding (the decoders are spied on)."""
    files = _formats(tmp_path)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self, *a: decoded.append("PIL"))
    monkeypatch.setattr(tifffile, "imread", lambda *a, **k: decoded.append("tifffile"))
    monkeypatch.setattr(nib.Nifti1Image, "get_fdata", lambda *a, **k: decoded.append("nibabel"))
    for path in files.values():
        with pytest.raises(UWFImageError) as info:
            LoadUWFImage("slo", max_pixels=H * W - 1)(path)
        message = str(info.value)
        assert message.startswith(f"{path}: frame of ") and f"= {H * W / 1e6:.1f} megapixels is above" in message
        assert f"--load_kwargs \"{{'max_pixels':{H * W}}}\"" in message, message
    assert decoded == []
    monkeypatch.undo()
    for ext, path in files.items():  # at the limit: read
        assert tuple(LoadUWFImage("slo", max_pixels=H * W)(path).shape) == (3, H, W), ext
        assert tuple(LoadUWFImage("slo", max_pixels=None)(path).shape) == (3, H, W), ext


def test_a_12000_x_12000_png_is_refused_without_decoding(tmp_path, monkeypatch):
    """2.7 MB on disk for 144 megapixels: before the cap it was decoded (the process grew by gigabytes)."""
    row = (np.arange(12000) % 251).astype(np.uint8).tobytes()
    path = write_png(tmp_path / "huge.png", None, rows=(12000, 12000, row))
    assert path.stat().st_size < 3_000_000
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self, *a: decoded.append(self.size))
    with pytest.raises(UWFImageError) as info:
        LoadUWFImage("fa")(path)
    assert str(info.value).startswith(
        f"{path}: frame of 12000 x 12000 pixels (W x H) = 144.0 megapixels is above the limit of "
        f"{DEFAULT_MAX_PIXELS / 1e6:g} megapixels"
    )
    assert decoded == []


def test_max_pixels_must_be_a_positive_count():
    for bad in (0, -5, True):
        with pytest.raises(ValueError, match="max_pixels must be a positive number"):
            LoadUWFImage("slo", max_pixels=bad)
