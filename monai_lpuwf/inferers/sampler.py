"""Generation pipeline: UWF-SLO -> late-phase UWF-FA with an :class:`~monai_lpuwf.networks.LPUWFModel`."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, Scheduler
from monai.utils import look_up_option, optional_import
from torch import nn

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["SCHEDULERS", "build_scheduler", "LPUWFSampler"]

SCHEDULERS: dict[str, type[Scheduler]] = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "pndm": PNDMScheduler}
_AGGREGATES = ("mean", "median", "first")


def build_scheduler(
    name: str, schedule: Mapping[str, Any] | None = None, clip_sample: bool = False, **kwargs: Any
) -> Scheduler:
    """A MONAI noise scheduler for a model's training schedule.

    Args:
        name: ``"ddpm"`` (the paper: 1000 ancestral steps), ``"ddim"`` or ``"pndm"`` (few steps).
        schedule: ``num_train_timesteps``, ``schedule``, ``beta_start``, ``beta_end`` (``LPUWFModel.schedule``).
        clip_sample: clip the predicted clean sample to [-1, 1] at every step (DDPM/DDIM). MONAI defaults to
            ``True``, which suits pixel-space diffusion on [-1, 1] images; scaled latents are not bounded to
            [-1, 1] (their std is ~1, so a good share of values lies outside), and clipping them distorts the
            result, hence ``False`` here.
        kwargs: other scheduler arguments (``prediction_type``, ``variance_type``, ``skip_prk_steps`` (default
            ``True`` here)...).
    """
    cls = look_up_option(name.lower(), SCHEDULERS)
    args = dict(schedule or {})
    args.update(kwargs)
    if "clip_sample" in inspect.signature(cls).parameters:
        args["clip_sample"] = clip_sample
    if cls is PNDMScheduler:  # PLMS only: MONAI's Runge-Kutta warm-up steps fail for small step counts
        args.setdefault("skip_prk_steps", True)
    return cls(**args)


class LPUWFSampler:
    """Turn SLO images into late-phase FA: sample latents with the ControlNet-steered U-Net, decode with the SLO.

    For each of ``num_samples`` draws: Gaussian latents (seeded ``seed + k``), ``num_inference_steps`` scheduler
    steps of ``model.denoise(x_t, t, slo)`` (ControlNet on the full-resolution SLO), then
    ``model.decode_latents(z, slo)`` (the decoder gets the gated SLO features, computed once). Inputs of any
    size are padded symmetrically to ``model.size_divisor`` (with ``pad_value``: -1 is the black background of
    [-1, 1] images) and the outputs cropped back, so whole native frames (853 x 682) work as well as the
    paper's 512 x 512 crops. Several samples give a per-pixel standard deviation map (uncertainty).

    Args:
        scheduler: ``"ddim"``, ``"ddpm"`` (the paper, use ``num_inference_steps=1000``), ``"pndm"``, or a MONAI
            scheduler instance (used as given).
        num_inference_steps: sampling steps.
        num_samples: draws per input; with more than one, ``pred`` aggregates them and ``pred_std`` is their
            per-pixel standard deviation.
        seed: seed of the first draw (draw ``k`` uses ``seed + k``), so results are reproducible for a batch.
        clip_sample: see :func:`build_scheduler` (``False``: latents are not bounded to [-1, 1]).
        eta: DDIM stochasticity (0 = deterministic DDIM).
        conditioning_scale: multiplier of the ControlNet residuals.
        aggregate: ``"mean"``, ``"median"`` or ``"first"`` (a single draw, e.g. for FID) over the samples.
        pad_value: value of the padding around the SLO.
        clamp_output: clamp images to [-1, 1].
        return_samples: also return every draw as ``"samples"`` (num_samples, B, 1, H, W).
        progress: show a tqdm bar over the steps.
        scheduler_kwargs: more arguments of the scheduler (see :func:`build_scheduler`).

    Example::

        sampler = LPUWFSampler("ddim", num_inference_steps=50, num_samples=4)
        out = sampler(slo, model)  # slo (B,3,H,W) in [-1,1] -> out["pred"], out["pred_std"] (B,1,H,W)
    """

    def __init__(
        self,
        scheduler: str | Scheduler = "ddim",
        num_inference_steps: int = 50,
        num_samples: int = 1,
        seed: int = 0,
        clip_sample: bool = False,
        eta: float = 0.0,
        conditioning_scale: float = 1.0,
        aggregate: str = "mean",
        pad_value: float = -1.0,
        clamp_output: bool = True,
        return_samples: bool = False,
        progress: bool = False,
        scheduler_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if num_inference_steps < 1 or num_samples < 1:
            raise ValueError("num_inference_steps and num_samples must be >= 1.")
        if isinstance(scheduler, str):
            look_up_option(scheduler.lower(), SCHEDULERS)
        self.scheduler = scheduler
        self.num_inference_steps = int(num_inference_steps)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.clip_sample = clip_sample
        self.eta = float(eta)
        self.conditioning_scale = float(conditioning_scale)
        self.aggregate = look_up_option(aggregate, _AGGREGATES)
        self.pad_value = float(pad_value)
        self.clamp_output = clamp_output
        self.return_samples = return_samples
        self.progress = progress and has_tqdm
        self.scheduler_kwargs = dict(scheduler_kwargs or {})

    def make_scheduler(self, model: nn.Module) -> Scheduler:
        """The scheduler for ``model`` (its training schedule) with the timesteps set."""
        if isinstance(self.scheduler, Scheduler):
            scheduler = self.scheduler
        else:
            scheduler = build_scheduler(self.scheduler, model.schedule, self.clip_sample, **self.scheduler_kwargs)
        if self.num_inference_steps > scheduler.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps={self.num_inference_steps} exceeds the {scheduler.num_train_timesteps} "
                "training timesteps of the schedule."
            )
        if isinstance(scheduler, DDPMScheduler) and self.num_inference_steps != scheduler.num_train_timesteps:
            warnings.warn(
                f"DDPM with {self.num_inference_steps} of {scheduler.num_train_timesteps} steps: MONAI's DDPM step "
                "assumes consecutive timesteps; use num_inference_steps=num_train_timesteps or scheduler='ddim'.",
                stacklevel=2,
            )
        scheduler.set_timesteps(self.num_inference_steps)
        return scheduler

    @staticmethod
    def _pad(slo: torch.Tensor, divisor: int, value: float) -> tuple[torch.Tensor, list[slice]]:
        spatial = slo.shape[2:]
        pads, crop = [], [slice(None), slice(None)]
        for size in spatial:
            total = (-size) % divisor
            before = total // 2
            pads.append((before, total - before))
            crop.append(slice(before, before + size))
        flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last dim first
        return (F.pad(slo, flat, mode="constant", value=value) if any(flat) else slo), crop

    def _step_kwargs(self, scheduler: Scheduler, generator: torch.Generator) -> dict[str, Any]:
        params = inspect.signature(scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "generator" in params:
            kwargs["generator"] = generator
        if "eta" in params:
            kwargs["eta"] = self.eta
        return kwargs

    def __call__(self, slo: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor | None]:
        """
        Args:
            slo: SLO images (B, 3, H, W) in [-1, 1], any H, W.
            model: an :class:`~monai_lpuwf.networks.LPUWFModel` (or a DDP wrapper of it).

        Returns:
            ``{"pred": (B, 1, H, W), "pred_std": (B, 1, H, W) or None}`` (+ ``"samples"`` if asked).
        """
        model = getattr(model, "module", model)
        if slo.ndim < 3 or slo.shape[1] != model.config["condition_channels"]:
            raise ValueError(
                f"expected SLO images (B, {model.config['condition_channels']}, *spatial), got shape {tuple(slo.shape)}."
            )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                samples = self._sample(torch.as_tensor(slo).float(), model)
        finally:
            model.train(was_training)
        if self.aggregate == "first":
            pred = samples[0]
        elif self.aggregate == "median":
            pred = samples.median(dim=0).values
        else:
            pred = samples.mean(dim=0)
        out: dict[str, torch.Tensor | None] = {
            "pred": pred,
            "pred_std": samples.std(dim=0) if self.num_samples > 1 else None,
        }
        if self.return_samples:
            out["samples"] = samples
        return out

    def _sample(self, slo: torch.Tensor, model: nn.Module) -> torch.Tensor:
        device = next(model.parameters()).device
        slo = slo.to(device)
        slo_p, crop = self._pad(slo, model.size_divisor, self.pad_value)
        cond = model.autoencoder.encode_condition(slo_p) if model.autoencoder.condition_encoder is not None else None
        latent_shape = (slo.shape[0], model.latent_channels) + tuple(s // model.downsample_factor for s in slo_p.shape[2:])
        draws = []
        for k in range(self.num_samples):
            scheduler = self.make_scheduler(model)
            generator = torch.Generator(device=device).manual_seed(self.seed + k)
            step_kwargs = self._step_kwargs(scheduler, generator)
            x = torch.randn(latent_shape, generator=generator, device=device)
            timesteps = scheduler.timesteps
            if self.progress:
                timesteps = tqdm(timesteps, desc=f"sample {k + 1}/{self.num_samples}")
            for t in timesteps:
                t_batch = torch.full((x.shape[0],), int(t), device=device, dtype=torch.long)
                eps = model.denoise(x, t_batch, slo_p, conditioning_scale=self.conditioning_scale)
                x, _ = scheduler.step(eps, int(t), x, **step_kwargs)
            image = model.decode_latents(x, cond)[tuple(crop)]
            draws.append(image.clamp(-1, 1) if self.clamp_output else image)
        return torch.stack(draws)
