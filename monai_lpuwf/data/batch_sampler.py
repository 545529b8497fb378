"""Batches that never mix frame sizes: whole native frames of different sizes in one ``DataLoader``."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

from torch.utils.data import Sampler

__all__ = ["SizeGroupedBatchSampler"]


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
