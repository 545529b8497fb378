"""PyTorch thread count for generation on a small CPU machine: images/s with 1 vs 2 (or more) intra-op threads.

For each thread count and each condition, a fresh subprocess (``OMP_NUM_THREADS`` set before ``torch`` is imported,
as a user would) builds the small preset with random weights (the cost does not depend on the values) and
generates whole frames of each size with DDIM (``--steps``), after one untimed 128 x 128 warm-up frame. The
figure is the minimum over ``--repeats`` frames (on a shared machine other processes only ever add time). Conditions:

- ``idle``: nothing else started by the benchmark (the load average is printed: on a shared machine "idle" means
  "no extra load");
- ``load``: ``--load`` busy-looping processes run beside it (another job on the machine: a data loader, a second
  run, the training of a colleague).

Run::

    python benchmarks/bench_threads.py                      # 640x512 and 853x682, 1 vs 2 threads, idle and load
    python benchmarks/bench_threads.py --threads 1 2 4 --load 2 --steps 10 --json threads.json

The bundle's default (:func:`monai_lpuwf.threads.default_num_threads`) is chosen from these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SIZES = ((640, 512), (853, 682))  # (W, H): a 640x512 SLO export, the authors' 853x682 frames


def worker(args: argparse.Namespace) -> None:
    import torch

    from monai_lpuwf.inferers import LPUWFSampler
    from monai_lpuwf.networks import build_model

    torch.manual_seed(0)
    model = build_model("small").eval()
    sampler = LPUWFSampler(scheduler="ddim", num_inference_steps=args.steps, seed=0)
    results = {}
    with torch.no_grad():
        sampler(torch.rand(1, 3, 128, 128) * 2 - 1, model)  # warm-up (kernels, allocator)
        for w, h in args.sizes:
            slo = torch.rand(1, 3, h, w) * 2 - 1
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                sampler(slo, model)
                times.append(time.perf_counter() - start)
            results[f"{w}x{h}"] = times
    print(json.dumps({"threads": torch.get_num_threads(), "times": results}))


def busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--load", type=int, default=1, help="busy processes in the 'load' condition (0: skip it)")
    parser.add_argument("--steps", type=int, default=5, help="DDIM steps per frame")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sizes", type=str, nargs="+", default=[f"{w}x{h}" for w, h in SIZES], help="WxH")
    parser.add_argument("--json", type=str, default=None, help="write every timing here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    if args.worker:
        worker(args)
        return
    conditions = ["idle"] + (["load"] if args.load > 0 else [])
    rows = []
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.2f}")
    for condition in conditions:
        loaders = [busy() for _ in range(args.load)] if condition == "load" else []
        try:
            for threads in args.threads:
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
                cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--repeats", str(args.repeats),
                       "--sizes", *[f"{w}x{h}" for w, h in args.sizes]]  # fmt: skip
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                for size, times in result["times"].items():
                    rows.append({"condition": condition, "threads": threads, "size": size, "times": times,
                                 "load_average": os.getloadavg()[0]})  # fmt: skip
                    print(f"{condition:5s} threads={threads} {size}: {min(times):.2f} s/image "
                          f"({1 / min(times):.3f} images/s)", flush=True)  # fmt: skip
        finally:
            for p in loaders:
                p.kill()
                p.wait()
    print(f"\nDDIM {args.steps} steps, small preset, random weights, batch 1; minimum of {args.repeats} frames\n")
    print("| condition | size | " + " | ".join(f"{t} thread(s) images/s" for t in args.threads) + " | ratio |")
    print("|---|---|" + "---|" * len(args.threads) + "---|")
    for condition in conditions:
        for w, h in args.sizes:
            size = f"{w}x{h}"
            best = {r["threads"]: min(r["times"]) for r in rows if r["condition"] == condition and r["size"] == size}
            rates = [1 / best[t] for t in args.threads]
            ratio = " / ".join(f"{rates[i] / rates[0]:.2f}" for i in range(1, len(rates)))
            print(f"| {condition} | {w}x{h} | " + " | ".join(f"{r:.3f}" for r in rates) + f" | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
