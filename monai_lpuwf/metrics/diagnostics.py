"""Training diagnostics: is the diffusion model using its SLO? (an Ignite handler, like
:class:`~monai_lpuwf.metrics.FrameScoresHandler`)

:class:`ConditioningGapHandler` measures :func:`monai_lpuwf.metrics.conditioning_gap` on a fixed batch of the
validation data at the end of each validation run and puts it in the evaluator's metrics
(``cond_gap_<t>``: denoiser error on the clean latents with the other items' SLOs / with the true SLO), so that
:class:`~monai.handlers.StatsHandler` prints it and :class:`~monai.handlers.TensorBoardStatsHandler` plots it
beside the image scores. A ratio that stays near 1 while the loss falls is the signature of a model that learns
an average FA and ignores the ControlNet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from monai_lpuwf.engines.prepare_batch import get_batch_item
from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.metrics.sensitivity import conditioning_gap

__all__ = ["ConditioningGapHandler"]


class ConditioningGapHandler:
    """Add the conditioning gap of the denoiser to an evaluator's metrics after each run.

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel` (or a DDP wrapper).
        data_loader: loader of dictionary batches with ``image_key`` and ``condition_key`` (the validation
            loader); its first batch is used (at least two items: the SLOs are swapped between items).
        image_key: FA key whose latents are probed (``"early"`` in stage 3, ``"late"`` in stage 4).
        condition_key: SLO key.
        timesteps: diffusion timesteps probed.
        prefix: metric name prefix.
        seed: noise seed (fixed, so successive validations are comparable).

    Attach to the evaluator *before* the Stats/TensorBoard handlers (``val_handlers`` order) so they log it::

        ConditioningGapHandler(model, val_loader, image_key="early").attach(evaluator)
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        image_key: str = UWFKeys.EARLY,
        condition_key: str = UWFKeys.SLO,
        timesteps: Sequence[int] = (200, 600),
        prefix: str = "val_cond_gap_",
        seed: int = 0,
    ) -> None:
        self.model = model
        self.data_loader = data_loader
        self.image_key = image_key
        self.condition_key = condition_key
        self.timesteps = tuple(int(t) for t in timesteps)
        self.prefix = prefix
        self.seed = int(seed)

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def compute(self, device: torch.device | str = "cpu") -> dict[str, float]:
        """``{f"{prefix}{t}": ratio}`` on the first batch of the loader (empty if it has fewer than two items)."""
        batch = next(iter(self.data_loader))
        model = getattr(self.model, "module", self.model)
        fa = get_batch_item(batch, self.image_key, device)
        slo = get_batch_item(batch, self.condition_key, device)
        if fa.shape[0] < 2:
            return {}
        with torch.no_grad():
            latents = model.encode_latents(fa, sample=False)
        gap = conditioning_gap(model, latents, slo, timesteps=self.timesteps, seed=self.seed)
        return {f"{self.prefix}{t}": values["ratio"] for t, values in gap.items()}

    def __call__(self, engine) -> None:
        device = getattr(engine.state, "device", None) or next(self.model.parameters()).device
        engine.state.metrics.update(self.compute(device))
