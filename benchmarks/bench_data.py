"""Benchmark the UWF data layer on the real samples: loader throughput and elastix registration time per pair.

Loader throughput (images/s), each against a baseline run interleaved with it:

- ``LoadUWFImage`` (rows-first, channel selection, bit-depth scaling to [-1, 1]) vs MONAI's plain
  ``LoadImage(image_only=True, ensure_channel_first=True)`` (PIL reader, no scaling): the ratio is the cost of the
  extra work. A raw ``PIL.Image.open`` + ``numpy.asarray`` decode is shown as the floor.
- the whole training pipeline ``uwf_train_transforms(size)`` (load, sharpen, resize, field of view, CTRD,
  augmentation) in triplets/s, vs loading the same triplet alone.

Registration (s/pair, elastix affine, ``RegisterElastix`` defaults): late-phase FA onto early-phase FA (normalised
correlation) and SLO onto early-phase FA (Mattes mutual information), at the full 682 x 853 resolution vs frames
downsampled by ``--reduce`` (the baseline is full resolution; ratio = reduced / full), with the similarity before
and after and how many pairs fell back to identity. ITK's one-off module loading (tens of seconds on first use in
a process) is measured separately and excluded.

Timing: interleaved rounds (``--repeats``), the minimum over rounds per item (other processes on a shared
machine only ever add time), summed over the images. Run::

    python benchmarks/bench_data.py                       # all 7 real triplets in ../shared/uwf-samples
    python benchmarks/bench_data.py --pairs 3 --repeats 2 --json bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

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


def bench_registration(items: list[dict], repeats: int, reduce: int, threads: int) -> dict:
    from monai.transforms import Resize

    from monai_lpuwf.data import render_phantom
    from monai_lpuwf.transforms import LoadUWFImage, RegisterElastix

    warm = render_phantom((64, 64), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_itk, _ = _timed(RegisterElastix(mode="translation", iterations=5), warm["early"], warm["late"])
    reg = RegisterElastix(mode="affine", threads=threads)
    fa, slo = LoadUWFImage("fa"), LoadUWFImage("slo")
    results: dict = {"itk_first_use_s": t_itk}
    resolutions = (("full", 1), (f"1/{reduce}", reduce))
    for task, moving_key in (("late->early (ncc)", "late"), ("slo->early (mi)", "slo")):
        runs = {
            label: {"times": [], "before": [], "after": [], "fallbacks": 0, "size": None} for label, _ in resolutions
        }
        for item in items:
            fixed_full = fa(item["early"])
            moving_full = slo(item["slo"]) if moving_key == "slo" else fa(item["late"])
            for _ in range(repeats):  # full and reduced interleaved per pair: load changes hit both alike
                for label, factor in resolutions:
                    fixed, moving = fixed_full, moving_full
                    if factor > 1:
                        size = (fixed.shape[1] // factor, fixed.shape[2] // factor)
                        fixed, moving = (
                            Resize(size, anti_aliasing=True)(fixed),
                            Resize(size, anti_aliasing=True)(moving),
                        )
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t, (_, _, info) = _timed(reg, fixed, moving)
                    run = runs[label]
                    run["times"].append(t)
                    run["size"] = list(fixed.shape[1:])
                    if len(run["times"]) % repeats == 0 or repeats == 1:
                        run["before"].append(info["similarity_before"])
                        run["after"].append(info["similarity_after"])
                        run["fallbacks"] += info["status"] != "registered"
        per_res = {}
        for label, _ in resolutions:
            run = runs[label]
            best = np.asarray(run["times"]).reshape(len(items), repeats).min(1)
            per_res[label] = {
                "size": run["size"],
                "s_per_pair": float(best.mean()),
                "similarity_before": float(np.mean(run["before"])),
                "similarity_after": float(np.mean(run["after"])),
                "identity_fallbacks": run["fallbacks"],
            }
        per_res[f"ratio 1/{reduce} vs full (time)"] = (
            per_res[f"1/{reduce}"]["s_per_pair"] / per_res["full"]["s_per_pair"]
        )
        results[task] = per_res
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="folder of N.bmp/N.1.bmp/N.2.bmp")
    parser.add_argument("--pairs", type=int, default=7, help="number of triplets used")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds for loading")
    parser.add_argument("--reg-repeats", type=int, default=1, help="timing rounds per registration")
    parser.add_argument("--reduce", type=int, default=2, help="downsampling factor of the reduced registration")
    parser.add_argument("--threads", type=int, default=2, help="elastix threads")
    parser.add_argument("--train-size", type=int, default=256, help="spatial size of the training pipeline")
    parser.add_argument("--skip-registration", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from monai_lpuwf.data import datalist_from_folder

    if not args.samples.is_dir():
        print(f"samples folder {args.samples} not found; pass --samples", file=sys.stderr)
        return 2
    items = datalist_from_folder(args.samples)[: args.pairs]
    results = {"machine": f"{os.cpu_count()} CPUs", "triplets": len(items)}
    results["loading"] = bench_loaders(items, args.repeats, args.train_size)
    if not args.skip_registration:
        results["registration"] = bench_registration(items, args.reg_repeats, args.reduce, args.threads)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
