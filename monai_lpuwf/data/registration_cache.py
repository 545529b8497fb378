"""Registration results cached on disk, and a whole datalist registered in parallel worker processes.

Registering a triplet takes about a second (plus tens of seconds to load ITK once per process); a training run
that registers its frames would redo it on every run. :class:`RegistrationCache` stores what
:class:`~monai_lpuwf.transforms.RegisterElastixd` produced (the registered images, float32, and the
``meta["registration"]`` record) under a key that hashes the input *images* (the loaded arrays, so the loading
options count too) and every registration setting, so a later run with the same data and settings reads the
result instead of calling elastix (ITK is then never loaded), and any change of data or settings registers anew.

:func:`register_datalist` fills the cache for a whole datalist ahead of training, in worker processes with a
progress bar; the training pipeline then only reads it::

    pre = uwf_train_transforms(256, register=True, register_kwargs={"cache_dir": "work/registration"})
    register_datalist(items, pre, num_workers=4)   # registers what is not cached yet, in parallel
    ds = CacheDataset(items, pre)                   # every item a cache hit

Entries are ``<cache_dir>/<key[:2]>/<key>.npz`` (written atomically: concurrent runs, e.g. the ranks of a
multi-GPU job, at worst register an item twice). Size: one float32 copy of each registered frame (~2.3 MB for an
853 x 682 FA frame, ~7 MB for an SLO). Delete the folder to clear it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.utils import convert_to_numpy, optional_import

from monai_lpuwf.atomic_write import atomic_path

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["RegistrationCache", "register_datalist", "CACHE_FORMAT"]

CACHE_FORMAT = 1  # bump when the stored content or the key changes meaning
logger = logging.getLogger(__name__)


def _elastix_version() -> str:
    try:
        return metadata.version("itk-elastix")
    except metadata.PackageNotFoundError:
        return "none"


class RegistrationCache:
    """Registered images and their registration record on disk, keyed by input content and settings.

    Args:
        cache_dir: folder of the entries (created on the first write).

    Attributes:
        hits, misses: lookups answered from / not found in the cache by this object (this process).
    """

    def __init__(self, cache_dir: PathLike) -> None:
        self.cache_dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(arrays: Sequence[Any], settings: Mapping[str, Any]) -> str:
        """SHA-256 hex digest of the arrays' dtype, shape and bytes (``None`` entries included as such), the JSON
        of ``settings``, the itk-elastix version and :data:`CACHE_FORMAT`."""
        h = hashlib.sha256()
        h.update(json.dumps([CACHE_FORMAT, _elastix_version(), settings], sort_keys=True, default=str).encode())
        for a in arrays:
            if a is None:
                h.update(b"none")
                continue
            arr = np.ascontiguousarray(convert_to_numpy(a))
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.data)
        return h.hexdigest()

    def path(self, key: str) -> Path:
        """File of the entry ``key``."""
        return self.cache_dir / key[:2] / f"{key}.npz"

    def get(self, key: str) -> tuple[list[np.ndarray], dict] | None:
        """The stored ``(arrays, info)`` of ``key``, or ``None`` (counted as a miss; unreadable entries too)."""
        path = self.path(key)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    n = int(z["count"])
                    arrays, info = [z[f"a{i}"] for i in range(n)], json.loads(str(z["info"]))
                self.hits += 1
                return arrays, info
            except (OSError, ValueError, KeyError) as e:  # truncated by hand, older format: register again
                logger.warning(f"registration cache: ignoring unreadable entry {path} ({e}).")
        self.misses += 1
        return None

    def put(self, key: str, arrays: Sequence[Any], info: Mapping[str, Any]) -> Path:
        """Store ``arrays`` (as float32) and ``info`` (JSON) under ``key``, atomically; returns the file."""
        path = self.path(key)
        payload = {f"a{i}": np.asarray(convert_to_numpy(a), dtype=np.float32) for i, a in enumerate(arrays)}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, count=np.asarray(len(payload)), info=np.asarray(json.dumps(dict(info))), **payload)
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.cache_dir.glob("*/*.npz")) if self.cache_dir.is_dir() else 0


def _cached_prefix(transform: Any) -> list:
    """The transforms of ``transform`` (a Compose or a sequence) up to the last cached registration, else ``[]``."""
    xforms = list(getattr(transform, "transforms", transform))
    last = max((i for i, t in enumerate(xforms) if getattr(t, "cache", None) is not None), default=-1)
    return xforms[: last + 1]


_WORKER_PREFIX: list = []


def _init_worker(prefix: list) -> None:
    global _WORKER_PREFIX
    _WORKER_PREFIX = prefix


def _register_item(index: int, item: Mapping, prefix: list | None = None) -> tuple[int, int, int, list[str]]:
    """Run ``prefix`` on one item; returns ``(index, cache hits, misses, registration statuses)``."""
    prefix = _WORKER_PREFIX if prefix is None else prefix
    caches = [t.cache for t in prefix if getattr(t, "cache", None) is not None]
    hits, misses = sum(c.hits for c in caches), sum(c.misses for c in caches)
    d = dict(item)
    for t in prefix:
        d = t(d)
    statuses = [
        str(d[t.moving_key].meta["registration"]["status"])
        for t in prefix
        if getattr(t, "cache", None) is not None and hasattr(d.get(t.moving_key), "meta")
    ]
    return (
        index,
        sum(c.hits for c in caches) - hits,
        sum(c.misses for c in caches) - misses,
        statuses,
    )


def register_datalist(
    datalist: Sequence[Mapping],
    transform: Any,
    num_workers: int | None = None,
    progress: bool = True,
    drop_refused: bool = True,
) -> list:
    """Fill the registration cache of ``transform`` for every item of ``datalist``, in parallel.

    ``transform`` is the pipeline that training uses (e.g. :func:`~monai_lpuwf.transforms.uwf_train_transforms`
    with ``register_kwargs={"cache_dir": ...}``): its transforms up to the last
    :class:`~monai_lpuwf.transforms.RegisterElastixd` with a ``cache_dir`` (loading, registration) are run on each
    item, so the pipeline later finds every registration in the cache. Without such a transform (``register``
    off, or no ``cache_dir``) nothing is done.

    Args:
        datalist: items of file paths (``{"slo": ..., "early": ..., "late": ...}``).
        transform: a :class:`monai.transforms.Compose` or a sequence of transforms.
        num_workers: worker processes (``None``: one per CPU, at most one per item; ``0``: this process). Each
            worker that has something to register loads ITK once (tens of seconds).
        progress: show a progress bar (tqdm) over the items.
        drop_refused: leave out the items with a registration whose status is ``"refused"`` (a pair
            :class:`~monai_lpuwf.transforms.RegisterUWF` could not align: frames of two eyes, or too few vessels),
            with one warning line naming each; ``False`` keeps them (unregistered).

    Returns:
        ``datalist`` as a list (without the refused items when ``drop_refused``), so that a config can write
        ``"data": "$monai_lpuwf.data.register_datalist(@train_datalist, @train#preprocessing)"``.

    Raises:
        RuntimeError: naming the item whose loading or registration failed (the cause chained).
    """
    items = list(datalist)
    prefix = _cached_prefix(transform)
    if not prefix or not items:
        return items
    workers = min(len(items), os.cpu_count() or 1) if num_workers is None else min(int(num_workers), len(items))
    bar = tqdm(total=len(items), desc="registration", unit="item") if progress and has_tqdm else None
    hits = misses = 0
    statuses: list[str] = []
    refused: dict[int, list[str]] = {}

    def collect(result: tuple[int, int, int, list[str]]) -> None:
        nonlocal hits, misses
        hits, misses = hits + result[1], misses + result[2]
        statuses.extend(result[3])
        if "refused" in result[3]:
            refused[result[0]] = result[3]
        if bar is not None:
            bar.update(1)

    def failed(index: int, e: BaseException) -> RuntimeError:
        return RuntimeError(f"register_datalist: item {index} ({dict(items[index])}) failed: {e}")

    try:
        if workers <= 0:
            for i, item in enumerate(items):
                try:
                    collect(_register_item(i, item, prefix))
                except Exception as e:
                    raise failed(i, e) from e
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(prefix,)) as pool:
                futures = {pool.submit(_register_item, i, item): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    try:
                        collect(future.result())
                    except Exception as e:
                        for f in futures:
                            f.cancel()
                        raise failed(futures[future], e) from e
    finally:
        if bar is not None:
            bar.close()
    fallbacks = sum(s not in ("registered", "refused") for s in statuses)
    logger.info(
        f"registration: {len(items)} items, {misses} registered now, {hits} from the cache "
        f"({prefix[-1].cache.cache_dir}); {fallbacks} kept unregistered (identity fallback); {len(refused)} with a "
        f"refused pair{' (left out)' if drop_refused else ''}."
    )
    for i in sorted(refused):
        logger.warning(
            f"registration refused: item {i} ({dict(items[i])}): its frames could not be aligned (vessel correlation "
            f"below the threshold); {'left out of the data' if drop_refused else 'kept unregistered'}."
        )
    return [item for i, item in enumerate(items) if not (drop_refused and i in refused)]
