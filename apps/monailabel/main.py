"""MONAI Label app serving LPUWF-LDM generation: upload or select a UWF-SLO, get the late-phase UWF-FA back.

Start (see README.md beside this file)::

    monailabel start_server --app apps/monailabel --studies <folder of SLO images> \\
        --conf model <bundle folder or model.pt> --host 127.0.0.1 --port 8000

``--conf`` options (all optional):

====================== ==========================================================================================
``model``              the bundle folder (its model file, ``models/model_residual.pt``, ``model.pt`` or
                       ``model_prior.pt``, the first found, and, if present, ``configs/inference.json``, whose plain
                       values of the sampling settings and ``sharpen`` become the defaults) or a model file.
                       Default: ``<app>/model/model.pt``. Sampling settings not set here nor in
                       the request are the model file's recommended ones (``monai_lpuwf.generation.Generator``).
``scheduler``          overrides the sampler (``ddim``, ``ddpm``, ``pndm``)
``steps``, ``samples`` override ``num_inference_steps``, ``num_samples``
any other setting      a name of ``monai_lpuwf.inferers.INFERENCE_DEFAULTS`` overrides that sampling setting:
                       ``seed``, ``eta``, ``clip_sample``, ``conditioning_scale`` (control strength), ``t_start``
                       (residual model's start; ``none``: pure noise), ``flip_average`` (``true``/``false``)
``sharpen``            ``true``/``false``, overrides ``sharpen``
``preload``            ``true`` loads the model at start-up
====================== ==========================================================================================

Everything is read from local files: this app never contacts MONAI's model zoo (it does not go through
MONAI Label's bundle download, whose default ``zoo_source`` queries the network even for a local bundle).

Images: a request names an image of the studies datastore by its id (``?image=7``), or uploads one (``-F file=@``).
A path on the server (as the id or as ``params.image``) is refused with HTTP 400, an unknown id with 404, and an
image the loader cannot use with 400 and the loader's message (:meth:`LPUWFApp.infer`). MONAI Label 0.8.5 itself
reads any existing path it is given; to tell an upload from a path, this app points the server process's temporary
folder (where MONAI Label writes uploads) at a private folder of its own (:func:`private_upload_dir`).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from generation_task import SETTINGS, LateFAGenerationTask
from monai.bundle import ConfigParser
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.utils.others.generic import strtobool

from monai_lpuwf.generation import find_generation_model
from monai_lpuwf.inferers import INFERENCE_DEFAULTS
from monai_lpuwf.threads import set_default_threads

logger = logging.getLogger(__name__)

MODEL_NAME = "lpuwf_late_fa"
# the formats LoadUWFImage reads; MONAI Label's default list lacks BMP (the authors' format) and TIFF variants
UWF_EXTENSIONS = ("*.bmp", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.dcm", "*.nii.gz", "*.nii")
# inference.json id -> task argument: the sampling settings (the sampler is "sampler" in the bundle) and sharpen
_BUNDLE_DEFAULTS = {("sampler" if key == "scheduler" else key): key for key in SETTINGS} | {"sharpen": "sharpen"}
_CONF_ALIASES = {"steps": "num_inference_steps", "samples": "num_samples"}  # short --conf names
_UPLOAD_PREFIX = "lpuwf-label-uploads-"
_HOW_TO_NAME_AN_IMAGE = (
    "name an image of the studies datastore by its id (the file name without extension, e.g. ?image=7; "
    "GET /datastore/?output=all lists them) or upload the file (-F file=@slo.bmp)"
)


def private_upload_dir() -> str:
    """The server process's temporary folder, made private to this app (created once per process, mode 0700).

    MONAI Label's ``/infer`` endpoint writes an uploaded file to ``tempfile.NamedTemporaryFile(...).name``; pointing
    ``tempfile.tempdir`` here makes "a file directly in this folder" mean "an upload of this server" (random names
    that a client cannot list), so that no other path on the server can pass for one. Removed at exit.
    """
    current = tempfile.gettempdir()
    if os.path.basename(current).startswith(_UPLOAD_PREFIX) and os.path.isdir(current):
        return current
    folder = tempfile.mkdtemp(prefix=_UPLOAD_PREFIX)
    tempfile.tempdir = folder
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _inside(path: str, folder: str | None) -> bool:
    if not folder:
        return False
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def resolve_model(model: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(model file, the bundle's configs/inference.json or None)`` for a bundle folder, a folder holding model
    files, or the file (:func:`~monai_lpuwf.generation.find_generation_model`); a folder without a model file gives
    the folder itself (generation fails, with the reason logged, until one is written)."""
    path = Path(model).expanduser()
    bundle_config = path / "configs" / "inference.json" if path.is_dir() else None
    try:
        model_file = find_generation_model(path)
    except FileNotFoundError as err:
        logger.warning(str(err))
        model_file = path
    return model_file, bundle_config if bundle_config is not None and bundle_config.is_file() else None


def conf_sampling(conf: dict[str, str]) -> dict[str, Any]:
    """The sampling settings among the ``--conf`` options (every name of ``INFERENCE_DEFAULTS``, and ``steps`` /
    ``samples`` for the step and sample counts), cast to the type of their default (``t_start``: a whole number,
    or ``none`` for pure noise).

    Raises:
        ValueError: a value that does not cast, naming the option.
    """
    settings: dict[str, Any] = {}
    for name, text in conf.items():
        key = _CONF_ALIASES.get(name, name)
        if key not in INFERENCE_DEFAULTS:
            continue
        default = INFERENCE_DEFAULTS[key]
        try:
            if isinstance(default, bool):
                value: Any = bool(strtobool(text))
            elif key == "t_start":
                value = None if str(text).strip().lower() in ("", "none", "null") else int(text)
            else:
                value = type(default)(text)
        except ValueError as err:
            raise ValueError(f"--conf {name} {text!r}: {err}") from err
        settings[key] = value
    return settings


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
        set_default_threads(conf.get("num_threads"))  # --conf num_threads N, else OMP_NUM_THREADS, else the default
        model_file, bundle_config = resolve_model(conf.get("model", os.path.join(app_dir, "model", "model.pt")))
        kwargs: dict[str, Any] = bundle_sampler_defaults(bundle_config)
        kwargs.update(conf_sampling(conf))
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
        self.upload_dir = private_upload_dir()
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

    def resolve_image(self, image: Any, datastore: Datastore) -> tuple[str, str]:
        """``(file, name for messages)`` of a request's ``image``: a datastore id, an upload, or a session image.

        Raises:
            HTTPException: 400 for a path on the server (or no image), 404 for an id that the datastore lacks.
        """
        if not isinstance(image, str) or not image:
            raise HTTPException(status_code=400, detail=f"no image in the request: {_HOW_TO_NAME_AN_IMAGE}.")
        uri = datastore.get_image_uri(image)  # "" unless ``image`` is an id of the datastore
        if uri:
            return uri, f"studies image '{image}'"
        if os.path.isfile(image) and os.path.dirname(os.path.realpath(image)) == os.path.realpath(self.upload_dir):
            return image, "the uploaded file"
        sessions = settings.MONAI_LABEL_SESSION_PATH if self._sessions else None
        if os.path.isfile(image) and _inside(image, sessions):
            return image, "the session's image"
        if os.path.isabs(image) or os.sep in image or "/" in image or os.path.exists(image):
            raise HTTPException(
                status_code=400,
                detail=f"image '{image}' is a path; this server reads no files by path: {_HOW_TO_NAME_AN_IMAGE}.",
            )
        raise HTTPException(
            status_code=404, detail=f"no image '{image}' in the studies datastore: {_HOW_TO_NAME_AN_IMAGE}."
        )

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's ``infer`` on the image named by id or uploaded only (see :meth:`resolve_image`).

        The task answers HTTP 400 with the loader's message for an image it cannot use; here the server's file name
        in that message is replaced by the name the client knows (the id, or "the uploaded file").
        """
        datastore = datastore if datastore else self.datastore()
        image, name = self.resolve_image(request.get("image"), datastore)
        try:
            return super().infer({**request, "image": image}, datastore)
        except HTTPException as e:
            if isinstance(e.detail, str):
                e.detail = e.detail.replace(image, name).replace(os.path.realpath(image), name)
            raise

    def infer_wsi(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Whole images only (no WSI tiling): the same checked path as :meth:`infer`."""
        return self.infer(request, datastore)
