"""Epochs of a fixed number of draws: a 7-item data set does not restart its loader (or its workers) every batch."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import torch
from monai.data import DataLoader, Dataset, ThreadDataLoader

from monai_lpuwf.data import IterationSampler


def test_every_pass_is_a_permutation_and_the_epoch_has_the_asked_length():
    sampler = IterationSampler(7, num_samples=5 * 4, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler) == 20
    for start in (0, 7):  # two whole passes, then 6 of the third
        assert sorted(order[start : start + 7]) == list(range(7))
    assert len(set(order[14:])) == 6
    counts = Counter(order)
    assert max(counts.values()) - min(counts.values()) <= 1  # every item used equally often, up to one


def test_order_depends_on_seed_and_epoch_only():
    a, b = IterationSampler(7, 14, seed=0), IterationSampler(range(7), 14, seed=0)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    a.set_epoch(5)
    b.set_epoch(4)
    assert list(a) != list(b)  # another epoch, another order
    c = IterationSampler(7, 14, seed=1)
    c.set_epoch(4)
    b.set_epoch(4)
    assert list(c) != list(b)
    # without set_epoch each pass advances the epoch: passes differ, a fresh sampler repeats them
    d, e = IterationSampler(7, 14), IterationSampler(7, 14)
    first, second = list(d), list(d)
    assert first != second and list(e) == first and list(e) == second
    torch.manual_seed(0)
    x = list(IterationSampler(7, 14))
    torch.manual_seed(1)
    assert list(IterationSampler(7, 14)) == x  # the global generator plays no part (thread-safe order)


def test_unshuffled_passes_and_errors():
    assert list(IterationSampler(3, 7, shuffle=False)) == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="empty"):
        IterationSampler([], 4)
    with pytest.raises(ValueError, match="num_samples"):
        IterationSampler(3, 0)


def _count_start(folder):
    def init(worker_id):  # runs in the worker process: leave a file per start-up
        info = torch.utils.data.get_worker_info()
        (folder / f"start_{os.getpid()}_{info.id}_{len(list(folder.iterdir()))}").touch()

    return init


@pytest.mark.parametrize("persistent", [False, True])
def test_a_seven_item_data_set_does_not_restart_its_workers_per_batch(tmp_path, persistent):
    """Batches of 4 from 7 items, 5 iterations an epoch, 3 epochs (15 batches): the worker process starts once per
    epoch (or once per run with persistent workers), where a plain loader over 7 items would start it for every
    second batch."""
    folder = tmp_path / "starts"
    folder.mkdir()
    data = Dataset([{"x": torch.full((1,), float(i))} for i in range(7)])
    sampler = IterationSampler(data, num_samples=5 * 4, seed=0)
    loader = DataLoader(
        data,
        batch_size=4,
        sampler=sampler,
        num_workers=1,
        worker_init_fn=_count_start(folder),
        persistent_workers=persistent,
    )
    assert len(loader) == 5
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == 5 and all(b["x"].shape == (4, 1) for b in batches)
        seen.append(torch.cat([b["x"] for b in batches]).flatten().long().tolist())
    assert len(list(folder.iterdir())) == (1 if persistent else 3)
    assert seen[0] != seen[1]  # each epoch its own order
    plain = DataLoader(data, batch_size=4, shuffle=True)
    assert len(plain) == 2  # what an epoch would be without the sampler: a worker start every 2 batches


def test_thread_data_loader_passes_once_per_epoch():
    """ThreadDataLoader (no worker processes; the bundle's configs/gpu.json) iterates its sampler once per epoch."""
    passes = []

    class Counting(IterationSampler):
        def __iter__(self):
            passes.append(self.epoch)
            return super().__iter__()

    data = Dataset(list(range(7)))
    sampler = Counting(data, num_samples=6 * 4)
    loader = ThreadDataLoader(data, batch_size=4, sampler=sampler, num_workers=0, buffer_size=2)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        assert sum(1 for _ in loader) == 6
    assert passes == [0, 1]


def test_iteration_sampler_of_a_bundle_run():
    from monai_lpuwf.data import iteration_sampler

    assert iteration_sampler(list(range(7)), None, batch_size=4) is None  # the data loader's own shuffled pass
    sampler = iteration_sampler(list(range(7)), 5, batch_size=4, seed=3)
    assert isinstance(sampler, IterationSampler) and len(sampler) == 20
    assert list(sampler) == list(IterationSampler(7, num_samples=20, seed=3))
