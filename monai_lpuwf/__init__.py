"""monai-lpuwf: late-phase UWF fluorescein angiography from UWF-SLO with MONAI.

Sub-packages follow MONAI's own floor plan:

- :mod:`monai_lpuwf.transforms`: array + dictionary transforms (loading, field of view, SLO sharpening,
  elastix registration, cross-temporal difference map, train/inference presets).
- :mod:`monai_lpuwf.data`: triplet datalists and synthetic UWF phantoms.
- :mod:`monai_lpuwf.networks`: gated condition encoder, conditional AutoencoderKL, the LPUWF model wrapper,
  presets and monai-generative checkpoint compatibility.
- :mod:`monai_lpuwf.losses`, :mod:`monai_lpuwf.noise`: CTRD loss and low-frequency enhanced noise.
- :mod:`monai_lpuwf.engines`, :mod:`monai_lpuwf.inferers`, :mod:`monai_lpuwf.metrics`: training engines,
  sampling pipeline and evaluation.

Data keys used everywhere are listed in :class:`monai_lpuwf.keys.UWFKeys`.
"""

from .keys import UWFKeys

__version__ = "0.1.0"

__all__ = ["UWFKeys", "__version__"]
