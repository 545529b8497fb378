"""Benchmark the LPUWF networks (MONAI core) against the same architecture built from monai-generative 0.2.3.

For each preset ("small" and "paper") and each implementation

- ``ours``: :func:`monai_lpuwf.networks.build_model` (MONAI core classes; attention through PyTorch's
  ``scaled_dot_product_attention``, the model's default),
- ``ours_explicit``: the same with MONAI's explicit attention matrix (``use_flash_attention=False``), which
  separates the attention kernel from the rest of the implementation,
- ``generative``: the authors' networks from monai-generative 0.2.3 (``AutoencoderKL`` + their conditional
  decoder and ``MaskConditionEncoder``, ``DiffusionModelUNet``, ``ControlNet``): the baseline,

it reports parameters (autoencoder + SLO encoder, U-Net, ControlNet) and, for

- ``ae_train_step``: autoencoder forward with the SLO features in the decoder, L1 loss, backward,
- ``diffusion_train_step``: ControlNet (full-resolution SLO) + U-Net forward, MSE on the noise, backward,
- ``denoise_step``: ControlNet + U-Net forward without gradients (one sampler step),

the time and the peak memory. The ratio columns are ``ours / generative`` (< 1: ours is faster / smaller).

Method:

- Time: one subprocess per (preset, step) builds the networks of that step for every implementation (same
  seeded weights are not needed: the cost does not depend on the values) and runs them *interleaved*,
  ``--warmup`` untimed rounds then ``--repeats`` timed rounds of (ours, ours_explicit, generative), so that a
  change of machine load during the run hits every implementation alike. The figure is the minimum over the
  repeats (the least disturbed run: on a shared machine other processes only ever add time); ``--json``
  keeps every run.
- Peak memory: one subprocess per (implementation, preset, step), after one untimed warm-up step and
  ``gc.collect()``, run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed tensor memory to the
  system (otherwise the warm-up's freed memory stays resident and hides the step's peak). On CUDA
  ``torch.cuda.max_memory_allocated`` minus the memory allocated before the step.
  On CPU (Linux) the kernel's resident-set high-water mark: ``/proc/self/clear_refs`` is written ``5`` to
  reset ``VmHWM`` to the current RSS just before the step, and the figure is ``VmHWM`` after the step minus
  ``VmRSS`` before it (the extra resident memory the step needed at its peak over the weights: activations,
  gradients, workspace). ``tracemalloc`` does not see PyTorch's tensor allocations, hence the RSS method. Where
  ``clear_refs`` is not writable the growth of ``ru_maxrss`` is used instead (a lower bound).

The paper preset runs on 128 x 128 images (32 x 32 latents) on CPU by default (``--paper-size``; 512 x 512 in
the paper): full size takes minutes per step on a 2-core CPU. Run::

    python benchmarks/bench_networks.py                                # both presets, batch 1
    python benchmarks/bench_networks.py --presets small --small-size 128 --repeats 5
    python benchmarks/bench_networks.py --presets paper --paper-size 256 --repeats 2 --warmup 1
    python benchmarks/bench_networks.py --threads 1     # steadier figures on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from memory import peak_memory  # benchmarks/memory.py (this folder is on sys.path when run as a script)

TASKS = ("ae_train_step", "diffusion_train_step", "denoise_step")
IMPLS = ("ours", "ours_explicit", "generative")


def _build_ours(preset: str, task: str, explicit: bool = False):
    from monai_lpuwf.networks import build_model

    overrides = (
        {"autoencoder": {"use_flash_attention": False}, "unet": {"use_flash_attention": False}} if explicit else {}
    )
    with torch.device("meta"):  # allocate only the parts this step needs
        model = build_model(preset, **overrides)
    if task == "ae_train_step":
        ae = model.autoencoder.to_empty(device="cpu")
        return {"ae": _init(ae), "encode_condition": ae.encode_condition}
    return {
        "unet": _init(model.unet.to_empty(device="cpu")),
        "controlnet": _init(model.controlnet.to_empty(device="cpu")),
    }


def _init(module: torch.nn.Module) -> torch.nn.Module:
    """PyTorch's default initialisation for a module materialised with ``to_empty`` (the zero-initialised
    convolutions of the SLO encoder and the ControlNet get default values too: cost does not depend on them)."""
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return module


def _build_generative(preset: str, task: str):
    """The authors' networks (monai-generative 0.2.3) with the preset's sizes; the SLO encoder and the conditional
    decoder follow their MaskConditionEncoder / conditional AutoencoderKL (features added by shape)."""
    from generative.networks.nets import AutoencoderKL, ControlNet, DiffusionModelUNet
    from generative.networks.nets.autoencoderkl import ResBlock, Upsample
    from torch import nn

    from monai_lpuwf.networks import PRESETS

    cfg = PRESETS[preset]
    ae_kw = {k: v for k, v in cfg["autoencoder"].items() if k not in ("channels", "include_fc")}
    unet_kw = {k: v for k, v in cfg["unet"].items() if k not in ("channels", "include_fc")}
    channels = cfg["autoencoder"]["channels"]

    class AuthorsConditionEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            prev, layers, gates, adjust = 3, [], [], []
            for i, c in enumerate(channels):
                layers.append(nn.Conv2d(prev, c, 3, 1, 1) if i == 0 else nn.Conv2d(prev, c, 4, 2, 1))
                gates.append(nn.Conv2d(c, c, 3, 1, 1))
                adjust.append(nn.Conv2d(prev, 1, 1))
                prev = c
            self.layers, self.gated_cnns = nn.Sequential(*layers), nn.Sequential(*gates)
            self.adjust_chs = nn.Sequential(*adjust)

        def forward(self, x):
            out = {}
            for layer, gate in zip(self.layers, self.gated_cnns):
                x = layer(x)
                out[str(tuple(x.shape))] = x * torch.sigmoid(gate(x))
                x = torch.relu(x)
            return out

    class AuthorsConditionalAE(AutoencoderKL):
        def __init__(self):
            super().__init__(spatial_dims=2, in_channels=1, out_channels=1, num_channels=channels, **ae_kw)
            self.condition_encoder = AuthorsConditionEncoder()

        def decode(self, z, cond=None):
            h = self.post_quant_conv(z)
            first = False
            for i, block in enumerate(self.decoder.blocks):
                h = block(h)
                if i == 3 or isinstance(block, Upsample):
                    first = True
                elif first and isinstance(block, ResBlock) and cond is not None:
                    h = h + cond[str(tuple(h.shape))]
                    first = False
            return h

        def forward(self, x, cond=None):
            z_mu, z_sigma = self.encode(x)
            return self.decode(self.sampling(z_mu, z_sigma), cond), z_mu, z_sigma

    if task == "ae_train_step":
        ae = AuthorsConditionalAE()
        return {"ae": ae, "encode_condition": ae.condition_encoder}
    unet = DiffusionModelUNet(
        spatial_dims=2, in_channels=4, out_channels=4, num_channels=cfg["unet"]["channels"], **unet_kw
    )
    cn = ControlNet(
        spatial_dims=2,
        in_channels=4,
        num_channels=cfg["unet"]["channels"],
        conditioning_embedding_in_channels=3,
        conditioning_embedding_num_channels=cfg["controlnet"]["conditioning_embedding_num_channels"],
        **unet_kw,
    )
    return {"unet": unet, "controlnet": cn}


def _build(impl: str, preset: str, task: str, device: torch.device) -> dict:
    torch.manual_seed(0)
    if impl == "generative":
        nets = _build_generative(preset, task)
    else:
        nets = _build_ours(preset, task, explicit=impl == "ours_explicit")
    for value in nets.values():
        if isinstance(value, torch.nn.Module):
            value.to(device)
    return nets


def _params(nets: dict) -> dict[str, int]:
    names = {"ae": "autoencoder+slo_encoder", "unet": "unet", "controlnet": "controlnet"}
    return {names[k]: sum(p.numel() for p in v.parameters()) for k, v in nets.items() if k in names}


def _make_step(task: str, nets: dict, size: int, batch: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    fa = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1).to(device)
    slo = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    lat = torch.randn(batch, 4, size // 4, size // 4, generator=g).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    modules = [v for v in nets.values() if isinstance(v, torch.nn.Module)]

    def zero_grad():
        for m in modules:
            m.zero_grad(set_to_none=True)

    if task == "ae_train_step":
        ae, encode_condition = nets["ae"], nets["encode_condition"]

        def step():
            zero_grad()
            recon, _, _ = ae(fa, cond=encode_condition(slo))
            F.l1_loss(recon, fa).backward()

    elif task == "diffusion_train_step":
        unet, cn = nets["unet"], nets["controlnet"]

        def step():
            zero_grad()
            down, mid = cn(x=lat, timesteps=t, controlnet_cond=slo)
            pred = unet(x=lat, timesteps=t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
            F.mse_loss(pred, lat).backward()

    else:
        unet, cn = nets["unet"], nets["controlnet"]
        for m in modules:
            m.eval()

        def step():
            with torch.no_grad():
                down, mid = cn(x=lat, timesteps=t, controlnet_cond=slo)
                unet(x=lat, timesteps=t, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_worker(preset: str, task: str, size: int, batch: int, repeats: int, warmup: int, device_name: str) -> dict:
    """Interleaved timing of every implementation of one step."""
    device = torch.device(device_name)
    steps, params = {}, {}
    for impl in IMPLS:
        nets = _build(impl, preset, task, device)
        params[impl] = _params(nets)
        steps[impl] = _make_step(task, nets, size, batch, device)
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for r in range(warmup + repeats):
        for impl in IMPLS:
            _sync(device)
            start = time.perf_counter()
            steps[impl]()
            _sync(device)
            if r >= warmup:
                times[impl].append(time.perf_counter() - start)
    return {"seconds": {impl: min(v) for impl, v in times.items()}, "all_seconds": times, "params": params}


def memory_worker(impl: str, preset: str, task: str, size: int, batch: int, device_name: str) -> dict:
    """Peak extra memory of one step (see the module docstring for the method)."""
    device = torch.device(device_name)
    nets = _build(impl, preset, task, device)
    step = _make_step(task, nets, size, batch, device)
    step()  # warm-up: one-off allocations (thread pools, kernel caches) are not the step's
    for module in nets.values():  # the step's gradients count in its peak
        if isinstance(module, torch.nn.Module):
            module.zero_grad(set_to_none=True)
    measured = peak_memory(step, device)
    return {"peak_mb": measured["step_mb"], "method": measured["method"]}  # the step's memory over the weights


def _run(args, *worker_args: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
        *worker_args,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    # glibc keeps freed heap memory resident, which would hide a step's peak behind the warm-up's: allocations of
    # 64 KiB and more go to mmap and are given back to the system when freed (tensor storage is that size)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {worker_args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:7.3f}" if b > 0 else "    n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--small-size", type=int, default=128)
    parser.add_argument("--paper-size", type=int, default=None, help="default: 512 on CUDA, 128 on CPU")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--time-worker", nargs=3, metavar=("PRESET", "TASK", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs=4, metavar=("IMPL", "PRESET", "TASK", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time_worker is not None:
        preset, task, size = args.time_worker
        print(json.dumps(time_worker(preset, task, int(size), args.batch, args.repeats, args.warmup, args.device)))
        return
    if args.memory_worker is not None:
        impl, preset, task, size = args.memory_worker
        print(json.dumps(memory_worker(impl, preset, task, int(size), args.batch, args.device)))
        return

    paper_size = args.paper_size or (512 if args.device.startswith("cuda") else 128)
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} warmup={args.warmup} "
        f"repeats={args.repeats} torch={torch.__version__}"
    )
    print(
        f"image sizes: small {args.small_size}x{args.small_size}, paper {paper_size}x{paper_size}"
        + (" (reduced from the paper's 512x512 for CPU)" if paper_size < 512 else "")
    )
    header = (
        f"{'preset':6s} {'measure':34s} {'ours':>11s} {'ours_expl':>11s} {'generative':>11s} "
        f"{'ours/gen':>8s} {'expl/gen':>8s}"
    )
    print(header)
    print("-" * len(header))
    results = []
    for preset in args.presets:
        size = args.small_size if preset == "small" else paper_size
        params_seen: dict[str, dict[str, int]] = {impl: {} for impl in IMPLS}
        rows = []
        for task in args.tasks:
            timing = _run(args, "--time-worker", preset, task, str(size))
            for impl in IMPLS:
                params_seen[impl].update(timing["params"][impl])
            s = timing["seconds"]
            rows.append((f"{task} time (s)", s["ours"], s["ours_explicit"], s["generative"], "{:11.4f}"))
            if not args.no_memory:
                mem = {impl: _run(args, "--memory-worker", impl, preset, task, str(size)) for impl in IMPLS}
                rows.append(
                    (
                        f"{task} peak (MB, {mem['ours']['method']})",
                        mem["ours"]["peak_mb"],
                        mem["ours_explicit"]["peak_mb"],
                        mem["generative"]["peak_mb"],
                        "{:11.1f}",
                    )
                )
        for name in params_seen["ours"]:
            o, e, b = (params_seen[i][name] / 1e6 for i in IMPLS)
            rows.insert(0, (f"params {name} (M)", o, e, b, "{:11.3f}"))
        for label, o, e, b, fmt in rows:
            print(
                f"{preset:6s} {label:34s} {fmt.format(o)} {fmt.format(e)} {fmt.format(b)} {_ratio(o, b):>8s} "
                f"{_ratio(e, b):>8s}"
            )
            results.append(
                {"preset": preset, "size": size, "measure": label, "ours": o, "ours_explicit": e, "generative": b}
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
