"""Sampler study: time per image and agreement with DDPM-1000 for MONAI's schedulers, to choose the default.

For one trained checkpoint and a few SLO images, every sampler configuration (scheduler x steps x
``clip_sample``) generates from the *same* seeded initial latents, and is scored against

- the reference: DDPM with the full 1000 training steps (the paper's sampler), ``clip_sample=False``;
- the real late-phase image, where the dataset has one (phantoms do): the quality a user sees.

Scores are PSNR and MS-SSIM (and SSIM) on ``[0, 1]`` intensities from
:func:`monai_lpuwf.metrics.image_scores.compute_image_scores` (MONAI's metric classes). MONAI's MS-SSIM needs
``min(H, W) >= 11 * (scales - 1) ** 2``; below 176 pixels the study uses the first ``scales`` of MONAI's five
scale weights that fit (4 at 128 x 128), renormalised to sum to 1, and says so in the CSV (``ms_ssim_scales``).
Time is the wall-clock time of the sampler call divided by the number of images (one batch, after a warm-up
call), on whatever device runs it.

DDPM is stochastic (fresh noise at every step) while DDIM with ``eta=0`` and PNDM are deterministic given the
initial latents, so no few-step sampler reproduces DDPM-1000 exactly; the row ``ddpm 1000`` with another seed
(``ddpm-reseed``) gives the agreement two DDPM-1000 draws have with each other, the ceiling that "agreement
with the reference" can reach.

``clip_sample=True`` (MONAI's DDPM/DDIM default, kept by the authors) clips the predicted clean latents to
[-1, 1] at each step; scaled latents have a standard deviation near 1, so the clipping changes them.

Run (writes ``sampler_study.csv`` and ``sampler_study.png`` into ``--output_dir``)::

    python benchmarks/sampler_study.py --checkpoint bundle/models/model.pt --image_size 128 128 --num_images 4
    python benchmarks/sampler_study.py --checkpoint bundle/models/model.pt --dataset_dir ../shared/uwf-samples
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.metrics.image_scores import MS_SSIM_WEIGHTS, compute_image_scores

__all__ = ["SamplerConfig", "DEFAULT_CONFIGS", "REFERENCE", "ms_ssim_weights_for", "run_study", "load_images", "main"]


@dataclass(frozen=True)
class SamplerConfig:
    """One sampler setting of the study."""

    scheduler: str
    steps: int
    clip_sample: bool | None  # None: the scheduler has no clipping (PNDM)
    seed_offset: int = 0  # a different seed than the others (the DDPM-1000 agreement ceiling)

    @property
    def name(self) -> str:
        clip = "" if self.clip_sample is None else f" clip={'T' if self.clip_sample else 'F'}"
        return f"{self.scheduler}-{self.steps}{clip}{' reseed' if self.seed_offset else ''}"


REFERENCE = SamplerConfig("ddpm", 1000, False)
DEFAULT_CONFIGS: tuple[SamplerConfig, ...] = (
    *(SamplerConfig("ddim", n, clip) for clip in (False, True) for n in (10, 25, 50, 100)),
    *(SamplerConfig("pndm", n, None) for n in (10, 25, 50)),
    SamplerConfig("ddpm", 1000, True),  # the authors' setting
    SamplerConfig("ddpm", 1000, False, seed_offset=1000),  # agreement of two DDPM-1000 draws
)


def ms_ssim_weights_for(size: Sequence[int], kernel_size: int = 11) -> tuple[float, ...]:
    """MONAI's MS-SSIM scale weights, truncated to the scales an image of ``size`` allows and renormalised."""
    side = min(int(s) for s in size)
    scales = len(MS_SSIM_WEIGHTS)
    while scales > 1 and side < kernel_size * (scales - 1) ** 2:
        scales -= 1
    weights = MS_SSIM_WEIGHTS[:scales]
    total = sum(weights)
    return tuple(w / total for w in weights)


def _generate(model: nn.Module, slo: torch.Tensor, config: SamplerConfig, seed: int) -> tuple[torch.Tensor, float]:
    sampler = LPUWFSampler(
        config.scheduler,
        num_inference_steps=config.steps,
        seed=seed + config.seed_offset,
        clip_sample=bool(config.clip_sample),
    )
    start = time.perf_counter()
    pred = sampler(slo, model)["pred"]
    if pred.is_cuda:
        torch.cuda.synchronize(pred.device)
    return pred.cpu(), time.perf_counter() - start


def _scores(pred: torch.Tensor, target: torch.Tensor, weights: Sequence[float]) -> dict[str, float]:
    s = compute_image_scores(pred, target, ms_ssim_weights=weights)
    return {name: float(s[name].mean()) for name in ("psnr", "ms_ssim", "ssim")}


def run_study(
    model: nn.Module,
    slo: torch.Tensor,
    late: torch.Tensor | None = None,
    configs: Sequence[SamplerConfig] = DEFAULT_CONFIGS,
    reference: SamplerConfig = REFERENCE,
    seed: int = 0,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Generate with the reference and every configuration; score each against the reference (and ``late``).

    Args:
        model: a trained :class:`~monai_lpuwf.networks.LPUWFModel` (on the device to use).
        slo: SLO images (B, 3, H, W) in [-1, 1], sizes multiples of ``model.size_divisor``.
        late: real late-phase images (B, 1, H, W) in [-1, 1], or ``None``.
        configs: the sampler settings to compare.
        reference: the reference setting (DDPM-1000 without clipping).
        seed: seed of the initial latents, shared by every configuration.
        log: called with one progress line per configuration (``None``: silent).

    Returns:
        one row per configuration, the reference first: ``sampler``, ``scheduler``, ``steps``, ``clip_sample``,
        ``seconds_per_image``, ``psnr_vs_ddpm1000``, ``ms_ssim_vs_ddpm1000``, ``ssim_vs_ddpm1000`` and, with
        ``late``, ``psnr_vs_late``, ``ms_ssim_vs_late``, ``ssim_vs_late``; plus ``ms_ssim_scales``.
    """
    weights = ms_ssim_weights_for(slo.shape[2:])
    batch = slo.shape[0]
    _generate(model, slo[:1], SamplerConfig("ddim", 1, False), seed)  # warm-up (thread pools, kernel choice)
    ref, ref_time = _generate(model, slo, reference, seed)
    rows = []
    for config in [reference, *configs]:
        pred, seconds = (ref, ref_time) if config is reference else _generate(model, slo, config, seed)
        row: dict[str, Any] = {
            "sampler": config.name,
            "scheduler": config.scheduler,
            "steps": config.steps,
            "clip_sample": "" if config.clip_sample is None else config.clip_sample,
            "seconds_per_image": seconds / batch,
            "ms_ssim_scales": len(weights),
        }
        row.update({f"{k}_vs_ddpm1000": v for k, v in _scores(pred, ref, weights).items()})
        if late is not None:
            row.update({f"{k}_vs_late": v for k, v in _scores(pred, late, weights).items()})
        rows.append(row)
        if log is not None:
            extra = f" | vs late PSNR {row['psnr_vs_late']:.2f}" if late is not None else ""
            log(
                f"{row['sampler']:22s} {row['seconds_per_image']:8.2f} s/image  PSNR {row['psnr_vs_ddpm1000']:6.2f}  "
                f"MS-SSIM {row['ms_ssim_vs_ddpm1000']:.4f}{extra}"
            )
    return rows


def load_images(
    dataset_dir: str | os.PathLike | None,
    num_images: int,
    image_size: Sequence[int],
    seed: int = 0,
    sharpen: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """SLO (and late-phase, where every item has one) images resized to ``image_size`` in [-1, 1].

    ``dataset_dir=None`` renders ``num_images`` phantoms (:func:`monai_lpuwf.data.generate_phantoms`) into a
    temporary folder; otherwise the first ``num_images`` items of :func:`monai_lpuwf.data.datalist_from_folder`.
    The SLO is unsharp-masked like in training (``sharpen``); images are resized as for validation.
    """
    from monai.transforms import Compose, EnsureTyped, Resized

    from monai_lpuwf.data import datalist_from_folder, generate_phantoms
    from monai_lpuwf.transforms import LoadUWFImaged, UnsharpMaskd

    with tempfile.TemporaryDirectory() as tmp:
        if dataset_dir is None:
            records = generate_phantoms(tmp, num=num_images, size=tuple(image_size), seed=seed + 1000)
            items = [{"slo": r["slo"], "late": r["late"]} for r in records]
        else:
            items = datalist_from_folder(dataset_dir, require_late=False, require_early=False)[:num_images]
            if not items:
                raise FileNotFoundError(f"no SLO images (N.bmp / N.png ...) found in '{dataset_dir}'.")
        keys = ["slo"] + (["late"] if all("late" in i for i in items) else [])
        xforms = [LoadUWFImaged(keys=keys)]
        if sharpen:
            xforms.append(UnsharpMaskd(keys="slo"))
        xforms += [
            Resized(keys=keys, spatial_size=tuple(image_size), mode="bilinear", anti_aliasing=True),
            EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        ]
        pipeline = Compose(xforms)
        loaded = [pipeline({k: item[k] for k in keys}) for item in items]
    slo = torch.stack([d["slo"] for d in loaded])
    late = torch.stack([d["late"] for d in loaded]) if "late" in keys else None
    return slo, late, [Path(item["slo"]).name for item in items]


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    path = Path(path)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)
    return path


def plot(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Quality (PSNR and MS-SSIM vs DDPM-1000, and vs the real late phase where given) against time per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = ["ddpm1000"] + (["late"] if "psnr_vs_late" in rows[0] else [])
    fig, axes = plt.subplots(len(targets), 2, figsize=(11, 4 * len(targets)), squeeze=False)
    styles = {"ddim": "o", "pndm": "s", "ddpm": "*"}
    for r, target in enumerate(targets):
        for c, metric in enumerate(("psnr", "ms_ssim")):
            ax = axes[r][c]
            for clip, colour in ((False, "tab:blue"), (True, "tab:red"), ("", "tab:green")):
                for scheduler, marker in styles.items():
                    pts = [
                        row
                        for row in rows
                        if row["scheduler"] == scheduler
                        and row["clip_sample"] == clip
                        and not (target == "ddpm1000" and row["sampler"] == REFERENCE.name)
                    ]
                    if not pts:
                        continue
                    label = f"{scheduler}" + ("" if clip == "" else f" clip={clip}")
                    ax.plot(
                        [p["seconds_per_image"] for p in pts],
                        [p[f"{metric}_vs_{target}"] for p in pts],
                        marker=marker,
                        color=colour,
                        linestyle="-" if scheduler != "ddpm" else "none",
                        label=label,
                    )
                    for p in pts:
                        ax.annotate(
                            str(p["steps"]),
                            (p["seconds_per_image"], p[f"{metric}_vs_{target}"]),
                            fontsize=7,
                            textcoords="offset points",
                            xytext=(3, 3),
                        )
            ax.set_xscale("log")
            ax.set_xlabel("seconds per image")
            ax.set_ylabel(
                f"{metric.upper().replace('_', '-')} vs {'DDPM-1000' if target == 'ddpm1000' else 'real late phase'}"
            )
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _parse_configs(specs: Sequence[str] | None) -> tuple[SamplerConfig, ...]:
    """``["ddim:10,25", "pndm:10"]`` -> configurations (DDIM/DDPM with clip False and True)."""
    if not specs:
        return DEFAULT_CONFIGS
    out = []
    for spec in specs:
        name, _, steps = spec.partition(":")
        if not steps:
            raise ValueError(f"sampler spec '{spec}' must look like 'ddim:10,25,50'.")
        clips: tuple[bool | None, ...] = (None,) if name == "pndm" else (False, True)
        out += [SamplerConfig(name, int(n), c) for c in clips for n in steps.split(",")]
    return tuple(out)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="bundle model file (models/model.pt)")
    parser.add_argument("--dataset_dir", default=None, help="folder of N.bmp/N.2.bmp images (default: phantoms)")
    parser.add_argument("--num_images", type=int, default=4)
    parser.add_argument("--image_size", type=int, nargs=2, default=[128, 128])
    parser.add_argument("--samplers", nargs="+", default=None, help="e.g. ddim:10,25,50,100 pndm:10,25 (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_sharpen", action="store_true", help="do not unsharp-mask the SLO")
    parser.add_argument("--output_dir", default="sampler_study")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from monai_lpuwf.networks import ModelFile

    model = ModelFile.load(args.checkpoint, map_location=args.device).build().to(args.device).eval()
    divisor = model.size_divisor
    if any(s % divisor for s in args.image_size):
        raise ValueError(f"--image_size {args.image_size} must be multiples of the model's size divisor {divisor}.")
    slo, late, names = load_images(args.dataset_dir, args.num_images, args.image_size, args.seed, not args.no_sharpen)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(names)} images at {args.image_size[0]}x{args.image_size[1]} on {args.device} "
        f"(torch threads {torch.get_num_threads()}), checkpoint {args.checkpoint}"
    )
    rows = run_study(model, slo.to(args.device), late, _parse_configs(args.samplers), seed=args.seed)
    csv_path = write_csv(rows, out / "sampler_study.csv")
    png_path = plot(
        rows,
        out / "sampler_study.png",
        title=f"{len(names)} images {args.image_size[0]}x{args.image_size[1]}, {args.device}",
    )
    print(f"wrote {csv_path} and {png_path}")
    return rows


if __name__ == "__main__":
    main()
