"""Does the accelerator do the work? The raw model step beside the bundle's training loop, and sampling per frame.

Rows, in order of importance (a global ``--budget_s`` skips the rest once spent; every row is guarded, an error is
printed and recorded and the next row runs):

1. **Training, stage 3** (the diffusion stage that takes most of a run), per preset: the *raw step* (the ceiling:
   U-Net + ControlNet forward, loss, backward and Adam on batches already on the device, no engine, no data
   loading) in float32 and under bfloat16 autocast, and the *bundle's loop* (``python -m monai.bundle run
   training`` as configured by ``configs/common.json`` + the stage's configs + ``configs/gpu.json`` on a GPU: the
   Ignite engine with every handler, the cached data set, device-side augmentation, real frames) over the same
   batch and crop size. Reported: iterations/s, images/s, bundle / raw, the mean GPU utilisation sampled during
   the timed iterations (NVML, else ``nvidia-smi -lms 200``), the mean loss of the timed iterations (the same
   seed gives the same batches, noise and timesteps in float32 and bfloat16: their losses should agree within
   noise), peak memory.
2. **Sampling** per preset: seconds per frame at 640 x 512, 853 x 682 and 3900 x 3072 (DDIM, 25 steps; the large
   frame timed at 1 and 3 steps and extrapolated, the others timed at 5 and 25 steps), with the tiles chosen by
   the sampler's memory estimate (``tile_policy="auto"``) and, for comparison, with the size rule (``"size"``:
   tiles wherever a frame exceeds a tile).
3. **Training, stages 1, 2 and 4**: the same raw / bundle pairs.
4. **Variants** of the raw stage-3 step: channels-last, GroupNorm kept in float32 under autocast, ``torch.compile``
   (``--compile``).

The bundle rows train on the real frames of ``--data_dir`` (the authors' layout: ``train/N.bmp, N.1.bmp,
N.2.bmp`` and ``val/``), or on phantoms of the same size when the folder is absent. Nothing is written outside
``--out`` and a temporary bundle folder.

Run::

    python benchmarks/bench_gpu.py --device cuda --data_dir .bench_data/uwf-samples --out bench_out --budget_s 400
    python benchmarks/bench_gpu.py --device cpu --quick --out /tmp/bench_cpu      # the same table on a CPU

Outputs in ``--out``: ``rows.jsonl`` (one JSON object per row, written as it finishes), ``table.md`` (rewritten
after every row), ``env.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
STAGE_CONFIGS = {
    "1": ("train_autoencoder.json",),
    "2": ("train_autoencoder.json", "train_condition_encoder.json"),
    "3": ("train_diffusion.json",),
    "4": ("train_diffusion.json", "train_late.json"),
}
FRAMES = {"640x512": (512, 640), "853x682": (682, 853), "3900x3072": (3072, 3900)}  # (H, W)
STEPS = 25  # the sampler's default (INFERENCE_DEFAULTS)


# ------------------------------------------------------------------------------------------------ measurement
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class UtilSampler:
    """Mean GPU utilisation (percent of time a kernel ran) between :meth:`start` and :meth:`stop`.

    NVML (``pynvml``) when importable, else ``nvidia-smi --query-gpu=utilization.gpu -lms 200``; ``None`` on a
    CPU or when neither works.
    """

    def __init__(self, device: torch.device, period: float = 0.2) -> None:
        self.device, self.period = device, period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.samples, self._stop = [], threading.Event()
        if self.device.type != "cuda":
            return
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)

            def poll() -> None:
                while not self._stop.is_set():
                    self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                    self._stop.wait(self.period)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
            return
        except Exception:  # noqa: BLE001 - no NVML (any failure): the command-line tool instead
            pass
        try:
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    f"--id={index}",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"-lms={int(self.period * 1000)}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )

            def read() -> None:
                for line in self._proc.stdout:  # type: ignore[union-attr]
                    if self._stop.is_set():
                        break
                    with contextlib.suppress(ValueError):
                        self.samples.append(float(line.strip()))

            self._thread = threading.Thread(target=read, daemon=True)
            self._thread.start()
        except Exception:  # noqa: BLE001 - no nvidia-smi either: utilisation is reported as unknown
            self._proc = None

    def stop(self) -> float | None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=2)
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        return sum(self.samples) / len(self.samples) if self.samples else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------ raw steps
def random_batches(n: int, batch: int, size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Batches as the training transforms make them, already on the device."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
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


def build_raw_step(
    preset: str, stage: str, device: torch.device, bf16: bool, channels_last: bool, bf16_norms: bool, compile_: bool
) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """One optimisation step of a stage written out without the engine (the same losses as the trainers)."""
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import PatchDiscriminator
    from monai.networks.schedulers import DDPMScheduler

    from monai_lpuwf.engines import kl_divergence, set_trainable, trainable_parameters
    from monai_lpuwf.losses import CTRDLoss
    from monai_lpuwf.networks import build_model, optimize_for_device
    from monai_lpuwf.noise import LowFrequencyEnhancedNoise

    torch.manual_seed(0)
    model = build_model(preset).to(device)
    optimize_for_device(model, channels_last=channels_last, low_precision_norms=bf16 and bf16_norms)
    if stage in ("1", "2"):
        trainable = ["autoencoder"] if stage == "1" else ["autoencoder.condition_encoder"]
        frozen = ["autoencoder.condition_encoder"] if stage == "1" else []
        set_trainable(model, trainable, frozen)
        ae = model.autoencoder
        disc = PatchDiscriminator(spatial_dims=2, in_channels=1, channels=32, num_layers_d=3).to(device)
        if channels_last:
            disc.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(trainable_parameters(ae), lr=1e-4)
        d_opt = torch.optim.Adam(disc.parameters(), lr=5e-4)
        adv = PatchAdversarialLoss(criterion="least_squares")
        net = torch.compile(ae) if compile_ else ae

        def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            x = batch["late"]
            kwargs = {"cond": batch["slo"]} if stage == "2" else {}
            opt.zero_grad(set_to_none=True)
            with autocast(device, bf16):
                recon, mu, sigma = net(x, **kwargs)
                rec = F.l1_loss(recon.float(), x) if stage == "1" else F.mse_loss(recon.float(), x)
                loss = rec + (1e-6 * kl_divergence(mu, sigma) if stage == "1" else 0.0)
                loss = loss + 0.01 * adv(
                    disc(recon.contiguous().float())[-1], target_is_real=True, for_discriminator=False
                )
            loss.backward()
            opt.step()
            d_opt.zero_grad(set_to_none=True)
            with autocast(device, bf16):
                fake = adv(disc(recon.detach().contiguous().float())[-1], target_is_real=False, for_discriminator=True)
                real = adv(disc(x.contiguous().float())[-1], target_is_real=True, for_discriminator=True)
                loss_d = 0.01 * 0.5 * (fake + real)
            loss_d.backward()
            d_opt.step()
            return loss.detach()

        return step

    set_trainable(model, ["unet", "controlnet"])
    model.scale_factor.fill_(0.18215)
    opt = torch.optim.Adam(trainable_parameters(model), lr=2.5e-5)
    scheduler = DDPMScheduler(**model.schedule)
    noise_fn = LowFrequencyEnhancedNoise(0.1)
    ctrd = CTRDLoss(alpha=0.25) if stage == "4" else None
    prediction = model.schedule.get("prediction_type", "epsilon")
    net = torch.compile(model) if compile_ else model

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        fa = batch["late" if stage == "4" else "early"]
        with torch.no_grad(), autocast(device, bf16):
            z = model.encode_latents(fa).float()
        noise = noise_fn(z)
        t = torch.randint(0, scheduler.num_train_timesteps, (z.shape[0],), device=device).long()
        target = z if prediction == "sample" else noise
        opt.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            pred = net(scheduler.add_noise(original_samples=z, noise=noise, timesteps=t), t, batch["slo"])
            if ctrd is None:
                loss = F.mse_loss(pred.float(), target)
            else:
                loss = ctrd(pred.float(), target, weight_map=batch["ctrd"], mask=batch["fov"])
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def time_raw(cfg: dict, stage: str, device: torch.device, bf16: bool, **options: bool) -> dict:
    reset_peak(device)
    step = build_raw_step(
        cfg["preset"],
        stage,
        device,
        bf16,
        options.get("channels_last", False),
        options.get("bf16_norms", True),
        options.get("compile", False),
    )
    batches = random_batches(4, cfg["batch"], cfg["size"], device)
    for i in range(cfg["warmup"]):
        step(batches[i % len(batches)])
    sync(device)
    util = UtilSampler(device)
    util.start()
    t0 = time.perf_counter()
    losses = [step(batches[i % len(batches)]) for i in range(cfg["iterations"])]
    sync(device)
    elapsed = time.perf_counter() - t0
    gpu = util.stop()
    its = cfg["iterations"] / elapsed
    return {
        "its": its,
        "images_s": its * cfg["batch"],
        "gpu_util": gpu,
        "loss": float(torch.stack(losses).mean()),
        "peak_gib": peak_gib(device),
    }


# ------------------------------------------------------------------------------------------------ bundle loop
def time_bundle(cfg: dict, stage: str, device: torch.device, bf16: bool, data_dir: Path | None, overlay: bool) -> dict:
    """The bundle's trainer for one stage, parsed from its configs, run for warm-up + timed iterations."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    root = Path(tempfile.mkdtemp(prefix="bench_gpu_bundle_"))
    try:
        shutil.copytree(BUNDLE / "configs", root / "configs")
        files = [root / "configs" / "common.json"] + [root / "configs" / f for f in STAGE_CONFIGS[stage]]
        if overlay:
            files.append(root / "configs" / "gpu.json")
        total = cfg["warmup"] + cfg["iterations"]
        overrides: dict[str, Any] = {
            "bundle_root": str(root),
            "device": f"$torch.device('{device}')",
            "preset": cfg["preset"],
            "image_size": [cfg["size"], cfg["size"]],
            "train_batch_size": cfg["batch"],
            "amp": bf16,
            "iterations_per_epoch": total,
            "max_epochs": 1,
            "val_interval": 10**6,
            "save_interval": 10**9,
            "log_interval": 10**6,
            "scale_factor_batches": 1,
            "adversarial_warmup_epochs": 0,
        }
        if data_dir is not None:
            overrides["dataset_dir"] = str(data_dir)
        else:  # phantoms of the real frames' size
            overrides.update({"num_phantoms": 8, "phantom_size": [682, 853]})
        parser = ConfigParser()
        parser.read_config([str(f) for f in files])
        parser.update(overrides)
        parser.get_parsed_content("initialize")
        reset_peak(device)
        trainer = parser.get_parsed_content("train#trainer")
        marks: dict[str, float] = {}
        losses: list[float] = []
        util = UtilSampler(device)

        @trainer.on(Events.ITERATION_COMPLETED)
        def _timing(engine: Any) -> None:
            it = engine.state.iteration
            if it > cfg["warmup"]:
                losses.append(float(engine.state.output["loss"]))
            if it == cfg["warmup"]:
                sync(device)
                util.start()
                marks["t0"] = time.perf_counter()
            if it == total:
                sync(device)
                marks["t1"] = time.perf_counter()
                marks["util"] = util.stop() or -1.0
                engine.terminate(skip_completed=True)  # no final checkpoint writing in the measurement

        trainer.run()
        its = cfg["iterations"] / (marks["t1"] - marks["t0"])
        loader = parser.get_parsed_content("train#dataloader")
        return {
            "its": its,
            "images_s": its * cfg["batch"],
            "gpu_util": None if marks["util"] < 0 else marks["util"],
            "loss": sum(losses) / len(losses),
            "peak_gib": peak_gib(device),
            "loader": type(loader).__name__,
            "data": "real" if data_dir else "phantoms",
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ sampling
def time_sampling(preset: str, frame: str, device: torch.device, bf16: bool, policy: str, steps: tuple) -> dict:
    from monai_lpuwf.inferers import LPUWFSampler
    from monai_lpuwf.networks import build_model, optimize_for_device

    torch.manual_seed(0)
    model = optimize_for_device(build_model(preset).to(device).eval(), low_precision_norms=bf16)
    h, w = FRAMES[frame]
    div = model.size_divisor
    slo = torch.rand(1, 3, h + (-h) % div, w + (-w) % div, device=device) * 2 - 1
    times = {}
    reset_peak(device)
    for k in (steps[0], *steps):  # the first call warms up (cuDNN autotuning of every shape)
        sampler = LPUWFSampler(num_inference_steps=k, tile_policy=policy)
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, bf16):
            sampler(slo, model)
        sync(device)
        times[k] = time.perf_counter() - t0
    per_step = (times[steps[1]] - times[steps[0]]) / (steps[1] - steps[0])
    if per_step <= 0:  # timing noise (a loaded CPU): the longer call's time per step, an upper bound
        per_step = times[steps[1]] / steps[1]
    frame_s = times[STEPS] if STEPS in times else times[steps[0]] + (STEPS - steps[0]) * per_step
    windows = sampler.tiling(model, slo.shape[2:], 1, device)
    return {
        "frame_s": frame_s,
        "step_s": per_step,
        "measured": STEPS in steps,
        "peak_gib": peak_gib(device),
        "tiles": f"{len(windows['denoise'])}/{len(windows['decode'])}",
    }


# ------------------------------------------------------------------------------------------------ driver
def settings(device: torch.device, quick: bool) -> dict[str, dict]:
    if device.type == "cuda":
        it = (3, 10) if quick else (5, 20)
        return {
            "small": {"preset": "small", "size": 256, "batch": 8, "warmup": it[0], "iterations": it[1] * 2},
            "paper": {"preset": "paper", "size": 512, "batch": 4, "warmup": it[0], "iterations": it[1]},
        }
    it = (1, 3) if quick else (2, 6)
    return {
        "small": {"preset": "small", "size": 128, "batch": 2, "warmup": it[0], "iterations": it[1]},
        "paper": {"preset": "paper", "size": 64, "batch": 1, "warmup": it[0], "iterations": max(2, it[1] // 2)},
    }


def plan(args: argparse.Namespace, device: torch.device) -> list[tuple[str, dict]]:
    """(kind, parameters) rows in order of importance."""
    rows: list[tuple[str, dict]] = []
    precisions = (False, True)
    for preset in args.presets:
        if "3" in args.stages:
            # bfloat16 on a CPU without bf16 units: ~13x slower than float32 (measured), the paper preset's step
            # then takes minutes; there only the small preset checks the autocast path
            both = device.type == "cuda" or preset == "small"
            for bf16 in precisions if both else (False,):
                rows.append(("raw", {"preset": preset, "stage": "3", "bf16": bf16}))
            for bf16 in reversed(precisions) if both else (False,):
                rows.append(("bundle", {"preset": preset, "stage": "3", "bf16": bf16}))
    if not args.skip_sampling:
        frames = args.frames or (list(FRAMES) if device.type == "cuda" else ["640x512", "853x682"])
        # on a CPU the paper preset takes minutes per denoising step of a whole frame: small only unless asked
        for preset in args.sampling_presets or (args.presets if device.type == "cuda" else ["small"]):
            for frame in frames:
                # bfloat16 on a CPU without bf16 units runs ~10x slower than float32 (measured): GPU only
                for bf16 in (True, False) if device.type == "cuda" else (False,):
                    rows.append(("sample", {"preset": preset, "frame": frame, "bf16": bf16, "policy": "auto"}))
                if frame != "3900x3072":
                    bf16 = device.type == "cuda"
                    rows.append(("sample", {"preset": preset, "frame": frame, "bf16": bf16, "policy": "size"}))
    for preset in args.presets:
        for stage in (s for s in ("1", "2", "4") if s in args.stages):
            for bf16 in (True, False) if device.type == "cuda" else (False,):
                rows.append(("raw", {"preset": preset, "stage": stage, "bf16": bf16}))
                rows.append(("bundle", {"preset": preset, "stage": stage, "bf16": bf16}))
    for preset in args.presets if device.type == "cuda" else ():
        if "3" in args.stages:
            rows.append(("raw", {"preset": preset, "stage": "3", "bf16": True, "channels_last": True}))
            rows.append(("raw", {"preset": preset, "stage": "3", "bf16": True, "bf16_norms": False}))
            if args.compile:
                rows.append(("raw", {"preset": preset, "stage": "3", "bf16": True, "compile": True}))
    return rows


def label(kind: str, p: dict) -> str:
    extra = "".join(
        [
            " +channels-last" if p.get("channels_last") else "",
            " fp32-norms" if p.get("bf16_norms") is False else "",
            " +compile" if p.get("compile") else "",
        ]
    )
    precision = "bf16" if p["bf16"] else "fp32"
    if kind == "sample":
        return f"sample {p['preset']} {p['frame']} {precision} tiles:{p['policy']}"
    return f"{kind} {p['preset']} stage {p['stage']} {precision}{extra}"


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 10 ** (-digits) or v == 0 else f"{v:.2g}"
    return str(v)


def table(rows: list[dict]) -> str:
    """Markdown tables: training (raw beside bundle) and sampling."""
    raw = {
        (r["preset"], r["stage"], r["bf16"]): r for r in rows if r["kind"] == "raw" and r.get("ok") and not r["variant"]
    }
    lines = [
        "| preset | stage | batch x size | precision | loop | it/s | images/s | bundle / raw | GPU util % | mean loss "
        "| peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["kind"] not in ("raw", "bundle"):
            continue
        loop = r["kind"] + (f" ({r['variant']})" if r.get("variant") else "")
        if r["kind"] == "bundle" and r.get("ok"):
            loop += f" ({r.get('loader')}, {r.get('data')})"
        if not r.get("ok"):
            lines.append(
                f"| {r['preset']} | {r['stage']} | {r['shape']} | {'bf16' if r['bf16'] else 'fp32'} | {loop} "
                f"| {r.get('error', 'skipped')} | | | | | |"
            )
            continue
        base = raw.get((r["preset"], r["stage"], r["bf16"]))
        ratio = r["its"] / base["its"] if r["kind"] == "bundle" and base else None
        lines.append(
            f"| {r['preset']} | {r['stage']} | {r['shape']} | {'bf16' if r['bf16'] else 'fp32'} | {loop} | "
            f"{_fmt(r['its'])} | {_fmt(r['images_s'], 1)} | {_fmt(ratio)} | {_fmt(r['gpu_util'], 0)} | "
            f"{_fmt(r['loss'], 4)} | {_fmt(r['peak_gib'], 1)} |"
        )
    for pre in sorted({r["preset"] for r in rows if r["kind"] == "raw"}):
        fp32, bf16 = raw.get((pre, "3", False)), raw.get((pre, "3", True))
        if fp32 and bf16:
            lines.append(f"\n{pre}: raw stage-3 step bf16 / fp32 speed {bf16['its'] / fp32['its']:.2f}x")
    samp = [r for r in rows if r["kind"] == "sample"]
    if samp:
        lines += [
            "",
            "| preset | frame | precision | tiles | denoise/decode tiles | s/frame (25 steps) | s/step | peak GiB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in samp:
            if not r.get("ok"):
                lines.append(
                    f"| {r['preset']} | {r['frame']} | {'bf16' if r['bf16'] else 'fp32'} | {r['policy']} | "
                    f"{r.get('error', 'skipped')} | | | |"
                )
                continue
            est = "" if r["measured"] else " (extrapolated)"
            lines.append(
                f"| {r['preset']} | {r['frame']} | {'bf16' if r['bf16'] else 'fp32'} | {r['policy']} | {r['tiles']} | "
                f"{_fmt(r['frame_s'])}{est} | {_fmt(r['step_s'], 3)} | {_fmt(r['peak_gib'], 1)} |"
            )
    return "\n".join(lines)


def environment(device: torch.device, data_dir: Path | None) -> dict:
    import monai

    env = {
        "torch": torch.__version__,
        "monai": monai.__version__,
        "device": str(device),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "data_dir": str(data_dir) if data_dir else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cudnn"] = torch.backends.cudnn.version()
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    try:
        import pynvml  # noqa: F401

        env["util_source"] = "nvml"
    except Exception:  # noqa: BLE001 - any import failure means no NVML
        env["util_source"] = "nvidia-smi" if shutil.which("nvidia-smi") else None
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", required=True, help="folder for rows.jsonl, table.md, env.json")
    p.add_argument("--data_dir", default=None, help="real triplets (train/, val/); phantoms when absent")
    p.add_argument("--budget_s", type=float, default=400.0, help="skip the remaining rows once this is spent")
    p.add_argument("--quick", action="store_true", help="fewer iterations")
    p.add_argument("--presets", nargs="+", default=None, help="default: paper small (GPU), small paper (CPU)")
    p.add_argument("--sampling_presets", nargs="+", default=None)
    p.add_argument("--stages", nargs="+", default=["1", "2", "3", "4"])
    p.add_argument("--frames", nargs="+", default=None, choices=list(FRAMES))
    p.add_argument("--skip_sampling", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time the raw stage-3 step under torch.compile")
    p.add_argument("--no_overlay", action="store_true", help="bundle rows without configs/gpu.json on a GPU")
    args = p.parse_args()
    start = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    args.presets = args.presets or (["paper", "small"] if device.type == "cuda" else ["small", "paper"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir) if args.data_dir else None
    if data_dir is not None and not (data_dir / "train").is_dir():
        print(f"--data_dir {data_dir}: no train/ folder there; the bundle rows use phantoms", flush=True)
        data_dir = None
    from monai_lpuwf.threads import set_default_threads

    set_default_threads(None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as configs/gpu.json does for the bundle
    env = environment(device, data_dir)
    (out / "env.json").write_text(json.dumps(env, indent=1))
    print(json.dumps(env), flush=True)
    cfgs = settings(device, args.quick)
    overlay = device.type == "cuda" and not args.no_overlay
    results: list[dict] = []
    for kind, params in plan(args, device):
        cfg = cfgs[params["preset"]]
        row = {
            "kind": kind,
            **params,
            "shape": f"{cfg['batch']} x {cfg['size']}",
            "ok": False,
            "variant": ", ".join(k for k in ("channels_last", "compile") if params.get(k))
            + ("fp32-norms" if params.get("bf16_norms") is False else ""),
        }
        spent = time.perf_counter() - start
        if spent > args.budget_s:
            row["error"] = f"skipped (budget {args.budget_s:.0f} s spent)"
        else:
            t0 = time.perf_counter()
            try:
                if kind == "raw":
                    options = {k: params[k] for k in ("channels_last", "bf16_norms", "compile") if k in params}
                    row.update(time_raw(cfg, params["stage"], device, params["bf16"], **options))
                elif kind == "bundle":
                    try:
                        row.update(time_bundle(cfg, params["stage"], device, params["bf16"], data_dir, overlay))
                    except Exception as e:  # any failure of the GPU data path (re-raised without it): the plain one
                        if not overlay:
                            raise
                        # configs/gpu.json failed: record why, and measure the plain config instead
                        traceback.print_exc()
                        row["variant"] = f"without gpu.json ({type(e).__name__}: {str(e).splitlines()[0][:100]})"
                        cleanup(device)
                        row.update(time_bundle(cfg, params["stage"], device, params["bf16"], data_dir, False))
                else:
                    steps = (1, 3) if params["frame"] == "3900x3072" or device.type == "cpu" else (5, STEPS)
                    row.update(
                        time_sampling(
                            params["preset"], params["frame"], device, params["bf16"], params["policy"], steps
                        )
                    )
                row["ok"] = True
            except Exception as e:  # noqa: BLE001 - one row's failure (out of memory, a missing package) never stops the others
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                traceback.print_exc()
            row["wall_s"] = round(time.perf_counter() - t0, 1)
            cleanup(device)
        results.append(row)
        with open(out / "rows.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        (out / "table.md").write_text(table(results) + "\n")
        status = "ok" if row["ok"] else row.get("error")
        print(
            f"[{time.perf_counter() - start:6.1f} s] {label(kind, params)}: {status} "
            + (
                json.dumps(
                    {
                        k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in row.items()
                        if k in ("its", "images_s", "gpu_util", "loss", "frame_s", "tiles", "wall_s")
                    }
                )
                if row["ok"]
                else ""
            ),
            flush=True,
        )
    print("\n" + table(results), flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
