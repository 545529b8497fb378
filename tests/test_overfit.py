"""The whole stack can memorise two triplets, and the generated late phase follows the SLO it is given.

Autoencoder (stage 1, L1) -> gated SLO encoder (stage 2) -> U-Net + ControlNet on the early phase with the
library's LatentDiffusionTrainer (stage 3) and on the late phase with the CTRD loss (stage 4) -> DDIM sampling
with LPUWFSampler. Two phantoms whose eyes differ (disc side, vessels, lesions). Each generated image must be
closer to its own real late phase than to the other one, and swapping the SLOs must swap the outputs: a broken
conditioning path (the ControlNet not reading the SLO, the SLO not reaching the sampler, a constant output)
fails it.
"""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.networks.schedulers import DDPMScheduler

from monai_lpuwf.data import render_phantom
from monai_lpuwf.engines import LatentDiffusionPrepareBatch, LatentDiffusionTrainer, set_trainable
from monai_lpuwf.engines.scale_factor import compute_scale_factor
from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.losses import CTRDLoss
from monai_lpuwf.networks import build_model

SIZE = 32


def _triplets() -> dict[str, torch.Tensor]:
    items = [render_phantom((SIZE, SIZE), seed=s, num_lesions=(2, 2)) for s in (3, 11)]
    # the second eye upside down and mirrored: disc, vessels and lesions all elsewhere
    items[1] = {k: v[..., ::-1, ::-1].copy() if k in ("slo", "early", "late") else v for k, v in items[1].items()}
    out = {k: torch.stack([torch.as_tensor(it[k]) * 2 - 1 for it in items]).float() for k in ("slo", "early", "late")}
    out["ctrd"] = (out["late"] - out["early"]).abs() / 2
    return out


def _train_autoencoder(model, batch, steps: int) -> None:
    ae = model.autoencoder
    set_trainable(model, ["autoencoder"], ["autoencoder.condition_encoder"])
    opt = torch.optim.Adam([p for p in ae.parameters() if p.requires_grad], lr=2e-3)
    fa = torch.cat([batch["early"], batch["late"]])
    for _ in range(steps):  # stage 1: L1 reconstruction (KL weight as the bundle's 1e-6 is negligible here)
        recon, _, _ = ae(fa)
        loss = (recon - fa).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    set_trainable(model, ["autoencoder.condition_encoder"], [])
    opt = torch.optim.Adam([p for p in ae.parameters() if p.requires_grad], lr=2e-3)
    slo = torch.cat([batch["slo"], batch["slo"]])
    for _ in range(steps // 3):  # stage 2: gated SLO features, FA autoencoder frozen
        recon, _, _ = ae(fa, cond=slo)
        loss = (recon - fa).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _train_diffusion(model, batch, key: str, steps: int, loss) -> None:
    scheduler = DDPMScheduler(**model.schedule)
    set_trainable(model, ["unet", "controlnet"], [])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    trainer = LatentDiffusionTrainer(
        device="cpu",
        max_epochs=1,
        epoch_length=steps,
        train_data_loader=[batch] * steps,
        network=model,
        optimizer=opt,
        loss_function=loss,
        scheduler=scheduler,
        prepare_batch=LatentDiffusionPrepareBatch(
            scheduler.num_train_timesteps, model.encode_latents, image_key=key,
            weight_key="ctrd" if key == "late" else None, prediction_type=model.schedule["prediction_type"],
            scheduler=scheduler,
        ),
    )  # fmt: skip
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    trainer.run()
    assert sum(losses[-20:]) < sum(losses[:20]), f"{key}: the diffusion loss did not fall"


@pytest.fixture(scope="module")
def memorised():
    torch.manual_seed(0)
    batch = _triplets()
    model = build_model("small", schedule={"prediction_type": "v_prediction"})
    _train_autoencoder(model, batch, 300)
    model.scale_factor.fill_(compute_scale_factor(model.autoencoder, [batch], "late"))
    _train_diffusion(model, batch, "early", 100, torch.nn.MSELoss())
    _train_diffusion(model, batch, "late", 300, CTRDLoss(alpha=0.25))
    return model, batch


def _mse(a, b):
    return float((a - b).pow(2).mean())


def test_generated_late_phase_follows_its_slo(memorised):
    model, batch = memorised
    sampler = LPUWFSampler("ddim", num_inference_steps=20, seed=0)
    pred = sampler(batch["slo"], model)["pred"]
    swapped = sampler(batch["slo"].flip(0), model)["pred"]
    late = batch["late"]
    for i, j in ((0, 1), (1, 0)):
        own, other = _mse(pred[i], late[i]), _mse(pred[i], late[j])
        assert own < 0.3 * other, f"output {i} is not closer to its own late phase ({own:.4f} vs {other:.4f})"
        # the SLO decides the picture: swapping the inputs swaps the outputs
        assert _mse(swapped[j], pred[i]) < 0.3 * _mse(swapped[j], pred[j])
    # and the picture is the late phase, not the early one (the leakage was learnt in stage 4)
    assert _mse(pred, late) < _mse(pred, batch["early"])


def test_sampling_seed_changes_little_once_memorised(memorised):
    model, batch = memorised
    a = LPUWFSampler("ddim", num_inference_steps=20, seed=0)(batch["slo"], model)["pred"]
    b = LPUWFSampler("ddim", num_inference_steps=20, seed=7)(batch["slo"], model)["pred"]
    assert _mse(a, b) < 0.25 * _mse(a, a.flip(0))
