"""A tiny LPUWF model with non-zero ControlNet, SLO-encoder and U-Net output weights, so that the SLO and the noise
matter."""

from __future__ import annotations

import pytest
import torch

from monai_lpuwf.networks.tiny import build_tiny_model


def make_tiny_model(noise_seed: int = 1, everything: bool = False) -> torch.nn.Module:
    """The shared tiny model (:func:`monai_lpuwf.networks.tiny.build_tiny_model`) with epsilon prediction (every
    MONAI scheduler takes it; PNDM refuses "sample").

    Args:
        noise_seed: seed of the random replacement weights.
        everything: every zero-initialised weight (the U-Net's residual blocks too), else only those that carry the
            SLO and the noise: the gated SLO encoder, the ControlNet and the U-Net's output convolution (with a zero
            output, a model predicting the clean sample would give the same image for every noise draw).
    """
    randomize = ("",) if everything else ("autoencoder.condition_encoder", "controlnet", "unet.out")
    return build_tiny_model(0, weight_seed=noise_seed, randomize=randomize, schedule={"prediction_type": "epsilon"})


@pytest.fixture(scope="module")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def random_model():
    """Every zero-initialised weight random (MONAI zero-initialises the U-Net's output convolution, which would make
    the denoiser's output 0 whatever the tiling)."""
    return make_tiny_model(noise_seed=5, everything=True)
