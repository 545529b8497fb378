"""One object for a trained model file: :class:`ModelFile` reads, checks, writes and builds it.

A model file (``models/model.pt``, ``model_prior.pt``, ``model_residual.pt`` and the stage files
``model_autoencoder.pt`` ...) is a :func:`torch.save` dictionary with these entries (:data:`MODEL_FILE_KEYS`; the
bundle's ``model_dict`` in ``bundle/configs/common.json`` lists the same ones, each written by a record class):

=================== ======================================================================= ======================
entry               content                                                                 written by
=================== ======================================================================= ======================
``model``           the network's state dict (with the ``scale_factor`` buffer)              the network
``config``          the architecture (``LPUWFModel.config`` ...), rebuilt by                 ``ModelConfigRecord``
                    :func:`~monai_lpuwf.networks.model_from_config`
``stage``           ``{"stage": name}``: the training stage that wrote the file              :class:`StageRecord`
``data_stats``      ``{"late_mean": float, "num_images": int}``: the constant baseline      ``TrainingIntensityRecord``
``training_scale``  the training frames' pixel scale and SLO colour                          ``TrainingScaleRecord``
``sampling``        the recommended sampling settings (``{"conditioning_scale": 2.0}``)      ``SamplingRecord``
=================== ======================================================================= ======================

Only ``model`` is required: a file from before a record existed, a bare state dict (monai-generative-converted
weights, weights saved by hand) or a full training checkpoint (``checkpoint_last.pt``, whose optimiser and trainer
entries are kept in :attr:`ModelFile.extra`) load too. :meth:`ModelFile.load` reads a file once and says what is
wrong with one that cannot be used (:class:`ModelFileError`: truncated or not a PyTorch file, pickled objects that
``torch.load(weights_only=True)`` refuses, another training stage's file, a CUDA device on a machine without CUDA);
:meth:`ModelFile.save` writes one atomically; :meth:`ModelFile.build` rebuilds the network with its weights.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_lpuwf.atomic_write import atomic_path
from monai_lpuwf.errors import UserInputError

from .presets import build_model, model_from_config

__all__ = [
    "DENOISER_STAGES",
    "MODEL_FILE_KEYS",
    "STAGE_FILES",
    "ModelFile",
    "ModelFileError",
    "StageRecord",
    "check_config",
    "check_device",
    "plain_config",
    "read_checkpoint",
]

#: The entries of a model file, in the order the bundle writes them (see the module docstring).
MODEL_FILE_KEYS: tuple[str, ...] = ("model", "config", "stage", "data_stats", "training_scale", "sampling")

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
    command can tell a stage-1 autoencoder from the final model (:meth:`ModelFile.load` with ``stages``).

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


def _first_line(error: BaseException, marker: str = "") -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [line for line in lines if marker and marker in line]
    return ((found or lines or [type(error).__name__])[0])[:200]


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a :class:`ModelFileError` that says what is wrong.

    The one place a model file (or a training checkpoint) is read from disk: :meth:`ModelFile.load` and
    :class:`~monai_lpuwf.engines.ResumeCheckpointLoader` call it.

    Raises:
        ModelFileError: ``map_location`` is a CUDA device without CUDA (:func:`check_device`); the file is empty,
            truncated, not a PyTorch file, or holds pickled objects that ``weights_only`` loading refuses.
    """
    path = Path(path)
    check_device(map_location)
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


def plain_config(value: Any) -> Any:
    """Config value with tuples as lists (a config read back from a checkpoint compares equal to the live one)."""
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
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


def check_config(saved: Mapping[str, Any], current: Mapping[str, Any], source: str = "the checkpoint") -> None:
    """Refuse a stored architecture ``saved`` that differs from the configured ``current`` (``scale_factor`` aside).

    Raises:
        ValueError: listing the first differing entries and the fix.
    """
    diffs = _config_differences(plain_config(saved), plain_config(current))
    if diffs:
        raise ValueError(
            f"{source} was made for another model architecture: {'; '.join(diffs[:6])}"
            f"{' ...' if len(diffs) > 6 else ''}. Use the same 'preset' / 'network_overrides' as the run that "
            "wrote it (its config is stored in the file under 'config')."
        )


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else module


def _untrained_denoiser(state: Mapping) -> bool:
    """Whether the U-Net's output convolution is all zeros, as MONAI initialises it: no diffusion stage trained."""
    weights = [v for k, v in state.items() if k.startswith("unet.out.") and isinstance(v, torch.Tensor) and v.ndim > 1]
    return bool(weights) and all(float(w.abs().max()) == 0.0 for w in weights)


def _key_mismatches(weights: Mapping[str, Any], own: Mapping[str, Any]) -> str:
    """The first missing / unexpected / mismatched keys of ``weights`` against a model's ``own`` state dict, or
    ``""`` where they match."""
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [
        f"{k}: file {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in weights
        and isinstance(weights[k], torch.Tensor)
        and hasattr(own[k], "shape")
        and weights[k].shape != own[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return ""
    return (
        f"missing keys: {missing[:5]}{' ...' if len(missing) > 5 else ''}; unexpected keys: {unexpected[:5]}"
        f"{' ...' if len(unexpected) > 5 else ''}; shape mismatches: {mismatched[:5]}"
        f"{' ...' if len(mismatched) > 5 else ''}"
    )


def _mapping_or_none(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


@dataclass(eq=False, repr=False)
class ModelFile:
    """A trained model file: weights, architecture, training stage and the records stored beside them.

    Read one with :meth:`load` (once; every command that uses a model file goes through it), write one with
    :meth:`save` (atomically), get the network with :meth:`build`. The entries are those of
    :data:`MODEL_FILE_KEYS`; ``None`` marks an entry the file does not have.

    Args:
        weights: the network's state dict (entry ``model``).
        config: the architecture (entry ``config``, ``LPUWFModel.config`` or the prior's / residual model's);
            ``None`` for a bare state dict (then :meth:`build` needs a preset).
        stage: the training stage that wrote the file (entry ``stage``, :class:`StageRecord`; a key of
            :data:`STAGE_FILES`).
        data_stats: the training set's intensity statistics (entry ``data_stats``,
            :class:`~monai_lpuwf.metrics.baselines.TrainingIntensityRecord`: ``{"late_mean": ..., "num_images": ...}``).
        training_scale: the training frames' pixel scale and colour (entry ``training_scale``,
            :class:`~monai_lpuwf.transforms.TrainingScaleRecord`).
        sampling: the recommended sampling settings (entry ``sampling``,
            :class:`~monai_lpuwf.generation.SamplingRecord`).
        extra: any other entries (a training checkpoint's ``optimizer``, ``trainer`` ...), written back by :meth:`save`.
        path: the file it was read from (named in messages), ``None`` for one made in memory.

    Example::

        model_file = ModelFile.load("bundle/models/model.pt", stages=("late",), purpose="generation")
        network = model_file.build().eval()
        model_file.sampling, model_file.training_mean(), model_file.scale_factor
    """

    weights: dict[str, Any]
    config: dict[str, Any] | None = None
    stage: str | None = None
    data_stats: dict[str, Any] | None = None
    training_scale: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        records = [k for k in MODEL_FILE_KEYS[2:] if getattr(self, k) is not None]
        model_class = (self.config or {}).get("model_class", "lpuwf") if self.config is not None else None
        return (
            f"ModelFile(path={self.path}, weights={len(self.weights)} entries, model_class={model_class}, "
            f"stage={self.stage}, records={records}, extra={sorted(self.extra)})"
        )

    @property
    def name(self) -> str:
        """How messages name the file: ``'<path>'``, or ``the model file`` for one made in memory."""
        return f"'{self.path}'" if self.path is not None else "the model file"

    @property
    def scale_factor(self) -> float | None:
        """The latent scale factor: the weights' ``scale_factor`` buffer (computed from data in stage 3), else the
        config's; ``None`` for a model without one (the supervised prior)."""
        value = self.weights.get("scale_factor")
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return float(value)
        value = (self.config or {}).get("scale_factor")
        return None if value is None else float(value)

    def training_mean(self, key: str = "late") -> float | None:
        """The training set's mean ``key`` intensity stored in ``data_stats`` (the constant baseline's value), or
        ``None`` (a file from a run before the record)."""
        value = (self.data_stats or {}).get(f"{key}_mean")
        return None if value is None else float(value)

    @classmethod
    def from_network(
        cls,
        network: nn.Module,
        stage: str | None = None,
        data_stats: Mapping[str, Any] | None = None,
        training_scale: Mapping[str, Any] | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> ModelFile:
        """The model file of a live ``network`` (a DDP wrapper is unwrapped): its state dict and, where it has one,
        its ``config``; the records as given (their ``state_dict()``)."""
        module = _unwrap(network)
        config = getattr(module, "config", None)
        return cls(
            weights=module.state_dict(),
            config=plain_config(config) if isinstance(config, Mapping) else None,
            stage=None if stage is None else str(stage),
            data_stats=_mapping_or_none(data_stats),
            training_scale=_mapping_or_none(training_scale),
            sampling=_mapping_or_none(sampling),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, path: str | os.PathLike | None = None) -> ModelFile:
        """The model file of a loaded checkpoint dictionary (what :meth:`to_checkpoint` gives, or a bare state dict).

        Raises:
            ModelFileError: ``checkpoint`` is not a dictionary (neither a model file nor a state dict).
        """
        path = None if path is None else Path(path)
        if not isinstance(checkpoint, Mapping):
            where = f"'{path}'" if path is not None else "the checkpoint"
            raise ModelFileError(
                f"{where} holds a {type(checkpoint).__name__}, not a model file nor a state dict; use a model file "
                "written by the bundle (models/model.pt) or a state dict saved with torch.save(model.state_dict())."
            )
        if not isinstance(checkpoint.get("model"), Mapping):  # a bare state dict
            return cls(weights=dict(checkpoint), path=path)
        return cls(
            weights=dict(checkpoint["model"]),
            config=_mapping_or_none(checkpoint.get("config")),
            stage=StageRecord.read(checkpoint),
            data_stats=_mapping_or_none(checkpoint.get("data_stats")),
            training_scale=_mapping_or_none(checkpoint.get("training_scale")),
            sampling=_mapping_or_none(checkpoint.get("sampling")),
            extra={k: v for k, v in checkpoint.items() if k not in MODEL_FILE_KEYS},
            path=path,
        )

    def to_checkpoint(self) -> dict[str, Any]:
        """The dictionary :meth:`save` writes: the entries of :data:`MODEL_FILE_KEYS` that are set, then
        :attr:`extra` (the format the bundle's ``model_dict`` writes)."""
        entries = {
            "model": self.weights,
            "config": self.config,
            "stage": None if self.stage is None else StageRecord(self.stage).state_dict(),
            "data_stats": self.data_stats,
            "training_scale": self.training_scale,
            "sampling": self.sampling,
        }
        return {**{k: v for k, v in entries.items() if v is not None}, **self.extra}

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        map_location: str | torch.device | None = "cpu",
        stages: Sequence[str] | None = None,
        purpose: str = "this command",
    ) -> ModelFile:
        """Read a model file once, checking it.

        Args:
            path: a model file written by the bundle (or a bare state dict, or a training checkpoint).
            map_location: where the weights go (:func:`torch.load`); a CUDA device without CUDA is refused first.
            stages: the training stages whose files are accepted (the first one is named in messages), e.g.
                ``("late", "prior", "residual")`` for generation; ``None`` accepts any. A file without a stage record
                (written before it existed, or by hand) is accepted, with a warning where ``stages`` needs a trained
                denoiser and its U-Net's output layer is still all zeros (stages 1 and 2 leave it so).
            purpose: what the model is loaded for, in messages (``"generation"``).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ModelFileError: ``map_location`` is a CUDA device without CUDA (or no device name); the file is
                truncated, not a PyTorch file, holds objects ``weights_only`` refuses, is not a dictionary, or comes
                from another stage than ``stages``.
        """
        check_device(map_location)
        path = Path(path)
        if not path.is_file():
            fix = "train the bundle first (see bundle/docs/README.md)"
            fix += " or pass --model_path" if purpose == "generation" else ""
            raise FileNotFoundError(f"model file '{path}' does not exist; {fix}.")
        model_file = cls.from_checkpoint(read_checkpoint(path, map_location), path)
        if stages:
            model_file.check_stage(stages, purpose)
        return model_file

    def check_stage(self, stages: Sequence[str], purpose: str = "this command") -> None:
        """Refuse the file of another training stage than ``stages`` (the first one is the one asked for); warn for
        a file without a stage record whose denoiser is untrained where ``stages`` needs a trained one.

        Raises:
            ModelFileError: the file records a stage not in ``stages``.
        """
        stages = tuple(stages)
        wanted = _describe_stage(stages[0])
        fix = f"pass the model file of {wanted}" + (" (--model_path)" if purpose == "generation" else "")
        if self.stage is not None and self.stage not in stages:
            raise ModelFileError(
                f"{self.name} holds the weights of {_describe_stage(self.stage)}; {purpose} needs {wanted}: {fix}."
            )
        needs_denoiser = any(s in DENOISER_STAGES for s in stages)
        if self.stage is None and needs_denoiser and _untrained_denoiser(self.weights):
            warnings.warn(  # a file from before the stage record, or assembled by hand (test stand-ins): not refused
                f"{self.name} has no stage record and holds an untrained denoiser (the U-Net's output layer is all "
                f"zeros, as before stage 3): if it is the file of stage 1 or 2, {purpose} will not give a late "
                f"phase; {fix}.",
                stacklevel=3,
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_checkpoint` to ``path`` atomically (a temporary file beside it, then one rename): a
        failed or interrupted save leaves any previous file as it was.

        Returns:
            ``path``.
        """
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self.to_checkpoint(), tmp)
        return path

    def load_into(self, model: nn.Module) -> nn.Module:
        """Load the weights into ``model`` (or the module inside a DDP wrapper), after checking that they fit it.

        Raises:
            ValueError: the stored ``config`` is another architecture than ``model``'s (the differences listed).
            RuntimeError: the weights are not a state dict of ``model`` (the first missing / unexpected /
                mismatched keys listed).

        Returns:
            ``model``.
        """
        target = _unwrap(model)
        own_config = getattr(target, "config", None)
        if self.config is not None and isinstance(own_config, Mapping):
            check_config(self.config, own_config, source=self.name)
        problems = _key_mismatches(self.weights, target.state_dict())
        if problems:
            raise RuntimeError(
                f"the checkpoint {self.name} does not match the configured model (was it trained with another preset "
                f"or network settings?). {problems}. Use the same 'preset' / network overrides as the stage that "
                "wrote it."
            )
        target.load_state_dict(self.weights)
        return model

    def build(self, preset: str | None = None, network_overrides: Mapping[str, Any] | None = None) -> nn.Module:
        """The network with its weights: an :class:`~monai_lpuwf.networks.LPUWFModel` (``model.pt``), a
        :class:`~monai_lpuwf.networks.SupervisedPrior` (``model_prior.pt``) or a
        :class:`~monai_lpuwf.networks.ResidualDiffusionModel` (``model_residual.pt``), as the config's
        ``model_class`` says (built on the CPU, in training mode as a new module is).

        Args:
            preset: build :func:`~monai_lpuwf.networks.build_model` ``(preset, **network_overrides)`` instead of the
                stored architecture (needed for a bare state dict); a file whose ``config`` differs is refused.
            network_overrides: see :func:`~monai_lpuwf.networks.build_model`.

        Raises:
            ValueError: no ``preset`` and no stored ``config`` (a bare state dict); or the stored ``config`` is not
                the preset's architecture.
            RuntimeError: with ``preset``, the weights do not fit its architecture (see :meth:`load_into`).
            ModelFileError: the weights do not fit the architecture stored beside them (a file edited by hand).
        """
        if preset:
            return self.load_into(build_model(preset, **dict(network_overrides or {})))
        if self.config is None:
            raise ValueError(
                f"{self.name} holds no model config (expected the keys 'model' and 'config' written by the bundle); "
                "give its architecture: ModelFile.build(preset, network_overrides) (see "
                "monai_lpuwf.networks.build_model)."
            )
        model = model_from_config(self.config)
        problems = _key_mismatches(self.weights, model.state_dict())
        if problems:
            raise ModelFileError(
                f"the weights in {self.name} do not match the architecture stored in the same file ({problems}); the "
                "file was edited or assembled by hand. Use the model file written by the bundle's training."
            )
        model.load_state_dict(self.weights)
        return model
