"""Bundle glue: where a bundle run gets its triplets (synthetic phantoms by default, a folder, or a datalist file).

Called from the bundle configs (``common.json``: :func:`bundle_datalists`, ``inference.json``:
:func:`inference_datalist`, ``evaluate.json``: :func:`evaluation_datalist`); the top layer of the package, which
nothing inside the package imports.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.utils import look_up_option

from monai_lpuwf.data import (
    DataSourceError,
    datalist_from_file,
    datalist_from_folder,
    drop_duplicates,
    generate_phantoms,
    read_json_datalist,
    split_datalist,
    triplet_identity,
)

__all__ = ["bundle_datalists", "evaluation_datalist", "inference_datalist", "phantom_folder"]

_SPLIT_FOLDERS = {"training": ("train", "training"), "validation": ("val", "validation", "valid", "test")}
_DONE_MARKER = "phantoms.json"
EVAL_SPLITS = ("training", "validation")


def phantom_folder(work_dir: str | os.PathLike, num: int = 8, size: Sequence[int] = (256, 256), seed: int = 0) -> Path:
    """The bundle's default data: ``num`` synthetic triplets in ``<work_dir>/data/phantoms_<num>_<H>x<W>_<seed>``.

    Generated with :func:`monai_lpuwf.data.generate_phantoms` on first use (into a temporary folder renamed into
    place, so concurrent or interrupted runs never see half a set) and reused afterwards.
    """
    size = tuple(int(s) for s in size)
    folder = Path(work_dir) / "data" / f"phantoms_{num}_{size[0]}x{size[1]}_{seed}"
    if (folder / _DONE_MARKER).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".phantoms_", dir=folder.parent))
    try:
        generate_phantoms(tmp, num=num, size=size, seed=seed)
        (tmp / _DONE_MARKER).write_text(json.dumps({"num": num, "size": list(size), "seed": seed}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            if not (folder / _DONE_MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _decathlon_sections(path: Path) -> list[str]:
    """Non-empty ``training`` / ``validation`` lists of a decathlon-style JSON datalist (none for other files)."""
    if path.suffix.lower() != ".json":
        return []
    content = read_json_datalist(path)
    return [k for k in ("training", "validation") if isinstance(content, dict) and content.get(k)]


def _split_subfolders(root: Path) -> dict[str, Path]:
    found = {}
    for split, names in _SPLIT_FOLDERS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


def bundle_datalists(
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    work_dir: str | os.PathLike = ".",
    num_phantoms: int = 8,
    phantom_size: Sequence[int] = (256, 256),
    val_fraction: float = 0.25,
    seed: int = 0,
    require_late: bool = True,
    require_early: bool = True,
) -> dict[str, list[dict[str, Any]]]:
    """Training and validation triplet lists for a bundle run.

    Sources, in order:

    - ``datalist``: a decathlon-style JSON with ``"training"`` (and ``"validation"``) lists, resolved relative to
      the file's folder; any other CSV/JSON list (:func:`monai_lpuwf.data.datalist_from_file`) is split with
      ``val_fraction``;
    - ``dataset_dir``: a folder in the authors' naming (``N.ext``, ``N.1.ext``, ``N.2.ext``); when it has
      ``train/`` and ``val/`` (or ``validation/``, ``test/``) sub-folders, as ``../shared/uwf-samples`` and the
      authors' ``data/`` have, those are the splits, otherwise the triplets are split with ``val_fraction``;
    - neither: synthetic phantoms generated into ``<work_dir>/data/`` on first use (:func:`phantom_folder`).

    Args:
        dataset_dir: folder of triplets (``--dataset_dir`` on the bundle command line).
        datalist: datalist file (``--datalist``).
        work_dir: the bundle's working folder (``bundle_root``), where phantoms are written.
        num_phantoms, phantom_size: phantom set when no data is given.
        val_fraction, seed: reproducible split when the source has no validation list, and the phantoms' seed
            (the bundle's ``data_seed``, separate from the training/sampling ``seed``).
        require_late: every item must have a late phase (training); ``False`` for SLO-only lists.
        require_early: every item must have an early phase (training); ``False`` for evaluation lists.

    Returns:
        ``{"training": [...], "validation": [...]}`` of dicts with ``slo``, ``early``, ``late`` paths.

    Repeated triplets are dropped with a warning (:func:`monai_lpuwf.data.drop_duplicates`) before a split, and a
    triplet in both the training and the validation list of the source is refused.

    Raises:
        ValueError: both sources given, a source with no complete triplet, or one whose training and validation
            lists share a triplet (naming the folder or file).
    """
    if dataset_dir and datalist:
        raise DataSourceError(f"give either --dataset_dir ({dataset_dir}) or --datalist ({datalist}), not both.")
    need = {"require_late": require_late, "require_early": require_early}
    source: str
    if datalist:
        path = Path(datalist)
        if not path.is_file():
            raise FileNotFoundError(f"datalist file '{path}' does not exist (--datalist).")
        source = f"datalist '{path}'"
        sections = _decathlon_sections(path)
        if "training" in sections:
            lists = {
                split: datalist_from_file(path, section=split, **need) if split in sections else []
                for split in ("training", "validation")
            }
        else:
            training, validation = split_datalist(datalist_from_file(path, **need), val_fraction, seed)
            lists = {"training": training, "validation": validation}
    else:
        root = Path(dataset_dir) if dataset_dir else phantom_folder(work_dir, num_phantoms, phantom_size, seed)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset_dir '{root}' does not exist (--dataset_dir).")
        source = f"folder '{root}'"
        splits = _split_subfolders(root)

        def folder_items(folder: Path) -> list[dict]:  # the same files linked under two names count once
            return drop_duplicates(datalist_from_folder(folder, **need), folder)

        if "training" in splits:
            lists = {"training": folder_items(splits["training"])}
            lists["validation"] = folder_items(splits["validation"]) if "validation" in splits else []
        else:
            training, validation = split_datalist(folder_items(root), val_fraction, seed)
            lists = {"training": training, "validation": validation}
    in_training = {triplet_identity(item) for item in lists["training"]}
    both = [item for item in lists["validation"] if triplet_identity(item) in in_training]
    if both:
        raise DataSourceError(
            f"{len(both)} triplet(s) of {source} are in both training and validation (e.g. {both[0].get('slo')}); "
            "a model validated on its own training data reports too good scores. Remove them from one of the two "
            "(the training/validation sections, or the train/ and val/ folders)."
        )
    if not lists["training"]:
        raise DataSourceError(
            f"no complete training triplet (slo, early, late) found in {source}; list at least one item whose SLO, "
            "early- and late-phase files exist (or run without --datalist / --dataset_dir to train on the synthetic "
            "phantoms)."
        )
    if not lists["validation"]:  # a single-triplet source: validate on the training data rather than on nothing
        lists["validation"] = list(lists["training"][:1])
    return lists


def evaluation_datalist(
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    split: str | None = None,
    work_dir: str | os.PathLike = ".",
    num_phantoms: int = 8,
    phantom_size: Sequence[int] = (256, 256),
    val_fraction: float = 0.25,
    seed: int = 0,
) -> dict[str, Any]:
    """The triplets an evaluation scores, and the training items of the same source where a split was asked for.

    - ``dataset_dir`` or ``datalist`` without ``split``: every triplet it holds (a folder recursively, sub-folders
      such as ``train/`` and ``val/`` included; every section of a decathlon-style JSON);
    - with ``split`` (``"training"`` or ``"validation"``): that split as :func:`bundle_datalists` makes it (the
      source's ``train/``/``val/`` sub-folders or sections, else a seeded ``val_fraction`` split);
    - neither source: the held-out split of the default phantom set (``split`` defaults to ``"validation"``).

    The early phase is optional (items without it are scored without the early-phase predictor); the late phase
    is required.

    Args:
        dataset_dir: folder of triplets (``--dataset_dir``).
        datalist: datalist file (``--datalist``).
        split: ``None`` (every triplet), ``"training"`` or ``"validation"`` (``--eval_split``).
        work_dir, num_phantoms, phantom_size, val_fraction, seed: as in :func:`bundle_datalists` (``seed`` is the
            bundle's ``data_seed``).

    Returns:
        ``{"items": [...], "training": [...], "description": str}``: the items to score, the training split of the
        same source (empty when every triplet is scored: the training set is then not known from the source) and
        a sentence naming what is scored (recorded in the report).

    Raises:
        ValueError: an unknown ``split`` or a source without any complete (slo, late) pair, naming it.
    """
    if dataset_dir and datalist:
        raise DataSourceError(f"give either --dataset_dir ({dataset_dir}) or --datalist ({datalist}), not both.")
    if split is not None and str(split).lower() not in ("", "none", "all"):
        split = look_up_option(str(split), EVAL_SPLITS)
    else:
        split = None
    if split is None and not (dataset_dir or datalist):
        split = "validation"  # the default phantoms: never score the ones the model was trained on
    if split is not None:
        lists = bundle_datalists(dataset_dir=dataset_dir, datalist=datalist, work_dir=work_dir,
                                 num_phantoms=num_phantoms, phantom_size=phantom_size, val_fraction=val_fraction,
                                 seed=seed, require_early=False)  # fmt: skip
        source = f"folder '{dataset_dir}'" if dataset_dir else f"datalist '{datalist}'" if datalist else (
            f"the default phantom set (data_seed {seed})")  # fmt: skip
        items = lists[split]
        return {"items": items, "training": lists["training"],
                "description": f"the {split} split of {source}: {len(items)} triplet(s)"}  # fmt: skip
    if dataset_dir:
        if not Path(dataset_dir).is_dir():
            raise FileNotFoundError(f"dataset_dir '{dataset_dir}' does not exist (--dataset_dir).")
        items = datalist_from_folder(dataset_dir, require_early=False)
        source = f"folder '{dataset_dir}'"
    else:
        path = Path(datalist)
        if not path.is_file():
            raise FileNotFoundError(f"datalist file '{path}' does not exist (--datalist).")
        sections = _decathlon_sections(path)
        items = [
            item
            for section in (sections or ["training"])
            for item in datalist_from_file(path, require_early=False, section=section)
        ]
        source = f"datalist '{path}'" + (f" (sections {', '.join(sections)})" if len(sections) > 1 else "")
    if not items:
        raise DataSourceError(
            f"no (slo, late) pair found in {source}; evaluation needs the real late phase of every item (N.ext and "
            "N.2.ext, or 'slo' and 'late' entries in the datalist)."
        )
    return {"items": items, "training": [], "description": f"every triplet of {source}: {len(items)}"}


def inference_datalist(
    input_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    work_dir: str | os.PathLike = ".",
    num_phantoms: int = 8,
    phantom_size: Sequence[int] = (256, 256),
    val_fraction: float = 0.25,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """SLO items to generate for: a folder, a datalist file, or (default) the phantoms' validation split.

    Args:
        input_dir: folder of SLO images in the authors' naming (``N.ext``; FA phases optional).
        datalist: CSV/JSON list with at least a ``slo`` entry per item (a decathlon JSON: its ``validation``
            list, or ``training`` when there is none).
        work_dir, num_phantoms, phantom_size, val_fraction, seed: the default phantom set, as in
            :func:`bundle_datalists` (so that, with no arguments, inference runs on the training runs' held-out
            phantoms; ``seed`` is the bundle's ``data_seed``).

    Raises:
        ValueError: no SLO image found, naming the source.
    """
    if input_dir and datalist:
        raise DataSourceError(f"give either --input_dir ({input_dir}) or --datalist ({datalist}), not both.")
    if input_dir:
        if not Path(input_dir).is_dir():
            raise FileNotFoundError(f"input_dir '{input_dir}' does not exist (--input_dir).")
        items, source = (
            datalist_from_folder(input_dir, require_late=False, require_early=False),
            f"folder '{input_dir}'",
        )
    elif datalist:
        if not Path(datalist).is_file():
            raise FileNotFoundError(f"datalist file '{datalist}' does not exist (--datalist).")
        sections = _decathlon_sections(Path(datalist))
        section = "validation" if "validation" in sections else "training"
        items = datalist_from_file(datalist, require_late=False, require_early=False, section=section)
        source = f"datalist '{datalist}'"
    else:
        lists = bundle_datalists(
            work_dir=work_dir,
            num_phantoms=num_phantoms,
            phantom_size=phantom_size,
            val_fraction=val_fraction,
            seed=seed,
        )
        items, source = lists["validation"], "the default phantom set"
    items = [item for item in items if item.get("slo")]
    if not items:
        raise DataSourceError(
            f"no SLO image found in {source}; point --input_dir at a folder of SLO pictures (N.bmp, N.png, ... with "
            "3 channels) or give --datalist with 'slo' entries."
        )
    return items
