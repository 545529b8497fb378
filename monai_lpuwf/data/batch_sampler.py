"""Samplers: batches that never mix frame sizes (whole native frames of different sizes in one ``DataLoader``), and
an epoch of a fixed number of draws (a small data set does not restart its loader every batch)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence, Sized

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["SizeGroupedBatchSampler", "IterationSampler", "iteration_sampler"]


class IterationSampler(Sampler[int]):
    """An epoch of ``num_samples`` indices: whole random passes over the data, repeated as often as needed.

    Seven training frames in batches of 8 make a one-batch epoch: the data loader's iterator (and its worker
    processes) would start again for every batch. With ``num_samples = iterations_per_epoch * batch_size`` an
    epoch is as long as asked; every item appears once per pass (a random permutation each pass, drawn without
    replacement), so items are used equally often up to one.

    The order depends only on ``(seed, epoch)``: :meth:`set_epoch` selects the epoch (the bundle's
    :class:`~monai_lpuwf.engines.DeterministicSeedHandler` calls it at every epoch start, so a resumed run draws
    the same order); without it, each new pass over the sampler advances the epoch by one. Its own generator is
    used, never the global one, so the order is the same whichever thread iterates (``ThreadDataLoader``).

    Args:
        data_source: the dataset (or its length).
        num_samples: indices per epoch (``iterations_per_epoch * batch_size``).
        seed: base seed of the order.
        shuffle: ``False``: the passes in index order (``0, 1, ..., n - 1, 0, 1, ...``).
    """

    def __init__(self, data_source: Sized | int, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.size = int(data_source) if isinstance(data_source, int) else len(data_source)
        if self.size < 1:
            raise ValueError("IterationSampler: the data set is empty (no item to draw).")
        if int(num_samples) < 1:
            raise ValueError(f"IterationSampler: num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of this epoch at the next pass."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        passes = math.ceil(self.num_samples / self.size)
        if self.shuffle:
            seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
            gen = torch.Generator().manual_seed(seed)
            order = torch.cat([torch.randperm(self.size, generator=gen) for _ in range(passes)])
        else:
            order = torch.arange(self.size).repeat(passes)
        self.epoch += 1
        return iter(order[: self.num_samples].tolist())


def iteration_sampler(
    dataset: Sized | int, iterations_per_epoch: int | None, batch_size: int, seed: int = 0
) -> IterationSampler | None:
    """The training sampler of a bundle run: epochs of ``iterations_per_epoch`` batches, or ``None`` (the data
    loader's own shuffled pass over the data) where ``iterations_per_epoch`` is ``None``.

    Args:
        dataset: the training dataset (or its length).
        iterations_per_epoch: batches per epoch; ``None``: one pass over the data.
        batch_size: items per batch (``num_samples = iterations_per_epoch * batch_size``).
        seed: base seed of the order (:class:`IterationSampler`).
    """
    if iterations_per_epoch is None:
        return None
    return IterationSampler(dataset, num_samples=int(iterations_per_epoch) * int(batch_size), seed=seed)


class SizeGroupedBatchSampler(Sampler):
    """Batches of indices whose items share a group (spatial size and keys present), in first-seen order.

    A batch never mixes groups, so frames of different native sizes (853 x 682 and 640 x 512) or items with and
    without an early phase are never collated together.

    Args:
        groups: one hashable group label per item.
        batch_size: largest batch.
    """

    def __init__(self, groups: Sequence[Hashable], batch_size: int) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        order: dict[Hashable, list[int]] = {}
        for i, g in enumerate(groups):
            order.setdefault(g, []).append(i)
        self.batches = [
            idx[s : s + self.batch_size] for idx in order.values() for s in range(0, len(idx), self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(b) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)
