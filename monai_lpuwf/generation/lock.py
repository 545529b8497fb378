"""One generation run per output folder at a time: :class:`OutputFolderLock`.

Two runs writing into one folder would replace each other's images with both reporting success (and, with the
same input names, each image could come from either run). The first run to start holds an exclusive lock on
``<output_dir>/.lpuwf-generation.lock`` until it ends; a second run into the same folder stops before generating
with an :class:`OutputFolderInUseError` naming the run that holds it (process id, host, start time, command).
The first run wins; the second writes nothing.

The lock is an operating-system advisory lock (``fcntl.flock``), so it disappears with the process that holds it:
a killed run never leaves a stale lock behind. Where ``fcntl`` is missing (Windows), the lock file is created
exclusively instead and a killed run leaves it behind (the message names it, to be removed by hand). Advisory
locks are reliable on local file systems; on network file systems (NFS) give each run its own output folder.

Each output file is also written under a temporary name and renamed into place
(:func:`~monai_lpuwf.transforms.save_generated`), so a reader never sees half an image.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from monai_lpuwf.errors import UserInputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "OutputFolderInUseError", "OutputFolderLock"]

LOCK_NAME = ".lpuwf-generation.lock"
_HELD: dict[str, OutputFolderLock] = {}  # folder (resolved) -> the lock this process holds on it


class OutputFolderInUseError(UserInputError, RuntimeError):
    """Another run holds the output folder; the message names it and the fix."""


class OutputFolderLock:
    """An exclusive lock on an output folder for the length of one run.

    Args:
        folder: the output folder (created if missing when the lock is taken).
        option: the setting that chose the folder, for messages.

    Use :meth:`acquire` at the start of a run (the bundle's ``initialize``) and :meth:`release` at its end
    (``run``), or ``with OutputFolderLock(folder):``. A run in this process that ended without releasing (an
    exception) does not block the next run of this process: acquiring replaces this process's own earlier lock.
    """

    def __init__(self, folder: str | os.PathLike, option: str = "--output_dir") -> None:
        self.folder = Path(folder)
        self.option = option
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _key(self) -> str:
        return os.path.realpath(self.folder)

    def _describe_holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another run"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
        return (
            f"another run (process {info.get('pid')} on host {info.get('host')}, started {started}: "
            f"{info.get('command', '?')})"
        )

    def _busy(self) -> OutputFolderInUseError:
        stale = "" if fcntl is not None else f" If no such run is going on, delete {self.path}."
        return OutputFolderInUseError(
            f"the output folder {self.folder} ({self.option}) is in use by {self._describe_holder()}; two runs into "
            "one folder would replace each other's images. Wait for it to finish, or choose another "
            f"{self.option}. The first run keeps the folder; this one has written nothing.{stale}"
        )

    def acquire(self) -> OutputFolderLock:
        """Take the lock (non-blocking).

        Raises:
            OutputFolderInUseError: another process holds it.
        """
        if self.held:
            return self
        earlier = _HELD.pop(self._key(), None)
        if earlier is not None:  # this process's own run that did not release (it raised): replace its lock
            earlier.release()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            if fcntl is None:
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
                except FileExistsError:
                    raise self._busy() from None
            else:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise self._busy() from None
                try:  # the holder before us may have removed the file after we opened it: lock the current one
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            break
        record: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        self._fd = fd
        _HELD[self._key()] = self
        return self

    def release(self) -> None:
        """Give the folder free (removes the lock file); nothing happens when the lock is not held."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):  # removed while still locked: a waiting run then locks a
            os.remove(self.path)  # fresh file (the inode check in acquire)
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        if _HELD.get(self._key()) is self:
            del _HELD[self._key()]

    def __enter__(self) -> OutputFolderLock:
        return self.acquire()

    def __exit__(self, *args: Any) -> None:
        self.release()

    def __del__(self) -> None:  # an unreleased lock of a finished in-process run
        with contextlib.suppress(Exception):  # at interpreter shutdown the OS releases the lock anyway
            self.release()
