"""TrainingProgressBar: the bar of a resumed run continues from the resumed iteration."""

from __future__ import annotations

import io
import re

from ignite.engine import Engine, Events

from monai_lpuwf.engines import TrainingProgressBar


def _rendered_steps(state: dict | None, epoch_length: int = 4, max_epochs: int = 2, **attach) -> list[int]:
    """The positions the bar shows (its ``[n/total]``, each once, in order) in a run over ``epoch_length`` items,
    resumed from ``state`` (the description's ``[epoch/max_epochs]`` is left out)."""
    out = io.StringIO()
    engine = Engine(lambda engine, batch: {"loss": 0.5})
    bar = TrainingProgressBar(file=out, desc="stage", bar_format="{desc}[{n_fmt}/{total_fmt}]|", mininterval=0)
    bar.attach(engine, **attach)
    if state is not None:
        engine.load_state_dict({"epoch_length": epoch_length, "max_epochs": max_epochs, **state})
    engine.run(range(epoch_length), max_epochs=max_epochs)
    shown = [int(n) for n in re.findall(r"\[(\d+)/\d+\]\|", out.getvalue())]
    return [n for i, n in enumerate(shown) if i == 0 or n != shown[i - 1]]  # each position once


def test_fresh_run_counts_from_one():
    steps = _rendered_steps(None)
    assert steps == [1, 2, 3, 4, 1, 2, 3, 4], steps  # two epochs


def test_resumed_run_continues_from_the_resumed_iteration():
    """Resumed after iteration 5 (epoch 2, 1 of 4 done): the first bar shows step 2 of 4, never 1 again."""
    steps = _rendered_steps({"iteration": 5})
    assert steps == [2, 3, 4], steps


def test_resumed_epoch_level_bar_continues_from_the_resumed_epoch():
    """An epoch-level bar resumed after epoch 2 of 4 shows epoch 3 first."""
    steps = _rendered_steps(
        {"iteration": 8}, max_epochs=4, event_name=Events.EPOCH_COMPLETED, closing_event_name=Events.COMPLETED
    )
    assert steps == [3, 4], steps
