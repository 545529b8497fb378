"""monai-lpuwf: late-phase UWF fluorescein angiography from UWF-SLO with MONAI.

Sub-packages follow MONAI's own floor plan:

- :mod:`monai_lpuwf.data`: UWF image files (readers and writers, :mod:`~monai_lpuwf.data.image_io`), triplet
  datalists, synthetic UWF phantoms, the registration cache and the size-grouped batch sampler.
- :mod:`monai_lpuwf.networks`: gated condition encoder, conditional AutoencoderKL, the LPUWF model wrapper,
  presets, the trained model file (:class:`~monai_lpuwf.networks.ModelFile`: the one reader and writer of model
  files, which engines, generation, evaluation and the apps share) and monai-generative checkpoint compatibility.
- :mod:`monai_lpuwf.losses`, :mod:`monai_lpuwf.noise`: CTRD loss, offline perceptual loss and low-frequency
  enhanced noise; :mod:`monai_lpuwf.scores`: PSNR, SSIM, MS-SSIM and MSE, whole frame or within a mask (pure
  functions the engines' validation metrics and the evaluation share).
- :mod:`monai_lpuwf.transforms`: array + dictionary transforms (loading, field of view, SLO sharpening, elastix
  registration, cross-temporal difference map, quantisation and writing of generated images, train/inference
  presets).
- :mod:`monai_lpuwf.inferers`: the sampling pipeline; :mod:`monai_lpuwf.engines`: training engines, checkpoints.
- :mod:`monai_lpuwf.metrics`: evaluation scores and the handlers that compute them during a run;
  :mod:`monai_lpuwf.generation`: the checked inputs, the trained model and the ``Generator`` of a generation run;
  :mod:`monai_lpuwf.export`: TorchScript / ONNX export.
- :mod:`monai_lpuwf.bundle_support`: where a bundle run gets its data (glue for ``bundle/configs``).

Layers
------
Every arrow points down: a module imports from its own unit (sub-package or top-level module) and from the units
of lower layers only, never from a higher layer nor from another unit of its own layer (nor from this package's
root). ``tests/test_layering.py`` reads the table below and checks every import of every module (function-local
and ``TYPE_CHECKING`` ones too)::

    4  bundle_support                                        bundle glue
    3  metrics, generation, export                           evaluation, generation runs, export
    2  transforms, inferers, engines                         MONAI transforms, sampling, training engines
    1  data, networks, losses, scores                        image files and datalists, networks, losses, scores
    0  keys, errors, atomic_write, threads, noise, weights   foundation

Data keys used everywhere are listed in :class:`monai_lpuwf.keys.UWFKeys`; errors that name a file or setting of the
user's derive from :class:`monai_lpuwf.errors.UserInputError` (reported in one line on the command line).
"""

from .keys import UWFKeys

__version__ = "0.1.0"

__all__ = ["UWFKeys", "__version__"]
