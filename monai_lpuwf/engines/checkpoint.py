"""Checkpoint writing (atomic, last + best + final) and stage-weight loading with clear errors.

A model file names the training stage that wrote it (entry ``"stage"``, :class:`StageRecord`), so a command can
refuse the file of another stage (:func:`load_model` / :func:`load_stage_weights` with ``stages``), e.g. generating
with ``models/model_autoencoder.pt``. A file that cannot be read gives a :class:`ModelFileError` that says which of
three things happened: the file is truncated or not a PyTorch file, it holds pickled objects that
``torch.load(weights_only=True)`` refuses to run, or it is asked onto a CUDA device on a machine without CUDA
(:func:`check_device`).
"""

from __future__ import annotations

import os
import pickle
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
from monai_lpuwf.networks import model_from_config

DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")

__all__ = [
    "AtomicCheckpointSaver",
    "ResumeCheckpointLoader",
    "ModelConfigRecord",
    "STAGE_FILES",
    "StageRecord",
    "check_device",
    "load_model",
    "load_stage_weights",
    "ModelFileError",
    "StageOrderError",
]

# stage name (bundle key ``stage``) -> (number, config file, the model file it writes into models/)
STAGE_FILES: dict[str, tuple[int, str, str]] = {
    "autoencoder": (1, "train_autoencoder.json", "model_autoencoder.pt"),
    "condition_encoder": (2, "train_condition_encoder.json", "model_condition_encoder.pt"),
    "diffusion": (3, "train_diffusion.json", "model_diffusion.pt"),
    "late": (4, "train_late.json", "model.pt"),
    # the residual method's own two stages (train_prior.json, then train_residual.json)
    "prior": (1, "train_prior.json", "model_prior.pt"),
    "residual": (2, "train_residual.json", "model_residual.pt"),
}
DENOISER_STAGES = ("diffusion", "late", "residual")  # stages whose model file holds a trained denoiser


class StageOrderError(UserInputError, FileNotFoundError):
    """A training stage was started before the stage whose weights it builds on."""


class ModelFileError(UserInputError, RuntimeError):
    """A model or checkpoint file that cannot be used: truncated or not a PyTorch file, refused as unsafe, written
    by another training stage, or asked onto a device this machine lacks; the message names the file and the fix."""


def _describe_stage(stage: str) -> str:
    if stage in STAGE_FILES:
        number, config, filename = STAGE_FILES[stage]
        return f"stage {number} '{stage}' ({config}, which writes models/{filename})"
    return f"stage '{stage}'"


class StageRecord:
    """Checkpoint entry ``"stage"``: the training stage that wrote a model file (``{"stage": "late"}``).

    Listed in the bundle's ``model_dict`` (``common.json``) beside the weights and the architecture, so that a
    command can tell a stage-1 autoencoder from the final model (:func:`load_model` with ``stages``).

    Args:
        stage: the stage's name, the bundle key ``stage`` (``"autoencoder"``, ..., ``"late"``).
    """

    def __init__(self, stage: str = "") -> None:
        self.stage = str(stage)

    def state_dict(self) -> dict[str, str]:
        return {"stage": self.stage}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stage = str(state.get("stage", ""))

    @staticmethod
    def read(checkpoint: Any) -> str | None:
        """The stage recorded in a loaded checkpoint, ``None`` where it has none (written before the record)."""
        entry = checkpoint.get("stage") if isinstance(checkpoint, Mapping) else None
        return str(entry["stage"]) if isinstance(entry, Mapping) and entry.get("stage") else None


def check_device(device: str | torch.device | None, option: str = "--device") -> torch.device | None:
    """``device`` as a :class:`torch.device`, refusing a CUDA device where PyTorch has none.

    Raises:
        ModelFileError: (a :class:`~monai_lpuwf.errors.UserInputError`) ``device`` is not a device name, or a CUDA
            device on a machine where ``torch.cuda.is_available()`` is False, or a CUDA index beyond the GPUs seen.
    """
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelFileError(f"{option} {device}: not a device name ({err}); use cpu, cuda or cuda:N.") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelFileError(
                f"{option} {device}: CUDA is not available here (torch.cuda.is_available() is False: a CPU build of "
                f"PyTorch {torch.__version__}, or no GPU driver); run with {option} cpu, or install the PyTorch "
                "build for your CUDA version."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelFileError(
                f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0 ...); pick "
                "one of them."
            )
    return dev


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
        checkpoint = _read_checkpoint(Path(self.load_path), self.map_location)
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


def _plain(value: Any) -> Any:
    """Config value with tuples as lists (a config read back from a checkpoint compares equal to the live one)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _config_differences(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key == "scale_factor" and not prefix:
            continue  # a value learnt from data, carried by the state dict's buffer
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diffs += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: checkpoint {a} vs configured {b}")
    return diffs


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
        return _plain(_unwrap(self.model).config)

    def load_state_dict(self, config: Mapping[str, Any], source: str = "the checkpoint") -> None:
        diffs = _config_differences(_plain(config), self.state_dict())
        if diffs:
            raise ValueError(
                f"{source} was made for another model architecture: {'; '.join(diffs[:6])}"
                f"{' ...' if len(diffs) > 6 else ''}. Use the same 'preset' / 'network_overrides' as the run that "
                "wrote it (its config is stored in the file under 'config')."
            )


def _first_line(error: BaseException, marker: str = "") -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [line for line in lines if marker and marker in line]
    return ((found or lines or [type(error).__name__])[0])[:200]


def _read_checkpoint(path: Path, map_location: str | torch.device | None) -> Mapping:
    """``torch.load(path, weights_only=True)``, with a :class:`ModelFileError` that says what is wrong."""
    check_device(map_location, option="device (map_location)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e).lower()
        if "weights only load failed" in text and "global" in text:  # not "Unsupported operand": damaged
            raise ModelFileError(
                f"refused to load '{path}': it holds pickled Python objects beyond tensors and plain containers "
                f"({_first_line(e, 'GLOBAL')}), and loading them could run code; torch.load(weights_only=True) does "
                "not. Use a model file written by this bundle (models/model.pt), or re-save the weights as a plain "
                "state dict from a trusted environment."
            ) from e
        error = e
    except Exception as e:  # noqa: BLE001 - readers raise many types for damaged files; sorted below
        error = e
    size = path.stat().st_size if path.is_file() else 0
    with open(path, "rb") as f:
        head = f.read(4)
    if size == 0:
        reason = "the file is empty (0 bytes): a copy or a save that did not finish"
    elif head == b"PK\x03\x04" or head[:1] == b"\x80":  # a PyTorch zip archive / a legacy pickle
        reason = f"the file is truncated or damaged ({size} bytes; {type(error).__name__}: {_first_line(error)})"
    else:
        reason = f"it is not a PyTorch file ({type(error).__name__}: {_first_line(error)})"
    raise ModelFileError(
        f"cannot read the checkpoint '{path}': {reason}. Copy the file again, or re-run the stage that writes it."
    ) from error


def _untrained_denoiser(state: Mapping) -> bool:
    """Whether the U-Net's output convolution is all zeros, as MONAI initialises it: no diffusion stage trained."""
    weights = [v for k, v in state.items() if k.startswith("unet.out.") and isinstance(v, torch.Tensor) and v.ndim > 1]
    return bool(weights) and all(float(w.abs().max()) == 0.0 for w in weights)


def _check_stage(checkpoint: Any, path: Path, stages: Sequence[str], purpose: str) -> None:
    """Refuse the file of another training stage than ``stages`` (the first one is the one asked for)."""
    recorded = StageRecord.read(checkpoint)
    wanted = _describe_stage(stages[0])
    fix = f"pass the model file of {wanted}" + (" (--model_path)" if purpose == "generation" else "")
    if recorded is not None and recorded not in stages:
        raise ModelFileError(
            f"'{path}' holds the weights of {_describe_stage(recorded)}; {purpose} needs {wanted}: {fix}."
        )
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else {}
    needs_denoiser = any(s in DENOISER_STAGES for s in stages)
    if recorded is None and needs_denoiser and isinstance(state, Mapping) and _untrained_denoiser(state):
        warnings.warn(  # a file from before the stage record, or assembled by hand (test stand-ins): not refused
            f"'{path}' has no stage record and holds an untrained denoiser (the U-Net's output layer is all zeros, "
            f"as before stage 3): if it is the file of stage 1 or 2, {purpose} will not give a late phase; "
            f"{fix}.",
            stacklevel=3,
        )


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    stages: Sequence[str] | None = None,
    purpose: str = "this command",
) -> nn.Module:
    """Rebuild the model of a bundle model file from its ``config`` and weights: an
    :class:`~monai_lpuwf.networks.LPUWFModel` (``model.pt``), a :class:`~monai_lpuwf.networks.SupervisedPrior`
    (``model_prior.pt``) or a :class:`~monai_lpuwf.networks.ResidualDiffusionModel` (``model_residual.pt``), as the
    config's ``model_class`` says.

    Args:
        path: a file written by the bundle (``{"model": state_dict, "config": LPUWFModel.config, "stage": ...}``).
        map_location: passed to :func:`torch.load` (checked with :func:`check_device` first).
        stages: the training stages whose files are accepted (the first one named in messages), e.g.
            ``("late",)`` for generation; ``None`` accepts any. A file without a stage record (written before it
            existed, or by hand) is accepted, with a warning where ``stages`` needs a trained denoiser and its
            U-Net's output layer is still all zeros (stages 1 and 2 leave it so).
        purpose: what the model is loaded for, in messages (``"generation"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ModelFileError: the file is truncated, not a PyTorch file, holds objects ``weights_only`` refuses, comes
            from another stage than ``stages``, or ``map_location`` is a CUDA device without CUDA.
        ValueError: the file has no ``config`` entry (e.g. a bare state dict: build the model with
            :func:`monai_lpuwf.networks.build_model` and use :func:`load_stage_weights` instead).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model file '{path}' does not exist; train the bundle first (see bundle/docs/README.md)."
        )
    checkpoint = _read_checkpoint(path, map_location)
    if not (
        isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("config"), Mapping) and "model" in checkpoint
    ):
        raise ValueError(
            f"'{path}' holds no model config (expected the keys 'model' and 'config' written by the bundle); build the "
            "model with monai_lpuwf.networks.build_model(preset) and load the weights with load_stage_weights."
        )
    if stages:
        _check_stage(checkpoint, path, tuple(stages), purpose)
    model = model_from_config(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model


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
        stages: accepted training stages of the file, as in :func:`load_model` (``None``: any).

    Raises:
        StageOrderError: ``path`` does not exist (the previous stage has not been run, or its output moved).
        ModelFileError: the file cannot be read (see :func:`load_model`) or comes from another stage.
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
    state = _read_checkpoint(path, map_location)
    if stages:
        _check_stage(state, path, tuple(stages), stage or "this stage")
    target = _unwrap(model)
    if isinstance(state, Mapping) and isinstance(state.get("config"), Mapping):
        ModelConfigRecord(target).load_state_dict(state["config"], source=f"'{path}'")
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]  # a bundle model file or a full training checkpoint: take its model entry
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state
        and isinstance(state[k], torch.Tensor)
        and hasattr(own[k], "shape")
        and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f"the checkpoint '{path}' does not match the configured model (was it trained with another preset or "
            f"network settings?). missing keys: {missing[:5]}{' ...' if len(missing) > 5 else ''}; unexpected keys: "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; shape mismatches: {mismatched[:5]}"
            f"{' ...' if len(mismatched) > 5 else ''}. Use the same 'preset' / network overrides as the stage that "
            "wrote it."
        )
    initial_scale = float(getattr(target, "scale_factor", float("nan")))
    target.load_state_dict(state)
    if require_scale_factor:
        scale = getattr(target, "scale_factor", None)
        if scale is None or float(scale) == initial_scale:
            raise StageOrderError(
                f"the weights in '{path}' carry no latent scale factor computed from data (scale_factor is still the "
                f"preset's initial {initial_scale}); {stage or 'this stage'} needs the weights of "
                f"{previous_stage or 'stage 3 (train_diffusion.json)'}, which computes it."
            )
    return model
