"""monai-generative 0.2.3 checkpoints load into our MONAI-core networks with identical outputs."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import AutoencoderKL, ControlNet, DiffusionModelUNet
from torch import nn

from monai_lpuwf.networks import (
    ConditionalAutoencoderKL,
    GatedConditionEncoder,
    build_model,
    load_monai_generative_state_dict,
)

TOL = 1e-5


def _max_diff(a, b):
    if isinstance(a, (tuple, list)):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float((a - b).abs().max())


def _unet_inputs(batch=2, size=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 4, size, size, generator=g), torch.tensor([5, 700])[:batch]


@pytest.mark.parametrize("cls", [AutoencoderKL, ConditionalAutoencoderKL])
@pytest.mark.parametrize("include_fc", [True, False])
def test_autoencoder(tiny, randomize, generative_nets, cls, include_fc):
    gen = randomize(generative_nets.AutoencoderKL(num_channels=tiny.AE_CHANNELS, **tiny.AE), seed=1).eval()
    ours = cls(channels=tiny.AE_CHANNELS, include_fc=include_fc, **tiny.AE).eval()
    load_monai_generative_state_dict(ours, gen.state_dict())
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert _max_diff(ours.encode(x), gen.encode(x)) < TOL
        assert _max_diff(ours.reconstruct(x), gen.reconstruct(x)) < TOL


@pytest.mark.parametrize("include_fc", [True, False])
def test_unet(tiny, randomize, generative_nets, include_fc):
    gen = randomize(
        generative_nets.DiffusionModelUNet(num_channels=tiny.UNET_CHANNELS, out_channels=4, **tiny.UNET), seed=2
    ).eval()
    ours = DiffusionModelUNet(channels=tiny.UNET_CHANNELS, out_channels=4, include_fc=include_fc, **tiny.UNET).eval()
    load_monai_generative_state_dict(ours, gen.state_dict())
    x, t = _unet_inputs()
    with torch.no_grad():
        assert _max_diff(ours(x, t), gen(x, t)) < TOL


@pytest.mark.parametrize("include_fc", [True, False])
def test_controlnet(tiny, randomize, generative_nets, include_fc):
    kw = dict(conditioning_embedding_in_channels=3, conditioning_embedding_num_channels=tiny.COND_EMBED, **tiny.UNET)
    gen = randomize(generative_nets.ControlNet(num_channels=tiny.UNET_CHANNELS, **kw), seed=3).eval()
    ours = ControlNet(channels=tiny.UNET_CHANNELS, include_fc=include_fc, **kw).eval()
    load_monai_generative_state_dict(ours, gen.state_dict())
    x, t = _unet_inputs()
    cond = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        down_o, mid_o = ours(x, t, controlnet_cond=cond)
        down_g, mid_g = gen(x, t, controlnet_cond=cond)
    assert _max_diff(down_o, down_g) < TOL and _max_diff(mid_o, mid_g) < TOL


def test_monai_own_loader_is_not_enough(tiny, randomize, generative_nets):
    """Why this loader exists: MONAI's load_old_state_dict with include_fc=True gives different outputs."""
    gen = randomize(generative_nets.AutoencoderKL(num_channels=tiny.AE_CHANNELS, **tiny.AE), seed=1).eval()
    monai_ae = AutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE).eval()
    monai_ae.load_old_state_dict(dict(gen.state_dict()))
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert _max_diff(monai_ae.reconstruct(x), gen.reconstruct(x)) > 1e-3


@pytest.mark.parametrize("include_fc", [True, False])
def test_cross_attention_unet(tiny, randomize, generative_nets, include_fc):
    kw = dict(out_channels=4, with_conditioning=True, cross_attention_dim=8, **tiny.UNET)
    gen = randomize(generative_nets.DiffusionModelUNet(num_channels=tiny.UNET_CHANNELS, **kw), seed=4).eval()
    ours = DiffusionModelUNet(channels=tiny.UNET_CHANNELS, include_fc=include_fc, **kw).eval()
    if not include_fc:  # monai-generative applies the cross-attention output projections
        with pytest.raises(KeyError, match="include_fc=True"):
            load_monai_generative_state_dict(ours, gen.state_dict())
        return
    load_monai_generative_state_dict(ours, gen.state_dict())
    x, t = _unet_inputs()
    context = torch.randn(2, 3, 8)
    with torch.no_grad():
        assert _max_diff(ours(x, t, context=context), gen(x, t, context=context)) < TOL


class _AuthorsMaskConditionEncoder(nn.Module):
    """State-dict layout of the authors' MaskConditionEncoder(in_ch=3, out_ch=c0, res_ch=c2, stride=4):
    layers / gated_cnns / adjust_chs (the last never used in forward)."""

    def __init__(self, channels):
        super().__init__()
        c0, c1, c2 = channels
        self.layers = nn.Sequential(nn.Conv2d(3, c0, 3, 1, 1), nn.Conv2d(c0, c1, 4, 2, 1), nn.Conv2d(c1, c2, 4, 2, 1))
        self.adjust_chs = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Conv2d(c0, 1, 1), nn.Conv2d(c1, 1, 1))
        self.gated_cnns = nn.Sequential(*[nn.Conv2d(c, c, 3, 1, 1) for c in channels])

    def forward(self, x):
        out = {}
        for layer, gate in zip(self.layers, self.gated_cnns):
            x = layer(x)
            out[str(tuple(x.shape))] = x * torch.sigmoid(gate(x))
            x = torch.relu(x)
        return out


def test_authors_condition_encoder(tiny, randomize):
    authors = randomize(_AuthorsMaskConditionEncoder(tiny.AE_CHANNELS), seed=5)
    ours = load_monai_generative_state_dict(GatedConditionEncoder(2, 3, tiny.AE_CHANNELS), authors.state_dict())
    slo = torch.randn(1, 3, 16, 16)
    expected = authors(slo)
    for feat in ours(slo):
        torch.testing.assert_close(feat, expected[str(tuple(feat.shape))])


def test_lpuwf_model_from_files(tmp_path, tiny, randomize, generative_nets):
    """The authors' four files (vae.pth, encoder, model.pth, controlnet.pth) into one LPUWFModel."""
    ae = dict(tiny.AE)
    unet = {k: v for k, v in tiny.UNET.items() if k not in ("spatial_dims", "in_channels")}
    model = build_model(
        "small",
        autoencoder={
            **{k: v for k, v in ae.items() if k not in ("spatial_dims", "in_channels", "out_channels")},
            "channels": tiny.AE_CHANNELS,
            "include_fc": True,
        },
        unet={**unet, "channels": tiny.UNET_CHANNELS, "include_fc": True},
        controlnet={"conditioning_embedding_num_channels": tiny.COND_EMBED},
    ).eval()
    vae = randomize(generative_nets.AutoencoderKL(num_channels=tiny.AE_CHANNELS, **tiny.AE), seed=6).eval()
    g_unet = randomize(
        generative_nets.DiffusionModelUNet(num_channels=tiny.UNET_CHANNELS, out_channels=4, **tiny.UNET), seed=7
    ).eval()
    g_cn = randomize(
        generative_nets.ControlNet(
            num_channels=tiny.UNET_CHANNELS,
            conditioning_embedding_in_channels=3,
            conditioning_embedding_num_channels=tiny.COND_EMBED,
            **tiny.UNET,
        ),
        seed=8,
    ).eval()
    enc = randomize(_AuthorsMaskConditionEncoder(tiny.AE_CHANNELS), seed=9)
    paths = {}
    for name, net in [("autoencoder", vae), ("unet", g_unet), ("controlnet", g_cn), ("condition_encoder", enc)]:
        paths[name] = str(tmp_path / f"{name}.pth")
        torch.save(
            {f"module.{k}": v for k, v in net.state_dict().items()} if name == "unet" else net.state_dict(), paths[name]
        )
    load_monai_generative_state_dict(model, paths, scale_factor=0.18215)
    assert abs(float(model.scale_factor) - 0.18215) < 1e-7
    x, t = _unet_inputs(batch=1, size=4)
    slo = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        down, mid = g_cn(x, t, controlnet_cond=slo)
        expected = g_unet(x, t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        assert _max_diff(model.denoise(x, t, slo), expected) < TOL
        # decoder weights (the SLO-feature insertion is checked against the authors' rule in test_autoencoder)
        assert _max_diff(model.decode_latents(x * 0.18215, None), vae.decode_stage_2_outputs(x)) < TOL
        feats = enc(slo)
    for feat in model.autoencoder.encode_condition(slo):
        torch.testing.assert_close(feat, feats[str(tuple(feat.shape))])


def test_errors(tiny, tmp_path):
    ours = AutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_monai_generative_state_dict(ours, str(tmp_path / "missing.pth"))
    with pytest.raises(KeyError, match="does not match"):
        load_monai_generative_state_dict(ours, {"encoder.blocks.0.conv.weight": torch.zeros(1)})
    with pytest.raises(TypeError):
        load_monai_generative_state_dict(nn.Linear(2, 2), {})
    with pytest.raises(ValueError, match="autoencoder"):
        load_monai_generative_state_dict(build_model("small"), {"vae": {}})
