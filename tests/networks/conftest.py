"""Shared helpers for the network tests: tiny configurations and monai-generative (the test oracle)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

# tiny autoencoder with attention (the decoder's non-local block and one attention level)
TINY_AE = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 4,
    "num_res_blocks": 1,
    "norm_num_groups": 4,
    "attention_levels": (False, False, True),
}
TINY_AE_CHANNELS = (8, 8, 16)
# tiny U-Net / ControlNet with attention at the two deepest levels (the paper's layout)
TINY_UNET = {
    "spatial_dims": 2,
    "in_channels": 4,
    "num_res_blocks": 1,
    "norm_num_groups": 4,
    "attention_levels": (False, True, True),
    "num_head_channels": 4,
}
TINY_UNET_CHANNELS = (8, 16, 16)
TINY_COND_EMBED = (4, 8, 8)


@pytest.fixture(scope="session")
def tiny():
    """Tiny configurations with attention: ``tiny.AE`` + ``tiny.AE_CHANNELS``, ``tiny.UNET`` + ``tiny.UNET_CHANNELS``,
    ``tiny.COND_EMBED`` (the monai-generative classes name ``channels`` ``num_channels``)."""
    return SimpleNamespace(
        AE=TINY_AE,
        AE_CHANNELS=TINY_AE_CHANNELS,
        UNET=TINY_UNET,
        UNET_CHANNELS=TINY_UNET_CHANNELS,
        COND_EMBED=TINY_COND_EMBED,
    )


@pytest.fixture(scope="session")
def generative_nets():
    """monai-generative 0.2.3 network classes (skip where it is not installed)."""
    return pytest.importorskip("generative.networks.nets", reason="monai-generative 0.2.3 is the test oracle")


@pytest.fixture
def randomize():
    """``randomize(module, seed)``: overwrite every parameter with seeded N(0, 0.2) values (no zero-init left)."""

    def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        return module

    return _randomize
