"""A progress bar handler that MONAI configs can list in ``train_handlers`` (it shows the current losses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import

from monai_lpuwf.engines.trainers import loss_terms

ProgressBar, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ProgressBar")

__all__ = ["TrainingProgressBar"]


class TrainingProgressBar(ProgressBar):  # type: ignore[misc,valid-type]
    """:class:`ignite.handlers.ProgressBar` whose ``attach(engine)`` (the MONAI handler protocol) shows the losses.

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

    def attach(self, engine: Any, metric_names: Any = None, output_transform: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        super().attach(engine, metric_names, output_transform or self._output_transform, **kwargs)
