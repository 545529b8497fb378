"""MONAI Deploy operator: write generated late-phase UWF-FA (and uncertainty) images."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_lpuwf.data import save_uwf_image

__all__ = ["FAImageWriterOperator"]


class FAImageWriterOperator(Operator):
    """Write ``<output>/<name><suffix><extension>`` for each generated image, never overwriting a file.

    The image has the SLO's size and orientation (rows-first, written by
    :func:`monai_lpuwf.data.save_uwf_image`: [-1, 1] -> 0..2**bit_depth-1). With an uncertainty map,
    ``<name><suffix>_std<extension>`` holds the per-pixel standard deviation of the samples: grey level /
    (2**bit_depth - 1) = standard deviation on the [-1, 1] intensity scale (at most 1).

    Args:
        fragment: the application.
        output_folder: where to write (created if needed).
        extension: ``.png`` (default), ``.tif``, ``.nii.gz``, ``.dcm``, ...
        suffix: added to the input name, ``"_late"`` by default.
        bit_depth: 8 or 16.

    Attributes:
        written: paths written so far; ``failed``: ``(input path, reason)`` of inputs with no output.
    """

    def __init__(
        self,
        fragment: Fragment,
        *args,
        output_folder: str | Path,
        extension: str = ".png",
        suffix: str = "_late",
        bit_depth: int = 8,
        **kwargs,
    ) -> None:
        self._logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.output_folder = Path(output_folder)
        self.extension = extension if extension.startswith(".") else f".{extension}"
        self.suffix = suffix
        self.bit_depth = int(bit_depth)
        self.written: list[Path] = []
        self.failed: list[tuple[str, str]] = []
        self.input_name = "pred"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)

    def compute(self, op_input, op_output, context) -> None:
        item = op_input.receive(self.input_name)
        if "error" in item:
            self.failed.append((item["path"], item["error"]))
            return
        base = self.output_folder / f"{item['name']}{self.suffix}"
        base.parent.mkdir(parents=True, exist_ok=True)
        try:
            paths = [save_uwf_image(item["pred"], f"{base}{self.extension}", bit_depth=self.bit_depth)]
            if item.get("pred_std") is not None:
                std_image = item["pred_std"].clamp(0, 1) * 2 - 1  # std 0..1 -> [-1, 1] -> 0..max grey
                paths.append(save_uwf_image(std_image, f"{base}_std{self.extension}", bit_depth=self.bit_depth))
        except Exception as e:  # noqa: BLE001 - any write failure is reported for this input; the others go on
            self.failed.append((item["path"], f"{type(e).__name__}: {e}"))
            self._logger.error(f"cannot write the output of {item['path']}: {e}")
            return
        self.written += paths
        self._logger.info(f"wrote {', '.join(str(p) for p in paths)}")
