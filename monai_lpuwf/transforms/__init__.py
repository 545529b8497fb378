"""UWF transforms: loading, training augmentation (rotation and crop in one resampling), field of view, SLO
sharpening, registration (vessel-based ``RegisterUWF`` for real frames, elastix), vessel maps and the vessel
correlation, CTRD map and presets."""

from .augment import RandRotateCrop, RandRotateCropD, RandRotateCropd, RandRotateCropDict
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
from .presets import REGISTER_METHODS, REGISTER_TARGETS, uwf_inference_transforms, uwf_train_transforms
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
    training_frame_size,
    training_scale,
)
from .uwf_registration import (
    MIN_VESSEL_CORRELATION,
    SEARCH_GRIDS,
    RegisterUWF,
    RegisterUWFD,
    RegisterUWFd,
    RegisterUWFDict,
)
from .vessels import VESSEL_SIGMAS, registration_mask, vessel_band, vessel_correlation, vessel_grey, vessel_map

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
    "RandRotateCrop",
    "RandRotateCropd",
    "RandRotateCropD",
    "RandRotateCropDict",
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
    "RegisterUWF",
    "RegisterUWFd",
    "RegisterUWFD",
    "RegisterUWFDict",
    "MIN_VESSEL_CORRELATION",
    "SEARCH_GRIDS",
    "VESSEL_SIGMAS",
    "vessel_grey",
    "vessel_band",
    "vessel_correlation",
    "vessel_map",
    "registration_mask",
    "uwf_train_transforms",
    "uwf_inference_transforms",
    "REGISTER_TARGETS",
    "REGISTER_METHODS",
    "TRAINING_SCALE_KEY",
    "training_frame_size",
    "training_scale",
    "TrainingScaleRecord",
    "CheckTrainingScaled",
    "CheckTrainingScaleD",
    "CheckTrainingScaleDict",
]
