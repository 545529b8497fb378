"""Issue 18: the supervised prior, the residual target, sampling from the (noised) prior and the prior's trainer."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from monai_lpuwf.engines import (
    KeyedPrepareBatch,
    ResidualDiffusionPrepareBatch,
    SupervisedTranslationTrainer,
    compute_residual_scale,
    warmup_cosine,
)
from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.networks import (
    ModelFile,
    ResidualDiffusionModel,
    SupervisedPrior,
    build_prior,
    build_residual_model,
    model_from_config,
)

TINY_PRIOR = {"features": (4, 4, 8, 8, 8, 4)}
TINY_DENOISER = {"channels": (8, 8), "attention_levels": (False, False), "norm_num_groups": 4}


def _tiny_residual(scale: float = 2.0) -> ResidualDiffusionModel:
    torch.manual_seed(0)
    model = build_residual_model(prior=TINY_PRIOR, denoiser=TINY_DENOISER, residual_scale=scale)
    for p in model.denoiser.out.parameters():  # MONAI zero-initialises it: give the untrained denoiser an output
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def _zero_output(model: ResidualDiffusionModel) -> None:
    """A denoiser that predicts a zero residual (its output convolution zeroed)."""
    for p in model.denoiser.out.parameters():
        torch.nn.init.zeros_(p)


def test_prior_rebuilds_from_its_config_and_keeps_the_size(tmp_path):
    prior = build_prior(**TINY_PRIOR).eval()
    assert isinstance(prior, SupervisedPrior) and prior.config["model_class"] == "prior"
    slo = torch.rand(2, 3, 32, 48) * 2 - 1
    assert prior(slo).shape == (2, 1, 32, 48)
    path = tmp_path / "model_prior.pt"
    torch.save({"model": prior.state_dict(), "config": prior.config}, path)
    again = ModelFile.load(path).build()  # the bundle's loader picks the class from the config
    assert isinstance(again, SupervisedPrior)
    torch.testing.assert_close(again.eval()(slo), prior(slo))


def test_residual_model_config_round_trip_and_divisor():
    model = _tiny_residual(scale=3.5)
    again = model_from_config(model.config)
    assert isinstance(again, ResidualDiffusionModel)
    assert again.config == model.config and float(again.residual_scale) == 3.5
    assert model.size_divisor == 16  # lcm of BasicUNet's 16 and the 2-level denoiser's 2


def test_residual_target_is_the_scaled_difference_to_the_prior():
    model = _tiny_residual(scale=2.0)
    slo, late = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    base, cond = model.condition(slo)
    with torch.no_grad():
        expected_base = model.prior(slo)
    torch.testing.assert_close(base, expected_base)
    torch.testing.assert_close(cond, torch.cat([slo, expected_base], 1))
    target = model.residual_target(late, base)
    torch.testing.assert_close(target, (late - expected_base) * 2.0)  # the definition
    torch.testing.assert_close(model.compose(base, target), late)  # compose undoes it


def test_prepare_batch_gives_the_residual_and_its_condition():
    model = _tiny_residual(scale=2.0)
    scheduler = DDPMScheduler(**model.schedule)
    batch = {"slo": torch.rand(2, 3, 32, 32) * 2 - 1, "late": torch.rand(2, 1, 32, 32) * 2 - 1}
    prep = ResidualDiffusionPrepareBatch(1000, model, prediction_type="sample", scheduler=scheduler)
    x0, target, args, kwargs = prep(batch)
    with torch.no_grad():
        base = model.prior(batch["slo"])
    torch.testing.assert_close(x0, (batch["late"] - base) * 2.0)
    torch.testing.assert_close(target, x0)  # "sample" prediction: the clean residual
    torch.testing.assert_close(kwargs["condition"], torch.cat([batch["slo"], base], 1))
    assert kwargs["timesteps"].shape == (2,) and kwargs["noise"].shape == x0.shape and args == ()


def _four_flips(prior, slo):
    """The oracle of flip averaging: the prior on the SLO and its three flips, each flipped back, averaged."""
    with torch.no_grad():
        flips = [(), (2,), (3,), (2, 3)]
        return sum(prior(slo.flip(d)).flip(d) if d else prior(slo) for d in flips) / 4


def test_prepare_batch_and_scale_take_the_flip_averaged_prior_when_asked():
    """Trained as it is sampled: with ``flip_average`` the residual, its condition and the scale are those of the
    prior averaged over the SLO's four flips (a prior that is not flip-equivariant gives a different residual)."""
    model = _tiny_residual(scale=2.0)
    scheduler = DDPMScheduler(**model.schedule)
    batch = {"slo": torch.rand(2, 3, 32, 32) * 2 - 1, "late": torch.rand(2, 1, 32, 32) * 2 - 1}
    base = _four_flips(model.prior, batch["slo"])
    assert (base - model.prior(batch["slo"]).detach()).abs().max() > 1e-4  # the flips change the prediction
    prep = ResidualDiffusionPrepareBatch(1000, model, prediction_type="sample", scheduler=scheduler, flip_average=True)
    x0, _, _, kwargs = prep(batch)
    torch.testing.assert_close(x0, (batch["late"] - base) * 2.0)
    torch.testing.assert_close(kwargs["condition"], torch.cat([batch["slo"], base], 1))
    expected = 1.0 / float((batch["late"] - base).double().std())
    assert compute_residual_scale(model, [batch], flip_average=True) == pytest.approx(expected, rel=1e-6)


def test_residual_scale_is_one_over_the_residual_std():
    model = _tiny_residual(scale=1.0)
    batches = [{"slo": torch.rand(2, 3, 32, 32) * 2 - 1, "late": torch.rand(2, 1, 32, 32)} for _ in range(3)]
    with torch.no_grad():
        residuals = torch.cat([b["late"] - model.prior(b["slo"]) for b in batches]).double()
    expected = 1.0 / float(residuals.std())
    assert compute_residual_scale(model, batches) == pytest.approx(expected, rel=1e-9)
    assert model.set_residual_scale(residuals) == pytest.approx(expected, rel=1e-9)


def test_t_start_zero_returns_the_prior_exactly():
    model = _tiny_residual()
    slo = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        prior = model.prior(slo).clamp(-1, 1)
    out = LPUWFSampler(num_inference_steps=4, num_samples=2, t_start=0)(slo, model)
    assert torch.equal(out["pred"], prior)
    assert torch.equal(out["pred_std"], torch.zeros_like(prior))


def test_a_zero_residual_denoiser_gives_the_prior_from_pure_or_noised_starts():
    """DDIM with a denoiser predicting a zero clean residual ends on residual 0 (alpha_prod at the end is 1):
    whatever the start, the output is the prior; with a trained denoiser it is prior + residual."""
    model = _tiny_residual()
    _zero_output(model)
    slo = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        prior = model.prior(slo).clamp(-1, 1)
    for t_start in (None, 500):
        out = LPUWFSampler(num_inference_steps=4, t_start=t_start)(slo, model)["pred"]
        torch.testing.assert_close(out, prior, atol=1e-6, rtol=0)


def test_residual_sampling_follows_seeds_and_steps_from_t_start():
    model = _tiny_residual()
    slo = torch.rand(2, 3, 32, 32) * 2 - 1
    a = LPUWFSampler(num_inference_steps=4, seed=0)(slo, model)["pred"]
    b = LPUWFSampler(num_inference_steps=4, seed=0)(slo, model)["pred"]
    c = LPUWFSampler(num_inference_steps=4, seed=1)(slo, model)["pred"]
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-4  # the draw depends on the seed
    one = LPUWFSampler(num_inference_steps=4, seed=0)(slo[:1], model)["pred"]
    torch.testing.assert_close(one, a[:1], atol=1e-5, rtol=0)  # an image's output does not depend on its batch
    sampler = LPUWFSampler(num_inference_steps=10, t_start=300)
    steps = sampler.residual_timesteps(sampler.make_scheduler(model))
    assert steps and max(steps) <= 300 and steps == sorted(steps, reverse=True)
    with pytest.raises(ValueError, match="t_start"):
        LPUWFSampler(t_start=-1)


def test_prior_method_is_one_forward_pass():
    prior = build_prior(**TINY_PRIOR).eval()
    slo = torch.rand(3, 3, 32, 32) * 2 - 1
    out = LPUWFSampler(num_samples=2)(slo, prior)
    with torch.no_grad():
        torch.testing.assert_close(out["pred"], prior(slo).clamp(-1, 1))
    assert float(out["pred_std"].abs().max()) == 0.0


def test_prior_trainer_fits_two_pairs():
    """SupervisedTranslationTrainer (the prior's stage) drives the L1 loss of two fixed pairs well down."""
    torch.manual_seed(0)
    prior = build_prior(**TINY_PRIOR)
    data = [{"slo": torch.rand(2, 3, 32, 32) * 2 - 1, "late": torch.rand(2, 1, 32, 32) * 2 - 1}]
    with torch.no_grad():
        before = float((prior(data[0]["slo"]) - data[0]["late"]).abs().mean())
    trainer = SupervisedTranslationTrainer(
        device="cpu", max_epochs=150, train_data_loader=data, network=prior,
        optimizer=torch.optim.Adam(prior.parameters(), lr=1e-2), loss_function=torch.nn.L1Loss(),
        prepare_batch=KeyedPrepareBatch("slo", "late"),
    )  # fmt: skip
    trainer.run()
    prior.eval()
    with torch.no_grad():
        after = float((prior(data[0]["slo"]) - data[0]["late"]).abs().mean())
    assert after < 0.5 * before, (before, after)


def test_warmup_cosine_factor():
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(0.0)).item()))
    assert f(9) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 9 / 110)).item()))
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(0)(1000) == 1.0  # no total: warm-up only


class _PointwiseDenoiser(torch.nn.Module):
    """A stand-in with a pixel-wise denoiser (no receptive field beyond the pixel): windows cannot change it."""

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        assert timesteps.shape == (x_t.shape[0],) and condition.shape[1] == 4 and x_t.shape[1] == 1
        return 0.5 * x_t + 0.1 * condition[:, 3:] - 0.01 * timesteps.float().view(-1, 1, 1, 1)


def test_frames_larger_than_a_tile_are_denoised_in_windows_equal_to_one_pass():
    """Frames above ``denoise_tile`` pixels run the residual denoiser in Gaussian-blended windows (the U-Net's
    middle-block attention is quadratic in a whole frame's pixels); oracle: for a pixel-wise denoiser the windows
    give exactly the one-pass output, so channels, timesteps and blending are wired right."""
    x, cond = torch.randn(2, 1, 70, 90), torch.randn(2, 4, 70, 90)
    model = _PointwiseDenoiser()
    whole = LPUWFSampler(denoise_tile=None)._denoise_pixels(model, x, 7, cond)
    windows = LPUWFSampler(denoise_tile=32, denoise_overlap=8)._denoise_pixels(model, x, 7, cond)
    torch.testing.assert_close(windows, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, model.denoise(x, torch.full((2,), 7), cond))


def test_windowed_residual_sampling_of_a_zero_residual_gives_the_prior():
    model = _tiny_residual()
    _zero_output(model)
    slo = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        prior = model.prior(slo).clamp(-1, 1)
    sampler = LPUWFSampler(num_inference_steps=3, t_start=None, denoise_tile=32, denoise_overlap=8)
    torch.testing.assert_close(sampler(slo, model)["pred"], prior, rtol=0, atol=1e-5)


def test_flip_averaging_is_the_mean_over_the_four_flips_and_flip_equivariant():
    """Oracle: the four flipped predictions written out; property: the flip-averaged prior of a flipped SLO is the
    flipped prediction (exactly equivariant, which a single pass of the trained U-Net is not)."""
    torch.manual_seed(0)
    prior = build_prior(**TINY_PRIOR).eval()
    slo = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        oracle = (prior(slo) + prior(slo.flip(-1)).flip(-1) + prior(slo.flip(-2)).flip(-2)
                  + prior(slo.flip(-2, -1)).flip(-2, -1)) / 4  # fmt: skip
        averaged = prior.predict(slo, flip_average=True)
        torch.testing.assert_close(averaged, oracle)
        torch.testing.assert_close(prior.predict(slo.flip(-1), flip_average=True), averaged.flip(-1))
        assert (prior(slo.flip(-1)) - prior(slo).flip(-1)).abs().max() > 1e-3  # one pass is not equivariant
        torch.testing.assert_close(prior.predict(slo), prior(slo))
        out = LPUWFSampler(num_inference_steps=1, flip_average=True)(slo, prior)["pred"]
        torch.testing.assert_close(out, averaged.clamp(-1, 1))
        model = _tiny_residual()
        base, cond = model.condition(slo, flip_average=True)
        torch.testing.assert_close(base, model.prior.predict(slo, flip_average=True))
        torch.testing.assert_close(cond[:, 3:], base)
        _zero_output(model)  # a zero residual: the residual method gives the flip-averaged prior back
        out = LPUWFSampler(num_inference_steps=3, flip_average=True)(slo, model)["pred"]
        torch.testing.assert_close(out, base.clamp(-1, 1), atol=1e-5, rtol=0)
