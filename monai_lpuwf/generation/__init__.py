"""Generation runs: checked input frames and bad-input reporting (:mod:`.inputs`), the trained network of a model
file (:mod:`.model`), the :class:`Generator` (:mod:`.generator`: inference transforms, sampler, inverse and writer
behind one call, used by the bundle's ``inference.json``, MONAI Label and MONAI Deploy), one run per output folder
(:mod:`.lock`).

The sampling itself is :mod:`monai_lpuwf.inferers`, the pre-processing
:func:`monai_lpuwf.transforms.uwf_inference_transforms`, the writing :func:`monai_lpuwf.transforms.save_generated`.
"""

from .generator import SAMPLING_KEY, Generator, SamplingRecord, recommended_sampling
from .inputs import BAD_INPUT_POLICIES, InferenceInputError, InferenceInputs, brief_input_errors, input_error
from .lock import OutputFolderInUseError, OutputFolderLock
from .model import GENERATION_MODEL_FILES, GENERATION_STAGES, find_generation_model, generation_network

__all__ = [
    "Generator",
    "SAMPLING_KEY",
    "SamplingRecord",
    "recommended_sampling",
    "BAD_INPUT_POLICIES",
    "InferenceInputError",
    "InferenceInputs",
    "brief_input_errors",
    "input_error",
    "GENERATION_STAGES",
    "GENERATION_MODEL_FILES",
    "find_generation_model",
    "generation_network",
    "OutputFolderInUseError",
    "OutputFolderLock",
]
