"""PyTorch's CPU thread count: one default for every entry point (bundle, MONAI Label, Deploy, tutorials).

PyTorch starts as many OpenMP threads as there are cores. On a small machine that is the slow choice: the
threads spin-wait for each other, and as soon as anything else runs (a data loader, a second job, another
user) each step waits for a descheduled thread. Measured with ``benchmarks/bench_threads.py`` on a 2-core CPU
(``bundle/docs/README.md``), one thread generates as fast as two on an idle machine and several times faster
under load. The default here therefore keeps half of the CPUs free:

* ``num_threads`` given (bundle option ``--num_threads N``, an app setting): that;
* else ``OMP_NUM_THREADS`` set in the environment: that (PyTorch has read it already);
* else ``max(1, min(8, cpus // 2))`` (1 thread on 2-3 CPUs, 2 on 4, ... at most 8), ``cpus`` being the CPUs this
  process may run on (``os.sched_getaffinity``: a container's or a job scheduler's limit, not the host's).

On a GPU the networks run on the device and the CPU threads only serve the data path, so the same rule holds.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["THREADS_ENV", "available_cpus", "default_num_threads", "set_default_threads"]

THREADS_ENV = "OMP_NUM_THREADS"
MAX_DEFAULT_THREADS = 8

logger = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the platform has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_num_threads(num_threads: int | str | None = None, cpus: int | None = None) -> int:
    """The intra-op thread count to use (see the module docstring for the rule).

    Args:
        num_threads: an explicit count (``None``, ``0``, ``""`` or ``"auto"``: no explicit count).
        cpus: CPUs available (default :func:`available_cpus`).

    Raises:
        ValueError: ``num_threads`` or ``OMP_NUM_THREADS`` is not a positive integer, naming where it came from.
    """
    for value, where in ((num_threads, "num_threads"), (os.environ.get(THREADS_ENV), THREADS_ENV)):
        if value is None or str(value).strip().lower() in ("", "0", "auto", "none"):
            continue
        try:
            count = int(value)
            if count < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"{where}={value!r} is not a positive number of threads; use e.g. 1, 2 or 4.") from None
        return count
    cpus = available_cpus() if cpus is None else int(cpus)
    return max(1, min(MAX_DEFAULT_THREADS, cpus // 2))


def set_default_threads(num_threads: int | str | None = None) -> int:
    """Set PyTorch's intra-op thread count to :func:`default_num_threads` and return it.

    Every entry point calls this once at start-up: the bundle configs (``initialize``, option ``num_threads``),
    the MONAI Label app, the MONAI Deploy operator and the tutorials.
    """
    count = default_num_threads(num_threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    logger.debug("PyTorch CPU threads: %d (override with num_threads or %s)", count, THREADS_ENV)
    return count
