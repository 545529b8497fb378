"""Generation runs: checked input frames and bad-input reporting (:mod:`.inputs`), the trained model (:mod:`.model`),
one run per output folder (:mod:`.lock`).

The sampling itself is :mod:`monai_lpuwf.inferers`, the pre-processing
:func:`monai_lpuwf.transforms.uwf_inference_transforms`, the writing :func:`monai_lpuwf.transforms.save_generated`.
"""

from .inputs import BAD_INPUT_POLICIES, InferenceInputError, InferenceInputs, brief_input_errors, input_error
from .lock import OutputFolderInUseError, OutputFolderLock
from .model import load_generation_model

__all__ = [
    "BAD_INPUT_POLICIES",
    "InferenceInputError",
    "InferenceInputs",
    "brief_input_errors",
    "input_error",
    "load_generation_model",
    "OutputFolderInUseError",
    "OutputFolderLock",
]
