"""UnsharpMask(d) against the unsharp-mask formula with an independently written Gaussian blur."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_lpuwf.transforms import UnsharpMask, UnsharpMaskd


def _oracle_blur(img: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian (radius = round(truncate * sigma)) with edge replication, by explicit 1D convolutions."""
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = []
    for ch in img.astype(np.float64):
        p = np.pad(ch, r, mode="edge")
        p = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, p)
        p = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, p)
        out.append(p)
    return np.stack(out)


@pytest.mark.parametrize("radius,amount", [(1.0, 0.5), (2.0, 1.0), (3.5, 2.0)])
def test_matches_the_formula(radius, amount):
    img = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 31, 40)).astype(np.float32)
    expected = np.clip(img + amount * (img - _oracle_blur(img, radius)), -1, 1)
    out = UnsharpMask(radius, amount)(img)
    assert isinstance(out, np.ndarray) and out.shape == img.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)
    raw = UnsharpMask(radius, amount, clip_range=None)(img)
    np.testing.assert_allclose(raw, img + amount * (img - _oracle_blur(img, radius)), atol=1e-5)


def test_threshold_identity_and_flat_image():
    img = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(UnsharpMask(amount=0.0)(img), img)
    detail = img - _oracle_blur(img, 2.0)
    thr = float(np.median(np.abs(detail)))
    expected = np.clip(img + np.where(np.abs(detail) > thr, detail, 0.0), -1, 1)
    np.testing.assert_allclose(UnsharpMask(2.0, 1.0, threshold=thr)(img), expected, atol=1e-5)
    flat = np.full((3, 9, 9), 0.3, np.float32)  # edge replication: no dark rim at the border
    np.testing.assert_allclose(UnsharpMask(2.0, 3.0)(flat), flat, atol=1e-6)
    with pytest.raises(ValueError, match="radius"):
        UnsharpMask(radius=0)


def test_types_and_dictionary_version():
    img = np.random.default_rng(2).uniform(-1, 1, (3, 16, 18)).astype(np.float32)
    meta_in = MetaTensor(torch.as_tensor(img), meta={"filename_or_obj": "1.bmp"})
    out = UnsharpMask()(meta_in)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.meta["filename_or_obj"] == "1.bmp"
    data = {"slo": meta_in, "early": torch.as_tensor(img[:1])}
    res = UnsharpMaskd("slo", radius=2.0, amount=1.0)(data)
    torch.testing.assert_close(res["slo"].as_tensor(), torch.as_tensor(UnsharpMask(2.0, 1.0)(img)))
    assert res["early"] is data["early"]  # other keys untouched
    assert UnsharpMaskd("slo", allow_missing_keys=True)({"early": data["early"]}).keys() == {"early"}


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_numpy_and_torch_inputs_give_the_same_values(device):
    """numpy in -> numpy out, tensor in -> tensor out on its device, with equal values (exactly on the CPU, where
    both run the same torch code; 1e-6 on CUDA); MetaTensor metadata kept."""
    img = np.random.default_rng(3).uniform(-1, 1, (3, 33, 47)).astype(np.float32)
    sharpen = UnsharpMask(radius=2.5, amount=1.5, threshold=0.01)
    from_numpy = sharpen(img)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float32
    tensor = torch.as_tensor(img, device=device)
    from_torch = sharpen(tensor)
    assert type(from_torch) is torch.Tensor and from_torch.device == tensor.device
    meta = sharpen(MetaTensor(tensor, meta={"filename_or_obj": "1.bmp"}))
    assert isinstance(meta, MetaTensor) and meta.meta["filename_or_obj"] == "1.bmp" and meta.device == tensor.device
    atol = 0.0 if device == "cpu" else 1e-6
    np.testing.assert_allclose(from_torch.cpu().numpy(), from_numpy, atol=atol, rtol=0)
    np.testing.assert_allclose(meta.cpu().numpy(), from_numpy, atol=atol, rtol=0)
    d = UnsharpMaskd("slo", radius=2.5, amount=1.5, threshold=0.01)({"slo": tensor})
    assert d["slo"].device == tensor.device
    np.testing.assert_allclose(d["slo"].cpu().numpy(), from_numpy, atol=atol, rtol=0)


def test_matches_the_previous_scipy_implementation():
    """The torch blur against :func:`scipy.ndimage.gaussian_filter` (``mode="nearest"``, what UnsharpMask used
    before): within 1e-6 on a frame in [-1, 1] (float32 sums in another order)."""
    from scipy import ndimage as ndi

    img = np.random.default_rng(4).uniform(-1, 1, (3, 64, 80)).astype(np.float32)
    blurred = ndi.gaussian_filter(img, sigma=(0, 2.0, 2.0), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(UnsharpMask(2.0, 1.0)(img), np.clip(2 * img - blurred, -1, 1), atol=1e-6, rtol=0)


def test_runs_in_torch_without_a_numpy_round_trip():
    """A tensor input is computed by torch on its device: gradients reach the input (a numpy or scipy step would
    cut the graph), and the gradient of a sum is the unsharp kernel's sum over the image."""
    img = torch.rand(1, 12, 14, dtype=torch.float32).mul(0.5).requires_grad_()
    UnsharpMask(1.5, 1.0, clip_range=None)(img).sum().backward()
    assert img.grad is not None
    torch.testing.assert_close(img.grad.sum(), torch.tensor(float(img.numel())))  # sum(img + a*(img - blur)) = sum
