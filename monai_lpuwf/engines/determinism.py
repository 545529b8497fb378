"""Deterministic seeding that survives an interrupted and resumed run.

Ignite's plain :class:`~ignite.engine.Engine` resumes a checkpoint taken in the middle of an epoch by counting
the remaining iterations but it restarts the data iterator from the first batch, and every random draw after
the restart differs from the uninterrupted run. :class:`DeterministicSeedHandler` makes a resumed run
identical to an uninterrupted one:

- at every epoch start the global generators (torch, numpy, python) are seeded from ``(seed, epoch)``, before
  the data iterator is created, so the shuffling order and the data-loader worker seeds depend only on the
  epoch; with ``num_workers=0`` the random transforms of the dataset are re-seeded too (MONAI seeds them
  once per loader otherwise); a sampler with its own seed (:class:`monai_lpuwf.data.IterationSampler`) is
  told the epoch;
- at every iteration start they are seeded from ``(seed, iteration, rank)``, so noise, timesteps and
  phase choices depend only on the iteration;
- when the run starts in the middle of an epoch (after :class:`monai.handlers.CheckpointLoader`), the
  already-trained batches of that epoch are drawn and skipped, so training continues with the next batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data.utils import set_rnd
from monai.utils import IgniteInfo, min_version, optional_import, set_determinism

from monai_lpuwf.data import IterationSampler

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["DeterministicSeedHandler", "derive_seed", "enable_cudnn_autotune"]

_EPOCH, _ITERATION = 1, 2


def enable_cudnn_autotune() -> bool:
    """Let cuDNN pick the fastest convolution algorithms (``benchmark=True``, ``deterministic=False``).

    MONAI's :func:`~monai.utils.set_determinism` switches autotuning off and restricts cuDNN to deterministic
    algorithms; on a GPU that costs speed (the bundle's ``--cudnn_benchmark True`` calls this after it, and its
    :class:`DeterministicSeedHandler` then keeps these flags). Runs stay seeded alike, but are reproducible only up
    to the GPU's floating-point rounding. Returns ``True`` (for use in config expressions).
    """
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    return True


def derive_seed(seed: int, *counters: int) -> int:
    """A 31-bit seed derived from ``seed`` and counters with :class:`numpy.random.SeedSequence`.

    Unlike ``seed + counter`` sums, different ``(seed, *counters)`` do not collide.
    """
    return int(np.random.SeedSequence([int(seed), *map(int, counters)]).generate_state(1)[0] >> 1)


class _SkipFirstBatches:
    """Iterable over ``data`` whose first iteration skips ``skip`` items; later iterations are complete."""

    def __init__(self, data: Iterable, skip: int) -> None:
        self.data = data
        self.skip = skip

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        iterator = iter(self.data)
        skip, self.skip = self.skip, 0
        for _ in range(skip):
            next(iterator)
        return iterator


class DeterministicSeedHandler:
    """Seed every epoch and iteration from ``seed`` and fast-forward a resumed epoch (see the module docstring).

    Args:
        seed: base seed of the run.
        reseed_dataset: re-seed the dataset's random transforms at every epoch start when the loader has no
            worker processes (with workers, MONAI's ``worker_init_fn`` seeds them from the epoch's generator).
        keep_cudnn_flags: ``False`` (default): MONAI's :func:`~monai.utils.set_determinism`, which also sets cuDNN
            deterministic and switches its autotuning off at every epoch and iteration. ``True``: seed the
            generators alike but leave cuDNN's flags as they are (see :func:`enable_cudnn_autotune`).

    Example (bundle config, after the ``CheckpointLoader`` or anywhere in ``train_handlers``)::

        {"_target_": "monai_lpuwf.engines.DeterministicSeedHandler", "seed": "@seed"}
    """

    def __init__(self, seed: int = 0, reseed_dataset: bool = True, keep_cudnn_flags: bool = False) -> None:
        self.seed = int(seed)
        self.reseed_dataset = reseed_dataset
        self.keep_cudnn_flags = keep_cudnn_flags

    def _seed(self, seed: int) -> None:
        if not self.keep_cudnn_flags:
            set_determinism(seed=seed)
            return
        flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
        set_determinism(seed=seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)

    @staticmethod
    def _rank() -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def epoch_started(self, engine: Any) -> None:
        self._seed(derive_seed(self.seed, _EPOCH, engine.state.epoch))
        loader = getattr(engine, "data_loader", None)
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, IterationSampler):  # its own generator: the order depends on (seed, epoch) only
            sampler.set_epoch(engine.state.epoch)
        if self.reseed_dataset and loader is not None and getattr(loader, "num_workers", 1) == 0:
            set_rnd(loader.dataset, derive_seed(self.seed, _EPOCH, engine.state.epoch, self._rank()))
        epoch_length = engine.state.epoch_length
        done_in_epoch = engine.state.iteration % epoch_length if epoch_length else 0
        if done_in_epoch:  # resumed in the middle of an epoch: skip the batches already trained on
            engine.logger.info(f"resuming epoch {engine.state.epoch} after its first {done_in_epoch} iterations")
            engine.state.dataloader = _SkipFirstBatches(engine.state.dataloader, done_in_epoch)

    def iteration_started(self, engine: Any) -> None:
        self._seed(derive_seed(self.seed, _ITERATION, engine.state.iteration, self._rank()))
