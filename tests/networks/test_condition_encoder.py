from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_lpuwf.networks import GatedConditionEncoder


def test_authors_layout_and_zero_init():
    enc = GatedConditionEncoder(2, 3, (128, 256, 512))
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert shapes == {
        "layers.0.weight": (128, 3, 3, 3),
        "layers.0.bias": (128,),
        "layers.1.weight": (256, 128, 4, 4),
        "layers.1.bias": (256,),
        "layers.2.weight": (512, 256, 4, 4),
        "layers.2.bias": (512,),
        "gated_cnns.0.weight": (128, 128, 3, 3),
        "gated_cnns.0.bias": (128,),
        "gated_cnns.1.weight": (256, 256, 3, 3),
        "gated_cnns.1.bias": (256,),
        "gated_cnns.2.weight": (512, 512, 3, 3),
        "gated_cnns.2.bias": (512,),
    }
    assert all(float(p.abs().max()) == 0.0 for p in enc.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes_and_untrained_output_is_zero(spatial_dims):
    enc = GatedConditionEncoder(spatial_dims, 3, (4, 8, 8))
    size = (16,) * spatial_dims
    feats = enc(torch.randn(2, 3, *size))
    assert [tuple(f.shape) for f in feats] == [
        (2, 4, *(16,) * spatial_dims),
        (2, 8, *(8,) * spatial_dims),
        (2, 8, *(4,) * spatial_dims),
    ]
    assert all(float(f.abs().max()) == 0.0 for f in feats)


def test_matches_direct_formula(randomize):
    enc = randomize(GatedConditionEncoder(2, 3, (4, 6, 8)), seed=1)
    x = torch.randn(2, 3, 16, 16)
    sd = enc.state_dict()
    expected, h = [], x
    for i, (stride, pad) in enumerate([(1, 1), (2, 1), (2, 1)]):
        h = F.conv2d(h, sd[f"layers.{i}.weight"], sd[f"layers.{i}.bias"], stride=stride, padding=pad)
        gate = torch.sigmoid(F.conv2d(h, sd[f"gated_cnns.{i}.weight"], sd[f"gated_cnns.{i}.bias"], padding=1))
        expected.append(h * gate)
        h = F.relu(h)
    for got, exp in zip(enc(x), expected):
        torch.testing.assert_close(got, exp)


def test_zero_init_still_learns():
    enc = GatedConditionEncoder(2, 3, (4, 8))
    sum(f.sum() for f in enc(torch.randn(1, 3, 8, 8))).backward()
    assert float(enc.layers[0].weight.grad.abs().sum()) > 0


def test_wrong_channels_error():
    with pytest.raises(ValueError, match="3 condition channels"):
        GatedConditionEncoder(2, 3, (4, 8))(torch.randn(1, 1, 8, 8))
