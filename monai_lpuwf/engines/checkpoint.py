"""Checkpoint writing (atomic, last + best + final) and stage-weight loading with clear errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")

__all__ = ["AtomicCheckpointSaver", "load_stage_weights", "StageOrderError"]


class StageOrderError(FileNotFoundError):
    """A training stage was started before the stage whose weights it builds on."""


class _AtomicDiskSaver(DiskSaver):  # type: ignore[misc,valid-type]
    """Ignite ``DiskSaver`` writing through a temporary file + ``os.replace`` (never a half-written checkpoint).

    With a fixed ``filename`` the previous file is *replaced* rather than deleted first (Ignite's ``Checkpoint``
    removes the old file before writing the new one), so a kill at any moment leaves a complete checkpoint.
    The file gets the usual ``0o666 & ~umask`` permissions (the temporary file is created ``0o600``).
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True, create_dir=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint, filename, metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(os.path.join(self.dirname, filename), 0o666 & ~umask)

    def remove(self, filename: str) -> None:
        if self.filename is None:
            super().remove(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` with atomic writes and a fixed-name rolling "last" checkpoint.

    Same arguments as :class:`~monai.handlers.CheckpointSaver`, plus:

    Args:
        interval_filename: fixed file name of the interval checkpoint (``save_interval > 0``), e.g.
            ``"checkpoint_last.pt"``: each save atomically replaces the previous one, so exactly one complete
            resumable checkpoint exists at any time. ``None`` keeps MONAI's numbered files
            (``checkpoint_iteration=N.pt``, ``n_saved`` of them).

    Typical use in a training config: ``save_final=True, final_filename="model.pt"`` with
    ``save_dict={"model": network}`` (the deliverable), and ``save_interval=N, epoch_level=False,
    interval_filename="checkpoint_last.pt"`` with the full training state (network, optimisers, trainer,
    scheduler, ...) for :class:`monai.handlers.CheckpointLoader`. On an evaluator, ``save_key_metric=True,
    key_metric_filename="model_best.pt"`` keeps the best model.
    """

    def __init__(self, save_dir: str, save_dict: dict, interval_filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        fixed_names = (
            (self._final_checkpoint, self._final_filename),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, interval_filename),
        )
        for checkpoint, filename in fixed_names:
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, filename)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else module


def load_stage_weights(
    model: nn.Module,
    path: str | os.PathLike | None,
    stage: str = "",
    previous_stage: str = "",
    require_scale_factor: bool = False,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load the weights a training stage builds on into ``model``, with messages that say what to do.

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel` (or a DDP wrapper of it).
        path: the previous stage's weights (``models/model_autoencoder.pt``, ...). ``None`` or ``""`` = nothing to
            load (stage 1).
        stage: name of the stage being started, for messages (e.g. ``"train_late (stage 4)"``).
        previous_stage: name/config of the stage that writes ``path`` (e.g. ``"train_diffusion.json (stage 3)"``).
        require_scale_factor: fail unless the loaded ``scale_factor`` was computed (differs from 1.0): the
            latent scale factor is computed once from data at the start of stage 3.
        map_location: passed to :func:`torch.load`.

    Raises:
        StageOrderError: ``path`` does not exist (the previous stage has not been run, or its output moved).
        RuntimeError: the file is not a state dict of this model (other preset, other network), naming the file
            and the first missing / unexpected / mismatched keys.

    Returns:
        ``model``.
    """
    if path is None or str(path) == "":
        return model
    path = Path(path)
    if not path.is_file():
        raise StageOrderError(
            f"{stage or 'this stage'} needs the weights written by {previous_stage or 'the previous stage'} at "
            f"'{path}', which does not exist. Run the stages in order (train_autoencoder -> train_condition_encoder "
            f"-> train_diffusion -> train_late), or point 'initial_weights' at the right file."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unreadable / truncated / not a torch file
        raise RuntimeError(f"cannot read the checkpoint '{path}' ({type(e).__name__}: {e}).") from e
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a full training checkpoint: take its model entry
    target = _unwrap(model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and hasattr(own[k], "shape") and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f"the checkpoint '{path}' does not match the configured model (was it trained with another preset or "
            f"network settings?). missing keys: {missing[:5]}{' ...' if len(missing) > 5 else ''}; unexpected keys: "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; shape mismatches: {mismatched[:5]}"
            f"{' ...' if len(mismatched) > 5 else ''}. Use the same 'preset' / network overrides as the stage that "
            "wrote it."
        )
    target.load_state_dict(state)
    if require_scale_factor:
        scale = getattr(target, "scale_factor", None)
        if scale is None or float(scale) == 1.0:
            raise StageOrderError(
                f"the weights in '{path}' carry no computed latent scale factor (scale_factor={None if scale is None else float(scale)}); "
                f"{stage or 'this stage'} needs the weights of {previous_stage or 'stage 3 (train_diffusion.json)'}, "
                "which computes it from the data."
            )
    return model
