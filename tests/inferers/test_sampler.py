from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from monai_lpuwf.inferers import LPUWFSampler, build_scheduler
from monai_lpuwf.networks import build_model


def _slo(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _manual_ddim(model, slo, steps, seed):
    """Oracle: the generation loop written out with MONAI's DDIMScheduler (no clipping), SLO at full resolution
    for the ControlNet and through the gated encoder for the decoder."""
    sched = DDIMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02, clip_sample=False)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    b, _, h, w = slo.shape
    x = torch.randn((b, 4, h // 4, w // 4), generator=gen)
    with torch.no_grad():
        for t in sched.timesteps:
            tt = torch.full((b,), int(t), dtype=torch.long)
            down, mid = model.controlnet(x=x, timesteps=tt, controlnet_cond=slo)
            eps = model.unet(x=x, timesteps=tt, down_block_additional_residuals=down, mid_block_additional_residual=mid)
            x, _ = sched.step(eps, int(t), x, eta=0.0, generator=gen)
        z = x / model.scale_factor
        return model.autoencoder.decode(z, cond=slo).clamp(-1, 1)


def test_ddim_matches_manual_loop(tiny_model):
    slo = _slo((2, 3, 32, 32))
    out = LPUWFSampler("ddim", num_inference_steps=4, seed=3)(slo, tiny_model)
    assert out["pred_std"] is None and out["pred"].shape == (2, 1, 32, 32)
    torch.testing.assert_close(out["pred"], _manual_ddim(tiny_model, slo, 4, 3))


def test_generation_decodes_with_slo_features(tiny_model):
    slo = _slo((1, 3, 32, 32))
    sampler = LPUWFSampler("ddim", num_inference_steps=2, return_samples=True)
    with_features = sampler(slo, tiny_model)["pred"]
    encoder = tiny_model.autoencoder.condition_encoder
    tiny_model.autoencoder.condition_encoder = None
    try:
        without = sampler(slo, tiny_model)["pred"]
    finally:
        tiny_model.autoencoder.condition_encoder = encoder
    assert float((with_features - without).abs().max()) > 1e-4


def test_seeded_and_samples_are_independent_draws(tiny_model):
    slo = _slo((2, 3, 32, 32), seed=1)
    many = LPUWFSampler("ddim", num_inference_steps=2, num_samples=3, seed=10, return_samples=True)(slo, tiny_model)
    for k in range(3):
        single = LPUWFSampler("ddim", num_inference_steps=2, seed=10 + k)(slo, tiny_model)["pred"]
        torch.testing.assert_close(many["samples"][k], single)
    torch.testing.assert_close(many["pred"], many["samples"].mean(0))
    torch.testing.assert_close(many["pred_std"], many["samples"].std(0))
    assert float(many["pred_std"].mean()) > 0
    again = LPUWFSampler("ddim", num_inference_steps=2, num_samples=3, seed=10)(slo, tiny_model)
    torch.testing.assert_close(again["pred"], many["pred"])
    first = LPUWFSampler("ddim", num_inference_steps=2, num_samples=3, seed=10, aggregate="first")(slo, tiny_model)
    torch.testing.assert_close(first["pred"], many["samples"][0])


def test_any_size_is_padded_and_cropped(tiny_model):
    """A 37 x 50 SLO gives the same pixels as the same SLO padded by hand (with -1) to the model's divisor."""
    assert tiny_model.size_divisor == 32
    slo = _slo((1, 3, 37, 50), seed=2)
    sampler = LPUWFSampler("ddim", num_inference_steps=2)
    got = sampler(slo, tiny_model)["pred"]
    assert got.shape == (1, 1, 37, 50)
    padded = F.pad(slo, (7, 7, 13, 14), value=-1.0)  # 50 -> 64 (7, 7), 37 -> 64 (13, 14)
    expected = sampler(padded, tiny_model)["pred"][..., 13:50, 7:57]
    torch.testing.assert_close(got, expected)


def test_native_uwf_frame_853_x_682():
    """A whole native frame: padded to 864 x 704 (divisor 32) with -1, generated, cropped back to 682 x 853."""
    torch.manual_seed(0)
    model = build_model(  # no non-local attention in the autoencoder: keeps this full-size test quick
        "small",
        autoencoder={"channels": (4, 4, 8), "norm_num_groups": 4, "with_encoder_nonlocal_attn": False,
                     "with_decoder_nonlocal_attn": False},
        unet={"channels": (8, 8, 8, 8), "norm_num_groups": 4, "num_head_channels": 8},
        controlnet={"conditioning_embedding_num_channels": (4, 4, 4)},
    ).eval()
    slo = _slo((1, 3, 682, 853), seed=5)
    sampler = LPUWFSampler("ddim", num_inference_steps=1, seed=2)
    got = sampler(slo, model)["pred"]
    assert got.shape == (1, 1, 682, 853) and torch.isfinite(got).all()
    padded = F.pad(slo, (5, 6, 11, 11), value=-1.0)  # 853 -> 864 (5, 6), 682 -> 704 (11, 11)
    torch.testing.assert_close(got, sampler(padded, model)["pred"][..., 11:693, 5:858])


def test_schedulers_and_clip_sample(tiny_model):
    assert build_scheduler("ddim", tiny_model.schedule).clip_sample is False
    assert build_scheduler("ddpm", tiny_model.schedule, clip_sample=True).clip_sample is True
    paper = build_scheduler("ddpm", tiny_model.schedule)
    torch.testing.assert_close(paper.betas, DDPMScheduler(num_train_timesteps=1000).betas)
    slo = _slo((1, 3, 32, 32))
    for name in ("pndm", "ddpm"):
        with pytest.warns(UserWarning, match="consecutive") if name == "ddpm" else _no_warning():
            out = LPUWFSampler(name, num_inference_steps=3)(slo, tiny_model)
        assert out["pred"].shape == (1, 1, 32, 32) and torch.isfinite(out["pred"]).all()
    own = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    torch.testing.assert_close(
        LPUWFSampler(own, num_inference_steps=4, seed=3)(_slo((2, 3, 32, 32)), tiny_model)["pred"],
        _manual_ddim(tiny_model, _slo((2, 3, 32, 32)), 4, 3),
    )


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_errors(tiny_model):
    with pytest.raises(ValueError):
        LPUWFSampler("euler")
    with pytest.raises(ValueError):
        LPUWFSampler(num_samples=0)
    with pytest.raises(ValueError, match="SLO images"):
        LPUWFSampler(num_inference_steps=1)(torch.zeros(1, 1, 32, 32), tiny_model)
    with pytest.raises(ValueError, match="exceeds"):
        LPUWFSampler(num_inference_steps=2000)(torch.zeros(1, 3, 32, 32), tiny_model)
