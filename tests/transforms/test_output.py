"""QuantizeIntensity(d) under MONAI conventions: numpy in -> numpy out, tensors stay on their device, MetaTensor
metadata (and the padding record Invertd needs) kept. Its values against the file writer:
tests/bundle/test_inference_io.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import DivisiblePad

from monai_lpuwf.transforms import QuantizeIntensity, QuantizeIntensityd

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("levels", [255, 65535, None])
def test_numpy_and_torch_inputs_give_the_same_values(device, levels):
    x = np.linspace(-1.2, 1.2, 3 * 7 * 9, dtype=np.float32).reshape(3, 7, 9)
    quantize = QuantizeIntensity(levels)
    from_numpy = quantize(x)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float32
    expected = np.clip(x, -1, 1) if levels is None else np.round((np.clip(x, -1, 1) + 1) / 2 * levels) / levels * 2 - 1
    np.testing.assert_allclose(from_numpy, expected, atol=1e-6, rtol=0)
    tensor = torch.as_tensor(x, device=device)
    from_torch = quantize(tensor)
    assert type(from_torch) is torch.Tensor and from_torch.device == tensor.device
    np.testing.assert_array_equal(from_torch.cpu().numpy(), from_numpy)  # the same torch code on both


def test_metatensor_metadata_and_padding_record_kept():
    padded = DivisiblePad(8)(MetaTensor(torch.rand(1, 5, 6) * 2 - 1, meta={"filename_or_obj": "1.bmp"}))
    out = QuantizeIntensityd("pred")({"pred": padded})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "1.bmp"
    assert len(out.applied_operations) == 1  # Invertd can still crop the padding away
    torch.testing.assert_close(out.as_tensor(), QuantizeIntensity()(padded.as_tensor()))
