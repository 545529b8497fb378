"""TensorBoard (and optional PNG) image grid of SLO | generated | real rows after validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import CommonKeys as Keys
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")

__all__ = ["ImageGridHandler", "make_image_grid"]


def make_image_grid(columns: Sequence[torch.Tensor], max_rows: int = 4) -> torch.Tensor:
    """Tile images in [-1, 1] into a (3, rows * H, columns * W) grid in [0, 1].

    Args:
        columns: tensors of shape (B, C, H, W) with C = 1 or 3 and the same B, H, W; one per grid column.
        max_rows: at most this many samples (rows).
    """
    rows = []
    for b in range(min(max_rows, columns[0].shape[0])):
        cells = [
            c[b].detach().float().cpu().expand(3, *c.shape[-2:]) if c.shape[1] == 1 else c[b].detach().float().cpu()
            for c in columns
        ]
        rows.append(torch.cat(cells, dim=-1))
    return ((torch.cat(rows, dim=-2) + 1.0) / 2.0).clamp(0.0, 1.0)


class ImageGridHandler:
    """After each evaluator run, write a grid of ``columns`` (default SLO | generated | real) for its first batch.

    Attach to a MONAI evaluator (``val_handlers``). The first batch's items are taken from
    ``engine.state.batch`` (input keys) and ``engine.state.output`` (``pred``), decollated or not.

    Args:
        log_dir: TensorBoard log folder (ignored if ``summary_writer`` is given).
        summary_writer: an existing ``SummaryWriter``.
        columns: keys to tile, looked up in the output first, then in the batch (e.g. ``("slo", "pred", "late")``).
        tag: TensorBoard tag.
        max_rows: samples per grid.
        global_step_transform: ``engine -> int`` step to log at, e.g. ``lambda _: trainer.state.epoch``.
        output_dir: also save ``<output_dir>/<tag>_<step>.png`` when given.
    """

    def __init__(
        self,
        log_dir: str = "./runs",
        summary_writer: Any = None,
        columns: Sequence[str] = ("slo", Keys.PRED, "late"),
        tag: str = "slo|generated|real",
        max_rows: int = 4,
        global_step_transform: Callable[[Any], int] | None = None,
        output_dir: str | None = None,
    ) -> None:
        self.log_dir = log_dir
        self._writer = summary_writer
        self.columns = tuple(columns)
        self.tag = tag
        self.max_rows = max_rows
        self.global_step_transform = global_step_transform or (lambda engine: engine.state.epoch)
        self.output_dir = output_dir
        self._first_batch: dict[str, torch.Tensor] | None = None

    @property
    def writer(self) -> Any:
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Any) -> None:
        self._first_batch = None

    @staticmethod
    def _lookup(data: Any, key: str) -> torch.Tensor | None:
        if isinstance(data, Mapping):
            return torch.as_tensor(data[key]) if key in data else None
        if isinstance(data, list) and data and isinstance(data[0], Mapping) and key in data[0]:
            return torch.stack([torch.as_tensor(item[key]) for item in data])
        return None

    def _collect(self, engine: Any) -> None:
        if self._first_batch is not None:
            return
        found = {}
        for key in self.columns:
            value = self._lookup(engine.state.output, key)
            value = self._lookup(engine.state.batch, key) if value is None else value
            if value is None:
                raise KeyError(f"ImageGridHandler: no {key!r} in the evaluator's output or batch; set 'columns'.")
            found[key] = value.detach().cpu()
        self._first_batch = found

    def __call__(self, engine: Any) -> None:
        if self._first_batch is None:
            return
        grid = make_image_grid([self._first_batch[k] for k in self.columns], self.max_rows)
        step = int(self.global_step_transform(engine))
        self.writer.add_image(self.tag, grid, step)
        self.writer.flush()
        if self.output_dir is not None:
            from PIL import Image

            out = Path(self.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            image = (grid.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            Image.fromarray(image).save(out / f"{self.tag.replace('|', '_')}_{step:05d}.png")
