"""LPUWF-LDM networks on MONAI core classes: gated SLO encoder, conditional AutoencoderKL, the full model,
presets and monai-generative checkpoint compatibility."""

from .autoencoder import ConditionalAutoencoderKL
from .compat import convert_monai_generative_state_dict, load_monai_generative_state_dict
from .condition_encoder import GatedConditionEncoder
from .model import LPUWFModel, check_image_size
from .presets import PRESETS, build_model

__all__ = [
    "GatedConditionEncoder",
    "ConditionalAutoencoderKL",
    "LPUWFModel",
    "check_image_size",
    "PRESETS",
    "build_model",
    "convert_monai_generative_state_dict",
    "load_monai_generative_state_dict",
]
