"""Peak memory of one call, for the benchmark scripts (``from memory import peak_memory``: the scripts run as
``python benchmarks/<script>.py``, which puts this folder on ``sys.path``).

CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU: the process's resident-set high-water mark
(``VmHWM`` in ``/proc/self/status``, reset through ``/proc/self/clear_refs``), which unlike ``tracemalloc`` sees
PyTorch's tensor allocations; where ``clear_refs`` is not writable, the growth of ``ru_maxrss`` (a lower bound).
Run the measured code once before (one-off allocations such as thread pools and kernel caches are not the
step's), in a fresh process with ``MALLOC_MMAP_THRESHOLD_=65536`` (glibc otherwise keeps freed heap memory
resident and hides a step's peak behind the warm-up's).
"""

from __future__ import annotations

import gc
import resource
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["peak_memory"]


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(step: Callable[[], Any], device: str | torch.device) -> dict:
    """Call ``step()`` once and measure its memory.

    Returns:
        ``{"peak_mb": peak during the call, "step_mb": peak minus the memory in use before it, "method": ...}``
        (MiB; on the CPU ``peak_mb`` is the whole process's resident set).
    """
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mb": peak / 2**20, "step_mb": (peak - before) / 2**20, "method": "cuda max_memory_allocated"}
    if _reset_hwm() and _status_bytes("VmHWM") is not None:
        before = _status_bytes("VmRSS")
        step()
        peak = _status_bytes("VmHWM")
        return {"peak_mb": peak / 2**20, "step_mb": (peak - before) / 2**20, "method": "VmHWM"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_mb": peak / 2**20, "step_mb": (peak - before) / 2**20, "method": "ru_maxrss (lower bound)"}
