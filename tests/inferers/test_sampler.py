from __future__ import annotations

import contextlib
import hashlib

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from monai.transforms import DivisiblePad

from monai_lpuwf.inferers import LPUWFSampler, build_scheduler
from monai_lpuwf.networks import build_model


def _slo(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _manual_ddim(model, slo, steps, seed):
    """Oracle: the generation loop written out with MONAI's DDIMScheduler (no clipping), SLO at full resolution
    for the ControlNet and through the gated encoder for the decoder; each image's noise from its own generator
    seeded with ``seed``."""
    sched = DDIMScheduler(**model.schedule, clip_sample=False)  # the model's training schedule (and prediction type)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    b, _, h, w = slo.shape
    x = torch.cat([torch.randn((1, 4, h // 4, w // 4), generator=torch.Generator().manual_seed(seed))] * b)
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


def test_native_uwf_frame_853_x_682():
    """A whole native frame: padded to 864 x 704 (divisor 32) with -1 by MONAI's DivisiblePad (as the inference
    transforms do: the sampler takes divisible frames only), generated, cropped back to 682 x 853 by its inverse."""
    torch.manual_seed(0)
    model = build_model(  # no non-local attention in the autoencoder: keeps this full-size test quick
        "small",
        autoencoder={
            "channels": (4, 4, 8),
            "norm_num_groups": 4,
            "with_encoder_nonlocal_attn": False,
            "with_decoder_nonlocal_attn": False,
        },
        unet={"channels": (8, 8, 8, 8), "norm_num_groups": 4, "num_head_channels": 8},
        controlnet={"conditioning_embedding_num_channels": (4, 4, 4)},
    ).eval()
    slo = _slo((1, 3, 682, 853), seed=5)
    pad = DivisiblePad(k=model.size_divisor, mode="constant", value=-1.0)
    padded = pad(MetaTensor(slo[0]))
    torch.testing.assert_close(padded.as_tensor(), F.pad(slo[0], (5, 6, 11, 11), value=-1.0))  # symmetric, -1
    sampler = LPUWFSampler("ddim", num_inference_steps=1, seed=2)
    pred = sampler(padded[None], model)["pred"]
    got = pad.inverse(MetaTensor(pred[0], applied_operations=padded.applied_operations))
    assert got.shape == (1, 682, 853) and torch.isfinite(got).all()
    torch.testing.assert_close(got.as_tensor(), pred[0, :, 11:693, 5:858])


def test_schedulers_and_clip_sample(tiny_model):
    assert build_scheduler("ddim", tiny_model.schedule).clip_sample is False
    assert build_scheduler("ddpm", tiny_model.schedule, clip_sample=True).clip_sample is True
    paper = build_scheduler("ddpm", tiny_model.schedule)
    torch.testing.assert_close(paper.betas, DDPMScheduler(num_train_timesteps=1000).betas)
    slo = _slo((1, 3, 32, 32))
    for name in ("pndm", "ddpm"):
        # MONAI's PNDM predicts epsilon or v only: force epsilon whatever the model's schedule says
        kwargs = {"scheduler_kwargs": {"prediction_type": "epsilon"}} if name == "pndm" else {}
        with pytest.warns(UserWarning, match="consecutive") if name == "ddpm" else contextlib.nullcontext():
            out = LPUWFSampler(name, num_inference_steps=3, **kwargs)(slo, tiny_model)
        assert out["pred"].shape == (1, 1, 32, 32) and torch.isfinite(out["pred"]).all()
    own = DDIMScheduler(**tiny_model.schedule, clip_sample=False)
    torch.testing.assert_close(
        LPUWFSampler(own, num_inference_steps=4, seed=3)(_slo((2, 3, 32, 32)), tiny_model)["pred"],
        _manual_ddim(tiny_model, _slo((2, 3, 32, 32)), 4, 3),
    )


def test_the_whole_schedule_reaches_the_scheduler():
    """Every key of the model's schedule is passed on (prediction_type included); one a scheduler cannot take is
    refused naming the scheduler and the type."""
    schedule = {"num_train_timesteps": 500, "schedule": "linear_beta", "prediction_type": "v_prediction"}
    for name in ("ddim", "ddpm", "pndm"):
        scheduler = build_scheduler(name, schedule)
        assert scheduler.num_train_timesteps == 500 and scheduler.prediction_type == "v_prediction"
    assert build_scheduler("ddim", {**schedule, "prediction_type": "sample"}).prediction_type == "sample"
    with pytest.raises(ValueError, match="'pndm' scheduler does not support prediction_type='sample'"):
        build_scheduler("pndm", {**schedule, "prediction_type": "sample"})


def test_errors(tiny_model):
    with pytest.raises(ValueError):
        LPUWFSampler("euler")
    with pytest.raises(ValueError):
        LPUWFSampler(num_samples=0)
    with pytest.raises(ValueError, match="SLO images"):
        LPUWFSampler(num_inference_steps=1)(torch.zeros(1, 1, 32, 32), tiny_model)
    with pytest.raises(ValueError, match="exceeds"):
        LPUWFSampler(num_inference_steps=2000)(torch.zeros(1, 3, 32, 32), tiny_model)


@pytest.mark.parametrize("scheduler, kwargs", [("ddim", {"eta": 0.5}), ("ddpm", {})])
def test_an_images_output_does_not_depend_on_its_batch(tiny_model, scheduler, kwargs):
    """Issue 11 (9): the same SLO alone, second in a batch of 3 with other SLOs, and in batches of 2 gives the same
    image (step noise included: DDIM with eta > 0, DDPM); before, the batch shared one generator."""
    a, b, c = _slo((1, 3, 32, 32), 1), _slo((1, 3, 32, 32), 2), _slo((1, 3, 32, 32), 3)
    sampler = LPUWFSampler(scheduler, num_inference_steps=3, num_samples=2, seed=4, **kwargs)
    with pytest.warns(UserWarning, match="consecutive") if scheduler == "ddpm" else contextlib.nullcontext():
        alone = [sampler(x, tiny_model)["pred"] for x in (a, b, c)]
        three = sampler(torch.cat([c, a, b]), tiny_model)["pred"]
        two = sampler(torch.cat([b, c]), tiny_model)["pred"]
    torch.testing.assert_close(three[1:2], alone[0])
    torch.testing.assert_close(three[2:3], alone[1])
    torch.testing.assert_close(three[0:1], alone[2])
    torch.testing.assert_close(two, torch.cat([alone[1], alone[2]]))


def test_item_identity_seeds(tiny_model):
    """With ids (LPUWFInferer(id_key="filename_or_obj"): the file names), identical SLOs get different noise,
    and an image's output still does not depend on its batch; item_seed is stable across processes."""
    from monai.data import MetaTensor

    from monai_lpuwf.inferers import LPUWFInferer, item_seed

    assert item_seed(3) == 3 and item_seed(3, "7.bmp") == item_seed(3, "7.bmp") != item_seed(4, "7.bmp")
    digest = hashlib.sha256(b"0/7.bmp").digest()  # not Python's per-process hash
    assert item_seed(0, "7.bmp") == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    a, b = _slo((1, 3, 32, 32), 1), _slo((1, 3, 32, 32), 2)
    batch = MetaTensor(torch.cat([a, a, b]), meta={"filename_or_obj": ["/x/1.png", "/y/2.png", "/x/3.png"]})
    batch.is_batch = True
    inferer = LPUWFInferer(scheduler="ddim", num_inference_steps=2, seed=1, id_key="filename_or_obj")
    out = inferer(batch, tiny_model)
    assert float((out[0] - out[1]).abs().max()) > 1e-3  # same SLO, other name: other noise
    single = MetaTensor(b, meta={"filename_or_obj": "/elsewhere/3.png"})
    torch.testing.assert_close(out[2:3].as_tensor(), inferer(single, tiny_model).as_tensor())
    plain = LPUWFInferer(scheduler="ddim", num_inference_steps=2, seed=1)(batch, tiny_model)
    torch.testing.assert_close(plain[0], plain[1])  # no identity: the seed alone
    with pytest.raises(ValueError, match="one id per image"):
        LPUWFSampler(num_inference_steps=1)(torch.cat([a, b]), tiny_model, ids=["1"])


def test_step_progress_counts_steps_and_tiles(tiny_model, monkeypatch):
    """Issue 12 (4): one bar over every denoising step (times denoising tiles) and decoded tile, with the step,
    sample and tile in its text (tqdm shows the rate and the ETA)."""
    import monai_lpuwf.inferers.sampler as sampler_module

    bars = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n, self.texts, self.closed = total, 0, [], False
            bars.append(self)

        def update(self, n):
            self.n += n

        def set_postfix_str(self, text, refresh=True):
            self.texts.append(text)

        def close(self):
            self.closed = True

    monkeypatch.setattr(sampler_module, "tqdm", Bar)
    slo = _slo((1, 3, 256, 192))
    LPUWFSampler(num_inference_steps=2, num_samples=2, progress=True, decode_tile=32, decode_overlap=8,
                 denoise_tile=32, denoise_overlap=8)(slo, tiny_model)  # fmt: skip
    (bar,) = bars
    assert bar.total == bar.n == 2 * (2 * 6 + 6) and bar.closed
    assert "sample 1/2 step 1/2 tile 1/6" in bar.texts and "sample 2/2 decoding tile 6/6" in bar.texts
    bars.clear()
    LPUWFSampler(num_inference_steps=3, progress=True)(_slo((1, 3, 32, 32)), tiny_model)
    assert bars[0].total == bars[0].n == 3 + 1 and bars[0].texts[-2] == "sample 1/1 step 3/3"
