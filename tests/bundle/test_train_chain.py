"""The four training configs, run in order through ``monai.bundle`` on tiny phantoms (``trained_bundle``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler

from monai_lpuwf.data import datalist_from_folder
from monai_lpuwf.inferers import LPUWFInferer
from monai_lpuwf.networks import PRESETS, ModelFile, build_model
from monai_lpuwf.transforms import uwf_train_transforms

STAGES = ("autoencoder", "condition_encoder", "diffusion", "late")
WEIGHTS = {
    "autoencoder": "model_autoencoder.pt",
    "condition_encoder": "model_condition_encoder.pt",
    "diffusion": "model_diffusion.pt",
    "late": "model.pt",
}
IMAGE_SIZE = (64, 64)  # the tiny runs' image_size
pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")
# sub-modules whose weights each stage may change (the rest must come through bit for bit)
TRAINED_PREFIXES = {
    "condition_encoder": ("autoencoder.condition_encoder.",),
    "diffusion": ("unet.", "controlnet.", "scale_factor"),
    "late": ("unet.", "controlnet."),
}


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _training_batch(root: Path) -> dict[str, torch.Tensor]:
    """The run's training phantoms, un-augmented, as one batch (slo, early, late, fov, ctrd)."""
    folder = next((root / "work" / "data").glob("phantoms_*"))
    items = datalist_from_folder(folder)
    transform = uwf_train_transforms(spatial_size=IMAGE_SIZE, augment=False)
    data = [transform(item) for item in items]
    return {k: torch.stack([torch.as_tensor(d[k]) for d in data]) for k in ("slo", "early", "late")}


def _weights(root: Path, stage: str) -> dict:
    return _load(root / "models" / WEIGHTS[stage])


def test_every_stage_writes_weights_and_resumable_state(trained_bundle, bundle):
    steps = bundle.TINY_RUN["max_epochs"] * bundle.ITERATIONS_PER_EPOCH
    for stage in STAGES:
        weights = _weights(trained_bundle, stage)
        assert set(weights) == {"model", "config", "data_stats", "training_scale", "stage", "sampling"}, stage
        assert weights["sampling"] == {}, stage  # none unless given (--sampling_recommendation)
        assert weights["stage"] == {"stage": stage}  # which stage wrote it: generation refuses all but "late"
        assert weights["training_scale"]["pixel_scale"] == [1.0, 1.0], stage  # native crops of the phantoms
        assert weights["config"]["autoencoder"]["channels"] == bundle.TINY_NETWORK["autoencoder"]["channels"]
        state = _load(trained_bundle / "models" / stage / "checkpoint_last.pt")
        expected = {"model", "config", "optimizer", "lr_scheduler", "trainer"}
        if stage in ("autoencoder", "condition_encoder"):
            expected |= {"discriminator", "d_optimizer"}
        assert expected <= set(state), stage  # (+ the best validation score, see test_train_resume.py)
        assert state["trainer"]["iteration"] == steps, stage
        assert all(torch.equal(state["model"][k], v) for k, v in weights["model"].items()), stage
        assert (trained_bundle / "models" / stage / "model_best.pt").is_file(), stage
        assert len(bundle.scalars(trained_bundle, stage, "loss")) == steps, stage  # one TensorBoard point per iteration
        assert bundle.scalars(trained_bundle, stage, "val_psnr"), stage


def test_model_files_store_the_training_mean_late_intensity(trained_bundle):
    """The constant-image baseline of an evaluation reads it from model.pt: the mean of the training split's late
    phases (whole frames in [-1, 1], as LoadUWFImage reads them), not of the held-out phantoms."""
    folder = next((trained_bundle / "work" / "data").glob("phantoms_*"))
    from monai_lpuwf.bundle_support import bundle_datalists
    from monai_lpuwf.transforms import LoadUWFImage

    lists = bundle_datalists(dataset_dir=folder)
    expected = np.mean([LoadUWFImage("fa")(item["late"]).numpy() for item in lists["training"]])
    other = np.mean([LoadUWFImage("fa")(item["late"]).numpy() for item in lists["validation"]])
    stats = _weights(trained_bundle, "late")["data_stats"]
    assert stats["num_images"] == len(lists["training"])
    assert stats["late_mean"] == pytest.approx(float(expected), rel=1e-6) and stats["late_mean"] != pytest.approx(
        float(other), rel=1e-6
    )
    assert ModelFile.load(trained_bundle / "models" / "model.pt").training_mean() == stats["late_mean"]


def test_each_stage_trains_only_its_modules(trained_bundle):
    for previous, stage in itertools.pairwise(STAGES):
        before, after = _weights(trained_bundle, previous)["model"], _weights(trained_bundle, stage)["model"]
        assert before.keys() == after.keys()
        changed = {k for k in after if not torch.equal(before[k], after[k])}
        allowed = TRAINED_PREFIXES[stage]
        assert not {k for k in changed if not k.startswith(allowed)}, f"{stage} changed frozen weights"
        for prefix in allowed:
            assert any(k.startswith(prefix) for k in changed), f"{stage} did not train {prefix}"


def test_scale_factor_is_computed_once_in_stage_3_and_carried_to_inference(trained_bundle):
    initial = PRESETS["small"]["scale_factor"]
    assert float(_weights(trained_bundle, "condition_encoder")["model"]["scale_factor"]) == initial
    stage3 = float(_weights(trained_bundle, "diffusion")["model"]["scale_factor"])
    assert stage3 != initial
    final = _weights(trained_bundle, "late")
    assert float(final["model"]["scale_factor"]) == stage3 and final["config"]["scale_factor"] == stage3
    # oracle: 1 / std of the stage-2 autoencoder's sampled latents of the (here un-augmented) training early phase
    model = ModelFile.load(trained_bundle / "models" / WEIGHTS["condition_encoder"]).build().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        z = model.autoencoder.encode_stage_2_inputs(_training_batch(trained_bundle)["early"])
    assert stage3 == pytest.approx(1.0 / z.std().item(), rel=0.25)


def test_model_pt_holds_everything_inference_needs(trained_bundle, bundle):
    path = trained_bundle / "models" / "model.pt"
    model = ModelFile.load(path).build().eval()
    saved = _weights(trained_bundle, "late")
    reference = build_model("small", **bundle.TINY_NETWORK)
    assert type(model) is type(reference)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert all(torch.equal(v, saved["model"][k]) for k, v in model.state_dict().items())
    slo = _training_batch(trained_bundle)["slo"][:1]
    with torch.no_grad():
        pred = LPUWFInferer(scheduler="ddim", num_inference_steps=2, seed=0)(slo, model)
    assert pred.shape == (1, 1, *IMAGE_SIZE) and torch.isfinite(pred).all()


def _reconstruction_loss(path: Path, batch: dict[str, torch.Tensor]) -> float:
    """Stage-2 objective on a fixed probe: MSE of the SLO-conditioned reconstruction from the latent means."""
    model = ModelFile.load(path).build().eval()
    with torch.no_grad():
        losses = []
        for key in ("early", "late"):
            z, _ = model.autoencoder.encode(batch[key])
            losses.append(F.mse_loss(model.autoencoder.decode(z, batch["slo"]), batch[key]).item())
    return sum(losses) / len(losses)


def _diffusion_loss(path: Path, batch: dict[str, torch.Tensor], key: str, scale: float) -> float:
    """The model's own objective (noise, velocity or clean latents, after its schedule's ``prediction_type``) as an
    MSE on a fixed probe: the FA latents noised with fixed noise at t = 50, 150, ..., 950."""
    model = ModelFile.load(path).build().eval()
    model.scale_factor.fill_(scale)  # the same latents before and after stage 3 (which computes the scale)
    scheduler = DDPMScheduler(**model.schedule)
    generator = torch.Generator().manual_seed(0)
    losses = []
    with torch.no_grad():
        z = model.encode_latents(batch[key], sample=False)
        for t in range(50, 1000, 100):
            noise = torch.randn(z.shape, generator=generator)
            timesteps = torch.full((z.shape[0],), t)
            pred = model(scheduler.add_noise(z, noise, timesteps), timesteps, batch["slo"])
            kind = model.schedule.get("prediction_type", "epsilon")
            target = {"epsilon": noise, "sample": z}.get(kind)
            target = scheduler.get_velocity(z, noise, timesteps) if target is None else target
            losses.append(F.mse_loss(pred, target).item())
    return sum(losses) / len(losses)


def test_losses_fall_on_a_fixed_seed(trained_bundle, bundle):
    """8 steps at lr 1e-3 on the tiny model: every stage's objective goes down."""
    rec = bundle.scalars(trained_bundle, "autoencoder", "loss_rec")  # stage 1: the logged L1, from its first step on
    assert sum(rec[-3:]) < 0.8 * sum(rec[:3]), rec
    batch = _training_batch(trained_bundle)
    models = {stage: trained_bundle / "models" / WEIGHTS[stage] for stage in STAGES}
    before, after = (_reconstruction_loss(models[s], batch) for s in ("autoencoder", "condition_encoder"))
    # measured after / before: 0.939 with resized crops, 0.951 with native crops (the default since issue 10)
    assert after < 0.97 * before, (before, after)
    scale = float(_load(models["diffusion"])["model"]["scale_factor"])
    for stage, previous, key in (("diffusion", "condition_encoder", "early"), ("late", "diffusion", "late")):
        before, after = (_diffusion_loss(models[s], batch, key, scale) for s in (previous, stage))
        assert after < 0.98 * before, (stage, before, after)


@pytest.mark.parametrize(
    "configs, key",
    [
        (("common.json",), "datalists"),
        (("inference.json",), "datalist_items"),
        (("inference.json", "evaluate.json"), "datalist_items"),
    ],
)
def test_seed_leaves_the_data_alone_and_data_seed_redraws_it(tmp_path, bundle, configs, key):
    """``--seed`` (training noise, sampling) does not re-draw the demo phantoms or the held-out split;
    ``--data_seed`` does, in the training, inference and evaluation configs alike."""
    from monai.bundle import ConfigParser

    def data(**overrides):
        parser = ConfigParser()
        parser.read_config([str(bundle.BUNDLE_DIR / "configs" / name) for name in configs])
        parser.update({"bundle_root": str(tmp_path), "num_phantoms": 4, "phantom_size": [64, 64], **overrides})
        items = parser.get_parsed_content(key)
        return items if isinstance(items, list) else items["training"] + items["validation"]

    def content(items):
        return [Path(item["late"]).read_bytes() for item in items]

    reference = data()
    assert data(seed=1) == reference
    redrawn = data(data_seed=1)
    assert {Path(item["slo"]).parent for item in redrawn}.isdisjoint({Path(item["slo"]).parent for item in reference})
    assert content(redrawn) != content(reference)


def test_command_line_logs_are_quiet_and_name_the_outputs(tmp_path, bundle):
    """``python -m monai.bundle run training`` of one tiny stage (4 epochs of 2 iterations, a checkpoint every
    iteration): one checkpoint line per epoch, no "resuming" on a fresh run, the config notice once at most, and a
    closing line naming the weights and the TensorBoard folder."""
    import subprocess

    root = bundle.new_bundle_root(tmp_path / "bundle")
    done = subprocess.run(
        bundle.cli_command(root, "autoencoder"), cwd=root, env=bundle.cli_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    epochs = bundle.TINY_RUN["max_epochs"]
    assert "Saved checkpoint at iteration" not in out
    saves = [line for line in out.splitlines() if "checkpoint saved at iteration" in line]
    assert len(saves) == epochs, saves
    assert "Engine run resuming from iteration 0" not in out
    assert out.count("parsing config_file") <= 1
    closing = [line for line in out.splitlines() if "autoencoder finished:" in line]
    assert len(closing) == 1, out[-3000:]
    assert str(root / "models" / "model_autoencoder.pt") in closing[0]
    assert f"TensorBoard logs: {root / 'eval' / 'autoencoder'}" in closing[0]
