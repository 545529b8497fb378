"""MONAI Label inference task: UWF-SLO in, generated late-phase UWF-FA image out (image-to-image generation).

MONAI Label's task types are segmentation-like (a label map written by its ``Writer``); generation is served here by
a :class:`~monailabel.tasks.infer.basic_infer.BasicInferTask` whose pre-transforms, inferer, network and inverse
are those of one :class:`monai_lpuwf.generation.Generator` (the bundle's ``inference.json`` and the MONAI Deploy
app use the same):

* pre-transforms: the generator's inference transforms (load the SLO as (3, H, W) in [-1, 1], unsharp-mask it, pad
  it with -1 to the model's size divisor);
* inferer: the generator's :class:`monai_lpuwf.inferers.LPUWFInferer`, at the model file's recommended sampling
  settings with the request's on top;
* post-transform: the generator's :class:`monai.transforms.Invertd`, which crops the output back to the SLO's H x W;
* network: a bundle model file (``models/model_residual.pt``, ``model.pt``...), loaded by
  :meth:`monai_lpuwf.generation.Generator.from_file`;
* writer: writes the generated FA as a grey image file (PNG by default), which the ``/infer`` endpoint returns, and,
  with ``uncertainty`` requested, puts the per-pixel standard deviation map into the result JSON as a base64 PNG.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from monai.inferers import Inferer
from monai.transforms import Compose, CopyItemsd, EnsureTyped
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import strtobool

from monai_lpuwf.data import save_uwf_image
from monai_lpuwf.generation import Generator, input_error
from monai_lpuwf.inferers import INFERENCE_DEFAULTS, SCHEDULERS

__all__ = ["LateFAGenerationTask", "GENERATION_TYPE", "RESULT_EXTENSIONS"]

logger = logging.getLogger(__name__)

GENERATION_TYPE = "generation"
RESULT_EXTENSIONS = (".png", ".tif", ".tiff", ".nii.gz", ".nii", ".dcm", ".bmp")
SETTINGS = tuple(INFERENCE_DEFAULTS)  # the sampling settings a request may set


class LateFAGenerationTask(BasicInferTask):
    """Generate the late-phase FA of an uploaded or selected UWF-SLO.

    Request parameters (the ``params`` JSON of ``POST /infer/<model>``; defaults from the constructor, whose
    ``None`` takes the model file's recommended setting, else ``monai_lpuwf.inferers.INFERENCE_DEFAULTS``):

    ========================= =====================================================================================
    ``scheduler``             ``"ddim"``, ``"ddpm"`` or ``"pndm"``
    ``num_inference_steps``   sampling steps
    ``num_samples``           draws averaged into the output (more than one gives the uncertainty map)
    ``seed``                  seed of the first draw (same seed, same image)
    ``eta``, ``clip_sample``  DDIM noise and sample clipping
    ``conditioning_scale``    control strength (multiplier of the ControlNet residuals)
    ``t_start``               residual models: the prior noised to this timestep (``null``: pure noise)
    ``flip_average``          prior and residual models: average the prior over the SLO's flips
    ``uncertainty``           ``true``: also return the per-pixel standard deviation over the draws (needs
                              ``num_samples >= 2``) in the result JSON, key ``"uncertainty"``
    ``result_extension``      ``.png`` (default), ``.tif``, ``.nii.gz``, ``.dcm``, ``.bmp``
    ``result_bit_depth``      8 (default) or 16 (grey PNG, TIFF, DICOM)
    ========================= =====================================================================================

    The returned image is grey, with the SLO's height and width and orientation; grey level / (2**bit_depth - 1)
    maps [0, 1] onto the model's [-1, 1] output range. The uncertainty map (``"uncertainty"`` in the result JSON:
    ``{"format": "png", "encoding": "base64", "data": ..., "scale": ...}``) is an 8-bit grey PNG of the same size
    whose grey level / 255 is the standard deviation on the [-1, 1] scale (clipped at 1), as the bundle's
    ``inference.json`` writes ``*_late_std`` images.

    The result JSON's ``"sampler"`` lists the settings used (the model's recommendation, the constructor's and the
    request's, in rising priority).

    Args:
        model_path: a bundle model file (``models/model_residual.pt``, ``model.pt``, ``model_prior.pt``).
        sharpen: unsharp-mask the SLO (the bundle's ``sharpen``; must match the training run).
        preload: load the model at start-up instead of at the first request.
        description: shown by ``/info``.
        sampling: default sampling settings, the keys of ``monai_lpuwf.inferers.INFERENCE_DEFAULTS`` (``scheduler``,
            ``num_inference_steps``, ...); one not given, or ``None``, takes the model file's recommendation, else
            the default (see :class:`~monai_lpuwf.generation.Generator`).

    Raises:
        TypeError: a keyword that is not a sampling setting (the message lists them).
        ValueError: an unknown scheduler.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        sharpen: bool = True,
        preload: bool = False,
        description: str = "Late-phase UWF fluorescein angiography generated from a UWF-SLO (LPUWF-LDM)",
        **sampling: Any,
    ) -> None:
        unknown = sorted(set(sampling) - set(SETTINGS))
        if unknown:
            raise TypeError(f"LateFAGenerationTask: {unknown} are not sampling settings; those are {list(SETTINGS)}.")
        scheduler = sampling.get("scheduler")
        if scheduler is not None and str(scheduler).lower() not in SCHEDULERS:
            raise ValueError(f"scheduler '{scheduler}' is not one of {', '.join(SCHEDULERS)}.")
        self.sharpen = bool(sharpen)
        settings = {key: sampling.get(key) for key in SETTINGS}
        settings["scheduler"] = None if scheduler is None else str(scheduler).lower()
        super().__init__(
            path=str(model_path),
            network=None,
            type=GENERATION_TYPE,
            labels=None,
            dimension=2,
            description=description,
            input_key="slo",
            output_label_key="pred",
            config={
                **settings,
                "uncertainty": False,
                "result_extension": ".png",
                "result_bit_depth": 8,
            },
            preload=preload,
        )

    def generator(self, data=None) -> Generator:
        """The model file's :class:`~monai_lpuwf.generation.Generator` on the request's device (loaded once per
        device and model file by :meth:`_get_generator`), at the request's sampling settings."""
        data = {**self._config, **(data or {})}
        generator = self._get_generator(data.get("device", "cpu"))
        uncertainty = bool(strtobool(str(data.get("uncertainty", False))))
        if uncertainty:  # HTTP 400 where the model's recommended num_samples is 1 and the request gives none
            self.check_request({**data, "num_samples": data.get("num_samples") or generator.settings["num_samples"]})
        return generator.with_settings(**{k: data.get(k) for k in SETTINGS}, with_std=uncertainty)

    def inference_transforms(self, data=None) -> Compose:
        """The generator's inference transforms, whose padding :meth:`post_transforms` inverts."""
        return self._get_generator((data or {}).get("device", "cpu")).transforms

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        # the request holds the image path under "image"; the bundle's transforms read the key "slo"
        return [CopyItemsd(keys="image", names="slo"), *self.inference_transforms(data).transforms]

    def __call__(self, request, callbacks=None):
        """Check the request's sampler and writer parameters, then run the task (pre, inferer, writer)."""
        self.check_request({**self._config, **request})
        return super().__call__(request, callbacks)

    @staticmethod
    def check_request(req: dict[str, Any]) -> None:
        """Raise ``HTTPException(400)`` (the client sees the message) for parameters that cannot work."""
        problems = []
        if req.get("scheduler") is not None and str(req["scheduler"]).lower() not in SCHEDULERS:
            problems.append(f"scheduler '{req.get('scheduler')}' is not one of {', '.join(SCHEDULERS)}")
        for key in ("num_inference_steps", "num_samples"):
            if req.get(key) is None:
                continue  # the model file's recommendation
            try:
                if int(req[key]) < 1:
                    raise ValueError
            except (TypeError, ValueError):
                problems.append(f"{key} must be a whole number >= 1, got {req[key]!r}")
        samples = req.get("num_samples")
        if strtobool(str(req.get("uncertainty", False))) and not problems and samples is not None and int(samples) < 2:
            problems.append(
                "uncertainty=true needs num_samples >= 2 (the map is the standard deviation over the draws); "
                'send e.g. {"uncertainty": true, "num_samples": 4}'
            )
        extension = str(req.get("result_extension", ".png")).lower()
        if ("." + extension.lstrip(".")) not in RESULT_EXTENSIONS:
            problems.append(f"result_extension '{extension}' is not one of {', '.join(RESULT_EXTENSIONS)}")
        if str(req.get("result_bit_depth", 8)) not in ("8", "16"):
            problems.append(f"result_bit_depth must be 8 or 16, got {req.get('result_bit_depth')!r}")
        if problems:
            raise HTTPException(status_code=400, detail="; ".join(problems) + ".")

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        """Load and prepare the SLO; an image the loader cannot use is the client's error: HTTP 400 with its message."""
        try:
            return super().run_pre_transforms(data, transforms)
        except Exception as e:
            cause = input_error(e)  # the loader's own error (MONAI wraps it in "applying transform ...")
            if cause is None:
                raise
            raise HTTPException(status_code=400, detail=str(cause)) from e

    def inferer(self, data=None) -> Inferer:
        return self.generator(data).inferer

    def post_transforms(self, data=None) -> Sequence[Callable]:
        # crop the padding of the inference transforms off the generated image (and its uncertainty channel)
        # (the padding is read from data["slo"]; Invertd wants "pred" as a MetaTensor for that)
        generator = self._get_generator((data or {}).get("device", "cpu"))
        return [EnsureTyped(keys="pred", track_meta=True), generator.inverse()]

    def _get_network(self, device, data):
        """The bundle model on ``device`` (the generator's network)."""
        return self._get_generator(device).network

    def _get_generator(self, device) -> Generator:
        """The model file's generator on ``device``, cached and reloaded when the file changes."""
        path = self.get_path()
        if path is None:
            raise FileNotFoundError(
                f"no model file at {self.path}; train the bundle (models/model.pt) and start the server with "
                "--conf model <path to model.pt or the bundle folder>."
            )
        mtime = os.stat(path).st_mtime
        cached = self._networks.get(device)
        if cached is None or cached[1] != mtime:
            logger.info(f"loading {path} on {device}")
            self._networks[device] = (
                Generator.from_file(path, device=torch.device(device), sharpen=self.sharpen),
                mtime,
            )
        return self._networks[device][0]

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict[str, Any]]:
        """Write the generated FA to a temporary file (the server deletes it after sending) and build the JSON."""
        extension = "." + str(extension or data.get("result_extension") or ".png").lower().lstrip(".")
        bit_depth = int(data.get("result_bit_depth", 8))
        pred = torch.as_tensor(data[self.output_label_key]).detach().cpu().float()  # (1, H, W) or (2, H, W) with std
        path = Path(tempfile.gettempdir()) / f"lpuwf_late_{uuid.uuid4().hex}{extension}"
        save_uwf_image(pred[:1], path, bit_depth=bit_depth)
        result: dict[str, Any] = {
            "type": GENERATION_TYPE,
            "image": "late-phase UWF-FA",
            "shape": [int(s) for s in pred.shape[1:]],
            "value_range": [-1.0, 1.0],
            "bit_depth": bit_depth,
            "sampler": dict(self.generator(data).settings),
        }
        if pred.shape[0] > 1:
            result["uncertainty"] = {
                "format": "png",
                "encoding": "base64",
                "data": _png_base64(pred[1]),
                "scale": "grey level / 255 = per-pixel standard deviation over the samples on the [-1, 1] scale",
            }
        return str(path), result


def _png_base64(std: torch.Tensor) -> str:
    """8-bit grey PNG of a standard deviation map (H, W), grey = round(255 * clip(std, 0, 1)), base64-encoded."""
    from PIL import Image

    grey = np.round(std.clamp(0, 1).numpy() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
