"""MONAI Label app serving LPUWF-LDM generation: upload or select a UWF-SLO, get the late-phase UWF-FA back.

Start (see README.md beside this file)::

    monailabel start_server --app apps/monailabel --studies <folder of SLO images> \\
        --conf model <bundle folder or model.pt> --host 127.0.0.1 --port 8000

``--conf`` options (all optional):

=============== ==========================================================================================
``model``       the bundle folder (``models/model.pt`` and, if present, ``configs/inference.json`` whose
                ``sampler``, ``num_inference_steps``, ``num_samples``, ``seed`` and ``sharpen`` become the
                defaults) or a ``model.pt`` file. Default: ``<app>/model/model.pt``.
``scheduler``   overrides the sampler (``ddim``, ``ddpm``, ``pndm``)
``steps``       overrides ``num_inference_steps``
``samples``     overrides ``num_samples``
``seed``        overrides ``seed``
``sharpen``     ``true``/``false``, overrides ``sharpen``
``preload``     ``true`` loads the model at start-up
=============== ==========================================================================================

Everything is read from local files: this app never contacts MONAI's model zoo (it does not go through
MONAI Label's bundle download, whose default ``zoo_source`` queries the network even for a local bundle).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from generation_task import LateFAGenerationTask
from monai.bundle import ConfigParser
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.utils.others.generic import strtobool

logger = logging.getLogger(__name__)

MODEL_NAME = "lpuwf_late_fa"
# the formats LoadUWFImage reads; MONAI Label's default list lacks BMP (the authors' format) and TIFF variants
UWF_EXTENSIONS = ("*.bmp", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.dcm", "*.nii.gz", "*.nii")
_BUNDLE_DEFAULTS = {  # inference.json id -> task argument
    "sampler": "scheduler",
    "num_inference_steps": "num_inference_steps",
    "num_samples": "num_samples",
    "seed": "seed",
    "sharpen": "sharpen",
}
_CONF_OVERRIDES = {"scheduler": ("scheduler", str), "steps": ("num_inference_steps", int),
                   "samples": ("num_samples", int), "seed": ("seed", int)}  # fmt: skip


def resolve_model(model: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(model.pt, inference.json or None)`` for a bundle folder, a folder holding ``model.pt``, or the file."""
    path = Path(model).expanduser()
    if path.is_dir():
        bundle_config = path / "configs" / "inference.json"
        for candidate in (path / "models" / "model.pt", path / "model.pt"):
            if candidate.is_file():
                return candidate, bundle_config if bundle_config.is_file() else None
        return path / "models" / "model.pt", None
    return path, None


def bundle_sampler_defaults(config_file: Path | None) -> dict[str, Any]:
    """The sampler settings of the bundle's ``inference.json`` (plain values only; missing ids are skipped)."""
    if config_file is None:
        return {}
    parser = ConfigParser()
    parser.read_config(str(config_file))
    defaults = {}
    for key, arg in _BUNDLE_DEFAULTS.items():
        value = parser.get(key)
        if value is not None and not (isinstance(value, str) and value.startswith(("$", "@", "%"))):
            defaults[arg] = value
    return defaults


class LPUWFApp(MONAILabelApp):
    """One inference task, ``lpuwf_late_fa`` (:class:`generation_task.LateFAGenerationTask`); no training."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        model_file, bundle_config = resolve_model(conf.get("model", os.path.join(app_dir, "model", "model.pt")))
        kwargs: dict[str, Any] = bundle_sampler_defaults(bundle_config)
        for key, (arg, cast) in _CONF_OVERRIDES.items():
            if key in conf:
                kwargs[arg] = cast(conf[key])
        if "sharpen" in conf:
            kwargs["sharpen"] = bool(strtobool(conf["sharpen"]))
        if not model_file.is_file():
            logger.warning(
                f"no model at {model_file}: /infer will fail until it exists. Start with --conf model <bundle folder "
                "or models/model.pt> (train the bundle, or write a demo model with apps/demo_model.py)."
            )
        self.task = LateFAGenerationTask(
            model_file, preload=bool(strtobool(conf.get("preload", "false"))) and model_file.is_file(), **kwargs
        )
        logger.info(f"model: {model_file}; bundle config: {bundle_config}; task settings: {self.task.config()}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="LPUWF-LDM late-phase UWF-FA generation",
            description="Generates the late-phase UWF fluorescein angiogram of a UWF-SLO image (LPUWF-LDM).",
            version="0.1.0",
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        extensions = list(dict.fromkeys([*UWF_EXTENSIONS, *settings.MONAI_LABEL_DATASTORE_FILE_EXT]))
        return LocalDatastore(
            self.studies,
            extensions=extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {MODEL_NAME: self.task}
