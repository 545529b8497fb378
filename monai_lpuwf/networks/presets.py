"""Named LPUWF-LDM configurations: the paper's sizes and a small CPU demo model of the same topology.

:data:`PRESETS` (and :data:`PRIOR_PRESETS`, :data:`RESIDUAL_PRESETS`) are the one definition of the architectures.
The bundle picks one by name (``--preset paper``; ``--prior_preset``, ``--residual_preset``) and overrides single
entries by config id: the bundle's ``network_overrides`` (``residual_overrides``) holds an empty dict per section,
so ``--network_overrides#unet#num_res_blocks 2`` (or ``--network_overrides#scale_factor 0.18215``) is merged into
the preset by :func:`build_model`. A whole architecture can also be given as a dict (``"preset": {...}``, e.g. a model
file's ``config``), JSON lists being taken as tuples.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from monai.utils import look_up_option
from torch import nn

from .model import LPUWFModel
from .prior import ResidualDiffusionModel, SupervisedPrior

__all__ = [
    "PRESETS",
    "PRIOR_PRESETS",
    "RESIDUAL_PRESETS",
    "build_model",
    "build_prior",
    "build_residual_model",
    "model_from_config",
]

_LINEAR_DDPM_1000 = {"num_train_timesteps": 1000, "schedule": "linear_beta", "beta_start": 1e-4, "beta_end": 0.02}

PRESETS: dict[str, dict[str, Any]] = {
    # Tinysqua/LPUWF-LDM: config/vae/config_monaivae_zheer.py, config/diffusion/config_zheer_controlnet.py,
    # diffusion/LPUWF_LDM.py (monai-generative defaults for everything they leave out). ``include_fc=False``:
    # monai-generative's attention blocks define ``proj_attn`` but never apply it, so this is their network.
    "paper": {
        "spatial_dims": 2,
        "image_channels": 1,
        "condition_channels": 3,
        "autoencoder": {
            "channels": (128, 256, 512),
            "latent_channels": 4,
            "num_res_blocks": 2,
            "attention_levels": (False, False, False),
            "norm_num_groups": 32,
            "include_fc": False,
        },
        "unet": {
            "channels": (128, 256, 512, 1024),
            "attention_levels": (False, False, True, True),
            "num_res_blocks": 2,
            "num_head_channels": 8,
            "norm_num_groups": 32,
            "include_fc": False,
        },
        "controlnet": {"conditioning_embedding_num_channels": (32, 96, 256)},
        "scale_factor": 0.18215,
        "schedule": dict(_LINEAR_DDPM_1000),
    },
    # Same topology (autoencoder x4, U-Net with attention at its two deepest of four levels, 3-level SLO
    # embedding), widths for a CPU demo on ~128 x 128 images; the scale factor is computed from data.
    "small": {
        "spatial_dims": 2,
        "image_channels": 1,
        "condition_channels": 3,
        "autoencoder": {
            "channels": (16, 32, 32),
            "latent_channels": 4,
            "num_res_blocks": 1,
            "attention_levels": (False, False, False),
            "norm_num_groups": 8,
            "include_fc": False,
        },
        "unet": {
            "channels": (32, 32, 64, 64),
            "attention_levels": (False, False, True, True),
            "num_res_blocks": 1,
            "num_head_channels": 16,
            "norm_num_groups": 8,
            "include_fc": False,
        },
        "controlnet": {"conditioning_embedding_num_channels": (8, 16, 32)},
        "scale_factor": 1.0,
        # the denoiser predicts the clean latents (not the noise): on CPU budgets it learns to follow the SLO where
        # epsilon prediction learns an average picture (bundle/docs/README.md, "A recipe that learns on a CPU")
        "schedule": {**_LINEAR_DDPM_1000, "prediction_type": "sample"},
    },
}

_SECTIONS = ("autoencoder", "unet", "controlnet", "schedule")


def build_model(preset: str | Mapping[str, Any] = "small", **overrides: Any) -> LPUWFModel:
    """Build an :class:`LPUWFModel` from a named preset (``"paper"`` or ``"small"``) or a config dict.

    Args:
        preset: a key of :data:`PRESETS` or a full config (e.g. a model file's ``config``, or a ``"preset"`` dict
            spelled out in a bundle config; lists are taken as tuples).
        overrides: top-level config entries to replace (``scale_factor=...``, ``spatial_dims=3``); for the
            sections ``autoencoder``, ``unet``, ``controlnet`` and ``schedule`` a dict is merged into the
            preset's, e.g. ``build_model("small", unet={"num_res_blocks": 2})``.

    Returns:
        a freshly initialised :class:`LPUWFModel`.
    """
    return LPUWFModel.from_config(_merged(PRESETS, preset, overrides, _SECTIONS))


def _tuples(value: Any) -> Any:
    """JSON lists as tuples (a config read from JSON equals the Python preset)."""
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


#: the supervised prior (:class:`~monai_lpuwf.networks.prior.SupervisedPrior`): the BasicUNet of the ablation's
#: competitor arm (``benchmarks/ablation.py``), the same network a user would try first
PRIOR_PRESETS: dict[str, dict[str, Any]] = {
    "basic": {"spatial_dims": 2, "image_channels": 1, "condition_channels": 3, "features": (16, 16, 32, 64, 128, 16)},
}

#: the prior + residual diffusion (:class:`~monai_lpuwf.networks.prior.ResidualDiffusionModel`): a small pixel-space
#: denoiser (three levels, no attention, so whole native frames cost time linear in their pixels) that predicts the
#: clean residual ("sample"), which on this project's CPU budgets follows its condition where "epsilon" does not
RESIDUAL_PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "spatial_dims": 2,
        "image_channels": 1,
        "condition_channels": 3,
        "prior": {"features": (16, 16, 32, 64, 128, 16)},
        "denoiser": {
            "channels": (16, 32, 64),
            "attention_levels": (False, False, False),
            "num_res_blocks": 1,
            "norm_num_groups": 8,
            "include_fc": False,
        },
        "schedule": {**_LINEAR_DDPM_1000, "prediction_type": "sample"},
        "residual_scale": 1.0,
    },
}


_RESIDUAL_SECTIONS = ("prior", "denoiser", "schedule")


def _merged(presets: Mapping[str, Any], preset: str | Mapping[str, Any], overrides: Mapping[str, Any],
            sections: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """``preset`` (a key of ``presets`` or a config) with ``overrides``: a dict given for one of ``sections`` is
    merged into that section, any other entry replaces the preset's; lists become tuples."""
    config = copy.deepcopy(dict(look_up_option(preset, presets) if isinstance(preset, str) else preset))
    for key, value in overrides.items():
        if key in sections and isinstance(value, Mapping):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return _tuples(config)


def build_prior(preset: str | Mapping[str, Any] = "basic", **overrides: Any) -> SupervisedPrior:
    """Build a :class:`~monai_lpuwf.networks.prior.SupervisedPrior` from :data:`PRIOR_PRESETS` or a config dict.

    Args:
        preset: a key of :data:`PRIOR_PRESETS` (``"basic"``) or a config (e.g. a model file's ``config``).
        overrides: config entries to replace, e.g. ``features=(32, 32, 64, 128, 256, 32)``.
    """
    return SupervisedPrior.from_config(_merged(PRIOR_PRESETS, preset, overrides, ()))


def build_residual_model(preset: str | Mapping[str, Any] = "small", **overrides: Any) -> ResidualDiffusionModel:
    """Build a :class:`~monai_lpuwf.networks.prior.ResidualDiffusionModel` from :data:`RESIDUAL_PRESETS`.

    Args:
        preset: a key of :data:`RESIDUAL_PRESETS` (``"small"``) or a config dict.
        overrides: entries to replace; the sections ``prior``, ``denoiser`` and ``schedule`` are merged, e.g.
            ``build_residual_model(denoiser={"num_res_blocks": 2})``.
    """
    return ResidualDiffusionModel.from_config(_merged(RESIDUAL_PRESETS, preset, overrides, _RESIDUAL_SECTIONS))


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild the model a model file describes: its ``config["model_class"]`` (``"prior"``, ``"residual"``;
    absent = :class:`LPUWFModel`). Weights are not loaded."""
    classes = {"prior": SupervisedPrior, "residual": ResidualDiffusionModel}
    name = config.get("model_class")
    if name is None:
        return LPUWFModel.from_config(config)
    return look_up_option(name, classes).from_config(_tuples(dict(config)))
