"""LPUWF-LDM networks on MONAI core classes: gated SLO encoder, conditional AutoencoderKL, the full model,
presets, the supervised prior and its residual diffusion, the trained model file (:class:`ModelFile`),
monai-generative checkpoint compatibility and accelerator compute options."""

from .autoencoder import ConditionalAutoencoderKL
from .compat import convert_monai_generative_state_dict, load_monai_generative_state_dict
from .condition_encoder import GatedConditionEncoder
from .device_options import AutocastGroupNorm, optimize_for_device
from .model import LPUWFModel, check_image_size
from .model_file import (
    DENOISER_STAGES,
    MODEL_FILE_KEYS,
    STAGE_FILES,
    ModelFile,
    ModelFileError,
    StageRecord,
    check_config,
    check_device,
    plain_config,
    read_checkpoint,
)
from .presets import (
    PRESETS,
    PRIOR_PRESETS,
    RESIDUAL_PRESETS,
    build_model,
    build_prior,
    build_residual_model,
    model_from_config,
)
from .prior import ResidualDiffusionModel, SupervisedPrior

__all__ = [
    "GatedConditionEncoder",
    "ConditionalAutoencoderKL",
    "LPUWFModel",
    "check_image_size",
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
    "PRESETS",
    "PRIOR_PRESETS",
    "RESIDUAL_PRESETS",
    "ResidualDiffusionModel",
    "SupervisedPrior",
    "build_model",
    "build_prior",
    "build_residual_model",
    "model_from_config",
    "convert_monai_generative_state_dict",
    "load_monai_generative_state_dict",
    "AutocastGroupNorm",
    "optimize_for_device",
]
