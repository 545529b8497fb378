from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor, decollate_batch, list_data_collate
from monai.inferers import Inferer
from monai.transforms import Compose, DivisiblePadd, Invertd

from monai_lpuwf.inferers import LPUWFInferer, LPUWFSampler


def test_inferer_returns_the_sampler_prediction(tiny_model):
    slo = torch.rand(2, 3, 32, 32) * 2 - 1
    inferer = LPUWFInferer(num_inference_steps=2, seed=4)
    assert isinstance(inferer, Inferer)
    expected = LPUWFSampler(num_inference_steps=2, seed=4)(slo, tiny_model)["pred"]
    torch.testing.assert_close(inferer(slo, tiny_model), expected)


def test_with_std(tiny_model):
    slo = torch.rand(1, 3, 32, 32) * 2 - 1
    sampler = LPUWFSampler(num_inference_steps=1, num_samples=2)
    out = LPUWFInferer(sampler, with_std=True)(slo, tiny_model)
    ref = sampler(slo, tiny_model)
    torch.testing.assert_close(out, torch.cat([ref["pred"], ref["pred_std"]], dim=1))
    with pytest.raises(ValueError, match="num_samples"):
        LPUWFInferer(with_std=True)
    with pytest.raises(ValueError, match="not both"):
        LPUWFInferer(sampler, seed=1)


def test_metadata_kept_for_invertd(tiny_model):
    """Bundle-style inference: pad a 30 x 27 SLO with DivisiblePadd, generate, Invertd crops the prediction back."""
    pad = Compose([DivisiblePadd(keys="slo", k=32, value=-1.0)])
    items = [
        pad({"slo": MetaTensor(torch.rand(3, 30, 27) * 2 - 1, meta={"filename_or_obj": f"{i}.bmp"})}) for i in range(2)
    ]
    batch = list_data_collate(items)
    pred = LPUWFInferer(num_inference_steps=1)(batch["slo"], tiny_model)
    assert isinstance(pred, MetaTensor) and pred.shape == (2, 1, 32, 32)
    batch["pred"] = pred
    inverted = [Invertd(keys="pred", transform=pad, orig_keys="slo")(d) for d in decollate_batch(batch)]
    assert all(d["pred"].shape == (1, 30, 27) for d in inverted)
    assert inverted[1]["pred"].meta["filename_or_obj"] == "1.bmp"
