"""MONAI Deploy operator: list the UWF-SLO images of the input path and emit their files one by one."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_lpuwf.data import IMAGE_SUFFIXES, datalist_from_folder

__all__ = ["SLOLoaderOperator", "list_slo_inputs"]


def list_slo_inputs(input_path: str | Path) -> list[tuple[str, Path]]:
    """``(name, path)`` of every SLO under ``input_path``.

    A file is one SLO (name = its stem). A folder is read in the authors' naming (``N.ext`` = SLO; ``N.1.ext`` /
    ``N.2.ext`` FA phases, if present, are ignored), sub-folders included; the name keeps the sub-folder
    (``val/7``) so that outputs mirror the input tree.

    Raises:
        FileNotFoundError: the path does not exist or holds no SLO image.
    """
    path = Path(input_path)
    if path.is_file():
        suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
        if suffix.lower() not in IMAGE_SUFFIXES:
            raise FileNotFoundError(f"{path}: not an image file ({', '.join(IMAGE_SUFFIXES)}).")
        return [(path.name[: -len(suffix)], path)]
    if not path.is_dir():
        raise FileNotFoundError(f"input path '{path}' does not exist (give -i/--input a SLO file or a folder of them).")
    items = datalist_from_folder(path, require_late=False, require_early=False, on_incomplete="warn")
    inputs = []
    for item in items:
        slo = Path(item["slo"])
        rel = slo.relative_to(path.resolve()).as_posix()
        suffix = ".nii.gz" if rel.lower().endswith(".nii.gz") else slo.suffix
        inputs.append((rel[: -len(suffix)], slo))
    if not inputs:
        raise FileNotFoundError(f"{path}: no SLO image (N.ext) found; N.1.ext / N.2.ext are FA phases, not inputs.")
    return inputs


class SLOLoaderOperator(Operator):
    """Emit one UWF-SLO file per ``compute`` call; the generate operator loads it with the inference transforms.

    Attach a ``CountCondition(fragment, len(operator.inputs))`` so that the graph runs once per image.

    Named output:
        slo: ``{"name": str, "path": str}``.
    """

    def __init__(self, fragment: Fragment, *args, input_path: str | Path, **kwargs) -> None:
        self._logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self.inputs = list_slo_inputs(input_path)
        self._next = 0
        self.output_name = "slo"
        super().__init__(fragment, *args, **kwargs)  # last, as the SDK requires

    def setup(self, spec: OperatorSpec) -> None:
        spec.output(self.output_name)

    def compute(self, op_input, op_output, context) -> None:
        if self._next >= len(self.inputs):
            return
        name, path = self.inputs[self._next]
        self._next += 1
        self._logger.info(f"[{self._next}/{len(self.inputs)}] {path}")
        op_output.emit({"name": name, "path": str(path)}, self.output_name)
