"""MONAI Deploy operator: generate the late-phase UWF-FA of a UWF-SLO with a trained LPUWF-LDM bundle model."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_lpuwf.generation import Generator, find_generation_model, input_error
from monai_lpuwf.inferers import INFERENCE_DEFAULTS
from monai_lpuwf.threads import set_default_threads

__all__ = ["LPUWFGenerateOperator"]


class LPUWFGenerateOperator(Operator):
    """Generate the late phase of each SLO with :class:`monai_lpuwf.generation.Generator`.

    The model is a bundle model file (``models/model_residual.pt``, ``model.pt`` or ``model_prior.pt``: ``{"model":
    state_dict, "config": ..., ...}``), loaded by :meth:`Generator.from_file
    <monai_lpuwf.generation.Generator.from_file>` in :meth:`start` (the networks are not TorchScript-able, so the
    SDK's ``MonaiBundleInferenceOperator``, which wants ``model.ts``, is not used). The generator is the one the
    bundle's ``inference.json`` and the MONAI Label app use: the SLO file is loaded, unsharp-masked (``sharpen``)
    and padded with -1 to the model's size divisor, sampled, and cropped back to the SLO's height and width.

    Args:
        fragment: the application.
        model_path: a model file, or a folder holding one (a bundle folder, the SDK's ``models/<name>/`` layout):
            :func:`~monai_lpuwf.generation.find_generation_model`.
        sharpen: unsharp-mask the SLO as the training transforms do (``sharpen`` in the bundle's common config).
        device: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available).
        kwargs: the sampling settings (the keys of ``monai_lpuwf.inferers.INFERENCE_DEFAULTS``: ``scheduler``,
            ``num_inference_steps``, ``num_samples``, ``seed``, ...); one not given, or ``None``, takes the model
            file's recommendation, else the default (see :class:`~monai_lpuwf.generation.Generator`).
            ``num_samples > 1`` adds the per-pixel standard deviation (uncertainty) map. Other keywords go to
            the SDK's ``Operator``.

    Named input ``slo`` / output ``pred``: the loader's dictionary (``name``, ``path``), to which ``pred``
    (1, H, W) and ``pred_std`` (1, H, W) or ``None`` are added (tensors on the CPU, in [-1, 1] for ``pred``), or
    ``error`` (the file's or the generation's error, which the writer reports).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        model_path: str | Path,
        sharpen: bool = True,
        device: str | None = None,
        **kwargs,
    ) -> None:
        self._logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.model_file = find_generation_model(model_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.settings = {key: kwargs.pop(key) for key in list(kwargs) if key in INFERENCE_DEFAULTS}
        self.sharpen = bool(sharpen)
        self.generator: Generator | None = None
        self.input_name, self.output_name = "slo", "pred"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)
        spec.output(self.output_name)

    def start(self) -> None:
        set_default_threads()  # the project's CPU thread default (OMP_NUM_THREADS overrides it)
        self.generator = Generator.from_file(self.model_file, device=self.device, sharpen=self.sharpen, **self.settings)
        self._logger.info(f"loaded {self.model_file} on {self.device}; sampling: {self.generator.settings}")

    def compute(self, op_input, op_output, context) -> None:
        item = dict(op_input.receive(self.input_name))
        begin = time.perf_counter()
        try:
            data = self.generator.preprocess({"slo": item["path"]})
        except Exception as e:  # noqa: BLE001 - a bad file is reported by the writer; the others are generated
            cause = input_error(e) or e  # the loader's own error, not Compose's "applying transform" wrapper
            item["error"] = f"{type(cause).__name__}: {cause}"
            self._logger.error(f"cannot read {item['path']}: {item['error']}")
            op_output.emit(item, self.output_name)
            return
        try:
            data = self.generator.post_transforms()(self.generator.sample(data))
        except Exception as e:  # noqa: BLE001 - e.g. a frame too small for the network: report, keep going
            item["error"] = f"{type(e).__name__}: {e}"
            self._logger.error(f"generation failed for {item['path']}: {item['error']}")
        else:
            item["pred"] = torch.as_tensor(data["pred"])
            item["pred_std"] = torch.as_tensor(data["pred_std"]) if "pred_std" in data else None
            self._logger.info(f"generated {item['name']} in {time.perf_counter() - begin:.1f} s")
        op_output.emit(item, self.output_name)
