"""Atomic file writes: a temporary file in the target folder, then one ``os.replace``.

A reader (or a run killed mid-write) never sees half a file, and the file ends with the usual
``0o666 & ~umask`` permissions (``tempfile.mkstemp`` creates it ``0o600``).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "current_umask", "default_file_mode"]

_PROC_STATUS = "/proc/self/status"  # Linux >= 4.7: a "Umask:" line


def current_umask() -> int:
    """The process's umask, read without changing it (safe while other threads create files).

    ``os.umask`` can only read the umask by setting a new one; setting it even for an instant gives files that
    other threads create meanwhile the wrong permissions. Read instead from ``/proc/self/status`` (Linux), or
    where that is missing, from the mode of a probe file created ``0o777`` in a fresh private folder.
    """
    try:
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    folder = tempfile.mkdtemp(prefix=".lpuwf-umask-")
    try:
        probe = os.path.join(folder, "probe")
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o777))
        return 0o777 & ~stat.S_IMODE(os.stat(probe).st_mode)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~current_umask()


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
