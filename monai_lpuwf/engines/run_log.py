"""Quiet, informative run logs: one checkpoint line per epoch at most, and a closing line naming the outputs.

MONAI's :class:`~monai.handlers.CheckpointSaver` logs ``Saved checkpoint at iteration: N`` at every interval save
(through the progress bars, every iteration with ``save_interval=1``), and Ignite logs ``Engine run resuming from
iteration 0, epoch 0`` at the start of every MONAI workflow, fresh or not (MONAI sets ``max_epochs`` before the
run, which Ignite takes for a resume; validators log it at every validation). :class:`RunLogHandler` filters
both on the engine's logger, logs the last checkpoint save of each epoch once when the epoch ends, and when the
run completes names where its outputs and TensorBoard logs are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["RunLogHandler"]

_SAVED = "Saved checkpoint at iteration: "
_FRESH_START = "Engine run resuming from iteration 0, "  # nothing to resume (a fresh run, or a validation run)


class _QuietFilter(logging.Filter):
    """Drops the fresh-run "resuming" line and the per-iteration checkpoint lines (remembering the last one)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_iteration: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_FRESH_START):
            return False
        if message.startswith(_SAVED):
            self.saved_iteration = int(message[len(_SAVED) :].split()[0])
            return False
        return True


class RunLogHandler:
    """Quiet the per-iteration log lines of a training run and name its outputs at the end.

    Args:
        name: what ran (the stage name), the first word of the closing line.
        outputs: ``{description: path}`` named in the closing line (e.g. ``{"weights": "models/model.pt"}``);
            paths that do not exist at the end are left out.
        tensorboard_dir: folder of the run's TensorBoard event files (``tensorboard --logdir`` it), or ``None``.
        checkpoint_path: the interval checkpoint, named in the once-per-epoch checkpoint line.
        closing_line: log the closing line (``False`` for a validator: filtering only).

    Attach it to the trainer (``train_handlers``), like other MONAI handlers. Under ``torch.distributed`` only
    rank 0 logs the closing line.
    """

    def __init__(
        self,
        name: str = "run",
        outputs: Mapping[str, str | os.PathLike] | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        closing_line: bool = True,
    ) -> None:
        self.name = str(name)
        self.outputs = {str(k): str(v) for k, v in (outputs or {}).items() if v}
        self.tensorboard_dir = None if tensorboard_dir is None else str(tensorboard_dir)
        self.checkpoint_path = None if checkpoint_path is None else str(checkpoint_path)
        self.closing_line = bool(closing_line)
        self.filter = _QuietFilter()
        self.logger: logging.Logger | None = None

    def attach(self, engine: Any) -> None:
        self.logger = engine.logger
        if self.filter not in engine.logger.filters:
            engine.logger.addFilter(self.filter)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if self.closing_line and not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def epoch_completed(self, engine: Any) -> None:
        """One line for the checkpoint saves of the epoch (the last one), if there was any."""
        iteration, self.filter.saved_iteration = self.filter.saved_iteration, None
        if iteration is not None:
            where = f" ({self.checkpoint_path})" if self.checkpoint_path else ""
            engine.logger.info(f"epoch {engine.state.epoch}: checkpoint saved at iteration {iteration}{where}")

    def summary(self) -> str:
        """``<name> finished: weights <path>; ...; TensorBoard logs: <dir> (tensorboard --logdir <dir>)``."""
        parts = [f"{what} {path}" for what, path in self.outputs.items() if os.path.exists(path)]
        if self.tensorboard_dir:
            parts.append(f"TensorBoard logs: {self.tensorboard_dir} (tensorboard --logdir {self.tensorboard_dir})")
        return f"{self.name} finished: " + "; ".join(parts or ["no output file"])

    def completed(self, engine: Any = None) -> None:
        logger = engine.logger if engine is not None else logging.getLogger(__name__)
        logger.info(self.summary())
        logger.removeFilter(self.filter)  # engine loggers are process-wide: leave none behind for the next run
