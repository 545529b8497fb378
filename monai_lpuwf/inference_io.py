"""Inputs and outputs of a generation run (``bundle/configs/inference.json``, ``evaluate.json``).

* :class:`InferenceInputs`: every input frame is opened once before any generation, so that a grey SLO, an
  unreadable file, a frame below the minimum size or a triplet whose frames differ in size is reported with its
  file name and the fix, and the run goes on with the other frames (or stops at once, ``on_bad_input="raise"``).
  It also groups the frames into batches of equal size and keys (:meth:`InferenceInputs.batch_sampler`), so
  whole native frames of different sizes can share a run with ``batch_size > 1``, and refuses an output folder
  where an output would overwrite an input (:meth:`InferenceInputs.check_outputs`). Files in the output folder
  named like outputs (``*_late.png``: an earlier run's outputs, e.g. with ``output_dir == input_dir``) are never
  taken for inputs.
* :func:`brief_input_errors`: on the command line, a bad input ends the command with its message (one line per bad
  file: the file, the cause and the fix) and exit status 1, without a traceback unless ``--debug True``.
* :func:`load_generation_model`: the trained model from a bundle ``model.pt``, optionally checked against a preset.
* :class:`QuantizeIntensityd` and :func:`save_generated`: images written with MONAI's
  :class:`~monai.transforms.SaveImaged` in the orientation and size of the input (rows first, as
  :class:`~monai_lpuwf.transforms.LoadUWFImage` reads them back), rounded (not truncated) to the output dtype.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import FolderLayout
from monai.transforms import (
    CastToTyped,
    Compose,
    CopyItemsd,
    DeleteItemsd,
    MapTransform,
    SaveImaged,
    ScaleIntensityRanged,
    Transform,
    Transposed,
)
from monai.utils import ensure_tuple, look_up_option
from torch import nn
from torch.utils.data import Sampler

from monai_lpuwf.keys import UWFKeys

__all__ = [
    "BAD_INPUT_POLICIES",
    "OUTPUT_DTYPES",
    "InferenceInputError",
    "InferenceInputs",
    "brief_input_errors",
    "input_error",
    "SizeGroupedBatchSampler",
    "QuantizeIntensity",
    "QuantizeIntensityd",
    "load_generation_model",
    "output_levels",
    "save_generated",
]

logger = logging.getLogger(__name__)

BAD_INPUT_POLICIES = ("skip", "raise")
OUTPUT_DTYPES = ("uint8", "uint16", "float32")
_NIFTI_EXTS = (".nii", ".nii.gz")


class InferenceInputError(ValueError):
    """Inputs of a generation run (frames, model file) that cannot be used; the message lists every file with its
    reason and fix."""


def input_error(error: BaseException | None) -> BaseException | None:
    """The first error in ``error``'s chain that is a bad input of the user's (``monai.bundle`` wraps the errors
    of config expressions in ``RuntimeError("Failed to evaluate ...")``): an unusable image or model file
    (:class:`InferenceInputError`, :class:`~monai_lpuwf.data.UWFImageError`), an incomplete folder
    (:class:`~monai_lpuwf.data.IncompleteTripletError`), an unusable data source
    (:class:`~monai_lpuwf.data.DataSourceError`), a missing file or folder, an output that exists already.
    ``None`` when there is none (a bug, not a bad input)."""
    from monai_lpuwf.data.datalists import DataSourceError, IncompleteTripletError
    from monai_lpuwf.data.image_io import UWFImageError

    kinds = (InferenceInputError, UWFImageError, IncompleteTripletError, DataSourceError, FileNotFoundError,
             FileExistsError)  # fmt: skip
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, kinds):
            return error
        error = error.__cause__ or error.__context__
    return None


def _brief_excepthook(exc_type, exc, tb) -> None:
    error = input_error(exc)
    if error is None:
        return _brief_excepthook.previous(exc_type, exc, tb)
    sys.stderr.write(f"error: {error}\n(add --debug True to the command for the full traceback)\n")
    sys.stderr.flush()


def brief_input_errors(debug: bool | str = False) -> None:
    """Report a bad input that ends the process with its message and exit status 1, without a traceback.

    Installs a :data:`sys.excepthook` that prints ``error: <message>`` (the messages name each file, the cause and
    the fix, one line per bad file) for the errors :func:`input_error` recognises, and leaves every other error
    (a bug) to the previous hook, with its traceback. In-process callers (``monai.bundle.run`` from Python) still
    get the exception. Called first in the ``initialize`` section of ``inference.json`` and ``evaluate.json``.

    Args:
        debug: ``True`` (``--debug True``): full tracebacks, the hook is removed.
    """
    from monai.utils import str2bool

    installed = sys.excepthook is _brief_excepthook
    if str2bool(debug) if isinstance(debug, str) else bool(debug):
        if installed:
            sys.excepthook = _brief_excepthook.previous
        return
    if not installed:
        _brief_excepthook.previous = sys.excepthook
        sys.excepthook = _brief_excepthook


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


class SizeGroupedBatchSampler(Sampler):
    """Batches of indices whose items share a group (spatial size and keys present), in first-seen order.

    A batch never mixes groups, so frames of different native sizes (853 x 682 and 640 x 512) or items with and
    without an early phase are never collated together.

    Args:
        groups: one hashable group label per item.
        batch_size: largest batch.
    """

    def __init__(self, groups: Sequence[Hashable], batch_size: int) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        order: dict[Hashable, list[int]] = {}
        for i, g in enumerate(groups):
            order.setdefault(g, []).append(i)
        self.batches = [
            idx[s : s + self.batch_size] for idx in order.values() for s in range(0, len(idx), self.batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(b) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


class InferenceInputs:
    """The checked input items of a generation run.

    Each item is loaded once with :class:`~monai_lpuwf.transforms.LoadUWFImaged` (``slo`` as SLO, other keys as
    FA). An item fails when a required key is missing, a file cannot be read (missing, corrupt, not an image), the
    SLO is grey, an FA frame is coloured, the frames of one item differ in size, or the SLO is smaller than
    ``min_size`` on a side. Failures are logged (ERROR) as they are found.

    Args:
        items: datalist items (dicts of file paths), e.g. from :func:`monai_lpuwf.engines.inference_datalist`.
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
        from monai_lpuwf.transforms import LoadUWFImage

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
                "slo_grey, nonfinite and grey_tolerance (see monai_lpuwf.transforms.LoadUWFImage)."
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
        self.data_root_dir = str(data_root_dir) if data_root_dir else (os.path.commonpath(roots) if roots else "")

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
        """
        inputs = self.input_files()
        outputs: list[Path] = []
        for postfix in ensure_tuple(postfixes):
            outputs += self.output_paths(output_dir, str(postfix), ext)
        seen: dict[Path, int] = {}
        for path in outputs:
            resolved = path.resolve()
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


def load_generation_model(
    path: str | os.PathLike,
    preset: str | None = None,
    network_overrides: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """The trained :class:`~monai_lpuwf.networks.LPUWFModel` for generation, in eval mode.

    Args:
        path: a bundle model file (``models/model.pt``, written by ``train_late.json``), which carries its
            architecture; a bare state dict needs ``preset``.
        preset: when given (``"small"``, ``"paper"``), the file must have been trained with this preset and
            ``network_overrides``; a file made for another architecture is refused with the differences listed.
        network_overrides: see :func:`monai_lpuwf.networks.build_model`.
        map_location: passed to :func:`torch.load`.

    Raises:
        FileNotFoundError: no such file.
        InferenceInputError: (a ``ValueError``) the file holds another architecture, or no architecture and no
            ``preset``.
        RuntimeError: the weights do not match the architecture stored beside them.
    """
    from monai_lpuwf.engines import load_model, load_stage_weights
    from monai_lpuwf.networks import build_model

    if preset:
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file '{path}' does not exist; train the bundle first or pass --model_path.")
        model = build_model(preset, **dict(network_overrides or {}))
        try:
            load_stage_weights(model, path, stage="generation", previous_stage="train_late.json (stage 4)",
                               map_location=map_location)  # fmt: skip
        except ValueError as err:
            raise InferenceInputError(str(err)) from err
    else:
        try:
            model = load_model(path, map_location=map_location)
        except ValueError as err:
            raise InferenceInputError(
                f"{err} In the bundle: pass --preset NAME (and --network_overrides) instead."
            ) from err
        except RuntimeError as err:  # a config that does not match the weights stored beside it
            raise RuntimeError(
                f"the weights in '{path}' do not match the architecture stored in the same file ({err}); the file "
                "was edited or assembled by hand. Use the model.pt written by train_late.json."
            ) from err
    return model.eval()


def output_levels(dtype: str) -> float | None:
    """Largest stored value of an output dtype (255, 65535), ``None`` for ``"float32"`` (``[0, 1]`` values)."""
    dtype = look_up_option(str(dtype), OUTPUT_DTYPES)
    return float(np.iinfo(dtype).max) if dtype != "float32" else None


class QuantizeIntensity(Transform):
    """Round intensities to the levels an integer image file can hold, in the image's own range.

    ``x`` in ``value_range`` -> ``low + round((x - low) / (high - low) * levels) / levels * (high - low)``,
    clipped to ``value_range``: the values a ``levels + 1``-level file written from ``x`` holds (rounded to the
    nearest level, as :func:`~monai_lpuwf.data.save_uwf_image` does). Scoring quantized predictions gives
    the scores of the written files.

    Args:
        levels: 255 (8 bit), 65535 (16 bit); ``None`` only clips.
        value_range: ``(low, high)`` of the input.
    """

    def __init__(self, levels: float | None = 255, value_range: Sequence[float] = (-1.0, 1.0)) -> None:
        self.levels = None if levels is None else float(levels)
        self.low, self.high = float(value_range[0]), float(value_range[1])

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = img.clamp(self.low, self.high)
        if self.levels is None:
            return x
        unit = (x - self.low) / (self.high - self.low)
        return torch.round(unit * self.levels) / self.levels * (self.high - self.low) + self.low


class QuantizeIntensityd(MapTransform):
    """Dictionary version of :class:`QuantizeIntensity`."""

    def __init__(
        self,
        keys: KeysCollection,
        levels: float | None = 255,
        value_range: Sequence[float] = (-1.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.quantize = QuantizeIntensity(levels, value_range)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.quantize(d[key])
        return d


def save_generated(
    key: str,
    output_dir: str | os.PathLike,
    output_postfix: str = "late",
    output_ext: str = ".png",
    output_dtype: str = "uint8",
    data_root_dir: str | os.PathLike = "",
    value_range: Sequence[float] = (-1.0, 1.0),
) -> Compose:
    """Dictionary transforms writing ``data[key]`` ((1, H, W) rows first) with :class:`monai.transforms.SaveImaged`.

    The image is mapped from ``value_range`` to ``[0, 1]`` (``float32``) or rounded to ``0..255`` (``uint8``) /
    ``0..65535`` (``uint16``), written as ``<output_dir>/<sub-folder of the SLO under data_root_dir>/
    <SLO name>_<output_postfix><output_ext>`` in the orientation of the input picture (PNG/TIFF/BMP through PIL
    without MONAI's default row/column swap; NIfTI with ``(x, y)`` = (columns, rows), as
    :class:`~monai_lpuwf.transforms.LoadUWFImage` expects), so that loading the output gives a frame of the input's
    size and orientation. ``data[key]`` itself is left unchanged.

    Args:
        key: key of the image to write (``"pred"``, ``"pred_std"``).
        output_dir: output folder.
        output_postfix: name postfix.
        output_ext: ``".png"`` (default), ``".tif"``, ``".nii.gz"``, ...
        output_dtype: ``"uint8"``, ``"uint16"`` or ``"float32"`` (``[0, 1]`` values; e.g. for NIfTI).
        data_root_dir: see :class:`~monai.transforms.SaveImaged` (sub-folders of inputs are mirrored).
        value_range: intensity range of ``data[key]``.
    """
    levels = output_levels(output_dtype)
    tmp = f"_{key}_to_save"
    xforms: list = [
        CopyItemsd(keys=key, names=tmp),
        ScaleIntensityRanged(
            tmp, a_min=value_range[0], a_max=value_range[1], b_min=0.0, b_max=levels or 1.0, clip=True
        ),
    ]
    if levels is not None:
        xforms.append(QuantizeIntensityd(tmp, levels=levels, value_range=(0.0, levels)))
    xforms.append(CastToTyped(tmp, dtype=np.dtype(output_dtype)))
    nifti = str(output_ext).lower() in _NIFTI_EXTS
    if nifti:
        xforms.append(Transposed(tmp, indices=(0, 2, 1)))  # (1, H, W) -> (1, W, H): NIfTI x = columns
    saver = SaveImaged(
        keys=tmp,
        output_dir=str(output_dir),
        output_postfix=output_postfix,
        output_ext=output_ext,
        output_dtype=np.dtype(output_dtype),
        resample=False,
        scale=None,
        separate_folder=False,
        data_root_dir=str(data_root_dir or ""),
        squeeze_end_dims=not nifti,  # MONAI 1.6 cannot write a squeezed 2D NIfTI with resample=False: (x, y, 1, 1)
        print_log=False,
    )
    if not nifti:
        saver.set_options(write_kwargs={"reverse_indexing": False})  # PIL: the array is already (rows, columns)
    xforms += [saver, DeleteItemsd(keys=tmp)]
    return Compose(xforms)
