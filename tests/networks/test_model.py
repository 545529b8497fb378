from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet

from monai_lpuwf.networks import PRESETS, LPUWFModel, build_model


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_model("small").eval()


def test_small_preset_topology(small):
    assert small.downsample_factor == 4 and small.size_divisor == 32
    assert small.latent_channels == 4
    assert isinstance(small.unet, DiffusionModelUNet) and isinstance(small.controlnet, ControlNet)
    assert float(small.scale_factor) == 1.0


def test_paper_preset_values():
    p = PRESETS["paper"]
    assert p["autoencoder"]["channels"] == (128, 256, 512) and p["autoencoder"]["latent_channels"] == 4
    assert p["autoencoder"]["num_res_blocks"] == 2 and not any(p["autoencoder"]["attention_levels"])
    assert p["unet"]["channels"] == (128, 256, 512, 1024)
    assert p["unet"]["attention_levels"] == (False, False, True, True) and p["unet"]["num_res_blocks"] == 2
    assert p["controlnet"]["conditioning_embedding_num_channels"] == (32, 96, 256)
    assert p["scale_factor"] == 0.18215
    assert p["schedule"] == {
        "num_train_timesteps": 1000,
        "schedule": "linear_beta",
        "beta_start": 1e-4,
        "beta_end": 0.02,
    }


def test_paper_preset_is_the_authors_architecture(generative_nets):
    """Same parameter names (after renaming) and shapes as the authors' monai-generative networks (meta device)."""
    from monai_lpuwf.networks import convert_monai_generative_state_dict

    with torch.device("meta"):
        ours = build_model("paper")
        vae = generative_nets.AutoencoderKL(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            num_channels=(128, 256, 512),
            latent_channels=4,
            num_res_blocks=2,
            attention_levels=(False,) * 3,
        )
        unet = generative_nets.DiffusionModelUNet(
            num_res_blocks=2,
            spatial_dims=2,
            in_channels=4,
            out_channels=4,
            num_channels=(128, 256, 512, 1024),
            attention_levels=(False, False, True, True),
        )
        cn = generative_nets.ControlNet(
            spatial_dims=2,
            in_channels=4,
            num_res_blocks=2,
            num_channels=(128, 256, 512, 1024),
            attention_levels=(False, False, True, True),
            conditioning_embedding_in_channels=3,
            conditioning_embedding_num_channels=(32, 96, 256),
        )
    for old, new in [(vae, ours.autoencoder), (unet, ours.unet), (cn, ours.controlnet)]:
        converted = convert_monai_generative_state_dict(old.state_dict(), new, ("condition_encoder.",))
        target = {k: v for k, v in new.state_dict().items() if not k.startswith("condition_encoder.")}
        assert set(converted) == set(target)
        assert all(converted[k].shape == target[k].shape for k in target)


def test_config_rebuilds_same_model(small):
    small.scale_factor.fill_(0.5)
    try:
        clone = LPUWFModel.from_config(small.config).eval()
        clone.load_state_dict(small.state_dict())
        assert float(clone.scale_factor) == 0.5 and clone.config == small.config
        x, slo, t = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 32, 32), torch.tensor([7])
        with torch.no_grad():
            torch.testing.assert_close(clone.denoise(x, t, slo), small.denoise(x, t, slo))
    finally:
        small.scale_factor.fill_(1.0)


def test_state_dict_has_all_parts(small):
    prefixes = {k.split(".")[0] for k in small.state_dict()}
    assert prefixes == {"autoencoder", "unet", "controlnet", "scale_factor"}
    assert any(k.startswith("autoencoder.condition_encoder.") for k in small.state_dict())


def test_denoise_is_controlnet_on_full_res_slo_plus_unet(randomize):
    model = randomize(build_model("small"), seed=2).eval()  # ControlNet zero convolutions made non-zero
    x, slo, t = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 32, 32), torch.tensor([3, 900])
    with torch.no_grad():
        down, mid = model.controlnet(x=x, timesteps=t, controlnet_cond=slo)
        expected = model.unet(x=x, timesteps=t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
        got = model.denoise(x, t, slo)
        assert float((got - model.unet(x=x, timesteps=t)).abs().max()) > 1e-4  # the SLO steers the U-Net
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(model(x, t, slo), got)
    with pytest.raises(ValueError, match="full image size"):
        model.denoise(x, t, torch.randn(2, 3, 8, 8))


def test_latent_scaling(small):
    fa, slo = torch.randn(1, 1, 32, 32), torch.randn(1, 3, 32, 32)
    small.scale_factor.fill_(0.25)
    try:
        with torch.no_grad():
            z_mu, _ = small.autoencoder.encode(fa)
            torch.testing.assert_close(small.encode_latents(fa, sample=False), 0.25 * z_mu)
            torch.testing.assert_close(small.decode_latents(0.25 * z_mu, slo), small.autoencoder.decode(z_mu, cond=slo))
    finally:
        small.scale_factor.fill_(1.0)


def test_build_model_overrides():
    m = build_model("small", unet={"num_res_blocks": 2}, scale_factor=0.3)
    assert (
        m.config["unet"]["num_res_blocks"] == 2 and m.config["unet"]["channels"] == PRESETS["small"]["unet"]["channels"]
    )
    assert abs(float(m.scale_factor) - 0.3) < 1e-7
    with pytest.raises(ValueError):
        build_model("huge")
    with pytest.raises(ValueError, match="conditioning_embedding_num_channels"):
        build_model("small", controlnet={"conditioning_embedding_num_channels": (8, 16)})


def test_attention_kernel_default_is_not_part_of_the_config(randomize):
    """Attention uses scaled_dot_product_attention by default; outputs equal MONAI's explicit attention matrix."""
    from monai.networks.blocks.selfattention import SABlock

    fast = randomize(build_model("small"), seed=4).eval()
    explicit = build_model(
        "small", autoencoder={"use_flash_attention": False}, unet={"use_flash_attention": False}
    ).eval()
    explicit.load_state_dict(fast.state_dict())
    assert all(m.use_flash_attention for m in fast.modules() if isinstance(m, SABlock))
    assert not any(m.use_flash_attention for m in explicit.modules() if isinstance(m, SABlock))
    assert "use_flash_attention" not in fast.config["autoencoder"] and "use_flash_attention" not in fast.config["unet"]
    x, slo, t = torch.randn(1, 4, 8, 8), torch.rand(1, 3, 32, 32) * 2 - 1, torch.tensor([321])
    with torch.no_grad():
        torch.testing.assert_close(fast.denoise(x, t, slo), explicit.denoise(x, t, slo), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fast.decode_latents(x, slo), explicit.decode_latents(x, slo), atol=1e-5, rtol=1e-4)
