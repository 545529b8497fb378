"""Local pretrained-weights files: found from an argument or an environment variable, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_weights_path"]


def resolve_weights_path(weights_path: str | os.PathLike | None, env_var: str, what: str, source: str) -> Path:
    """Return the local weights file given as argument or by ``env_var``; raise a message naming it otherwise.

    Args:
        weights_path: explicit path, or ``None`` to read ``env_var``.
        env_var: environment variable consulted when ``weights_path`` is ``None``.
        what: the file's name or description, for the message.
        source: where a user downloads it, for the message.

    Raises:
        FileNotFoundError: no path given, or the path is not a file.
    """
    path = weights_path if weights_path is not None else os.environ.get(env_var) or None
    if path is None:
        raise FileNotFoundError(
            f"No local weights file for {what}: pass weights_path=... or set the environment variable {env_var}. "
            f"Nothing is downloaded at run time; get the file yourself from {source} and point to it."
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights file for {what} not found: {path}. Download it from {source} "
            f"and pass its path (weights_path=... or {env_var})."
        )
    return path
