"""Whole-frame cost vs frame size: decoding and one denoising step, with latent tiling vs without.

The autoencoder's non-local attention (at latent resolution) and the U-Net's attention levels make the cost of a
whole frame processed at once grow with the square of its pixel count; :mod:`monai_lpuwf.inferers.tiling`
processes it in overlapping latent tiles of a bounded size (decoder: at most 128 latent pixels, overlap 16;
denoiser: at most 256, overlap 32: the :class:`~monai_lpuwf.inferers.LPUWFSampler` defaults), which makes it
linear. For each frame size this prints

- ``decode``: ``model.decode_latents`` (whole) vs :func:`~monai_lpuwf.inferers.decode_tiled`, with the SLO features;
- ``step``: one ``model.denoise`` (ControlNet on the full-resolution SLO + U-Net; whole) vs
  :func:`~monai_lpuwf.inferers.denoise_tiled`;

the time (s), the time per megapixel (flat = linear), the ratio whole / tiled, the peak memory of each call, and
the sampler's memory estimate (:meth:`LPUWFSampler.memory_estimate`, which also counts the whole-frame buffers of a
generation) beside the measured peaks. The whole-frame version is skipped where its time, extrapolated from the
previous sizes (with the growth exponent of the last two measured sizes; quadratic after the first), would exceed
``--max_seconds``; its ratio is then the predicted one, marked "predicted".

Peak memory (CPU, Linux): the kernel's resident-set high-water mark, reset with ``/proc/self/clear_refs`` just
before the call, minus the resident set before it (the process re-executes itself with
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensor memory goes back to the system). On CUDA
``torch.cuda.max_memory_allocated`` minus the memory allocated before.

Run (random weights: the cost does not depend on the values)::

    OMP_NUM_THREADS=1 python benchmarks/bench_large_frames.py                       # small preset, 1 thread
    python benchmarks/bench_large_frames.py --sizes 640x512 1280x1024 --max_seconds 60
    python benchmarks/bench_large_frames.py --preset paper --device cuda
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import os
import sys
import time

if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})

import torch

from monai_lpuwf.inferers import LPUWFSampler, decode_tiled, denoise_tiled
from monai_lpuwf.networks import build_model

SIZES = ("640x512", "1280x1024", "1920x1600", "4000x3200")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measure(fn, device: torch.device) -> tuple[float, float]:
    """(seconds, peak extra memory in MB) of one call of ``fn``."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    begin = time.perf_counter()
    with torch.no_grad():
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - begin
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status("VmHWM")
    return seconds, (peak - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), help="WxH frame sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--max_seconds", type=float, default=120.0, help="skip whole-frame calls predicted longer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.preset).eval().to(device)
    sampler = LPUWFSampler()
    print(
        f"preset {args.preset}, {device}, {args.threads} thread(s); tiles: decode {sampler.decode_tile}, "
        f"denoise {sampler.denoise_tile} latent px, overlap {sampler.decode_overlap} / {sampler.denoise_overlap}",
        flush=True,
    )
    rows = []
    measured: dict[str, list[tuple[float, float]]] = {"decode": [], "step": []}  # (seconds, megapixels)
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        divisor = model.size_divisor
        h, w = height + (-height) % divisor, width + (-width) % divisor
        f = model.downsample_factor
        g = torch.Generator().manual_seed(0)
        z = torch.randn((1, model.latent_channels, h // f, w // f), generator=g).to(device)
        slo = (torch.rand((1, 3, h, w), generator=g) * 2 - 1).to(device)
        t = torch.full((1,), 500, dtype=torch.long, device=device)
        megapixels = width * height / 1e6
        row = {"size": f"{width} x {height}", "mpx": megapixels}
        calls = {  # the calls bind this frame's tensors now (no late binding to the loop variables)
            "decode": (
                functools.partial(decode_tiled, model, z, slo, sampler.decode_tile, sampler.decode_overlap),
                functools.partial(model.decode_latents, z, slo),
            ),
            "step": (
                functools.partial(denoise_tiled, model, z, t, slo, sampler.denoise_tile, sampler.denoise_overlap),
                functools.partial(model.denoise, z, t, slo),
            ),
        }
        for name, (tiled, whole) in calls.items():
            row[f"{name}_tiled"] = measure(tiled, device)
            points = measured[name]
            predicted = None
            if points:
                exponent = 2.0
                if len(points) > 1:
                    (t0, m0), (t1, m1) = points[-2:]
                    exponent = max(1.0, math.log(t1 / t0) / math.log(m1 / m0))
                predicted = points[-1][0] * (megapixels / points[-1][1]) ** exponent
            if predicted is not None and predicted > args.max_seconds:
                row[f"{name}_whole"] = None
                row[f"{name}_predicted"] = predicted
            else:
                row[f"{name}_whole"] = measure(whole, device)
                points.append((row[f"{name}_whole"][0], megapixels))
        row["estimate"] = sampler.memory_estimate(model, 1, (height, width)) / 2**20
        rows.append(row)
        print(f"  {row['size']}: done", flush=True)

    def cell(value, per=None):
        if value is None:
            return "-"
        return f"{value[0]:.2f}" + (f" ({value[0] / per:.2f}/Mpx)" if per else "")

    print()
    print(
        "| frame | decode tiled s | decode whole s | whole/tiled | step tiled s | step whole s | whole/tiled "
        "| peak MB tiled decode / step | peak MB whole decode / step | estimate MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratios = []
        for name in ("decode", "step"):
            whole, tiled = row[f"{name}_whole"], row[f"{name}_tiled"]
            if whole is not None:
                ratios.append(f"{whole[0] / tiled[0]:.2f}")
            else:
                ratios.append(f"{row[f'{name}_predicted'] / tiled[0]:.1f} predicted")
        peaks_whole = " / ".join("-" if row[f"{n}_whole"] is None else f"{row[f'{n}_whole'][1]:.0f}" for n in calls)
        print(
            f"| {row['size']} | {cell(row['decode_tiled'], row['mpx'])} | {cell(row['decode_whole'])} | {ratios[0]} "
            f"| {cell(row['step_tiled'], row['mpx'])} | {cell(row['step_whole'])} | {ratios[1]} "
            f"| {row['decode_tiled'][1]:.0f} / {row['step_tiled'][1]:.0f} | {peaks_whole} | {row['estimate']:.0f} |"
        )


if __name__ == "__main__":
    main()
