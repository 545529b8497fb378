"""UWF transforms: loading, field of view, SLO sharpening, elastix registration, CTRD map and presets."""

from .difference import (
    NORMALIZATIONS,
    CrossTemporalDifference,
    CrossTemporalDifferenceD,
    CrossTemporalDifferenced,
    CrossTemporalDifferenceDict,
)
from .enhance import UnsharpMask, UnsharpMaskD, UnsharpMaskd, UnsharpMaskDict
from .fov import FieldOfView, FieldOfViewD, FieldOfViewd, FieldOfViewDict, flat_box_mask
from .io import MODALITIES, LoadUWFImage, LoadUWFImageD, LoadUWFImaged, LoadUWFImageDict
from .output import (
    OUTPUT_DTYPES,
    QuantizeIntensity,
    QuantizeIntensityD,
    QuantizeIntensityd,
    QuantizeIntensityDict,
    output_levels,
    save_generated,
)
from .presets import REGISTER_TARGETS, uwf_inference_transforms, uwf_train_transforms
from .registration import (
    METRICS,
    MODES,
    REGISTRATION_KEY,
    RegisterElastix,
    RegisterElastixD,
    RegisterElastixd,
    RegisterElastixDict,
    similarity,
)
from .scale import (
    TRAINING_SCALE_KEY,
    CheckTrainingScaleD,
    CheckTrainingScaled,
    CheckTrainingScaleDict,
    TrainingScaleRecord,
    training_scale,
)

__all__ = [
    "MODALITIES",
    "LoadUWFImage",
    "LoadUWFImaged",
    "LoadUWFImageD",
    "LoadUWFImageDict",
    "OUTPUT_DTYPES",
    "QuantizeIntensity",
    "QuantizeIntensityd",
    "QuantizeIntensityD",
    "QuantizeIntensityDict",
    "output_levels",
    "save_generated",
    "FieldOfView",
    "FieldOfViewd",
    "FieldOfViewD",
    "FieldOfViewDict",
    "flat_box_mask",
    "UnsharpMask",
    "UnsharpMaskd",
    "UnsharpMaskD",
    "UnsharpMaskDict",
    "CrossTemporalDifference",
    "CrossTemporalDifferenced",
    "CrossTemporalDifferenceD",
    "CrossTemporalDifferenceDict",
    "NORMALIZATIONS",
    "RegisterElastix",
    "RegisterElastixd",
    "RegisterElastixD",
    "RegisterElastixDict",
    "MODES",
    "METRICS",
    "REGISTRATION_KEY",
    "similarity",
    "uwf_train_transforms",
    "uwf_inference_transforms",
    "REGISTER_TARGETS",
    "TRAINING_SCALE_KEY",
    "training_scale",
    "TrainingScaleRecord",
    "CheckTrainingScaled",
    "CheckTrainingScaleD",
    "CheckTrainingScaleDict",
]
