"""Padding belongs to the inference transforms: the sampler takes divisible inputs only.

``uwf_inference_transforms(divisor=model.size_divisor)`` pads the SLO (``DivisiblePadd``, value -1, symmetric) and
``Invertd`` crops the output back. The outputs for a frame whose size is not a multiple of the divisor are those
the sampler gave when it padded and cropped itself (``tests/inferers/data/padding_reference.pt``, computed with
that sampler through MONAI Label's former pre-transforms, ``uwf_inference_transforms(divisor=1)``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.transforms import Invertd

from monai_lpuwf.data import save_uwf_image
from monai_lpuwf.inferers import LPUWFInferer, LPUWFSampler
from monai_lpuwf.networks import build_model
from monai_lpuwf.transforms import uwf_inference_transforms

REFERENCE = Path(__file__).parent / "data" / "padding_reference.pt"
SIZE = (45, 70)  # (H, W); the model's divisor is 32: padded to (64, 96)
STEPS = 2
_TINY = {
    "autoencoder": {"channels": (8, 8, 16), "norm_num_groups": 4},
    "unet": {"channels": (8, 8, 16, 16), "norm_num_groups": 4, "num_head_channels": 8},
    "controlnet": {"conditioning_embedding_num_channels": (4, 8, 8)},
    "scale_factor": 0.5,
    "schedule": {"prediction_type": "epsilon"},
}


def reference_model() -> torch.nn.Module:
    """A tiny model of the reference (its own, so that changes of the shared test fixtures do not move it)."""
    torch.manual_seed(0)
    model = build_model("small", **_TINY).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (model.autoencoder.condition_encoder, model.controlnet, model.unet.out):
            for p in module.parameters():
                if float(p.abs().max()) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def slo_file(folder: Path) -> Path:
    """A seeded 16-bit RGB SLO of ``SIZE`` (not a multiple of 32 on either side)."""
    img = torch.rand((3, *SIZE), generator=torch.Generator().manual_seed(7)) * 2 - 1
    return save_uwf_image(img, folder / "slo.tif", bit_depth=16)


@pytest.fixture(scope="module")
def model():
    return reference_model()


def test_transforms_pad_and_invertd_crop_give_the_former_sampler_outputs(tmp_path, model):
    assert model.size_divisor == 32 and all(s % 32 for s in SIZE)
    pre = uwf_inference_transforms(divisor=model.size_divisor, sharpen=True)
    item = pre({"slo": str(slo_file(tmp_path))})
    assert tuple(item["slo"].shape[1:]) == (64, 96)
    inferer = LPUWFInferer(scheduler="ddim", num_inference_steps=STEPS, num_samples=2, seed=3, with_std=True)
    item["pred"] = inferer(item["slo"][None], model)[0]
    pred = Invertd(keys="pred", transform=pre, orig_keys="slo")(item)["pred"]
    expected = torch.load(REFERENCE)["pred"]
    assert tuple(pred.shape) == (2, *SIZE)
    torch.testing.assert_close(torch.as_tensor(pred), expected, rtol=0, atol=1e-5)


def test_an_input_not_divisible_is_refused_with_the_fix(model):
    slo = torch.zeros(1, 3, *SIZE)
    with pytest.raises(ValueError, match=r"45 x 70 .*size divisor 32.*uwf_inference_transforms\(divisor=32\).*Invertd"):
        LPUWFSampler(num_inference_steps=1)(slo, model)
