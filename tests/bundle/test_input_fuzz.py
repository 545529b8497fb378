"""Fuzz test of the input side: a corpus of broken and odd files, generated here, through the loader
(:class:`LoadUWFImage`, :class:`LoadUWFImaged`), the inference command's input check (:class:`InferenceInputs`)
and the inference command itself (``inference.json`` through ``monai.bundle``).

Every case must give either a named error (:class:`UWFImageError` / :class:`FileNotFoundError` whose message names
the file) or a valid image (``(C, H, W)``, finite, in ``[-1, 1]``); the command must finish its run, write one
output for each accepted file and nothing outside its output folder, and end with the list of the refused files.

The corpus (seeded, ~600 files): every base format (PNG 8/16-bit, RGBA, BMP, JPEG, TIFF 8/16-bit and float, NIfTI,
DICOM) truncated every few bytes, with random headers and garbage bodies, empty files, odd sizes (1 x 1, 1 x N,
N x 1, stacks, 2 and 5 channels, a 60000 x 60000 PNG header), odd dtypes (int8 with negatives, int16, uint32, int64,
float16, float64, bool, complex) and NaN / +-Inf values.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from monai_lpuwf.data import UWFImageError, save_uwf_image
from monai_lpuwf.generation import InferenceInputError, InferenceInputs
from monai_lpuwf.transforms import LoadUWFImage, LoadUWFImaged

pytestmark = pytest.mark.filterwarnings("ignore")  # readers warn about broken files: the outcome is what counts

H, W = 64, 72  # the smallest frames the inference command accepts are 64 pixels a side


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width x height`` RGB, with one tiny IDAT: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bases(rng: np.random.Generator) -> dict[str, bytes]:
    """One valid file per format (``name.ext`` -> bytes) of an H x W picture."""
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    grey = rgb[..., 1]
    files: dict[str, bytes] = {}

    def pil(name: str, arr: np.ndarray, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format=fmt, **kw)
        files[name] = buf.getvalue()

    def tif(name: str, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr)
        files[name] = buf.getvalue()

    pil("rgb.png", rgb, "PNG")
    pil("grey.png", grey, "PNG")
    pil("rgba.png", np.dstack([rgb, np.full((H, W), 255, np.uint8)]), "PNG")
    pil("grey16.png", grey.astype(np.uint16) * 257, "PNG")
    pil("rgb.bmp", rgb, "BMP")
    pil("rgb.jpg", rgb, "JPEG", quality=90)
    tif("rgb8.tif", rgb)
    tif("rgb16.tif", rgb.astype(np.uint16) * 257)
    tif("unit.tif", rgb.astype(np.float32) / 255)
    tif("unscaled.tif", rgb.astype(np.float32))
    unit = nib.Nifti1Image(np.swapaxes(rgb.astype(np.float32) / 255, 0, 1).copy(), np.eye(4))
    files["unit.nii.gz"] = gzip.compress(unit.to_bytes(), mtime=0)
    files["grey.nii"] = nib.Nifti1Image(grey.T.copy(), np.eye(4)).to_bytes()
    return files


def _cuts(size: int) -> list[int]:
    """Truncation points: every 8 bytes through the header, then 14 spread over the body."""
    head = list(range(0, min(size, 160), 8))
    body = np.linspace(160, size - 1, 14).astype(int).tolist() if size > 161 else []
    return sorted(set(head + body))


def build_corpus(folder: Path, seed: int = 0) -> list[Path]:
    """Write the corpus into ``folder``; returns the files (names ``NNNN_kind.ext``, unique ids)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    cases: list[tuple[str, bytes | None, np.ndarray | None]] = []  # (name, bytes) or (name.tif/.nii.gz, array)
    bases = _bases(rng)
    for name, data in bases.items():
        stem, ext = name.split(".", 1)
        cases.append((f"{stem}_valid.{ext}", data, None))
        cases += [(f"{stem}_cut{n}.{ext}", data[:n], None) for n in _cuts(len(data))]
        for k in (4, 16, 64):  # random header
            cases.append((f"{stem}_head{k}.{ext}", rng.bytes(k) + data[k:], None))
        body = data[:64] + rng.bytes(len(data) - 64)  # valid header, garbage body
        cases.append((f"{stem}_body.{ext}", body, None))
        flipped = bytearray(data)  # bit flips all over
        for i in rng.integers(0, len(data), 20):
            flipped[i] ^= 1 << int(rng.integers(0, 8))
        cases.append((f"{stem}_flip.{ext}", bytes(flipped), None))
    for ext in ("png", "bmp", "jpg", "tif", "nii", "nii.gz", "dcm"):
        cases.append((f"empty.{ext}", b"", None))
        cases.append((f"random.{ext}", rng.bytes(int(rng.integers(1, 4000))), None))
    cases.append(("bomb.png", _png_header_only(60000, 60000), None))
    # odd sizes and channel counts
    u8 = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    for shape in [(1, 1), (1, 1, 3), (1, W, 3), (H, 1, 3), (1, W), (H, 1), (2, 2, 3), (H, W, 2), (H, W, 4)]:
        cases.append((f"size{'x'.join(map(str, shape))}.png", None, u8(*shape)))
    for shape in [(H, W, 5), (5, H, W), (2, H, W, 3), (3, 4, 3), (H, W, 1)]:
        cases.append((f"size{'x'.join(map(str, shape))}.tif", None, u8(*shape)))
    # odd dtypes
    for dtype in (np.int8, np.int16, np.uint32, np.int64, np.float16, np.float64, np.bool_, np.complex64):
        arr = rng.standard_normal((H, W, 3)) * (100 if np.dtype(dtype).kind in "iu" else 0.3) + 0.5
        arr = arr.astype(np.float64) if np.dtype(dtype).kind != "c" else arr + 1j
        arr = np.abs(arr).astype(dtype) if np.dtype(dtype).kind == "u" else arr.astype(dtype)
        cases.append((f"dtype_{np.dtype(dtype).name}.tif", None, arr))
        if np.dtype(dtype).kind != "c" and dtype not in (np.bool_, np.float16, np.uint32):
            cases.append((f"dtype_{np.dtype(dtype).name}.nii.gz", None, arr))
    # non-finite values
    for bad in (np.nan, np.inf, -np.inf):
        arr = rng.random((H, W, 3)).astype(np.float32)
        arr[5:9, 7:20] = bad
        cases.append((f"nonfinite_{bad}.tif", None, arr))
        cases.append((f"nonfinite_{bad}.nii.gz", None, arr))
        cases.append((f"all_{bad}.tif", None, np.full((H, W), bad, np.float32)))
    files = []
    for i, (name, data, arr) in enumerate(cases):
        path = folder / f"{i:04d}_{name}"
        if data is not None:
            path.write_bytes(data)
        elif path.suffix == ".tif":
            tifffile.imwrite(path, arr)
        elif name.endswith(".nii.gz"):
            nib.save(nib.Nifti1Image(np.swapaxes(arr, 0, 1).copy(), np.eye(4), dtype=arr.dtype), path)
        else:
            Image.fromarray(arr).save(path)
        files.append(path)
    # a DICOM base (written by the project's own writer), truncated and with a random header
    dcm = save_uwf_image(rng.random((3, H, W)) * 2 - 1, folder / f"{len(files):04d}_rgb_valid.dcm")
    files.append(dcm)
    data = dcm.read_bytes()
    for n in _cuts(len(data))[::2] + [200, 400, len(data) // 2]:
        files.append(folder / f"{len(files):04d}_dcm_cut{n}.dcm")
        files[-1].write_bytes(data[:n])
    files.append(folder / f"{len(files):04d}_dcm_head.dcm")
    files[-1].write_bytes(rng.bytes(200) + data[200:])
    return files


def _outcome(call, path: Path) -> str:
    """``"ok"`` (a valid image), ``"named"`` (an error naming the file) or a description of what went wrong."""
    try:
        img = call(path)
    except (UWFImageError, FileNotFoundError) as err:
        return "named" if str(path) in str(err) else f"unnamed {type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - any other error is a finding
        return f"crash {type(err).__name__}: {str(err)[:200]}"
    img = img["slo"] if isinstance(img, dict) else img
    if img.ndim != 3 or img.shape[0] not in (1, 3) or min(img.shape[1:]) < 1:
        return f"bad shape {tuple(img.shape)}"
    if not torch.isfinite(img).all() or img.min() < -1 or img.max() > 1:
        return "values not finite or outside [-1, 1]"
    return "ok"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return build_corpus(tmp_path_factory.mktemp("fuzz") / "corpus")


def test_loader_gives_a_named_error_or_a_valid_image_for_every_broken_file(corpus, record_property):
    loaders = {
        "slo": LoadUWFImage("slo"),
        "fa": LoadUWFImage("fa"),
        "dict": lambda p: LoadUWFImaged(["slo"])({"slo": p}),
    }
    results = {(name, p.name): _outcome(load, p) for name, load in loaders.items() for p in corpus}
    findings = {case: result for case, result in results.items() if result not in ("ok", "named")}
    counts = {r: sum(v == r for v in results.values()) for r in ("ok", "named")}
    print(f"fuzz corpus: {len(corpus)} files, {len(results)} loader cases: {counts}")
    record_property("fuzz_loader_cases", len(results))
    assert not findings, findings
    assert len(corpus) > 500 and counts["ok"] > 30 and counts["named"] > 1000  # the corpus exercises both outcomes
    assert results[("slo", next(p.name for p in corpus if "rgb_valid.png" in p.name))] == "ok"


def _load_helpers():
    spec = importlib.util.spec_from_file_location("_helpers", Path(__file__).with_name("test_inference_helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inference_command_over_the_corpus_names_each_refused_file_and_writes_only_outputs(
    bundle, corpus, tmp_path, record_property
):
    """The input check sorts every file into a good item or a named failure; the command then generates for the
    good ones (no crash mid-run), writes nothing outside its output folder, and lists the refused files."""
    folder = corpus[0].parent
    before = {p: p.read_bytes() for p in folder.iterdir()}
    inputs = InferenceInputs([{"slo": str(p)} for p in corpus], min_size=64)
    good = [item["slo"] for item in inputs.items]
    assert len(good) + len(inputs.failures) == len(corpus)
    assert all(name in reason for name, reason in inputs.failures)
    out = tmp_path / "out"
    assert all(out in p.parents for p in inputs.check_outputs(out, ["late"], ".png"))

    h = _load_helpers()
    with h.one_thread():
        checkpoint = h.write_checkpoint(tmp_path / "model.pt")
        err = h.bundle_error(InferenceInputError, h.run_bundle, bundle, tmp_path, ("inference.json",), checkpoint,
                             input_dir=str(folder), output_dir=str(out), batch_size=8,
                             num_inference_steps=1)  # fmt: skip
    message = str(err)
    assert f"{len(inputs.failures)} of {len(corpus)} input item(s) could not be used" in message
    assert f"The other {len(good)} item(s) were generated" in message
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(g).name.split(".")[0] + "_late.png" for g in good)
    after = {p: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # the corpus folder is untouched: nothing written beside the inputs
    written = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents and folder not in p.parents]
    assert all((tmp_path / "bundle") in p.parents or p == checkpoint for p in written), written
    print(f"inference command over the corpus: {len(corpus)} files, {len(good)} generated, "
          f"{len(inputs.failures)} refused by name")  # fmt: skip
    record_property("fuzz_command_cases", len(corpus))
