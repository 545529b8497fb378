"""Input-sensitivity and conditioning-gap diagnostics, against numpy / closed-form oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from monai_lpuwf.metrics import conditioning_gap, input_sensitivity, pairwise_correlation, predicted_clean_latents
from monai_lpuwf.networks import build_model


def test_pairwise_correlation_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 1, 8, 9, generator=g), torch.rand(4, 1, 8, 9, generator=g)
    full = np.corrcoef(np.concatenate([a.flatten(1).numpy(), b.flatten(1).numpy()]))
    np.testing.assert_allclose(pairwise_correlation(a, b).numpy(), full[:3, 3:], atol=1e-10)
    # a mask: the same as correlating the masked pixels only
    mask = torch.zeros(1, 1, 8, 9)
    mask[..., 2:6, 1:7] = 1
    sel = mask.flatten().bool()
    full = np.corrcoef(np.concatenate([a.flatten(1)[:, sel].numpy(), b.flatten(1)[:, sel].numpy()]))
    np.testing.assert_allclose(pairwise_correlation(a, b, mask).numpy(), full[:3, 3:], atol=1e-10)
    with pytest.raises(ValueError, match="shape"):
        pairwise_correlation(a, b[..., :8])


def test_input_sensitivity_separates_copying_from_averaging():
    g = torch.Generator().manual_seed(1)
    late = torch.rand(5, 1, 16, 16, generator=g)
    follows = late + 0.05 * torch.randn(late.shape, generator=g)  # follows its input
    same = late.mean(0, keepdim=True).expand_as(late) + 0.02 * torch.randn(late.shape, generator=g)  # one picture
    s_follow = input_sensitivity(follows, late, other_seed=follows + 0.05 * torch.randn(late.shape, generator=g))
    s_same = input_sensitivity(same, late)
    assert s_follow["cross_input_corr"] == pytest.approx(s_follow["real_cross_input_corr"], abs=0.1)
    assert s_follow["own_minus_other_corr"] > 0.5 and s_follow["same_input_seed_corr"] > 0.9
    assert s_same["cross_input_corr"] > 0.9 > s_same["real_cross_input_corr"] + 0.3
    assert abs(s_same["own_minus_other_corr"]) < 0.2
    assert "same_input_seed_corr" not in s_same
    with pytest.raises(ValueError, match="at least two"):
        input_sensitivity(late[:1], late[:1])


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_predicted_clean_latents_inverts_the_forward_process(kind):
    scheduler = DDPMScheduler(1000, prediction_type=kind)
    g = torch.Generator().manual_seed(2)
    z, noise = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    t = torch.tensor([10, 500, 990])
    x_t = scheduler.add_noise(z, noise, t)
    exact = {"epsilon": noise, "v_prediction": scheduler.get_velocity(z, noise, t), "sample": z}[kind]
    torch.testing.assert_close(predicted_clean_latents(exact, x_t, t, scheduler), z, atol=1e-4, rtol=1e-4)


def test_conditioning_gap_is_one_for_a_model_without_controlnet_signal():
    torch.manual_seed(0)
    model = build_model("small")
    with torch.no_grad():  # a U-Net with a non-zero output layer, a fresh ControlNet (zero convolutions)
        for p in model.unet.out.parameters():
            p.normal_(0, 0.5)
    slo = torch.stack([torch.full((3, 32, 32), -1.0), torch.rand(3, 32, 32) * 2 - 1])
    latents = torch.randn(2, 4, 8, 8)
    gap = conditioning_gap(model, latents, slo, timesteps=(100, 700))
    assert set(gap) == {"100", "700"}
    for values in gap.values():  # the zero-initialised ControlNet cannot pass the SLO on
        assert values["ratio"] == pytest.approx(1.0, abs=1e-6)
        assert values["true"] > 0
    # once the ControlNet's zero convolutions are non-zero, the SLO matters
    with torch.no_grad():
        cn = model.controlnet
        for block in (cn.controlnet_cond_embedding.conv_out, cn.controlnet_down_blocks, cn.controlnet_mid_block):
            for p in block.parameters():
                p.normal_(0, 0.5)
    gap = conditioning_gap(model, latents, slo, timesteps=(100,))
    assert abs(gap["100"]["ratio"] - 1.0) > 1e-3
    with pytest.raises(ValueError, match="at least two"):
        conditioning_gap(model, latents[:1], slo[:1])
