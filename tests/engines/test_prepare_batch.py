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
