"""Scale factors computed from data: the latent scale factor (1 / std of the unscaled latents) at the start of
stage 3, and the residual scale of the residual method (1 / std of ``late - prior(slo)``).

The latent scale factor is computed once from data (1 / std of the unscaled latents) at the start of stage 3.

``num_batches=0`` (config key ``scale_factor_batches``) keeps the preset's value instead, as the authors do
(0.18215 of Stable Diffusion, ``config/diffusion/config_zheer_controlnet.py``; ``bundle/configs/recipes/paper.json``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_lpuwf.engines.prepare_batch import get_batch_item
from monai_lpuwf.keys import UWFKeys

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["compute_scale_factor", "ScaleFactorHandler", "compute_residual_scale", "ResidualScaleHandler"]


@torch.no_grad()
def compute_scale_factor(
    autoencoder: nn.Module,
    data_loader: Iterable,
    image_key: str = UWFKeys.EARLY,
    device: str | torch.device = "cpu",
    num_batches: int | None = None,
) -> float:
    """``1 / std`` of the autoencoder's (sampled, unscaled) latents over ``num_batches`` batches of ``data_loader``.

    The standard deviation is taken over every latent element of every batch (sums of x and x^2 in float64),
    and over every process when ``torch.distributed`` is initialised, so all ranks get the same value.

    Args:
        autoencoder: an AutoencoderKL with ``encode_stage_2_inputs(x)`` (``LPUWFModel.autoencoder``).
        data_loader: yields dictionary batches holding ``image_key``.
        image_key: FA key to encode.
        device: device for the encoder.
        num_batches: batches to use (``None`` = the whole loader).

    Returns:
        the scale factor, a Python float.
    """
    stats = torch.zeros(3, dtype=torch.float64, device=device)  # count, sum, sum of squares
    was_training = autoencoder.training
    autoencoder.eval()
    for i, batch in enumerate(data_loader):
        if num_batches is not None and i >= num_batches:
            break
        z = autoencoder.encode_stage_2_inputs(get_batch_item(batch, image_key, device)).double()
        stats += torch.stack([torch.tensor(z.numel(), dtype=torch.float64, device=device), z.sum(), z.pow(2).sum()])
    autoencoder.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    count, total, total_sq = stats.tolist()
    if count < 2:
        raise ValueError(f"cannot compute the latent scale factor: no batch with key {image_key!r} in the data loader.")
    var = (total_sq - total * total / count) / (count - 1)
    if var <= 0:
        raise ValueError(
            "cannot compute the latent scale factor: the latents are constant (is the autoencoder trained?)."
        )
    return float(var**-0.5)


class ScaleFactorHandler:
    """Compute the latent scale factor from data when a run starts fresh and store it in ``model.scale_factor``.

    On a resumed run (``engine.state.iteration > 0`` after :class:`monai.handlers.CheckpointLoader`) nothing is
    computed: the saved ``scale_factor`` buffer comes back with the model weights. Attach it in stage 3 only;
    stage 4 and inference use the value stored in the checkpoint.

    ``num_batches=0`` computes nothing: the model keeps the preset's ``scale_factor`` (the paper's fixed 0.18215;
    later stages then need ``require_scale_factor=False``, as ``bundle/configs/recipes/paper.json`` sets).

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel` (it has a ``scale_factor`` buffer and ``.autoencoder``).
        data_loader: training loader (dictionary batches).
        image_key: FA key encoded (``"early"`` in stage 3).
        num_batches: batches used (``None`` = all; ``0`` = keep the preset's value).
    """

    def __init__(
        self, model: nn.Module, data_loader: Iterable, image_key: str = UWFKeys.EARLY, num_batches: int | None = 8
    ):
        self.model = model
        self.data_loader = data_loader
        self.image_key = image_key
        self.num_batches = num_batches

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        if self.num_batches == 0:
            engine.logger.info(f"latent scale factor kept at the preset's {float(self.model.scale_factor):.6g}")
            return
        if engine.state.iteration > 0:
            engine.logger.info(
                f"resumed run: keeping the saved latent scale factor {float(self.model.scale_factor):.6g}"
            )
            return
        value = compute_scale_factor(
            self.model.autoencoder, self.data_loader, self.image_key, engine.state.device, self.num_batches
        )
        self.model.scale_factor.fill_(value)
        engine.logger.info(f"latent scale factor computed from the data: {value:.6g}")


@torch.no_grad()
def compute_residual_scale(
    model: nn.Module,
    data_loader: Iterable,
    image_key: str = UWFKeys.LATE,
    condition_key: str = UWFKeys.SLO,
    device: str | torch.device = "cpu",
    num_batches: int | None = None,
    flip_average: bool = False,
) -> float:
    """``1 / std`` of the residuals ``late - prior(slo)`` of a :class:`~monai_lpuwf.networks.ResidualDiffusionModel`
    over ``num_batches`` batches (every pixel; float64 sums; all-reduced under ``torch.distributed``);
    ``flip_average``: of the prior's flip-averaged prediction, the base the model is trained and sampled with.

    Raises:
        ValueError: no batch, or constant residuals.
    """
    model = getattr(model, "module", model)
    stats = torch.zeros(3, dtype=torch.float64, device=device)
    for i, batch in enumerate(data_loader):
        if num_batches is not None and i >= num_batches:
            break
        late = get_batch_item(batch, image_key, device)
        base, _ = model.condition(get_batch_item(batch, condition_key, device), flip_average=flip_average)
        r = (late - base).double()
        stats += torch.stack([torch.tensor(r.numel(), dtype=torch.float64, device=device), r.sum(), r.pow(2).sum()])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    count, total, total_sq = stats.tolist()
    if count < 2:
        raise ValueError(f"cannot compute the residual scale: no batch with keys {image_key!r}, {condition_key!r}.")
    var = (total_sq - total * total / count) / (count - 1)
    if var <= 0:
        raise ValueError("cannot compute the residual scale: the residuals late - prior(slo) are constant.")
    return float(var**-0.5)


class ResidualScaleHandler:
    """Set ``model.residual_scale`` from data when a residual-diffusion run starts fresh (kept on a resume).

    Args:
        model: the :class:`~monai_lpuwf.networks.ResidualDiffusionModel` (its prior already trained and loaded).
        data_loader: training loader (dictionary batches with the late phase and the SLO).
        num_batches: batches used (``None`` = all; ``0`` = keep the configured value).
        flip_average: the residuals of the prior's flip-averaged prediction (see :func:`compute_residual_scale`).
    """

    def __init__(
        self, model: nn.Module, data_loader: Iterable, num_batches: int | None = 8, flip_average: bool = False
    ) -> None:
        self.model = model
        self.data_loader = data_loader
        self.num_batches = num_batches
        self.flip_average = bool(flip_average)

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        if self.num_batches == 0 or engine.state.iteration > 0:
            engine.logger.info(f"residual scale kept at {float(self.model.residual_scale):.6g}")
            return
        value = compute_residual_scale(self.model, self.data_loader, device=engine.state.device,
                                       num_batches=self.num_batches, flip_average=self.flip_average)  # fmt: skip
        self.model.residual_scale.fill_(value)
        engine.logger.info(f"residual scale computed from the data: {value:.6g} (1 / std of late - prior)")
