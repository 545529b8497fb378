"""MONAI datalists of UWF triplets (SLO, early-phase FA, late-phase FA).

A datalist is a ``list[dict]`` whose items hold file paths under the keys of :class:`~monai_lpuwf.keys.UWFKeys`
(``"slo"``, ``"early"``, ``"late"``), as consumed by :class:`monai.data.Dataset` and
:class:`~monai_lpuwf.transforms.LoadUWFImaged`. On disk a datalist is a decathlon-style JSON file
``{"training": [...], "validation": [...]}`` readable by :func:`monai.data.load_decathlon_datalist`.

Folder convention (the authors' one): ``N.ext`` = SLO, ``N.1.ext`` = early-phase FA, ``N.2.ext`` = late-phase FA,
``N`` being any name, triplets grouped per folder (``train/1.bmp`` and ``val/1.bmp`` are different triplets).
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import load_decathlon_datalist
from monai.utils import look_up_option

from monai_lpuwf.atomic_write import atomic_path
from monai_lpuwf.errors import UserInputError
from monai_lpuwf.keys import UWFKeys

__all__ = [
    "IMAGE_SUFFIXES",
    "IncompleteTripletError",
    "DataSourceError",
    "datalist_from_folder",
    "datalist_from_file",
    "drop_duplicates",
    "read_json_datalist",
    "triplet_identity",
    "split_datalist",
    "write_datalist",
]

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")
_PHASE_KEY = {None: UWFKeys.SLO.value, "1": UWFKeys.EARLY.value, "2": UWFKeys.LATE.value}
_TRIPLET_KEYS = (UWFKeys.SLO.value, UWFKeys.EARLY.value, UWFKeys.LATE.value)
_NAME = re.compile(r"^(?P<id>.+?)(?:\.(?P<phase>[12]))?(?P<ext>\.nii\.gz|\.[A-Za-z0-9]+)$")


class IncompleteTripletError(UserInputError, ValueError):
    """Some triplets lack a required image; the message lists every offending triplet and file name."""


class DataSourceError(UserInputError, ValueError):
    """A data source that cannot be used (no usable item in it, two sources given at once); the message names the
    source and the fix."""


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _required(require_late: bool, require_early: bool) -> tuple[str, ...]:
    return (
        (UWFKeys.SLO.value,)
        + ((UWFKeys.EARLY.value,) if require_early else ())
        + ((UWFKeys.LATE.value,) if require_late else ())
    )


def _report_incomplete(problems: list[str], source: PathLike, on_incomplete: str, fix: str) -> None:
    if not problems:
        return
    msg = f"{source}: {len(problems)} incomplete triplet(s):\n  " + "\n  ".join(problems) + f"\n{fix}"
    if on_incomplete == "raise":
        raise IncompleteTripletError(msg)
    if on_incomplete == "warn":
        warnings.warn(msg, stacklevel=3)


def datalist_from_folder(
    folder: PathLike,
    require_late: bool = True,
    require_early: bool = True,
    recursive: bool = True,
    on_incomplete: str = "raise",
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> list[dict]:
    """Discover triplets named ``N.ext`` (SLO), ``N.1.ext`` (early FA), ``N.2.ext`` (late FA) in a folder.

    Args:
        folder: root folder; with ``recursive`` its sub-folders (e.g. ``train/``, ``val/``) are searched too and
            triplets are grouped per folder.
        require_late: a triplet without ``N.2.ext`` is incomplete. ``False`` for inference lists: items then
            carry ``"late"`` only where the file exists.
        require_early: likewise for the early phase ``N.1.ext``.
        recursive: search sub-folders.
        on_incomplete: ``"raise"`` (default) an :class:`IncompleteTripletError` listing all offending names,
            ``"warn"`` and skip them, or ``"skip"`` silently.
        suffixes: image suffixes considered (case-insensitive); other files are ignored.

    Returns:
        items ``{"slo": path, "early": path, "late": path}`` (absolute path strings under ``folder``, symbolic
        links kept as links, not resolved), sorted by folder then natural order of ``N`` (2 before 10).

    Warns:
        UserWarning: listing the entries named like images that are not readable files (folders, broken or
            looping symbolic links), which are skipped.

    Raises:
        FileNotFoundError: the folder does not exist or holds no image.
        IncompleteTripletError: a triplet lacks a required phase or has two files for one phase.
    """
    root = Path(folder)
    on_incomplete = look_up_option(on_incomplete, ("raise", "warn", "skip"))
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; give the folder holding N.ext, N.1.ext, N.2.ext files.")
    suffixes = tuple(s.lower() for s in suffixes)
    files = root.rglob("*") if recursive else root.glob("*")
    groups: dict[tuple[str, str], dict[str, list[Path]]] = {}
    skipped: list[str] = []
    for f in files:
        match = _NAME.match(f.name)
        if f.name.startswith(".") or match is None or match["ext"].lower() not in suffixes:
            continue  # not named like an image: not ours
        if not f.is_file():  # named like an image but not a readable file: say so
            kind = "a folder" if f.is_dir() else "a symbolic link that loops or points nowhere" if f.is_symlink() else (
                "not a regular file")  # fmt: skip
            skipped.append(f"{f.relative_to(root).as_posix()} ({kind})")
            continue
        rel_dir = f.parent.relative_to(root).as_posix()
        groups.setdefault((rel_dir, match["id"]), {}).setdefault(_PHASE_KEY[match["phase"]], []).append(f)
    if skipped:
        warnings.warn(
            f"{root}: skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} named like images that are not "
            f"readable files: {', '.join(sorted(skipped)[:10])}{' ...' if len(skipped) > 10 else ''}.",
            stacklevel=2,
        )
    if not groups:
        raise FileNotFoundError(
            f"{root}: no image files ({', '.join(suffixes)}) found; expected N.ext (SLO), N.1.ext (early FA), "
            "N.2.ext (late FA)." + (f" Skipped: {', '.join(sorted(skipped)[:10])}." if skipped else "")
        )
    required = _required(require_late, require_early)
    items, problems = [], []
    for rel_dir, ident in sorted(groups, key=lambda g: (_natural_key(g[0]), _natural_key(g[1]))):
        phases = groups[(rel_dir, ident)]
        name = ident if rel_dir == "." else f"{rel_dir}/{ident}"
        doubles = {k: v for k, v in phases.items() if len(v) > 1}
        missing = [k for k in required if k not in phases]
        if doubles:
            listing = "; ".join(f"{k}: " + ", ".join(sorted(p.name for p in v)) for k, v in doubles.items())
            problems.append(f"{name}: several files for one phase ({listing})")
        elif missing:
            present = ", ".join(sorted(p[0].name for p in phases.values()))
            want = {"slo": f"{ident}.ext", "early": f"{ident}.1.ext", "late": f"{ident}.2.ext"}
            problems.append(f"{name}: missing {', '.join(f'{k} ({want[k]})' for k in missing)}; present: {present}")
        else:
            # absolute, links not resolved: an item keeps the name and place it has in the folder, so outputs
            # mirror the folder (a link inside it pointing elsewhere, a linked folder) and stay in the output folder
            items.append({k: os.path.abspath(phases[k][0]) for k in _TRIPLET_KEYS if k in phases})
    _report_incomplete(
        problems,
        root,
        on_incomplete,
        "Fix: add the missing files, move the stray ones out of the folder, pass require_late=False "
        "(inference lists) or on_incomplete='skip'.",
    )
    return items


def triplet_identity(item: dict, cache: dict[str, str] | None = None) -> tuple:
    """What makes two datalist items the same triplet: the real files (symbolic links followed) of its ``slo``,
    ``early`` and ``late`` entries.

    Args:
        item: a datalist item.
        cache: path -> real path, shared over the items of one list (many rows often name one file).
    """
    cache = {} if cache is None else cache
    key = []
    for k in _TRIPLET_KEYS:
        value = item.get(k)
        if isinstance(value, (str, os.PathLike)):
            path = os.fspath(value)
            if path not in cache:
                cache[path] = os.path.realpath(path)
            key.append(cache[path])
        else:
            key.append(repr(value))
    return tuple(key)


def drop_duplicates(items: Sequence[dict], source: PathLike, on_duplicate: str = "warn") -> list[dict]:
    """The items without repeats of an earlier item's triplet (:func:`triplet_identity`), in order.

    A repeated triplet counts twice in training and, split at random, can land in both training and validation.

    Args:
        items: the datalist.
        source: the file or folder the items come from, for messages.
        on_duplicate: ``"warn"`` (default): drop the repeats with one warning giving their count and the first
            rows; ``"raise"``: a :class:`DataSourceError` instead; ``"keep"``: keep them (e.g. to oversample on
            purpose; :func:`split_datalist` still keeps every copy on one side).
    """
    on_duplicate = look_up_option(on_duplicate, ("warn", "raise", "keep"))
    if on_duplicate == "keep":
        return list(items)
    first: dict[tuple, int] = {}
    kept, repeats, cache = [], [], {}
    for i, item in enumerate(items):
        key = triplet_identity(item, cache)
        if key in first:
            repeats.append(f"row {i + 1} = row {first[key] + 1}")
            continue
        first[key] = i
        kept.append(item)
    if repeats:
        msg = (
            f"{source}: {len(repeats)} duplicate item(s) (the same slo/early/late files as an earlier item, links "
            f"followed): {', '.join(repeats[:5])}{' ...' if len(repeats) > 5 else ''}; {len(kept)} distinct triplet(s) "
            "left. A repeated triplet would weigh twice in training and could be split into both training and "
            "validation."
        )
        if on_duplicate == "raise":
            raise DataSourceError(msg + " Remove the repeated rows (or pass on_duplicate='warn' to drop them).")
        warnings.warn(msg + " The repeats were dropped.", stacklevel=3)
    return kept


def _resolve(value: str, base: Path) -> str:
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def read_json_datalist(path: PathLike) -> list | dict:
    """The content of a JSON datalist file: a list of items or a decathlon-style dict of sections.

    Raises:
        DataSourceError: the file is not valid JSON, or holds neither a list nor a dict, naming the file (and the
            line and column of a syntax error).
    """
    try:
        with open(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as err:
        raise DataSourceError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); a datalist is a list of "
            '{"slo": ..., "early": ..., "late": ...} items or a dict {"training": [...], "validation": [...]}.'
        ) from err
    if not isinstance(content, (list, dict)):
        raise DataSourceError(
            f"{path}: holds a JSON {type(content).__name__}, not a list of items or a dict of sections "
            '({"training": [...], "validation": [...]}).'
        )
    return content


def _check_items(items: Any, path: PathLike, where: str) -> None:
    """Every item of a datalist section is a dict (JSON object) of paths; otherwise a :class:`DataSourceError`
    naming the file, the section and the first offending items."""
    if not isinstance(items, list):
        raise DataSourceError(
            f"{path}: {where} is a JSON {type(items).__name__}, not a list of items; write it as "
            '[{"slo": ..., "early": ..., "late": ...}, ...].'
        )
    bad = [(i, item) for i, item in enumerate(items) if not isinstance(item, dict)]
    if bad:
        listing = ", ".join(f"item {i + 1} is a {type(v).__name__} ({json.dumps(v)[:60]})" for i, v in bad[:3])
        raise DataSourceError(
            f"{path}: {len(bad)} item(s) of {where} are not objects of file paths: {listing}"
            f"{' ...' if len(bad) > 3 else ''}. Write every item as "
            '{"slo": "N.png", "early": "N.1.png", "late": "N.2.png"}.'
        )


def datalist_from_file(
    path: PathLike,
    require_late: bool = True,
    require_early: bool = True,
    section: str = "training",
    base_dir: PathLike | None = None,
    on_incomplete: str = "raise",
    on_duplicate: str = "warn",
) -> list[dict]:
    """Read a triplet list from a CSV or JSON file.

    Accepted layouts: a CSV with a header row naming the columns ``slo``, ``early``, ``late`` (``late`` may be
    missing or empty for inference lists); a JSON list of such dicts; a decathlon-style JSON dict, from which
    ``section`` (``"training"``, ``"validation"``, ``"test"``) is read with
    :func:`monai.data.load_decathlon_datalist`. Relative paths are resolved against ``base_dir`` (default: the
    list file's folder).

    Args:
        path: ``.csv`` or ``.json`` file.
        require_late: an item without a late-phase path is incomplete.
        require_early: an item without an early-phase path is incomplete.
        section: the section of a decathlon-style JSON.
        base_dir: folder that relative paths start from.
        on_incomplete: ``"raise"``, ``"warn"`` (skip) or ``"skip"``, as in :func:`datalist_from_folder`. Files that
            do not exist always raise (``FileNotFoundError`` listing them).
        on_duplicate: items repeating an earlier item's files: ``"warn"`` (dropped, one warning), ``"raise"`` or
            ``"keep"`` (:func:`drop_duplicates`).

    Returns:
        items with absolute path strings; other columns/fields are kept as they are.
    """
    path = Path(path)
    on_incomplete = look_up_option(on_incomplete, ("raise", "warn", "skip"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist file not found.")
    base = Path(base_dir) if base_dir is not None else path.parent
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or UWFKeys.SLO.value not in rows[0]:
            raise ValueError(f"{path}: a CSV datalist needs a header row with columns slo, early, late.")
        raw = [{k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k} for r in rows]
    elif suffix == ".json":
        content = read_json_datalist(path)
        if isinstance(content, dict):
            if section not in content:
                raise KeyError(f"{path}: no section {section!r}; it has {sorted(content)}.")
            _check_items(content[section], path, f"section {section!r}")
            raw = load_decathlon_datalist(path, is_segmentation=False, data_list_key=section, base_dir=base)
        else:
            _check_items(content, path, "the list")
            raw = content
    else:
        raise ValueError(f"{path}: unsupported datalist type {suffix!r}; use .csv or .json.")
    required = _required(require_late, require_early)
    items, problems, absent = [], [], []
    checked: dict[str, tuple[str, bool]] = {}
    for i, r in enumerate(raw):
        item = {k: v for k, v in r.items() if not (k in _TRIPLET_KEYS and v in (None, ""))}
        missing = [k for k in required if k not in item]
        if missing:
            problems.append(f"row {i + 1} ({item.get(UWFKeys.SLO.value, 'no slo')}): missing {', '.join(missing)}")
            continue
        for k in _TRIPLET_KEYS:
            if k in item:
                value = str(item[k])
                if value not in checked:  # a path repeated over many rows is resolved and looked up once
                    resolved = _resolve(value, base)
                    checked[value] = (resolved, Path(resolved).is_file())
                item[k], exists = checked[value]
                if not exists:
                    absent.append(f"row {i + 1} {k}: {item[k]}")
        items.append(item)
    _report_incomplete(
        problems, path, on_incomplete, "Fix: fill in the missing paths, or pass require_late=False for inference."
    )
    if absent:
        raise FileNotFoundError(f"{path}: {len(absent)} listed file(s) do not exist:\n  " + "\n  ".join(absent))
    return drop_duplicates(items, path if suffix == ".csv" or not isinstance(content, dict) else
                           f"{path} (section {section!r})", on_duplicate)  # fmt: skip


def split_datalist(items: Sequence[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """Split items into (train, val) reproducibly: the same ``seed`` gives the same split on every machine.

    Args:
        items: the datalist.
        val_fraction: fraction in ``[0, 1)`` for validation, rounded; at least one item when the fraction is
            positive and there are at least two items.
        seed: seed of a :func:`numpy.random.default_rng` permutation.

    Returns:
        ``(train, val)``, each in the original order of ``items``. Items of the same triplet
        (:func:`triplet_identity`, e.g. a row listed twice) always land on the same side; the fraction counts
        distinct triplets.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    group_of: dict[tuple, int] = {}
    cache: dict[str, str] = {}
    groups = [group_of.setdefault(triplet_identity(item, cache), len(group_of)) for item in items]
    n = len(group_of)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    val_groups = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    train = [dict(item) for item, g in zip(items, groups) if g not in val_groups]
    val = [dict(item) for item, g in zip(items, groups) if g in val_groups]
    return train, val


def write_datalist(
    path: PathLike,
    training: Sequence[dict],
    validation: Sequence[dict] = (),
    relative_to: PathLike | None = None,
    **sections: Sequence[dict],
) -> Path:
    """Write a decathlon-style JSON datalist ``{"training": [...], "validation": [...]}`` atomically.

    Args:
        path: output ``.json``.
        training: training items.
        validation: validation items.
        relative_to: write image paths relative to this folder (e.g. the JSON's folder, so the data can be moved
            together with the list); absolute otherwise. :func:`datalist_from_file` and
            :func:`monai.data.load_decathlon_datalist` (with ``base_dir``) resolve them again.
        sections: more sections, e.g. ``test=[...]``.

    Returns:
        the path written.
    """
    path = Path(path)

    def convert(items: Sequence[dict]) -> list[dict]:
        out = []
        for item in items:
            new = {}
            for k, v in item.items():
                if k in _TRIPLET_KEYS and v is not None and relative_to is not None:
                    v = os.path.relpath(os.path.abspath(v), os.path.abspath(relative_to))
                if isinstance(v, np.ndarray):
                    continue  # masks and arrays are not datalist content
                new[k] = str(v) if isinstance(v, Path) else v
            out.append(new)
        return out

    content = {"training": convert(training), "validation": convert(validation)}
    content.update({k: convert(v) for k, v in sections.items()})
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(content, f, indent=2)
    return path
