"""The trained network of a generation run (bundle ``inference.json``, MONAI Label, MONAI Deploy), from its
:class:`~monai_lpuwf.networks.ModelFile`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from monai_lpuwf.generation.inputs import InferenceInputError
from monai_lpuwf.networks import ModelFile

__all__ = ["GENERATION_STAGES", "generation_network"]

GENERATION_STAGES = ("late", "prior", "residual")  # final models: model.pt (stage 4), model_prior.pt, model_residual.pt


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
