"""Helpers for the bundle training tests: tiny runs of the real configs through ``monai.bundle``.

Every run goes through a ``monai.bundle`` entry point: :func:`monai.bundle.run` in-process (what
``python -m monai.bundle run`` calls after parsing the command line; it keeps the suite fast by importing MONAI
once) or the ``python -m monai.bundle run training ...`` command line in a subprocess (:func:`cli_command`).
Each run gets its own ``bundle_root`` holding a copy of ``bundle/configs``, so nothing is written into the
repository. The tests reach these helpers through the ``bundle`` fixture (``--import-mode=importlib`` puts no
test folder on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE_DIR = REPO_ROOT / "bundle"

# the small preset's topology at toy widths (64 x 64 images -> 16 x 16 latents -> U-Net down to 2 x 2)
TINY_NETWORK: dict[str, Any] = {
    "autoencoder": {"channels": [8, 8, 8], "norm_num_groups": 4},
    "unet": {"channels": [8, 8, 16, 16], "norm_num_groups": 4, "num_head_channels": 4},
    "controlnet": {"conditioning_embedding_num_channels": [4, 8, 8]},
}
# 4 phantoms of 64 x 64 (3 train, 1 validation), batches of 2 -> 2 iterations an epoch
TINY_RUN: dict[str, Any] = {
    "image_size": [64, 64],
    "phantom_size": [64, 64],
    "num_phantoms": 4,
    "train_batch_size": 2,
    "max_epochs": 4,
    "lr": 1e-3,
    "val_interval": 4,
    "log_interval": 1,
    "save_interval": 1,
    "val_inference_steps": 2,
    "network_overrides": TINY_NETWORK,
}
ITERATIONS_PER_EPOCH = 2

# stage -> the config files composed after common.json (model-zoo style), and the weights file it writes
STAGE_CONFIGS: dict[str, tuple[str, ...]] = {
    "autoencoder": ("train_autoencoder.json",),
    "condition_encoder": ("train_autoencoder.json", "train_condition_encoder.json"),
    "diffusion": ("train_diffusion.json",),
    "late": ("train_diffusion.json", "train_late.json"),
}
STAGE_WEIGHTS = {
    "autoencoder": "model_autoencoder.pt",
    "condition_encoder": "model_condition_encoder.pt",
    "diffusion": "model_diffusion.pt",
    "late": "model.pt",
}
STAGES = tuple(STAGE_CONFIGS)


def new_bundle_root(path: Path) -> Path:
    """A fresh bundle folder at ``path`` with a copy of ``bundle/configs``."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(BUNDLE_DIR / "configs", path / "configs")
    return path


def config_files(root: Path, stage: str, extra: Sequence[str | Path] = ()) -> list[str]:
    """``configs/common.json`` + the stage's configs (+ ``extra`` files) of the bundle at ``root``."""
    return [str(root / "configs" / name) for name in ("common.json", *STAGE_CONFIGS[stage])] + [str(e) for e in extra]


def run_stage(root: Path, stage: str, extra_configs: Sequence[str | Path] = (), **overrides: Any) -> None:
    """``monai.bundle.run("training", ...)`` of one stage with the tiny settings (``overrides`` on top), with this
    process's torch thread count (the configs would otherwise apply the project's default, which ignores a
    ``torch.set_num_threads`` made by the caller)."""
    from monai.bundle import run

    run(
        "training",
        config_file=config_files(root, stage, extra_configs),
        meta_file=str(root / "configs" / "metadata.json"),
        bundle_root=str(root),
        **{"num_threads": torch.get_num_threads(), **TINY_RUN, **overrides},
    )


def cli_command(root: Path, stage: str, extra_configs: Sequence[str | Path] = (), **overrides: Any) -> list[str]:
    """The ``python -m monai.bundle run training`` command line of one stage with the tiny settings."""
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        repr(config_files(root, stage, extra_configs)),
        "--meta_file",
        str(root / "configs" / "metadata.json"),
        "--logging_file",
        str(root / "configs" / "logging.conf"),
        "--bundle_root",
        str(root),
    ]
    for key, value in {**TINY_RUN, **overrides}.items():
        args += [f"--{key}", repr(value) if not isinstance(value, str) else value]
    return args


def cli_env() -> dict[str, str]:
    """Environment for a subprocess run: this process's torch thread count (same float reduction order)."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def scalars(root: Path, stage: str, tag: str) -> list[float]:
    """Values of a TensorBoard scalar the stage's ``TensorBoardStatsHandler`` wrote under ``eval/<stage>``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / "eval" / stage))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def raised_error(error_type: type[BaseException], call, *args, **kwargs) -> BaseException:
    """Run ``call`` and return the ``error_type`` it raised (MONAI wraps errors raised while it evaluates a config
    expression in a ``RuntimeError``; the user sees the whole chain, the test looks for the original)."""
    with pytest.raises(Exception) as info:
        call(*args, **kwargs)
    chain, error = [], info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    matches = [e for e in chain if isinstance(e, error_type)]
    assert matches, f"no {error_type.__name__} in the raised chain: {chain!r}"
    return matches[-1]  # the original error (MONAI's wrappers come first)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def bundle() -> SimpleNamespace:
    """The helpers and tiny settings of this module (``bundle.run_stage(root, "diffusion", max_epochs=1)``...)."""
    return SimpleNamespace(
        BUNDLE_DIR=BUNDLE_DIR,
        TINY_NETWORK=TINY_NETWORK,
        TINY_RUN=TINY_RUN,
        ITERATIONS_PER_EPOCH=ITERATIONS_PER_EPOCH,
        STAGES=STAGES,
        STAGE_CONFIGS=STAGE_CONFIGS,
        STAGE_WEIGHTS=STAGE_WEIGHTS,
        new_bundle_root=new_bundle_root,
        config_files=config_files,
        run_stage=run_stage,
        raised_error=raised_error,
        cli_command=cli_command,
        cli_env=cli_env,
        scalars=scalars,
        load_checkpoint=load_checkpoint,
    )


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory) -> Path:
    """A bundle folder in which the four stages ran once, in order, each on its predecessor's weights.

    Every stage: 4 epochs of 2 iterations (8 optimiser steps) at lr 1e-3, validation at the end, the rolling
    checkpoint written every iteration.
    """
    root = new_bundle_root(tmp_path_factory.mktemp("trained_bundle"))
    for stage in STAGES:
        run_stage(root, stage)
    return root
