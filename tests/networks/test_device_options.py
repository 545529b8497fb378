"""Accelerator compute options: GroupNorm in bfloat16 under autocast and channels-last weights keep the network."""

from __future__ import annotations

import torch
from torch import nn

from monai_lpuwf.networks import AutocastGroupNorm, build_model, optimize_for_device


def _norm_and_input(seed: int = 0) -> tuple[nn.GroupNorm, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    norm = nn.GroupNorm(8, 32)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(32, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(32, generator=g))
    # unnormalised activations: an offset and a scale far from 0 and 1, as in a network's residual stream
    return norm, 3.0 + 5.0 * torch.randn(2, 32, 12, 10, generator=g)


def test_autocast_group_norm_is_group_norm_outside_bfloat16_autocast():
    norm, x = _norm_and_input()
    expected = norm(x)
    optimize_for_device(norm, low_precision_norms=True)
    assert type(norm) is AutocastGroupNorm
    assert torch.equal(norm(x), expected)  # no autocast: the same kernel on the same float32 tensor


def test_autocast_group_norm_runs_in_bfloat16_within_its_rounding():
    norm, x = _norm_and_input(1)
    oracle = nn.functional.group_norm(x.double(), 8, norm.weight.double(), norm.bias.double(), norm.eps)
    optimize_for_device(norm, low_precision_norms=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    # statistics in float32 inside the kernel: the error is the bfloat16 rounding of the input and the output
    # (relative 2^-8 each), far below what float32-free statistics of an offset-3 input would give (~0.1)
    err = (out.double() - oracle).abs().max() / oracle.abs().max()
    assert 0 < float(err) < 2e-2


def test_optimize_for_device_keeps_state_dict_and_outputs():
    torch.manual_seed(0)
    model = build_model("small").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, t, slo = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = model(x, t, slo)
    optimize_for_device(model, channels_last=True, low_precision_norms=True)
    after_state = model.state_dict()
    assert list(after_state) == list(state) and all(torch.equal(after_state[k], v) for k, v in state.items())
    conv = model.unet.conv_in.conv
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert sum(type(m) is AutocastGroupNorm for m in model.modules()) > 0
    assert not any(type(m) is nn.GroupNorm for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, slo), before, atol=1e-5, rtol=1e-4)  # same function, other layout


def test_autocast_group_norm_keeps_float32_under_float16():
    norm, x = _norm_and_input(2)
    expected = norm(x)
    optimize_for_device(norm, low_precision_norms=True)
    with torch.autocast("cpu", dtype=torch.float16):
        out = norm(x)
    assert out.dtype == torch.float32 and torch.equal(out, expected)
