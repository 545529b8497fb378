"""LPUWF-LDM networks on MONAI core classes: gated SLO encoder, conditional AutoencoderKL, the full model,
presets, monai-generative checkpoint compatibility and accelerator compute options."""

from .autoencoder import ConditionalAutoencoderKL
from .compat import convert_monai_generative_state_dict, load_monai_generative_state_dict
from .condition_encoder import GatedConditionEncoder
from .device_options import AutocastGroupNorm, optimize_for_device
from .model import LPUWFModel
from .presets import PRESETS, build_model

__all__ = [
    "GatedConditionEncoder",
    "ConditionalAutoencoderKL",
    "LPUWFModel",
    "PRESETS",
    "build_model",
    "convert_monai_generative_state_dict",
    "load_monai_generative_state_dict",
    "AutocastGroupNorm",
    "optimize_for_device",
]
