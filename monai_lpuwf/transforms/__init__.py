"""UWF transforms: loading, field of view, SLO sharpening, elastix registration, CTRD map and presets."""

from .difference import NORMALIZATIONS, CrossTemporalDifference, CrossTemporalDifferenced
from .enhance import UnsharpMask, UnsharpMaskd
from .fov import FieldOfView, FieldOfViewd, flat_box_mask
from .io import MODALITIES, LoadUWFImage, LoadUWFImaged
from .presets import REGISTER_TARGETS, uwf_inference_transforms, uwf_train_transforms
from .registration import METRICS, MODES, RegisterElastix, RegisterElastixd, similarity
from .scale import TRAINING_SCALE_KEY, CheckTrainingScaled, TrainingScaleRecord, training_scale

__all__ = [
    "MODALITIES",
    "LoadUWFImage",
    "LoadUWFImaged",
    "FieldOfView",
    "FieldOfViewd",
    "flat_box_mask",
    "UnsharpMask",
    "UnsharpMaskd",
    "CrossTemporalDifference",
    "CrossTemporalDifferenced",
    "NORMALIZATIONS",
    "RegisterElastix",
    "RegisterElastixd",
    "MODES",
    "METRICS",
    "similarity",
    "uwf_train_transforms",
    "uwf_inference_transforms",
    "REGISTER_TARGETS",
    "TRAINING_SCALE_KEY",
    "training_scale",
    "TrainingScaleRecord",
    "CheckTrainingScaled",
]
