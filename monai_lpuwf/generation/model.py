"""The trained model of a generation run (bundle ``inference.json``, MONAI Label, MONAI Deploy)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_lpuwf.engines import ModelFileError, check_device, load_model, load_stage_weights
from monai_lpuwf.generation.inputs import InferenceInputError
from monai_lpuwf.networks import build_model

__all__ = ["GENERATION_STAGES", "load_generation_model"]

GENERATION_STAGES = ("late", "prior", "residual")  # final models: model.pt (stage 4), model_prior.pt, model_residual.pt


def load_generation_model(
    path: str | os.PathLike,
    preset: str | None = None,
    network_overrides: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """The trained :class:`~monai_lpuwf.networks.LPUWFModel` for generation, in eval mode.

    Args:
        path: a bundle model file (``models/model.pt``, written by ``train_late.json``), which carries its
            architecture; a bare state dict needs ``preset``.
        preset: when given (``"small"``, ``"paper"``), the file must have been trained with this preset and
            ``network_overrides``; a file made for another architecture is refused with the differences listed.
        network_overrides: see :func:`monai_lpuwf.networks.build_model`.
        map_location: passed to :func:`torch.load`; a CUDA device where PyTorch has none is refused first.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: (a ``RuntimeError``) the file is truncated or not a PyTorch file, holds pickled objects that
            ``torch.load(weights_only=True)`` refuses, was written by another training stage than stage 4
            (``train_late.json``; e.g. ``models/model_autoencoder.pt``), or ``map_location`` is a CUDA device on a
            machine without CUDA.
        InferenceInputError: (a ``ValueError``) the file holds another architecture, or no architecture and no
            ``preset``.
            The weights do not match the architecture stored beside them (a file edited by hand).
    """
    check_device(map_location)
    if preset:
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file '{path}' does not exist; train the bundle first or pass --model_path.")
        model = build_model(preset, **dict(network_overrides or {}))
        try:
            load_stage_weights(model, path, stage="generation", previous_stage="train_late.json (stage 4)",
                               map_location=map_location, stages=GENERATION_STAGES)  # fmt: skip
        except ValueError as err:
            raise InferenceInputError(str(err)) from err
    else:
        try:
            model = load_model(path, map_location=map_location, stages=GENERATION_STAGES, purpose="generation")
        except ModelFileError:
            raise
        except ValueError as err:
            raise InferenceInputError(
                f"{err} In the bundle: pass --preset NAME (and --network_overrides) instead."
            ) from err
        except RuntimeError as err:  # a config that does not match the weights stored beside it (load_state_dict)
            raise ModelFileError(
                f"the weights in '{path}' do not match the architecture stored in the same file ({err}); the file "
                "was edited or assembled by hand. Use the model.pt written by train_late.json."
            ) from err
    return model.eval()
