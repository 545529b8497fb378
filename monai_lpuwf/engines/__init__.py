"""Ignite/MONAI training engines and handlers for the LPUWF-LDM stages (used by the bundle in ``bundle/``)."""

from __future__ import annotations

from .checkpoint import (
    STAGE_FILES,
    AtomicCheckpointSaver,
    ModelConfigRecord,
    ModelFileError,
    ResumeCheckpointLoader,
    StageOrderError,
    StageRecord,
    check_device,
    load_stage_weights,
)
from .determinism import DeterministicSeedHandler, derive_seed, enable_cudnn_autotune
from .image_grid import ImageGridHandler, make_image_grid
from .prepare_batch import (
    PREDICTION_TYPES,
    AutoencoderPrepareBatch,
    LatentDiffusionPrepareBatch,
    ResidualDiffusionPrepareBatch,
    get_batch_item,
)
from .progress import TrainingProgressBar
from .scale_factor import ResidualScaleHandler, ScaleFactorHandler, compute_residual_scale, compute_scale_factor
from .trainers import (
    AutoencoderGanTrainer,
    LatentDiffusionTrainer,
    LPUWFTrainer,
    SupervisedTranslationTrainer,
    kl_divergence,
    loss_terms,
    set_trainable,
    trainable_parameters,
    warmup_cosine,
)
from .validation import (
    KeyedPrepareBatch,
    ReconstructionInferer,
    image_quality_metrics,
    ms_ssim_min_size,
    unit_range_pairs,
)

__all__ = [
    "AtomicCheckpointSaver",
    "AutoencoderGanTrainer",
    "AutoencoderPrepareBatch",
    "DeterministicSeedHandler",
    "ImageGridHandler",
    "KeyedPrepareBatch",
    "LPUWFTrainer",
    "ModelConfigRecord",
    "ModelFileError",
    "STAGE_FILES",
    "StageRecord",
    "check_device",
    "LatentDiffusionPrepareBatch",
    "LatentDiffusionTrainer",
    "PREDICTION_TYPES",
    "ReconstructionInferer",
    "ResidualDiffusionPrepareBatch",
    "ResidualScaleHandler",
    "ResumeCheckpointLoader",
    "ScaleFactorHandler",
    "StageOrderError",
    "SupervisedTranslationTrainer",
    "TrainingProgressBar",
    "compute_residual_scale",
    "compute_scale_factor",
    "derive_seed",
    "enable_cudnn_autotune",
    "get_batch_item",
    "image_quality_metrics",
    "kl_divergence",
    "load_stage_weights",
    "loss_terms",
    "make_image_grid",
    "ms_ssim_min_size",
    "set_trainable",
    "trainable_parameters",
    "unit_range_pairs",
    "warmup_cosine",
]
