"""Training iterations of stages (3) and (4): the bundle's engine against the authors' loop, side by side.

For each preset (``small``, ``paper``) and stage

- (3) early-phase latent diffusion: encode the early FA with the frozen autoencoder, offset noise, DDPM
  ``add_noise``, ControlNet (full-resolution SLO) + U-Net, MSE on the noise, Adam steps;
- (4) late-phase fine-tuning: the same on the late FA with the CTRD loss (``MSE + 0.25 * mean(|early - late| *
  error)``),

two implementations run the same work:

- ``ours``: :class:`monai_lpuwf.engines.LatentDiffusionTrainer` (an Ignite/MONAI ``SupervisedTrainer``) with
  :class:`~monai_lpuwf.engines.LatentDiffusionPrepareBatch`, :class:`~monai_lpuwf.noise.LowFrequencyEnhancedNoise`,
  :class:`~monai_lpuwf.losses.CTRDLoss` (stage 4, with the field-of-view mask) and the bundle's
  :class:`~monai_lpuwf.engines.DeterministicSeedHandler`, on :class:`~monai_lpuwf.networks.LPUWFModel`: what
  ``python -m monai.bundle run training`` executes per iteration;
- ``authors``: the loop body of Tinysqua/LPUWF-LDM (``diffusion/LPUWF_LDM.py``, ``stable_diffusion/
  zheer_late_controlnet.py``) on monai-generative 0.2.3's ``AutoencoderKL``, ``DiffusionModelUNet`` and
  ``ControlNet`` with the same sizes: ``noise = randn_like(z) + 0.1 * randn(B, C, 1, 1)``, two Adam optimisers,
  their CTRD term with the difference map resized (nearest) to the latent grid. monai-generative's schedulers do
  not import with MONAI 1.6, so both use MONAI core's ``DDPMScheduler`` (``add_noise`` is the same formula).

Reported: iterations per second, and the peak memory of one iteration. The ratio columns are
``ours / authors`` (iterations/s > 1: ours is faster; memory < 1: ours needs less).

Method (as ``bench_networks.py``):

- Speed: one subprocess per (preset, stage) builds both implementations and runs them *interleaved*,
  ``--warmup`` untimed rounds then ``--repeats`` timed rounds of ``--iterations`` iterations each of (ours,
  authors), so a change of machine load hits both alike; the figure is the best round (on a shared machine other
  processes only ever add time).
- Memory: one subprocess per (implementation, preset, stage) runs ``--warmup`` iterations (Adam's state is then
  allocated), then one iteration. On CUDA: ``torch.cuda.max_memory_allocated`` (all tensors: weights, gradients,
  optimiser state, activations). On CPU (Linux): the resident-set high-water mark during that iteration
  (``/proc/self/clear_refs`` reset just before), both the whole process (``peak``; includes the Python/PyTorch
  baseline) and its growth over the resident set before the iteration (``step``: activations, gradients,
  workspace). Run with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensor memory leaves the resident set.

The paper preset runs on 64 x 64 images (16 x 16 latents) on CPU by default (``--paper-size``; 512 x 512 in the
paper, which takes minutes per iteration on a 2-core CPU); batch 1 as the authors train. Run::

    python benchmarks/bench_training.py                          # both presets, stages 3 and 4
    python benchmarks/bench_training.py --presets small --iterations 10 --repeats 5
    python benchmarks/bench_training.py --threads 1              # one CPU thread (steadier on a loaded machine)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from memory import peak_memory  # benchmarks/memory.py (this folder is on sys.path when run as a script)

IMPLS = ("ours", "authors")
STAGES = ("3", "4")
LR = 2.5e-5  # the authors' learning rate
SCALE = 0.18215  # the authors' latent scale factor
CTRD_ALPHA = 0.25  # their diff_loss_coefficient


def _batches(num: int, batch: int, size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Dictionary batches as the bundle's transforms make them (values in [-1, 1], CTRD map and fov in [0, 1])."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(num):
        early = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
        late = (early + 0.5 * torch.rand(batch, 1, size, size, generator=g)).clamp(-1, 1)
        item = {
            "slo": torch.rand(batch, 3, size, size, generator=g) * 2 - 1,
            "early": early,
            "late": late,
            "ctrd": (early - late).abs() / 2,
            "fov": torch.ones(batch, 1, size, size),
        }
        out.append({k: v.to(device) for k, v in item.items()})
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build_ours(preset: str, stage: str, device: torch.device) -> Callable[[list], None]:
    """A function running the bundle's trainer for one pass over the given batches."""
    from monai.networks.schedulers import DDPMScheduler

    from monai_lpuwf.engines import (
        DeterministicSeedHandler,
        LatentDiffusionPrepareBatch,
        LatentDiffusionTrainer,
        set_trainable,
        trainable_parameters,
    )
    from monai_lpuwf.losses import CTRDLoss
    from monai_lpuwf.networks import build_model
    from monai_lpuwf.noise import LowFrequencyEnhancedNoise

    torch.manual_seed(0)
    model = set_trainable(build_model(preset).to(device), ["unet", "controlnet"])
    model.scale_factor.fill_(SCALE)
    optimizer = torch.optim.Adam(trainable_parameters(model), lr=LR)
    scheduler = DDPMScheduler(**model.schedule)
    late = stage == "4"
    prepare = LatentDiffusionPrepareBatch(
        scheduler.num_train_timesteps,
        model.encode_latents,
        image_key="late" if late else "early",
        condition_key="slo",
        noise=LowFrequencyEnhancedNoise(0.1),
        weight_key="ctrd" if late else None,
        mask_key="fov" if late else None,
    )
    loss = CTRDLoss(alpha=CTRD_ALPHA) if late else torch.nn.MSELoss()
    seed_handler = DeterministicSeedHandler(seed=0)

    def run(batches: list) -> None:
        trainer = LatentDiffusionTrainer(
            device=device,
            max_epochs=1,
            train_data_loader=batches,
            network=model,
            optimizer=optimizer,
            loss_function=loss,
            scheduler=scheduler,
            prepare_batch=prepare,
            train_handlers=[seed_handler],
        )
        trainer.run()

    return run


def _build_authors(preset: str, stage: str, device: torch.device) -> Callable[[list], None]:
    """A function running the authors' loop body (monai-generative 0.2.3 networks) over the given batches."""
    from generative.networks.nets import AutoencoderKL, ControlNet, DiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler

    from monai_lpuwf.networks import PRESETS

    cfg = PRESETS[preset]
    ae_kw = {k: v for k, v in cfg["autoencoder"].items() if k not in ("channels", "include_fc")}
    unet_kw = {k: v for k, v in cfg["unet"].items() if k not in ("channels", "include_fc")}
    torch.manual_seed(0)
    vae = AutoencoderKL(
        spatial_dims=2, in_channels=1, out_channels=1, num_channels=cfg["autoencoder"]["channels"], **ae_kw
    )
    vae = vae.to(device).eval()
    unet = DiffusionModelUNet(
        spatial_dims=2, in_channels=4, out_channels=4, num_channels=cfg["unet"]["channels"], **unet_kw
    )
    controlnet = ControlNet(
        spatial_dims=2,
        in_channels=4,
        num_channels=cfg["unet"]["channels"],
        conditioning_embedding_in_channels=3,
        conditioning_embedding_num_channels=cfg["controlnet"]["conditioning_embedding_num_channels"],
        **unet_kw,
    )
    unet, controlnet = unet.to(device), controlnet.to(device)
    scheduler = DDPMScheduler(**cfg["schedule"])
    optimizer_con = torch.optim.Adam(params=controlnet.parameters(), lr=LR)
    optimizer_sd = torch.optim.Adam(params=unet.parameters(), lr=LR)
    weighted_mse_loss = torch.nn.MSELoss(reduction="none")
    late = stage == "4"

    def run(batches: list) -> None:
        unet.train()
        controlnet.train()
        for batch in batches:  # the body of their training loop
            slo, early_ffa, late_ffa = batch["slo"], batch["early"], batch["late"]
            optimizer_con.zero_grad(set_to_none=True)
            optimizer_sd.zero_grad(set_to_none=True)
            with torch.no_grad():
                target = vae.encode_stage_2_inputs(late_ffa if late else early_ffa) * SCALE
            noise = torch.randn_like(target) + 0.1 * torch.randn(target.shape[0], target.shape[1], 1, 1).to(device)
            timesteps = torch.randint(0, scheduler.num_train_timesteps, (target.shape[0],), device=device).long()
            noised = scheduler.add_noise(target, noise, timesteps)
            down, mid = controlnet(x=noised, timesteps=timesteps, controlnet_cond=slo)
            pred = unet(
                x=noised, timesteps=timesteps, down_block_additional_residuals=down, mid_block_additional_residual=mid
            )
            loss = F.mse_loss(pred.float(), noise.float())
            if late:
                ffa_diff = F.interpolate(torch.abs(early_ffa - late_ffa), size=target.shape[-2:])
                loss = loss + CTRD_ALPHA * (ffa_diff * weighted_mse_loss(pred.float(), noise.float())).mean()
            loss.backward()
            optimizer_con.step()
            optimizer_sd.step()

    return run


BUILDERS = {"ours": _build_ours, "authors": _build_authors}


def time_worker(preset: str, stage: str, size: int, args: argparse.Namespace) -> dict:
    """Interleaved rounds of both implementations; iterations per second of every timed round."""
    device = torch.device(args.device)
    runs = {impl: BUILDERS[impl](preset, stage, device) for impl in IMPLS}
    batches = _batches(args.iterations, args.batch, size, device)
    rates: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for r in range(args.warmup + args.repeats):
        for impl in IMPLS:
            _sync(device)
            start = time.perf_counter()
            runs[impl](batches)
            _sync(device)
            if r >= args.warmup:
                rates[impl].append(len(batches) / (time.perf_counter() - start))
    return {"its": {impl: max(v) for impl, v in rates.items()}, "all_its": rates}


def memory_worker(impl: str, preset: str, stage: str, size: int, args: argparse.Namespace) -> dict:
    """Peak memory of one iteration after ``--warmup`` iterations (see the module docstring)."""
    device = torch.device(args.device)
    run = BUILDERS[impl](preset, stage, device)
    batches = _batches(1, args.batch, size, device)
    for _ in range(max(1, args.warmup)):
        run(batches)
    return peak_memory(lambda: run(batches), device)


def _worker(args: argparse.Namespace, *worker_args: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--batch", str(args.batch),
        "--iterations", str(args.iterations),
        "--repeats", str(args.repeats),
        "--warmup", str(args.warmup),
        "--device", args.device,
        *(["--threads", str(args.threads)] if args.threads else []),
        *worker_args,
    ]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {worker_args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:8.3f}" if b > 0 else "     n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=["small", "paper"])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--small-size", type=int, default=128)
    parser.add_argument("--paper-size", type=int, default=None, help="default: 512 on CUDA, 64 on CPU")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=None, help="per round; default 8 (small), 2 (paper on CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: PyTorch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--time-worker", nargs=3, metavar=("PRESET", "STAGE", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-worker", nargs=4, metavar=("IMPL", "PRESET", "STAGE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time_worker is not None:
        preset, stage, size = args.time_worker
        print(json.dumps(time_worker(preset, stage, int(size), args)))
        return
    if args.memory_worker is not None:
        impl, preset, stage, size = args.memory_worker
        print(json.dumps(memory_worker(impl, preset, stage, int(size), args)))
        return

    on_gpu = args.device.startswith("cuda")
    paper_size = args.paper_size or (512 if on_gpu else 64)
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} warmup={args.warmup} "
        f"repeats={args.repeats} torch={torch.__version__}"
    )
    print(
        f"image sizes: small {args.small_size}x{args.small_size}, paper {paper_size}x{paper_size}"
        + (" (reduced from the paper's 512x512 for CPU)" if paper_size < 512 else "")
    )
    header = f"{'preset':6s} {'stage':5s} {'measure':24s} {'ours':>10s} {'authors':>10s} {'ours/authors':>12s}"
    print(header)
    print("-" * len(header))
    results = []
    for preset in args.presets:
        size = args.small_size if preset == "small" else paper_size
        iterations = args.iterations or (8 if preset == "small" or on_gpu else 2)
        run_args = argparse.Namespace(**{**vars(args), "iterations": iterations})
        for stage in args.stages:
            timing = _worker(run_args, "--time-worker", preset, stage, str(size))
            rows = [("iterations/s", timing["its"]["ours"], timing["its"]["authors"], "{:10.3f}")]
            if not args.no_memory:
                mem = {impl: _worker(run_args, "--memory-worker", impl, preset, stage, str(size)) for impl in IMPLS}
                method = mem["ours"]["method"]
                rows.append((f"peak MB ({method})", mem["ours"]["peak_mb"], mem["authors"]["peak_mb"], "{:10.1f}"))
                rows.append(("step MB (over before)", mem["ours"]["step_mb"], mem["authors"]["step_mb"], "{:10.1f}"))
            for label, ours, authors, fmt in rows:
                print(
                    f"{preset:6s} {stage:5s} {label:24s} {fmt.format(ours)} {fmt.format(authors)} "
                    f"{_ratio(ours, authors):>12s}"
                )
                results.append(
                    {"preset": preset, "size": size, "stage": stage, "measure": label, "ours": ours, "authors": authors}
                )
            results[-len(rows)]["all_its"] = timing["all_its"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
