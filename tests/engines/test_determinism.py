"""An interrupted run resumed from its checkpoint ends in the same state as an uninterrupted run."""

from __future__ import annotations

import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from monai_lpuwf.engines import (
    AtomicCheckpointSaver,
    AutoencoderGanTrainer,
    AutoencoderPrepareBatch,
    DeterministicSeedHandler,
    ResumeCheckpointLoader,
    derive_seed,
    set_trainable,
    trainable_parameters,
)
from monai_lpuwf.networks import build_model


def _items(n: int = 5, size: int = 32) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "early": torch.rand(1, size, size, generator=g) * 2 - 1,
            "late": torch.rand(1, size, size, generator=g) * 2 - 1,
        }
        for _ in range(n)
    ]


def _trainer(tmp_path, max_epochs: int, resume: bool, stop_at: int | None = None):
    """A stage-1 trainer on a shuffled loader with random augmentation, saving its state every iteration."""
    torch.manual_seed(0)
    ae = set_trainable(build_model("small").autoencoder, [""], ["condition_encoder"])
    optimizer = torch.optim.Adam(trainable_parameters(ae), 1e-3)
    transform = Compose(
        [
            RandFlipd(["early", "late"], prob=0.5, spatial_axis=1),
            RandGaussianNoised(["early", "late"], prob=1.0, std=0.05),
        ]
    )
    loader = DataLoader(Dataset(_items(), transform), batch_size=2, shuffle=True, num_workers=0)
    state = {"model": ae, "optimizer": optimizer}
    handlers = [ResumeCheckpointLoader(str(tmp_path / "last.pt"), state)] if resume else []
    handlers += [
        DeterministicSeedHandler(seed=3),
        AtomicCheckpointSaver(
            str(tmp_path), state, save_interval=1, epoch_level=False, interval_filename="last.pt", engine_key="trainer"
        ),
    ]
    trainer = AutoencoderGanTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=ae,
        optimizer=optimizer,
        prepare_batch=AutoencoderPrepareBatch(("early", "late")),
        train_handlers=handlers,
    )
    if stop_at is not None:  # simulate a kill right after the checkpoint of iteration `stop_at`
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED, lambda e: e.terminate() if e.state.iteration == stop_at else None
        )
    return trainer, ae


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    full, ae_full = _trainer(tmp_path / "full", max_epochs=2, resume=False)
    full.run()
    # 3 iterations per epoch: stop after iteration 4 (inside epoch 2), then resume in a fresh process-like setup
    first, _ = _trainer(tmp_path / "cut", max_epochs=2, resume=False, stop_at=4)
    first.run()
    assert first.state.iteration == 4
    resumed, ae_resumed = _trainer(tmp_path / "cut", max_epochs=2, resume=True)
    resumed.run()
    assert resumed.state.iteration == full.state.iteration == 6
    for (name, p), q in zip(ae_full.named_parameters(), ae_resumed.parameters()):
        assert torch.equal(p, q), name


def test_resume_without_checkpoint_names_the_file(tmp_path):
    trainer, _ = _trainer(tmp_path, max_epochs=1, resume=True)
    try:
        trainer.run()
    except FileNotFoundError as e:
        assert "last.pt" in str(e) and "--resume" in str(e)
    else:
        raise AssertionError("resuming without a checkpoint must fail")


def test_derive_seed_separates_counters():
    seeds = {derive_seed(0, 1, e) for e in range(50)} | {derive_seed(0, 2, i) for i in range(50)}
    assert len(seeds) == 100 and all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(0, 2, 7) == derive_seed(0, 2, 7)
