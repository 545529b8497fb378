"""A tiny LPUWF model with non-zero ControlNet, SLO-encoder and U-Net output weights, so that the SLO and the noise
matter."""

from __future__ import annotations

import pytest
import torch

from monai_lpuwf.networks import build_model


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = build_model(
        "small",
        autoencoder={"channels": (8, 8, 16), "norm_num_groups": 4},
        unet={"channels": (8, 8, 16, 16), "norm_num_groups": 4, "num_head_channels": 8},
        controlnet={"conditioning_embedding_num_channels": (4, 8, 8)},
        scale_factor=0.5,
        schedule={"prediction_type": "epsilon"},  # every MONAI scheduler takes it (PNDM refuses "sample")
    ).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # the U-Net's output convolution too: with zero output, a model predicting the clean sample
        # (prediction_type="sample") would give the same image for every noise draw
        zero_init = [model.autoencoder.condition_encoder, model.controlnet, model.unet.out]
        for module in zero_init:
            for p in module.parameters():
                if float(p.abs().max()) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model
