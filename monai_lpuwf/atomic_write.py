"""Atomic file writes: a temporary file in the target folder, then one ``os.replace``.

A reader (or a run killed mid-write) never sees half a file, and the file ends with the usual
``0o666 & ~umask`` permissions (``tempfile.mkstemp`` creates it ``0o600``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "default_file_mode"]


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; write it inside the ``with`` block.

    On normal exit the temporary file replaces ``path`` atomically (with default permissions); on an exception
    it is removed and ``path`` is left as it was. The parent folder is created if needed. The temporary name
    keeps ``path``'s suffix so writers that dispatch on it (PIL, nibabel, tifffile) see the right format.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
