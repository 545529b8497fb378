from __future__ import annotations

import pytest
import torch
from monai.networks.nets import AutoencoderKL

from monai_lpuwf.networks import ConditionalAutoencoderKL, load_monai_generative_state_dict


def _pair(tiny, randomize, **kw):
    ours = randomize(ConditionalAutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE, **kw), seed=3)
    plain = AutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE, **kw)
    return ours, plain


@pytest.mark.parametrize("include_fc", [True, False])
def test_without_condition_is_autoencoderkl(tiny, randomize, include_fc):
    ours, plain = _pair(tiny, randomize, include_fc=include_fc)
    shared = {k: v for k, v in ours.state_dict().items() if not k.startswith("condition_encoder.")}
    assert set(shared) == set(plain.state_dict())
    plain.load_state_dict(shared)
    x = torch.randn(2, 1, 16, 16)
    z = torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(ours.decode(z), plain.decode(z))
    torch.testing.assert_close(ours.reconstruct(x), plain.reconstruct(x))
    torch.testing.assert_close(ours.encode_stage_2_inputs(x).shape, plain.encode_stage_2_inputs(x).shape)


def test_untrained_condition_changes_nothing(tiny, randomize):
    ae = ConditionalAutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE)
    randomize(ae, seed=0)
    for p in ae.condition_encoder.parameters():
        torch.nn.init.zeros_(p)
    z, slo = torch.randn(1, 4, 4, 4), torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(ae.decode(z, cond=slo), ae.decode(z))


def _authors_conditional_decode(gen_ae, z, features_by_shape):
    """Oracle: the authors' conditional decoder on monai-generative's AutoencoderKL: after the first residual
    block of every decoder level (the first after the middle block, then the first after each upsampling),
    add the condition feature map whose shape matches (their dict keyed by ``str(tuple(shape))``)."""
    from generative.networks.nets.autoencoderkl import ResBlock, Upsample

    h = gen_ae.post_quant_conv(z)
    blocks = gen_ae.decoder.blocks
    level_start = 4  # initial conv, res, attention, res
    expect_first = False
    for i, block in enumerate(blocks):
        h = block(h)
        if i == level_start - 1 or isinstance(block, Upsample):
            expect_first = True
        elif expect_first and isinstance(block, ResBlock):
            h = h + features_by_shape[str(tuple(h.shape))]
            expect_first = False
    return h


@pytest.mark.parametrize("layout", ["tiny", "deep"])
def test_conditional_decoder_matches_authors_rule(tiny, randomize, generative_nets, layout):
    """Feature placement and widths derive from the autoencoder's configuration (checked on two layouts)."""
    if layout == "tiny":
        channels, kw = tiny.AE_CHANNELS, dict(tiny.AE)
    else:
        channels = (4, 8, 8, 16)
        kw = {**tiny.AE, "num_res_blocks": 2, "attention_levels": (False, False, False, True)}
    ours = randomize(ConditionalAutoencoderKL(channels=channels, include_fc=False, **kw), seed=5)
    assert ours.condition_encoder.channels == channels
    gen = generative_nets.AutoencoderKL(num_channels=channels, **kw).eval()
    missing, unexpected = gen.load_state_dict(_to_generative_keys(ours), strict=False)
    assert not unexpected and all(".proj_attn." in k for k in missing)  # proj_attn: never applied by monai-generative
    latent = 16 // ours.downsample_factor
    z, slo = torch.randn(2, 4, latent, latent), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        feats = ours.encode_condition(slo)
        by_shape = {str(tuple(f.shape)): f for f in feats}
        expected = _authors_conditional_decode(gen, z, by_shape)
        got = ours.eval().decode(z, cond=slo)
        got_precomputed = ours.decode(z, cond=feats)
        unconditioned = ours.decode(z)
    assert float((got - expected).abs().max()) < 1e-5
    torch.testing.assert_close(got, got_precomputed)
    assert float((got - unconditioned).abs().max()) > 1e-3  # the condition really acts


def _to_generative_keys(ours):
    """Our weights (built with include_fc=False) under monai-generative names."""
    out = {}
    for k, v in ours.state_dict().items():
        if k.startswith("condition_encoder."):
            continue
        k = k.replace(".attn.to_", ".to_").replace("postconv", "conv", 1)
        out[k] = v
    return out


def test_loaded_authors_vae_and_encoder_give_same_output(tiny, randomize, generative_nets):
    """The authors save the conditional VAE with monai-generative AutoencoderKL keys: load and compare."""
    gen = randomize(generative_nets.AutoencoderKL(num_channels=tiny.AE_CHANNELS, **tiny.AE), seed=7).eval()
    ours = ConditionalAutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE).eval()
    load_monai_generative_state_dict(ours, gen.state_dict())
    enc = randomize(ours.condition_encoder, seed=8)
    z, slo = torch.randn(1, 4, 4, 4), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        feats = enc(slo)
        expected = _authors_conditional_decode(gen, z, {str(tuple(f.shape)): f for f in feats})
        got = ours.decode_stage_2_outputs(z, cond=slo)
    assert float((got - expected).abs().max()) < 1e-5


def test_forward_with_condition_and_gradients(tiny, randomize):
    ae = ConditionalAutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE)
    ae.requires_grad_(False)
    ae.condition_encoder.requires_grad_(True)
    recon, z_mu, z_sigma = ae(torch.randn(2, 1, 16, 16), cond=torch.randn(2, 3, 16, 16))
    assert recon.shape == (2, 1, 16, 16) and z_mu.shape == z_sigma.shape == (2, 4, 4, 4)
    recon.sum().backward()
    assert float(ae.condition_encoder.layers[0].weight.grad.abs().sum()) > 0


def test_3d():
    ae = ConditionalAutoencoderKL(
        spatial_dims=3, channels=(4, 8), attention_levels=(False, False), latent_channels=2, num_res_blocks=1,
        norm_num_groups=4, condition_in_channels=1,
    )
    recon, z_mu, _ = ae(torch.randn(1, 1, 8, 8, 8), cond=torch.randn(1, 1, 8, 8, 8))
    assert recon.shape == (1, 1, 8, 8, 8) and z_mu.shape == (1, 2, 4, 4, 4)


def test_errors(tiny):
    ae = ConditionalAutoencoderKL(channels=tiny.AE_CHANNELS, **tiny.AE)
    with pytest.raises(ValueError, match="spatial size of the decoded image"):
        ae.decode(torch.randn(1, 4, 4, 4), cond=torch.randn(1, 3, 32, 32))
    plain = ConditionalAutoencoderKL(channels=tiny.AE_CHANNELS, condition_in_channels=None, **tiny.AE)
    assert plain.condition_encoder is None
    with pytest.raises(ValueError, match="condition_in_channels=None"):
        plain.decode(torch.randn(1, 4, 4, 4), cond=torch.randn(1, 3, 16, 16))
