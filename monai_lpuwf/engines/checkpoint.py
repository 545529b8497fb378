"""Checkpoint writing (atomic, last + best + final), resuming, and stage-weight loading with clear errors.

Model files are read, checked and built by :class:`monai_lpuwf.networks.ModelFile` (re-exported here with its
:class:`ModelFileError`, :class:`StageRecord`, :func:`check_device` and :data:`STAGE_FILES`):
:func:`load_stage_weights` loads the file of the previous training stage through it, with the messages of a
training run (the stages' order, the latent scale factor).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from monai_lpuwf.atomic_write import default_file_mode
from monai_lpuwf.errors import UserInputError
from monai_lpuwf.networks.model_file import (
    STAGE_FILES,
    ModelFile,
    ModelFileError,
    StageRecord,
    check_config,
    check_device,
    plain_config,
    read_checkpoint,
)

DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")

__all__ = [
    "AtomicCheckpointSaver",
    "ResumeCheckpointLoader",
    "ModelConfigRecord",
    "STAGE_FILES",
    "StageRecord",
    "check_device",
    "load_stage_weights",
    "ModelFileError",
    "StageOrderError",
]


class StageOrderError(UserInputError, FileNotFoundError):
    """A training stage was started before the stage whose weights it builds on."""


class _AtomicDiskSaver(DiskSaver):  # type: ignore[misc,valid-type]
    """Ignite ``DiskSaver`` writing through a temporary file + ``os.replace`` (never a half-written checkpoint).

    With a fixed ``filename`` the previous file is *replaced* rather than deleted first (Ignite's ``Checkpoint``
    removes the old file before writing the new one), so a kill at any moment leaves a complete checkpoint.
    The file gets the usual ``0o666 & ~umask`` permissions (the temporary file is created ``0o600``). Under
    ``torch.distributed`` only rank 0 writes (Ignite's ``save_on_rank``).
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True, create_dir=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:  # runs on the saving rank only
        super()._save_func(checkpoint, path, func)
        os.chmod(path, default_file_mode())

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
        engine_key: also save the state of the engine the handler is attached to under this key (e.g.
            ``"trainer"``: epoch and iteration for resuming). A config cannot list the trainer in the
            ``save_dict`` of one of its own handlers without a circular reference; this is the way round it.
        save_final_on_exception: MONAI writes the "final" checkpoint also when the run raises; here that is off
            by default, so a crashed or interrupted stage never leaves a final model file that a later stage
            would take for a finished one. Keep it off for the resumable state too: an error inside an
            iteration (out of memory in the backward pass, ...) comes after Ignite has counted the iteration but
            before its optimiser steps, so such a checkpoint would make the resumed run skip one step. The last
            interval checkpoint is consistent; resuming from it repeats the iterations after it exactly
            (:class:`~monai_lpuwf.engines.DeterministicSeedHandler`).

    Typical use in a training config: ``save_final=True, final_filename="model.pt"`` with
    ``save_dict={"model": network}`` (the deliverable), and ``save_interval=N, epoch_level=False,
    interval_filename="checkpoint_last.pt"`` with the full training state (network, optimisers, trainer,
    scheduler, ...) for :class:`monai.handlers.CheckpointLoader`. On an evaluator, ``save_key_metric=True,
    key_metric_filename="model_best.pt"`` keeps the best model.

    Best-model tracking across a resume: a key-metric saver is itself a checkpoint entry. Its ``state_dict()`` is
    ``{"_saved": [(score, filename)], "best_metric": float, "best_metric_epoch": int}`` (Ignite's tracking list and
    the evaluator's ``state.best_metric`` / ``state.best_metric_epoch``); listing it in the trainer's resumable
    checkpoint (``save_dict`` of the interval saver and ``load_dict`` of :class:`ResumeCheckpointLoader`) restores
    both on resume, so only a validation better than the best one before the interruption replaces
    ``model_best.pt`` (without it the first validation after a resume always counts as the new best).
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        interval_filename: str | None = None,
        save_final_on_exception: bool = False,
        engine_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir=save_dir, save_dict=dict(save_dict), **kwargs)
        self.save_final_on_exception = save_final_on_exception
        self.engine_key = engine_key
        fixed_names = (
            (self._final_checkpoint, self._final_filename),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, interval_filename),
        )
        for checkpoint, filename in fixed_names:
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, filename)
        self._engine: Any = None
        self._best: dict[str, Any] = {"best_metric": -1, "best_metric_epoch": -1}  # MONAI Workflow's initial values

    def attach(self, engine: Any) -> None:
        if self.engine_key is not None:
            self.save_dict[self.engine_key] = engine  # the Checkpoint objects share this dict
        super().attach(engine)
        self._engine = engine
        if self._key_metric_checkpoint is not None and self._best["best_metric_epoch"] != -1:
            self._restore_best(engine)  # load_state_dict ran before attach

    def state_dict(self) -> dict[str, Any]:
        """Best-model tracking (key-metric savers): the saved ``(score, filename)`` list and the best metric/epoch.

        Raises:
            TypeError: the saver has no key-metric checkpoint (``save_key_metric=False``): nothing to resume.
        """
        if self._key_metric_checkpoint is None:
            raise TypeError("only a key-metric AtomicCheckpointSaver (save_key_metric=True) has a resumable state.")
        state = getattr(self._engine, "state", None)
        best = {key: getattr(state, key, self._best[key]) for key in self._best}
        return {
            "_saved": [(float(p), str(f)) for p, f in self._key_metric_checkpoint.state_dict()["_saved"]],
            "best_metric": float(best["best_metric"]),
            "best_metric_epoch": int(best["best_metric_epoch"]),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (or MONAI's ``{"_saved": ...}`` of ``key_metric_save_state``) on resume."""
        super().load_state_dict({"_saved": list(state_dict.get("_saved", []))})
        self._best = {key: state_dict.get(key, value) for key, value in self._best.items()}
        if self._engine is not None:
            self._restore_best(self._engine)

    def _restore_best(self, engine: Any) -> None:
        engine.state.best_metric = self._best["best_metric"]
        engine.state.best_metric_epoch = self._best["best_metric_epoch"]

    def exception_raised(self, engine: Any, e: Exception) -> None:
        if self.save_final_on_exception:
            super().exception_raised(engine, e)
        raise e


class ResumeCheckpointLoader(CheckpointLoader):
    """:class:`monai.handlers.CheckpointLoader` that also restores the engine it is attached to.

    Args:
        load_path: the rolling checkpoint written by :class:`AtomicCheckpointSaver` (``checkpoint_last.pt``).
        load_dict: objects to restore (model, config record, optimisers, schedulers, discriminator, the key-metric
            :class:`AtomicCheckpointSaver` of the validator for the best-model tracking...).
        engine_key: key of the attached engine's state in the checkpoint (epoch, iteration; ``"trainer"``).
        kwargs: :class:`~monai.handlers.CheckpointLoader` arguments (``map_location``, ``strict``). An exact resume
            needs ``strict_shape=True`` (the default).

    A checkpoint written before best-model tracking was saved (no entry for a key-metric saver of ``load_dict``)
    still resumes, with a warning: the first validation after it then counts as the best.

    Raises (at the start of the run):
        FileNotFoundError: ``load_path`` does not exist, saying how to start the stage afresh instead.
        RuntimeError: the file cannot be read (truncated, not a torch file), naming it.
        ValueError: the checkpoint's epoch is beyond ``max_epochs``.
    """

    def __init__(self, load_path: str, load_dict: dict, engine_key: str | None = "trainer", **kwargs: Any) -> None:
        if not kwargs.get("strict_shape", True):
            raise ValueError("ResumeCheckpointLoader restores a run exactly: strict_shape=False is not supported.")
        super().__init__(load_path=load_path, load_dict=dict(load_dict), **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Any) -> None:
        if self.engine_key is not None:
            self.load_dict[self.engine_key] = engine
        super().attach(engine)

    def __call__(self, engine: Any) -> None:
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(
                f"resume=true but there is no checkpoint '{self.load_path}' (a run of this stage writes it every "
                "'save_interval' iterations); run without --resume True to start the stage from the beginning."
            )
        checkpoint = read_checkpoint(self.load_path, self.map_location)
        load_dict = dict(self.load_dict)
        for key, obj in self.load_dict.items():
            if isinstance(obj, AtomicCheckpointSaver) and key not in checkpoint:
                warnings.warn(
                    f"'{self.load_path}' has no '{key}' entry (written by an older version): the best validation "
                    "metric before the interruption is unknown, so the first validation after this resume replaces "
                    "the best model.",
                    stacklevel=2,
                )
                del load_dict[key]
        prior_max_epochs = engine.state.max_epochs  # as MONAI's CheckpointLoader: keep the configured max_epochs
        Checkpoint.load_objects(to_load=load_dict, checkpoint=checkpoint, strict=self.strict)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise ValueError(
                f"the checkpoint '{self.load_path}' is at epoch {engine.state.epoch}, beyond max_epochs "
                f"{prior_max_epochs}; resume with --max_epochs larger than {engine.state.epoch}."
            )
        engine.state.max_epochs = prior_max_epochs
        self.logger.info(f"Restored all variables from {self.load_path}")


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else module


class ModelConfigRecord:
    """Checkpoint entry ``"config"`` holding ``LPUWFModel.config``, so ``model.pt`` rebuilds its own architecture.

    ``state_dict()`` returns the model's config; ``load_state_dict(config)`` (called by
    :class:`monai.handlers.CheckpointLoader` / Ignite's ``Checkpoint.load_objects``) raises a ``ValueError``
    listing the differing entries when the checkpoint was made for another architecture (other preset or
    network overrides), before any weight is touched.

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel` (or a DDP wrapper of it).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return plain_config(_unwrap(self.model).config)

    def load_state_dict(self, config: Mapping[str, Any], source: str = "the checkpoint") -> None:
        check_config(config, self.state_dict(), source=source)


def load_stage_weights(
    model: nn.Module,
    path: str | os.PathLike | None,
    stage: str = "",
    previous_stage: str = "",
    require_scale_factor: bool = False,
    map_location: str | torch.device = "cpu",
    stages: Sequence[str] | None = None,
) -> nn.Module:
    """Load the weights a training stage builds on into ``model``, with messages that say what to do.

    The file is read by :meth:`ModelFile.load <monai_lpuwf.networks.ModelFile.load>` and its weights loaded by
    :meth:`ModelFile.load_into <monai_lpuwf.networks.ModelFile.load_into>`; this adds a training run's messages.

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel` (or a DDP wrapper of it).
        path: the previous stage's weights (``models/model_autoencoder.pt``, ...). ``None`` or ``""`` = nothing to
            load (stage 1).
        stage: name of the stage being started, for messages (e.g. ``"train_late (stage 4)"``).
        previous_stage: name/config of the stage that writes ``path`` (e.g. ``"train_diffusion.json (stage 3)"``).
        require_scale_factor: fail unless the loaded ``scale_factor`` differs from the freshly built model's
            (the preset's initial value): the latent scale factor is computed once from data at the start of
            stage 3 and every later stage needs it.
        map_location: passed to :func:`torch.load`.
        stages: accepted training stages of the file, as in :meth:`~monai_lpuwf.networks.ModelFile.load`
            (``None``: any).

    Raises:
        StageOrderError: ``path`` does not exist (the previous stage has not been run, or its output moved), or
            ``require_scale_factor`` and the file carries no computed scale factor.
        ModelFileError: the file cannot be read (see :meth:`~monai_lpuwf.networks.ModelFile.load`) or comes from
            another stage.
        ValueError: the file's stored architecture is not ``model``'s (the differences listed).
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
    model_file = ModelFile.load(path, map_location=map_location, stages=stages, purpose=stage or "this stage")
    target = _unwrap(model)
    initial_scale = float(getattr(target, "scale_factor", float("nan")))
    model_file.load_into(target)
    if require_scale_factor:
        scale = getattr(target, "scale_factor", None)
        if scale is None or float(scale) == initial_scale:
            raise StageOrderError(
                f"the weights in '{path}' carry no latent scale factor computed from data (scale_factor is still the "
                f"preset's initial {initial_scale}); {stage or 'this stage'} needs the weights of "
                f"{previous_stage or 'stage 3 (train_diffusion.json)'}, which computes it."
            )
    return model
