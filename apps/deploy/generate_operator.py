"""MONAI Deploy operator: generate the late-phase UWF-FA of a UWF-SLO with a trained LPUWF-LDM bundle model."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.transforms import Invertd

from monai_lpuwf.generation import input_error, load_generation_model
from monai_lpuwf.inferers import INFERENCE_DEFAULTS, LPUWFSampler
from monai_lpuwf.threads import set_default_threads
from monai_lpuwf.transforms import uwf_inference_transforms

__all__ = ["LPUWFGenerateOperator", "resolve_model_file"]

MODEL_FILE = "model.pt"


def resolve_model_file(model_path: str | Path) -> Path:
    """The bundle model file behind ``-m/--model``: the file itself, ``<dir>/model.pt`` or ``<dir>/models/model.pt``
    (a bundle root), or the only ``model.pt`` one level down (the SDK's ``models/<name>/`` layout).

    Raises:
        FileNotFoundError: no ``model.pt`` there, saying what is expected.
    """
    path = Path(model_path)
    if path.is_file():
        return path
    candidates = [path / MODEL_FILE, path / "models" / MODEL_FILE] + sorted(path.glob(f"*/{MODEL_FILE}"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no LPUWF-LDM model at '{path}': give -m/--model the bundle's models/model.pt (written by the last training "
        "stage, train_late.json), the bundle folder, or a folder holding model.pt."
    )


class LPUWFGenerateOperator(Operator):
    """Run :class:`monai_lpuwf.inferers.LPUWFSampler` on each SLO with the bundle model.

    The model is the bundle's ``models/model.pt`` (``{"model": state_dict, "config": LPUWFModel.config}``), rebuilt
    in Python with :func:`monai_lpuwf.generation.load_generation_model` (as the bundle's ``inference.json``
    does): the networks are not TorchScript-able, so the SDK's ``MonaiBundleInferenceOperator`` (which wants
    ``model.ts``) is not used.

    Preprocessing is the bundle's, :func:`monai_lpuwf.transforms.uwf_inference_transforms` (built in
    :meth:`start` for the model's size divisor): the SLO file is loaded, unsharp-masked (``sharpen``) and padded
    with -1 to the model's size divisor; :class:`monai.transforms.Invertd` crops the generated images back, so the
    output has the SLO's height and width.

    Args:
        fragment: the application.
        model_path: ``model.pt`` or a folder holding it (see :func:`resolve_model_file`).
        scheduler, num_inference_steps, num_samples, seed: :class:`~monai_lpuwf.inferers.LPUWFSampler` settings;
            ``num_samples > 1`` adds the per-pixel standard deviation (uncertainty) map. Defaults:
            ``monai_lpuwf.inferers.INFERENCE_DEFAULTS``.
        sharpen: unsharp-mask the SLO as the training transforms do (``sharpen`` in the bundle's common config).
        device: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available).

    Named input ``slo`` / output ``pred``: the loader's dictionary (``name``, ``path``), to which ``pred``
    (1, H, W) and ``pred_std`` (1, H, W) or ``None`` are added (tensors on the CPU, in [-1, 1] for ``pred``), or
    ``error`` (the file's or the generation's error, which the writer reports).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        model_path: str | Path,
        scheduler: str = INFERENCE_DEFAULTS["scheduler"],
        num_inference_steps: int = INFERENCE_DEFAULTS["num_inference_steps"],
        num_samples: int = INFERENCE_DEFAULTS["num_samples"],
        seed: int = 0,
        sharpen: bool = True,
        device: str | None = None,
        **kwargs,
    ) -> None:
        self._logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.model_file = resolve_model_file(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.sampler = LPUWFSampler(
            scheduler=scheduler, num_inference_steps=num_inference_steps, num_samples=num_samples, seed=seed
        )
        self.sharpen = bool(sharpen)
        self.model: torch.nn.Module | None = None
        self.preprocess = self.crop_back = None
        self.input_name, self.output_name = "slo", "pred"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)
        spec.output(self.output_name)

    def start(self) -> None:
        set_default_threads()  # the project's CPU thread default (OMP_NUM_THREADS overrides it)
        self.model = load_generation_model(self.model_file, map_location=self.device).to(self.device)
        self.preprocess = uwf_inference_transforms(divisor=self.model.size_divisor, sharpen=self.sharpen)
        self.crop_back = Invertd(
            keys=("pred", "pred_std"), transform=self.preprocess, orig_keys="slo", allow_missing_keys=True
        )
        self._logger.info(f"loaded {self.model_file} on {self.device}")

    def compute(self, op_input, op_output, context) -> None:
        item = dict(op_input.receive(self.input_name))
        begin = time.perf_counter()
        try:
            data = self.preprocess({"slo": item["path"]})
        except Exception as e:  # noqa: BLE001 - a bad file is reported by the writer; the others are generated
            cause = input_error(e) or e  # the loader's own error, not Compose's "applying transform" wrapper
            item["error"] = f"{type(cause).__name__}: {cause}"
            self._logger.error(f"cannot read {item['path']}: {item['error']}")
            op_output.emit(item, self.output_name)
            return
        try:
            out = self.sampler(data["slo"][None].to(self.device), self.model)
        except Exception as e:  # noqa: BLE001 - e.g. a frame too small for the network: report, keep going
            item["error"] = f"{type(e).__name__}: {e}"
            self._logger.error(f"generation failed for {item['path']}: {item['error']}")
        else:
            data["pred"] = MetaTensor(out["pred"][0].cpu())  # Invertd takes the padding from data["slo"]
            if out["pred_std"] is not None:
                data["pred_std"] = MetaTensor(out["pred_std"][0].cpu())
            data = self.crop_back(data)
            item["pred"] = torch.as_tensor(data["pred"])
            item["pred_std"] = torch.as_tensor(data["pred_std"]) if "pred_std" in data else None
            self._logger.info(f"generated {item['name']} in {time.perf_counter() - begin:.1f} s")
        op_output.emit(item, self.output_name)
