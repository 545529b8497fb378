"""An interrupted stage resumed with ``--resume True`` ends in exactly the state of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")

# Extra config files that interrupt a stage (what a test can do to a run without touching the bundle): the
# stage's own run list with one more handler added to the trainer.


def _run_with(event: str, handler: str) -> dict:
    # (separate entries: MONAI parses a "$" string that mentions "import" as Python before resolving "@" references)
    return {
        "interrupt_event": f"${event}",
        "interrupt_handler": f"${handler}",
        "run": [
            "$@load_initial_weights",
            "$@train#trainer.add_event_handler(@interrupt_event, @interrupt_handler)",
            "$@train#trainer.run()",
        ],
    }


# SIGKILL after iteration 3: no exception handler, no final save; the rolling checkpoint of iteration 3 is on disk
KILL_AFTER_ITERATION_3 = _run_with(
    "__import__('ignite.engine', fromlist=['Events']).Events.ITERATION_COMPLETED(once=3)",
    "lambda engine: os.kill(os.getpid(), 9)",
)
# an error after the forward pass of iteration 3 (an out-of-memory error, a NaN check...), before its optimiser steps
FAIL_IN_ITERATION_3 = _run_with(
    "monai.engines.IterationEvents.FORWARD_COMPLETED",
    "lambda engine: engine.state.iteration == 3 and exec(\"raise RuntimeError('injected failure')\")",
)


def _assert_same_state(a, b, where: str = "checkpoint") -> None:
    """Recursive exact comparison of two checkpoints (tensors, numbers, nested dicts/lists)."""
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs by up to {(a.float() - b.float()).abs().max():.3g}"
    else:
        assert a == b, f"{where}: {a} vs {b}"


def _write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


def _last(root: Path, stage: str) -> dict:
    return torch.load(root / "models" / stage / "checkpoint_last.pt", map_location="cpu", weights_only=True)


def test_killed_autoencoder_stage_resumes_to_the_uninterrupted_state(tmp_path, bundle):
    """Stage 1 (generator, discriminator, two optimisers), 3 epochs of 2 iterations, killed in epoch 2."""
    settings = {"max_epochs": 3}
    reference = bundle.new_bundle_root(tmp_path / "uninterrupted")
    bundle.run_stage(reference, "autoencoder", **settings)

    root = bundle.new_bundle_root(tmp_path / "interrupted")
    kill = _write(tmp_path / "kill.json", KILL_AFTER_ITERATION_3)
    command = bundle.cli_command(root, "autoencoder", [kill], **settings)
    killed = subprocess.run(command, env=bundle.cli_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert _last(root, "autoencoder")["trainer"]["iteration"] == 3
    assert not (root / "models" / "model_autoencoder.pt").exists(), "an unfinished stage wrote its final weights"

    bundle.run_stage(root, "autoencoder", resume="true", **settings)  # as typed on the command line
    _assert_same_state(_last(root, "autoencoder"), _last(reference, "autoencoder"))
    _assert_same_state(
        torch.load(root / "models" / "model_autoencoder.pt", weights_only=True),
        torch.load(reference / "models" / "model_autoencoder.pt", weights_only=True),
    )


def test_failed_diffusion_stage_resumes_without_losing_a_step(tmp_path, bundle, trained_bundle):
    """Stage 3 failing inside iteration 3 (after its forward pass): the resumed run redoes that iteration."""
    settings = {"max_epochs": 2, "initial_weights": str(trained_bundle / "models" / "model_condition_encoder.pt")}
    reference = bundle.new_bundle_root(tmp_path / "uninterrupted")
    bundle.run_stage(reference, "diffusion", **settings)

    root = bundle.new_bundle_root(tmp_path / "interrupted")
    fail = _write(tmp_path / "fail.json", FAIL_IN_ITERATION_3)
    error = bundle.raised_error(RuntimeError, bundle.run_stage, root, "diffusion", [fail], **settings)
    assert "injected failure" in str(error)
    assert _last(root, "diffusion")["trainer"]["iteration"] == 2  # the last completed iteration
    assert not (root / "models" / "model_diffusion.pt").exists()

    bundle.run_stage(root, "diffusion", resume=True, **settings)
    _assert_same_state(_last(root, "diffusion"), _last(reference, "diffusion"))


def test_resume_without_a_checkpoint_names_the_file_and_the_fix(tmp_path, bundle):
    root = bundle.new_bundle_root(tmp_path / "fresh")
    expected = str(root / "models" / "autoencoder" / "checkpoint_last.pt")
    error = bundle.raised_error(FileNotFoundError, bundle.run_stage, root, "autoencoder", resume=True)
    assert "there is no checkpoint" in str(error) and expected in str(error) and "--resume" in str(error)
    assert not Path(expected).exists(), "the failed run left a checkpoint that a second --resume would load"


# the network's weights replaced by noise at the start of each epoch: the next validation is far worse
WRECK_WEIGHTS = _run_with(
    "__import__('ignite.engine', fromlist=['Events']).Events.EPOCH_STARTED",
    "lambda engine: [p.data.normal_(0.0, 10.0) for p in @network.parameters()]",
)


def test_resume_keeps_the_best_model_against_a_worse_validation(tmp_path, bundle):
    """Best validation PSNR and its epoch travel in checkpoint_last.pt: after a resume, only a better one replaces
    model_best.pt (before, the first validation after a resume always counted as the new best)."""
    root = bundle.new_bundle_root(tmp_path / "bundle")
    bundle.run_stage(root, "autoencoder", max_epochs=1, val_interval=1)  # validation of epoch 1 -> model_best.pt
    best = root / "models" / "autoencoder" / "model_best.pt"
    first = best.read_bytes()
    tracked = _last(root, "autoencoder")["best_metric"]
    assert tracked["best_metric_epoch"] == 1 and tracked["best_metric"] == pytest.approx(tracked["_saved"][0][0])

    wreck = _write(tmp_path / "wreck.json", WRECK_WEIGHTS)
    bundle.run_stage(root, "autoencoder", [wreck], resume=True, max_epochs=2, val_interval=1)
    psnr = bundle.scalars(root, "autoencoder", "val_psnr")
    assert len(psnr) == 2 and psnr[1] < psnr[0], f"the second validation was not worse: {psnr}"
    assert best.read_bytes() == first, "a worse validation after the resume replaced model_best.pt"
    tracked = _last(root, "autoencoder")["best_metric"]
    assert tracked["best_metric_epoch"] == 1 and tracked["best_metric"] == pytest.approx(psnr[0], rel=1e-5)


def test_checkpoint_without_best_metric_still_resumes(tmp_path, bundle):
    """A checkpoint_last.pt written before best-model tracking resumes, with a warning saying what it means."""
    root = bundle.new_bundle_root(tmp_path / "bundle")
    bundle.run_stage(root, "autoencoder", max_epochs=1, val_interval=1)
    path = root / "models" / "autoencoder" / "checkpoint_last.pt"
    old = {k: v for k, v in _last(root, "autoencoder").items() if k != "best_metric"}
    torch.save(old, path)
    with pytest.warns(UserWarning, match="no 'best_metric' entry.*first validation after this resume"):
        bundle.run_stage(root, "autoencoder", resume=True, max_epochs=2, val_interval=1)
    assert _last(root, "autoencoder")["trainer"]["iteration"] == 2 * bundle.ITERATIONS_PER_EPOCH
    assert _last(root, "autoencoder")["best_metric"]["best_metric_epoch"] == 2  # unknown before: epoch 2 counts as best
