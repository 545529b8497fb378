"""Compare samplers: time per image and agreement with a reference sampler (DDPM with all training steps).

Every sampler setting (:class:`SamplerConfig`: MONAI scheduler x steps x ``clip_sample``) generates from the *same*
seeded initial latents (:class:`~monai_lpuwf.inferers.LPUWFSampler`'s per-image seeds) and is scored against

- the reference, by default DDPM with the full 1000 training steps (the paper's sampler), ``clip_sample=False``;
- the real late-phase image, where given: the quality a user sees.

Scores are PSNR, MS-SSIM and SSIM on ``[0, 1]`` intensities (:func:`~monai_lpuwf.scores.
compute_image_scores`); MS-SSIM uses the scales the image size allows (:func:`~monai_lpuwf.scores.
ms_ssim_weights_for`). Time is the wall-clock time of one sampler call on the whole batch (after a warm-up call)
divided by the number of images, on the model's device.

DDPM is stochastic (fresh noise at every step) while DDIM with ``eta=0`` and PNDM are deterministic given the
initial latents, so no few-step sampler reproduces DDPM-1000 exactly; DDPM-1000 with another seed
(``SamplerConfig("ddpm", 1000, False, seed_offset=1000)``, in :data:`DEFAULT_SAMPLERS`) gives the agreement of two
DDPM-1000 draws with each other, the ceiling that "agreement with the reference" can reach.

``benchmarks/sampler_study.py`` runs this on a trained model file and writes a CSV and the plot.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from torch import nn

from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.metrics.report import save_figure
from monai_lpuwf.scores import compute_image_scores, ms_ssim_weights_for

__all__ = [
    "SamplerConfig",
    "REFERENCE_SAMPLER",
    "DEFAULT_SAMPLERS",
    "parse_sampler_specs",
    "compare_samplers",
    "plot_sampler_comparison",
]


@dataclass(frozen=True)
class SamplerConfig:
    """One sampler setting of a comparison.

    Attributes:
        scheduler: a scheduler name :class:`~monai_lpuwf.inferers.LPUWFSampler` takes (``"ddpm"``, ``"ddim"``,
            ``"pndm"``).
        steps: number of inference steps.
        clip_sample: clip the predicted clean latents at each step; ``None`` for a scheduler without clipping (PNDM).
        seed_offset: added to the comparison's seed (another draw of the initial latents and the noise).
    """

    scheduler: str
    steps: int
    clip_sample: bool | None
    seed_offset: int = 0

    @property
    def name(self) -> str:
        """``"ddim-25 clip=F"``, ``"pndm-10"``, ``"ddpm-1000 clip=F reseed"``."""
        clip = "" if self.clip_sample is None else f" clip={'T' if self.clip_sample else 'F'}"
        return f"{self.scheduler}-{self.steps}{clip}{' reseed' if self.seed_offset else ''}"


#: DDPM with all 1000 training steps, without clipping: the reference of a comparison
REFERENCE_SAMPLER = SamplerConfig("ddpm", 1000, False)

#: DDIM (both clippings) and PNDM at a range of steps, the authors' setting (DDPM-1000 with clipping) and the
#: agreement ceiling (DDPM-1000 with another seed)
DEFAULT_SAMPLERS: tuple[SamplerConfig, ...] = (
    *(SamplerConfig("ddim", n, clip) for clip in (False, True) for n in (10, 25, 50, 100)),
    *(SamplerConfig("pndm", n, None) for n in (10, 25, 50)),
    SamplerConfig("ddpm", 1000, True),
    SamplerConfig("ddpm", 1000, False, seed_offset=1000),
)


def parse_sampler_specs(specs: Sequence[str] | None) -> tuple[SamplerConfig, ...]:
    """Sampler settings from ``"scheduler:steps,steps,..."`` strings, e.g. ``["ddim:10,25", "pndm:5"]``.

    DDIM and DDPM get both ``clip_sample`` settings (``False`` first), PNDM none. No specs: :data:`DEFAULT_SAMPLERS`.

    Raises:
        ValueError: a spec without steps (``"ddim"``).
    """
    if not specs:
        return DEFAULT_SAMPLERS
    out = []
    for spec in specs:
        name, _, steps = spec.partition(":")
        if not steps:
            raise ValueError(f"sampler spec '{spec}' must look like 'ddim:10,25,50'.")
        clips: tuple[bool | None, ...] = (None,) if name == "pndm" else (False, True)
        out += [SamplerConfig(name, int(n), c) for c in clips for n in steps.split(",")]
    return tuple(out)


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


def compare_samplers(
    model: nn.Module,
    slo: torch.Tensor,
    late: torch.Tensor | None = None,
    configs: Sequence[SamplerConfig] = DEFAULT_SAMPLERS,
    reference: SamplerConfig = REFERENCE_SAMPLER,
    seed: int = 0,
    log: Callable[[str], Any] | None = print,
) -> list[dict[str, Any]]:
    """Generate with the reference and every setting; score each against the reference (and ``late``).

    Args:
        model: a trained :class:`~monai_lpuwf.networks.LPUWFModel` (on the device to use).
        slo: SLO images (B, 3, H, W) in [-1, 1], sizes multiples of ``model.size_divisor``.
        late: real late-phase images (B, 1, H, W) in [-1, 1], or ``None``.
        configs: the sampler settings to compare.
        reference: the setting the others are scored against.
        seed: seed of the initial latents, shared by every setting (plus its ``seed_offset``).
        log: called with one progress line per setting (``None``: silent).

    Returns:
        one row per setting, the reference first: ``sampler`` (:attr:`SamplerConfig.name`), ``scheduler``,
        ``steps``, ``clip_sample`` (``""`` for none), ``seconds_per_image``, ``ms_ssim_scales``,
        ``psnr_vs_ddpm1000``, ``ms_ssim_vs_ddpm1000``, ``ssim_vs_ddpm1000`` (against the reference) and, with
        ``late``, ``psnr_vs_late``, ``ms_ssim_vs_late``, ``ssim_vs_late``.
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


def plot_sampler_comparison(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "", reference: str = REFERENCE_SAMPLER.name
) -> Path:
    """Plot quality (PSNR and MS-SSIM against the reference, and against the real late phase where the rows have
    it) over time per image, one line per scheduler and clipping, the steps annotated; written atomically as PNG.

    Args:
        rows: the rows of :func:`compare_samplers`.
        path: the PNG file.
        title: the figure's title.
        reference: the name of the reference row, left out of the plots against the reference.
    """
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
                        and not (target == "ddpm1000" and row["sampler"] == reference)
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
    return save_figure(fig, path, dpi=110)
