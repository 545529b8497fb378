"""Errors of the user's making (a file, a folder, a setting) and their one-line report on the command line.

* :class:`UserInputError`: the base of every error that names something the user gave (an image or model file, a
  datalist, a folder, a command-line option) together with the fix. The package's own error types derive from it
  and from the built-in type callers catch (``ValueError``, ``RuntimeError``, ``FileNotFoundError``):
  :class:`~monai_lpuwf.data.UWFImageError`, :class:`~monai_lpuwf.data.DataSourceError`,
  :class:`~monai_lpuwf.networks.ModelFileError`, :class:`~monai_lpuwf.generation.InferenceInputError`, ...
* :class:`SettingError`: a setting (bundle key / command-line option) that cannot be used, e.g. an
  ``--image_size`` the network cannot take.
* :func:`brief_input_errors`: on the command line such an error ends the process with ``error: <message>`` and exit
  status 1, without a traceback unless ``--debug True`` (every bundle config calls it first in ``initialize``:
  training, generation and evaluation alike). Any other error (a bug) keeps its traceback.
"""

from __future__ import annotations

import sys

from monai.utils import str2bool

__all__ = ["SettingError", "UserInputError", "brief_input_errors", "input_error"]


class UserInputError(Exception):
    """Something the user gave (file, folder, datalist, option) cannot be used; the message names it and the fix."""


class SettingError(UserInputError, ValueError):
    """A setting (bundle key, command-line option) that cannot be used; the message names the option and the fix."""


def input_error(error: BaseException | None) -> BaseException | None:
    """The first error in ``error``'s chain that is a bad input of the user's (``monai.bundle`` wraps the errors of
    config expressions in ``RuntimeError("Failed to evaluate ...")``): a :class:`UserInputError`, a missing file or
    folder (``FileNotFoundError``), an output that exists already (``FileExistsError``). ``None`` when there is
    none (a bug, not a bad input)."""
    kinds = (UserInputError, FileNotFoundError, FileExistsError)
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

    Installs a :data:`sys.excepthook` that prints ``error: <message>`` (the messages name each file or option, the
    cause and the fix) for the errors :func:`input_error` recognises, and leaves every other error (a bug) to the
    previous hook, with its traceback. In-process callers (``monai.bundle.run`` from Python) still get the
    exception. Called first in the ``initialize`` section of every bundle config.

    Args:
        debug: ``True`` (``--debug True``): full tracebacks, the hook is removed.
    """
    installed = sys.excepthook is _brief_excepthook
    if str2bool(debug) if isinstance(debug, str) else bool(debug):
        if installed:
            sys.excepthook = _brief_excepthook.previous
        return
    if not installed:
        _brief_excepthook.previous = sys.excepthook
        sys.excepthook = _brief_excepthook
