"""The trained network of a generation run (bundle ``inference.json``, MONAI Label, MONAI Deploy), from its
:class:`~monai_lpuwf.networks.ModelFile`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from monai_lpuwf.generation.inputs import InferenceInputError
from monai_lpuwf.networks import ModelFile
from monai_lpuwf.networks.model_file import STAGE_FILES

__all__ = ["GENERATION_STAGES", "GENERATION_MODEL_FILES", "find_generation_model", "generation_network"]

GENERATION_STAGES = ("late", "prior", "residual")  # final models: model.pt (stage 4), model_prior.pt, model_residual.pt
#: the final model files a folder is searched for, in this order: the main job's default method (the prior refined
#: by residual diffusion), the paper's latent model (stage 4), the prior alone
GENERATION_MODEL_FILES: tuple[str, ...] = tuple(STAGE_FILES[stage][2] for stage in ("residual", "late", "prior"))


def find_generation_model(path: str | os.PathLike) -> Path:
    """The model file to generate with, for a model file or a folder (the front ends' ``--model`` / ``model``).

    A file is returned as it is. In a folder - a bundle (``models/``), a folder of model files, or a MONAI Deploy
    model folder (one sub-folder per model) - the first of :data:`GENERATION_MODEL_FILES` is taken, looked for in
    the folder, its ``models/`` and its sub-folders, in that order.

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder without any of those files (the message names the
            folder, the files looked for and the training configs that write them).
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in GENERATION_MODEL_FILES:
            for candidate in [path / name, path / "models" / name, *sorted(path.glob(f"*/{name}"))]:
                if candidate.is_file():
                    return candidate
    writers = ", ".join(f"{STAGE_FILES[s][2]} ({STAGE_FILES[s][1]})" for s in ("residual", "late", "prior"))
    what = "a folder without a model file" if path.is_dir() else "no such file or folder"
    raise FileNotFoundError(
        f"no model to generate with at '{path}' ({what}): give the model file, or a bundle folder or folder holding "
        f"one of {writers} - the bundle's training writes them into models/ (bash bundle/scripts/quickstart.sh)."
    )


def generation_network(
    model_file: ModelFile, preset: str | None = None, network_overrides: Mapping[str, Any] | None = None
) -> nn.Module:
    """The trained network of ``model_file`` for generation, in eval mode (on the CPU).

    The file is checked to be a final model (:data:`GENERATION_STAGES`: ``model.pt`` of stage 4,
    ``model_prior.pt``, ``model_residual.pt``; :meth:`~monai_lpuwf.networks.ModelFile.check_stage`), then built by
    :meth:`~monai_lpuwf.networks.ModelFile.build`, with the bundle's options named in the messages.

    Args:
        model_file: the model file (:meth:`ModelFile.load <monai_lpuwf.networks.ModelFile.load>`), which carries its
            architecture; a bare state dict needs ``preset``.
        preset: when given (``"small"``, ``"paper"``), the file must have been trained with this preset and
            ``network_overrides``; a file made for another architecture is refused with the differences listed.
        network_overrides: see :func:`monai_lpuwf.networks.build_model`.

    Raises:
        ModelFileError: (a ``RuntimeError``) the file was written by another training stage than a final one (e.g.
            ``models/model_autoencoder.pt``), or its weights do not match the architecture stored beside them (a
            file edited by hand).
        InferenceInputError: (a ``ValueError``) the file holds another architecture than ``preset``, or no
            architecture and no ``preset``.
    """
    model_file.check_stage(GENERATION_STAGES, purpose="generation")
    try:
        model = model_file.build(preset, network_overrides)
    except ValueError as err:
        hint = "" if preset else " In the bundle: pass --preset NAME (and --network_overrides) instead."
        raise InferenceInputError(f"{err}{hint}") from err
    return model.eval()
