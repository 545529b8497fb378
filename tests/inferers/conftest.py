"""A tiny LPUWF model with non-zero ControlNet, SLO-encoder and U-Net output weights, so that the SLO and the noise
matter."""

from __future__ import annotations

import pytest
import torch

from monai_lpuwf.networks import build_model


TINY = {
    "autoencoder": {"channels": (8, 8, 16), "norm_num_groups": 4},
    "unet": {"channels": (8, 8, 16, 16), "norm_num_groups": 4, "num_head_channels": 8},
    "controlnet": {"conditioning_embedding_num_channels": (4, 8, 8)},
    "scale_factor": 0.5,
    "schedule": {"prediction_type": "epsilon"},  # every MONAI scheduler takes it (PNDM refuses "sample")
}


def make_tiny_model(noise_seed: int = 1, everything: bool = False) -> torch.nn.Module:
    """The small preset's topology at tiny widths, with random instead of zero weights where MONAI zero-initialises.

    Args:
        noise_seed: seed of the random replacement weights.
        everything: every zero-initialised weight (the U-Net's residual blocks too), else only those that carry the
            SLO and the noise: the gated SLO encoder, the ControlNet and the U-Net's output convolution (with a zero
            output, a model predicting the clean sample would give the same image for every noise draw).
    """
    torch.manual_seed(0)
    model = build_model("small", **TINY).eval()
    g = torch.Generator().manual_seed(noise_seed)
    modules = [model] if everything else [model.autoencoder.condition_encoder, model.controlnet, model.unet.out]
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                if float(p.abs().max()) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def random_model():
    """Every zero-initialised weight random (MONAI zero-initialises the U-Net's output convolution, which would make
    the denoiser's output 0 whatever the tiling)."""
    return make_tiny_model(noise_seed=5, everything=True)
