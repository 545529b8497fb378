"""A progress bar handler that MONAI configs can list in ``train_handlers`` (it shows the current losses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import

from monai_lpuwf.engines.trainers import loss_terms

ProgressBar, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ProgressBar")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["TrainingProgressBar"]


class TrainingProgressBar(ProgressBar):  # type: ignore[misc,valid-type]
    """:class:`ignite.handlers.ProgressBar` whose ``attach(engine)`` (the MONAI handler protocol) shows the losses.

    A run resumed from a checkpoint (:class:`~monai_lpuwf.engines.ResumeCheckpointLoader`) continues the bar from
    the resumed position: resumed after iteration 5 of 4-iteration epochs, the bar of epoch 2 starts at 2/4 (Ignite's
    bar would start at 1/4 and jump, and count the skipped iterations in its rate).

    Args:
        output_transform: maps ``engine.state.output`` to the dict of numbers shown; defaults to
            :func:`~monai_lpuwf.engines.trainers.loss_terms`.
        kwargs: :class:`ignite.handlers.ProgressBar` arguments (``persist``, ``bar_format``, ``ncols``...).

    Only rank 0 draws a bar under ``torch.distributed``.
    """

    def __init__(self, output_transform: Callable[[Any], Any] = loss_terms, **kwargs: Any) -> None:
        kwargs.setdefault("persist", True)
        super().__init__(**kwargs)
        self._output_transform = output_transform
        self._engine: Any = None
        self._event_name: Any = Events.ITERATION_COMPLETED

    def attach(self, engine: Any, metric_names: Any = None, output_transform: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        super().attach(engine, metric_names, output_transform or self._output_transform, **kwargs)
        self._engine = engine
        self._event_name = kwargs.get("event_name", Events.ITERATION_COMPLETED)

    def _reset(self, pbar_total: int | None) -> None:
        """Open the bar at the position of the event that opens it (Ignite's bar opens at 1 whatever that is)."""
        position = 1
        if self._engine is not None:
            position = self._engine.state.get_event_attrib_value(self._event_name)
            if pbar_total:
                position = (position - 1) % pbar_total + 1  # as Ignite's handler maps it into the bar
        self.pbar = self.pbar_cls(
            total=pbar_total, leave=self.persist, bar_format=self.bar_format, initial=position, **self.tqdm_kwargs
        )
