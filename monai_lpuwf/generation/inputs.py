"""The input frames of a generation run (``bundle/configs/inference.json``, ``evaluate.json``), checked first.

* :class:`InferenceInputs`: every input frame is opened once before any generation, so that a grey SLO, an
  unreadable file, a frame below the minimum size or a triplet whose frames differ in size is reported with its
  file name and the fix, and the run goes on with the other frames (or stops at once, ``on_bad_input="raise"``).
  It also groups the frames into batches of equal size and keys (:meth:`InferenceInputs.batch_sampler`, a
  :class:`~monai_lpuwf.data.SizeGroupedBatchSampler`), so whole native frames of different sizes can share a run
  with ``batch_size > 1``, and refuses an output folder where an output would overwrite an input
  (:meth:`InferenceInputs.check_outputs`). Files in the output folder named like outputs (``*_late.png``: an
  earlier run's outputs, e.g. with ``output_dir == input_dir``) are never taken for inputs.
* :func:`brief_input_errors` (from :mod:`monai_lpuwf.errors`, re-exported): on the command line, a bad input ends
  the command with its message (one line per bad file: the file, the cause and the fix) and exit status 1, without
  a traceback unless ``--debug True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.data import FolderLayout
from monai.utils import ensure_tuple, look_up_option

from monai_lpuwf.data import SizeGroupedBatchSampler
from monai_lpuwf.errors import UserInputError, brief_input_errors, input_error
from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.transforms import LoadUWFImage

__all__ = ["BAD_INPUT_POLICIES", "InferenceInputError", "InferenceInputs", "brief_input_errors", "input_error"]

logger = logging.getLogger(__name__)

BAD_INPUT_POLICIES = ("skip", "raise")


class InferenceInputError(UserInputError, ValueError):
    """Inputs of a generation run (frames, model file) that cannot be used; the message lists every file with its
    reason and fix."""


def _modality(key: str) -> str:
    return "slo" if key == UWFKeys.SLO.value else "fa"


def _is_earlier_output(
    path: Any, output_dir: str | os.PathLike | None, postfixes: str | Sequence[str], ext: str | None
) -> bool:
    """Whether ``path`` lies under ``output_dir`` and is named ``<name>_<postfix><ext>`` (as outputs are)."""
    if not path or not output_dir or not ext:
        return False
    path, folder = Path(os.path.abspath(str(path))), Path(os.path.abspath(str(output_dir)))
    if folder != path.parent and folder not in path.parents:
        return False
    name = path.name.lower()
    return any(name.endswith(f"_{postfix}{ext}".lower()) for postfix in ensure_tuple(postfixes) if str(postfix))


class InferenceInputs:
    """The checked input items of a generation run.

    Each item is loaded once with :class:`~monai_lpuwf.transforms.LoadUWFImaged` (``slo`` as SLO, other keys as
    FA). An item fails when a required key is missing, a file cannot be read (missing, corrupt, not an image), the
    SLO is grey, an FA frame is coloured, the frames of one item differ in size, or the SLO is smaller than
    ``min_size`` on a side. Failures are logged (ERROR) as they are found.

    Args:
        items: datalist items (dicts of file paths), e.g. from :func:`monai_lpuwf.bundle_support.inference_datalist`.
        keys: keys every item needs (``("slo",)`` for inference, ``("slo", "late")`` for evaluation).
        optional_keys: keys loaded and checked where present (``("early",)``).
        min_size: smallest accepted SLO side in pixels.
        on_bad_input: ``"skip"`` (default): go on with the good items; :meth:`raise_if_failed`, called at the end
            of the run, then raises listing the failures (non-zero exit status). ``"raise"``: raise at once.
        data_root_dir: folder whose sub-folder layout the outputs mirror (the input folder); default: the
            common folder of the SLO files.
        load_kwargs: :class:`~monai_lpuwf.transforms.LoadUWFImage` arguments, as given to the loading transform
            (e.g. ``{"slo_grey": "repeat"}`` to accept grey SLOs).
        output_dir: the run's output folder. An item whose SLO lies in it (or in a sub-folder) and is named like an
            output (``<name>_<postfix><output_ext>`` for a non-empty postfix of ``output_postfixes``) is an
            earlier run's output, not an input: it is left out (logged), so that ``output_dir == input_dir`` (or an
            output folder inside the input folder) can be run again.
        output_postfixes: the output name postfixes (``"late"``, ``"late_std"``).
        output_ext: the output extension (``".png"``).

    Attributes:
        items: the good items, in input order.
        failures: ``[(file or item, reason)]`` of the bad ones.
        groups: ``(H, W, keys present)`` of each good item.
        earlier_outputs: the SLO paths left out as earlier outputs.

    Raises:
        InferenceInputError: no good item, or any bad item with ``on_bad_input="raise"``.
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        keys: KeysCollection = (UWFKeys.SLO.value,),
        optional_keys: KeysCollection = (),
        min_size: int = 64,
        on_bad_input: str = "skip",
        data_root_dir: str | os.PathLike | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
        output_dir: str | os.PathLike | None = None,
        output_postfixes: str | Sequence[str] = (),
        output_ext: str | None = None,
    ) -> None:
        self.keys = tuple(str(k) for k in ensure_tuple(keys))
        self.optional_keys = tuple(str(k) for k in ensure_tuple(optional_keys) if str(k) not in self.keys)
        self.min_size = int(min_size)
        self.on_bad_input = look_up_option(on_bad_input, BAD_INPUT_POLICIES)
        slo_key = self.keys[0]
        self.all_items, self.earlier_outputs = [], []
        for item in items:
            if _is_earlier_output(item.get(slo_key), output_dir, output_postfixes, output_ext):
                self.earlier_outputs.append(str(item[slo_key]))
            else:
                self.all_items.append(dict(item))
        if self.earlier_outputs:
            logger.info(
                "left out %d earlier output(s) found in the output folder %s (e.g. %s): outputs are not inputs.",
                len(self.earlier_outputs), output_dir, self.earlier_outputs[0],
            )  # fmt: skip
        if not self.all_items:
            raise InferenceInputError(
                "no input item to generate for: the folder or datalist is empty"
                + (" (it holds only earlier outputs of this command)." if self.earlier_outputs else ".")
            )
        file_kwargs = {k: v for k, v in dict(load_kwargs or {}).items() if k != "spatial_mismatch"}  # a triplet option
        try:
            loaders = {k: LoadUWFImage(_modality(k), **file_kwargs) for k in self.keys + self.optional_keys}
        except (TypeError, ValueError) as err:
            raise InferenceInputError(
                f"load_kwargs {file_kwargs} (--load_kwargs): {err}. The loader takes value_range, fa_colour, "
                "slo_grey, nonfinite, grey_tolerance and max_pixels (see monai_lpuwf.transforms.LoadUWFImage)."
            ) from err
        self.items: list[dict[str, Any]] = []
        self.groups: list[tuple] = []
        self.failures: list[tuple[str, str]] = []
        for item in self.all_items:
            name = str(item.get(slo_key, item))
            try:
                missing = [k for k in self.keys if not item.get(k)]
                if missing:
                    raise InferenceInputError(
                        f"no {', '.join(missing)} image given for this item; add it to the datalist (or drop the item)."
                    )
                present = [k for k in self.keys + self.optional_keys if item.get(k)]
                shapes = {}
                for k in present:
                    img = loaders[k](item[k])
                    shapes[k] = tuple(int(s) for s in img.shape[1:])
                size = shapes[slo_key]
                if min(size) < self.min_size:
                    raise InferenceInputError(
                        f"{item[slo_key]}: frame of {size[1]} x {size[0]} pixels (W x H) is smaller than the minimum "
                        f"of {self.min_size} pixels a side; give the whole UWF frame, not a thumbnail or a crop "
                        "(or lower min_size)."
                    )
                odd = {k: s for k, s in shapes.items() if s != size}
                if odd:
                    listing = ", ".join(f"{k} {item[k]} {s[1]} x {s[0]}" for k, s in odd.items())
                    raise InferenceInputError(
                        f"frames of one item differ in size: {slo_key} {item[slo_key]} is {size[1]} x {size[0]} "
                        f"(W x H) but {listing}; export them at the same size (or register them first)."
                    )
            except (OSError, ValueError, RuntimeError) as err:
                message = str(err)
                self.failures.append((name, message if name in message else f"{name}: {message}"))
                logger.error("skipping input %s", self.failures[-1][1])
                continue
            self.items.append(item)
            self.groups.append(size + (tuple(present),))
        if self.failures and (self.on_bad_input == "raise" or not self.items):
            raise InferenceInputError(self._failure_text(stopped=not self.items))
        roots = [os.path.dirname(os.path.abspath(str(item[slo_key]))) for item in self.all_items if item.get(slo_key)]
        self.data_root_dir = os.path.abspath(data_root_dir) if data_root_dir else (
            os.path.commonpath(roots) if roots else "")  # fmt: skip

    def _failure_text(self, stopped: bool = False) -> str:
        head = (
            f"{len(self.failures)} of {len(self.all_items)} input item(s) could not be used"
            + (" and none is left to generate for" if stopped else "")
            + ":\n  "
        )
        return head + "\n  ".join(reason for _, reason in self.failures)

    def __len__(self) -> int:
        return len(self.items)

    def batch_sampler(self, batch_size: int) -> SizeGroupedBatchSampler:
        """A batch sampler over :attr:`items` that never mixes frame sizes (for ``DataLoader(batch_sampler=...)``)."""
        return SizeGroupedBatchSampler(self.groups, batch_size)

    def input_files(self) -> set[Path]:
        """Resolved paths of every file named by any input item (good or bad)."""
        files = set()
        for item in self.all_items:
            for value in item.values():
                if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
                    files.add(Path(value).resolve())
        return files

    def output_paths(self, output_dir: str | os.PathLike, postfix: str, ext: str, key: str | None = None) -> list[Path]:
        """Where :class:`~monai.transforms.SaveImaged` (``separate_folder=False``, ``data_root_dir``) writes the
        output of each good item (named after its SLO)."""
        layout = FolderLayout(
            output_dir=str(output_dir), postfix=postfix, extension=ext, parent=False, makedirs=False,
            data_root_dir=self.data_root_dir,
        )  # fmt: skip
        key = key or self.keys[0]
        return [Path(layout.filename(subject=str(item[key]))) for item in self.items]

    def check_outputs(self, output_dir: str | os.PathLike, postfixes: str | Sequence[str], ext: str) -> list[Path]:
        """Refuse an output folder where an output file would overwrite an input file or another output.

        Args:
            output_dir: the run's output folder.
            postfixes: the output name postfixes (``"late"``, and ``"late_std"`` with an uncertainty map).
            ext: output extension (``".png"``, ``".tif"``, ``".nii.gz"``).

        Returns:
            every output path.

        Raises:
            FileExistsError: naming the input that would be overwritten, and the fix.
            InferenceInputError: an output would be written outside ``output_dir`` once symbolic links are
                followed (an input outside ``data_root_dir``, or a sub-folder of the output folder that is a link
                to another place), naming the output and the fix.
        """
        inputs = self.input_files()
        outputs: list[Path] = []
        for postfix in ensure_tuple(postfixes):
            outputs += self.output_paths(output_dir, str(postfix), ext)
        folder = Path(output_dir).resolve()
        seen: dict[Path, int] = {}
        for path in outputs:
            resolved = path.resolve()
            if folder not in resolved.parents:
                raise InferenceInputError(
                    f"output file {path} would be written outside the output folder {output_dir} (to {resolved}, "
                    f"symbolic links followed): its input does not lie under {self.data_root_dir}, the folder whose "
                    "layout the outputs mirror, or a sub-folder of the output folder is a link to another place. "
                    "Give --input_dir the folder that holds every input, or remove the link from the output folder."
                )
            if resolved in inputs:
                raise FileExistsError(
                    f"output file {path} would overwrite the input file {resolved}; choose another output_dir "
                    "(--output_dir) or another output_postfix / output_ext. Inputs are never overwritten."
                )
            seen[resolved] = seen.get(resolved, 0) + 1
        doubles = [str(p) for p, n in seen.items() if n > 1]
        if doubles:
            raise FileExistsError(
                f"several inputs would be written to the same output file(s): {doubles[:5]}; give inputs distinct "
                "names or keep them in separate sub-folders of one input folder."
            )
        return outputs

    def raise_if_failed(self) -> None:
        """End of a run: raise :class:`InferenceInputError` listing the inputs that were skipped, if any
        (the outputs of the others are written by then)."""
        if self.failures:
            raise InferenceInputError(
                self._failure_text() + f"\nThe other {len(self.items)} item(s) were generated. Fix or remove the "
                "files above and run again for them."
            )
        logger.info("generated for all %d input item(s).", len(self.items))
