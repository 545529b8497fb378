"""Fixtures for the engine tests: the small preset model and tiny in-memory triplet batches."""

from __future__ import annotations

import pytest
import torch

from monai_lpuwf.networks import build_model

IMAGE = 32  # divisible by the small preset's size divisor (32)


def make_batches(num: int = 3, batch: int = 2, size: int = IMAGE, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Random dictionary batches with the UWF keys: slo (B,3,H,W), early/late (B,1,H,W) in [-1,1], ctrd, fov."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        early = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
        late = (early + 0.3 * torch.rand(batch, 1, size, size, generator=g)).clamp(-1, 1)
        out.append(
            {
                "slo": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
                "early": early,
                "late": late,
                "ctrd": (early - late).abs(),
                "fov": torch.ones(batch, 1, size, size),
            }
        )
    return out


@pytest.fixture
def batches() -> list[dict[str, torch.Tensor]]:
    return make_batches()


@pytest.fixture
def model_factory():
    """Build the small preset with a fixed initialisation seed (two calls give identical models)."""

    def _build(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return build_model("small", **overrides)

    return _build
