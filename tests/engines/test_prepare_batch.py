"""LatentDiffusionPrepareBatch targets for each prediction type, against MONAI's own prepare-batch classes."""

from __future__ import annotations

import pytest
import torch
from monai.engines.utils import VPredictionPrepareBatch
from monai.networks.schedulers import DDPMScheduler

from monai_lpuwf.engines import LatentDiffusionPrepareBatch
from monai_lpuwf.metrics import ConditioningGapHandler


def _prepare(kind, scheduler):
    return LatentDiffusionPrepareBatch(
        num_train_timesteps=1000, encoder=lambda x: x[:, :1].repeat(1, 4, 1, 1)[..., ::4, ::4], prediction_type=kind,
        scheduler=scheduler,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_targets(kind, batches):
    scheduler = DDPMScheduler(1000, prediction_type=kind)
    torch.manual_seed(0)
    latents, target, _, kwargs = _prepare(kind, scheduler)(batches[0])
    expected = {
        "epsilon": kwargs["noise"],
        "v_prediction": VPredictionPrepareBatch(scheduler, 1000).get_target(
            latents, kwargs["noise"], kwargs["timesteps"]
        ),
        "sample": latents,
    }[kind]
    torch.testing.assert_close(target, expected)
    assert kwargs["condition"].shape == batches[0]["slo"].shape


def test_bad_prediction_type():
    with pytest.raises(ValueError, match="v_prediction"):
        _prepare("v_prediction", None)
    with pytest.raises(ValueError):
        _prepare("x0", DDPMScheduler(1000))


def test_conditioning_gap_handler_adds_metrics(model_factory, batches):
    from ignite.engine import Engine

    model = model_factory()
    with torch.no_grad():
        for p in model.unet.out.parameters():
            p.normal_(0, 0.5)
    handler = ConditioningGapHandler(model, [batches[0]], image_key="early", timesteps=(200, 600))
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=1)
    assert set(engine.state.metrics) == {"val_cond_gap_200", "val_cond_gap_600"}
    assert engine.state.metrics["val_cond_gap_200"] == pytest.approx(1.0, abs=1e-6)  # fresh zero-conv ControlNet


def _meta_batch(batch):
    from monai.data import MetaTensor

    return {k: MetaTensor(v, meta={"filename_or_obj": f"{k}.png"}) for k, v in batch.items()}


def test_training_steps_get_plain_tensors_generation_keeps_metadata(batches):
    """A MetaTensor costs its bookkeeping on every network operation: training steps take plain tensors; the
    evaluators' prepare batch keeps the metadata that the writer and Invertd read."""
    from monai.data import MetaTensor

    from monai_lpuwf.engines import AutoencoderPrepareBatch, KeyedPrepareBatch, get_batch_item

    batch = _meta_batch(batches[0])
    latents, target, _, kwargs = _prepare("epsilon", DDPMScheduler(1000))(batch)
    for value in (latents, target, kwargs["condition"]):
        assert type(value) is torch.Tensor
    fa, _, _, extra = AutoencoderPrepareBatch(image_keys="early", condition_key="slo")(batch)
    assert type(fa) is torch.Tensor and type(extra["cond"]) is torch.Tensor
    torch.testing.assert_close(fa, batches[0]["early"])  # same values, metadata dropped

    image, label, _, _ = KeyedPrepareBatch("slo", "late")(batch)
    assert isinstance(image, MetaTensor) and image.meta["filename_or_obj"] == "slo.png"
    assert isinstance(label, MetaTensor)
    image, label, _, _ = KeyedPrepareBatch("slo", "late", keep_meta=False)(batch)  # the prior's training step
    assert type(image) is torch.Tensor and type(label) is torch.Tensor
    assert isinstance(get_batch_item(batch, "slo", None, keep_meta=True), MetaTensor)
