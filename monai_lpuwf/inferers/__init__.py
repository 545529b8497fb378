"""Generation from UWF-SLO: the sampler, its MONAI ``Inferer`` wrapper, the sampling defaults and latent tiling."""

from .inferer import LPUWFInferer
from .sampler import INFERENCE_DEFAULTS, SCHEDULERS, LPUWFSampler, build_scheduler, item_seed
from .tiling import decode_tiled, denoise_tiled, estimate_generation_memory, tile_windows

__all__ = [
    "LPUWFSampler",
    "LPUWFInferer",
    "INFERENCE_DEFAULTS",
    "build_scheduler",
    "item_seed",
    "SCHEDULERS",
    "decode_tiled",
    "denoise_tiled",
    "estimate_generation_memory",
    "tile_windows",
]
