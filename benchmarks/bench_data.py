"""Benchmark the UWF data layer on the real samples: loader throughput and elastix registration time per pair.

Loader throughput (images/s), each against a baseline run interleaved with it:

- ``LoadUWFImage`` (rows-first, channel selection, bit-depth scaling to [-1, 1]) vs MONAI's plain
  ``LoadImage(image_only=True, ensure_channel_first=True)`` (PIL reader, no scaling): the ratio is the cost of the
  extra work. A raw ``PIL.Image.open`` + ``numpy.asarray`` decode is shown as the floor.
- the whole training pipeline ``uwf_train_transforms(size)`` (load, sharpen, resize, field of view, CTRD,
  augmentation) in triplets/s, vs loading the same triplet alone.

Registration (s/pair, elastix affine, one thread): late-phase FA onto early-phase FA (normalised correlation) and
SLO onto early-phase FA (Mattes mutual information) at the full 682 x 853 size, with ``RegisterElastix``'s
default ``settings="fast"`` (frames shrunk 4x for elastix, 2 levels, transform applied at full size) vs
``settings="legacy"`` (the full-size 4-level settings used before), interleaved per pair (ratio = fast / legacy).
Besides wall-clock seconds, the process CPU seconds per pair: with one thread, what the pair costs one core
even when other processes share the machine (wall-clock then includes waiting for the CPU).
Per setting: the similarity before and after, the mean gain counting identity fallbacks as 0 (what training
sees), the number of fallbacks, and a known affine (4 deg, ~26 px shift, scale, shear) recovered on the first
early-phase frame (max error in px over its field of view). Also the time to read a registered pair back from
the registration cache (``RegisterElastixd(cache_dir=...)``). ITK's one-off module loading (tens of seconds on
first use in a process) is measured separately and excluded. ``OMP_NUM_THREADS`` and ITK's global thread count
are set to 1: the figures are for one core.

Timing: interleaved rounds (``--repeats``), the minimum over rounds per item (other processes on a shared
machine only ever add time), summed over the images. Run::

    python benchmarks/bench_data.py                       # all 7 real triplets in ../shared/uwf-samples
    python benchmarks/bench_data.py --pairs 3 --repeats 2 --json bench_data.json
    python benchmarks/bench_data.py --skip-loading --reg-repeats 2   # registration only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core (set before numpy / torch load their thread pools)

import numpy as np

DEFAULT_SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "uwf-samples"


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def bench_loaders(items: list[dict], repeats: int, train_size: int) -> dict:
    from monai.transforms import LoadImage
    from PIL import Image

    from monai_lpuwf.transforms import LoadUWFImage, LoadUWFImaged, uwf_train_transforms

    files = [(item[k], "slo" if k == "slo" else "fa") for item in items for k in ("slo", "early", "late")]
    ours = {m: LoadUWFImage(m) for m in ("slo", "fa")}
    monai_load = LoadImage(image_only=True, ensure_channel_first=True)
    impls = {
        "LoadUWFImage": lambda f, m: ours[m](f),
        "monai.LoadImage": lambda f, m: monai_load(f),
        "PIL decode": lambda f, m: np.asarray(Image.open(f)),
    }
    best = {name: [float("inf")] * len(files) for name in impls}
    for _ in range(repeats):
        for i, (f, m) in enumerate(files):
            for name, fn in impls.items():
                best[name][i] = min(best[name][i], _timed(fn, f, m)[0])
    rates = {name: len(files) / sum(t) for name, t in best.items()}

    load_triplet = LoadUWFImaged(["slo", "early", "late"])
    pipeline = uwf_train_transforms(train_size)
    pipeline.set_random_state(0)
    tri = {
        "load triplet": [float("inf")] * len(items),
        f"uwf_train_transforms({train_size})": [float("inf")] * len(items),
    }
    for _ in range(repeats):
        for i, item in enumerate(items):
            tri["load triplet"][i] = min(tri["load triplet"][i], _timed(load_triplet, dict(item))[0])
            key = f"uwf_train_transforms({train_size})"
            tri[key][i] = min(tri[key][i], _timed(pipeline, dict(item))[0])
    return {
        "images": len(files),
        "images_per_s": rates,
        "ratio_ours_vs_monai_LoadImage (time)": rates["monai.LoadImage"] / rates["LoadUWFImage"],
        "triplets_per_s": {name: len(items) / sum(t) for name, t in tri.items()},
    }


def _affine_recovery_px(reg, early: np.ndarray) -> float:
    """Max error (px, over the field of view) of recovering a known affine applied to ``early``."""
    import math

    from scipy import ndimage as ndi

    from monai_lpuwf.transforms import FieldOfView

    h, w = early.shape[1:]
    a = math.radians(4.0)
    lin = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array([[1.02, 0.015], [0, 0.99]])
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    truth = np.eye(3)
    truth[:2, :2], truth[:2, 2] = lin, c + np.array([14.0, -22.0]) - lin @ c
    inv = np.linalg.inv(truth)
    moving = np.stack([ndi.affine_transform(ch, inv[:2, :2], inv[:2, 2], order=3, cval=-1.0) for ch in early])
    info = reg(moving.astype(np.float32), early).meta["registration"]
    est = np.array(json.loads(info["matrix_rc"])) if info["matrix_rc"] else np.eye(3)
    pts = np.stack(np.nonzero(FieldOfView("fa")(early)[0] > 0.5)).astype(float)
    pts = np.vstack([pts, np.ones(pts.shape[1])])
    return float(np.hypot(*((est - truth) @ pts)[:2]).max())


def bench_registration(items: list[dict], repeats: int, threads: int) -> dict:
    import tempfile

    from monai_lpuwf.data import render_phantom
    from monai_lpuwf.transforms import LoadUWFImage, LoadUWFImaged, RegisterElastix, RegisterElastixd

    start = time.perf_counter()
    import itk

    itk.ElastixRegistrationMethod  # noqa: B018 (itk loads its modules lazily, on first attribute access)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    warm = render_phantom((64, 64), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        RegisterElastix(mode="translation", iterations=5, threads=threads)(warm["late"], warm["early"])
    results: dict = {"itk_first_use_s": time.perf_counter() - start, "threads": threads}
    settings = ("legacy", "fast")
    regs = {name: RegisterElastix(mode="affine", settings=name, threads=threads) for name in settings}
    fa, slo = LoadUWFImage("fa"), LoadUWFImage("slo")
    early0 = fa(items[0]["early"]).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recovery = {name: _affine_recovery_px(reg, early0) for name, reg in regs.items()}
    for task, moving_key in (("late->early (ncc)", "late"), ("slo->early (mi)", "slo")):
        runs = {name: {"times": [], "cpu": [], "before": [], "after": [], "gain": [], "fallbacks": 0} for name in regs}
        for item in items:
            fixed = fa(item["early"])
            moving = slo(item["slo"]) if moving_key == "slo" else fa(item["late"])
            for r in range(repeats):  # legacy and fast interleaved per pair: load changes hit both alike
                for name, reg in regs.items():
                    cpu = time.process_time()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t, registered = _timed(reg, moving, fixed)
                    info = registered.meta["registration"]
                    run = runs[name]
                    run["times"].append(t)
                    run["cpu"].append(time.process_time() - cpu)
                    if r == 0:
                        ok = info["status"] == "registered"
                        run["before"].append(info["similarity_before"])
                        run["after"].append(info["similarity_after"])
                        run["gain"].append(info["similarity_after"] - info["similarity_before"] if ok else 0.0)
                        run["fallbacks"] += not ok
        per_setting = {}
        for name in settings:
            run = runs[name]
            best = np.asarray(run["times"]).reshape(len(items), repeats).min(1)
            per_setting[name] = {
                "s_per_pair": float(best.mean()),
                "s_per_pair_max": float(best.max()),
                "cpu_s_per_pair": float(np.asarray(run["cpu"]).reshape(len(items), repeats).min(1).mean()),
                "similarity_before": float(np.mean(run["before"])),
                "similarity_after": float(np.nanmean(run["after"])),
                "gain (fallback = 0)": float(np.mean(run["gain"])),
                "gain per pair": [round(g, 4) for g in run["gain"]],
                "identity_fallbacks": run["fallbacks"],
                "known_affine_error_px_max": recovery[name],
            }
        ratio = per_setting["fast"]["s_per_pair"] / per_setting["legacy"]["s_per_pair"]
        per_setting["ratio fast / legacy (time)"] = ratio
        results[task] = per_setting

    with tempfile.TemporaryDirectory() as cache_dir:  # second run: read back from the registration cache
        load = LoadUWFImaged(["slo", "early", "late"], spatial_mismatch="ignore")
        cached = RegisterElastixd("early", "late", cache_dir=cache_dir, threads=threads)
        times = []
        for item in items:
            data = load(dict(item))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cached(data)
            times.append(_timed(cached, data)[0])
        results["late->early from the cache (s/pair)"] = float(np.mean(times))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="folder of N.bmp/N.1.bmp/N.2.bmp")
    parser.add_argument("--pairs", type=int, default=7, help="number of triplets used")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds for loading")
    parser.add_argument("--reg-repeats", type=int, default=1, help="timing rounds per registration")
    parser.add_argument("--threads", type=int, default=1, help="elastix / ITK threads")
    parser.add_argument("--train-size", type=int, default=256, help="spatial size of the training pipeline")
    parser.add_argument("--skip-registration", action="store_true")
    parser.add_argument("--skip-loading", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from monai_lpuwf.data import datalist_from_folder

    if not args.samples.is_dir():
        print(f"samples folder {args.samples} not found; pass --samples", file=sys.stderr)
        return 2
    items = datalist_from_folder(args.samples)[: args.pairs]
    results = {"machine": f"{os.cpu_count()} CPUs", "triplets": len(items)}
    if not args.skip_loading:
        results["loading"] = bench_loaders(items, args.repeats, args.train_size)
    if not args.skip_registration:
        results["registration"] = bench_registration(items, args.reg_repeats, args.threads)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
