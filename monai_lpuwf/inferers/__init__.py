"""Generation from UWF-SLO: the sampler and its MONAI ``Inferer`` wrapper."""

from .inferer import LPUWFInferer
from .sampler import SCHEDULERS, LPUWFSampler, build_scheduler

__all__ = ["LPUWFSampler", "LPUWFInferer", "build_scheduler", "SCHEDULERS"]
