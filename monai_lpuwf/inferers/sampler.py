"""Generation pipeline: UWF-SLO -> late-phase UWF-FA with an :class:`~monai_lpuwf.networks.LPUWFModel`."""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, Scheduler
from monai.utils import look_up_option, optional_import
from torch import nn

from .tiling import TILE_POLICIES, check_memory, choose_tiling, decode_tiled, denoise_tiled, estimate_generation_memory

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["SCHEDULERS", "INFERENCE_DEFAULTS", "build_scheduler", "item_seed", "LPUWFSampler"]

SCHEDULERS: dict[str, type[Scheduler]] = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "pndm": PNDMScheduler}

#: The one source of the sampling defaults, read by :class:`LPUWFSampler` and by
#: :class:`monai_lpuwf.generation.Generator` (the bundle's ``inference.json``, the MONAI Label task and the MONAI
#: Deploy operator), under a model file's recommended settings (validation during training uses its own, shorter
#: ``val_inference_steps``). DDIM with 25 steps and no clipping: the sampler study in the README (as close to
#: DDPM-1000 as two DDPM-1000 draws are to each other, at 1/56 of the time).
INFERENCE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "scheduler": "ddim",
        "num_inference_steps": 25,
        "eta": 0.0,
        "clip_sample": False,
        "num_samples": 1,
        "seed": 0,
        "conditioning_scale": 1.0,
        "t_start": None,
        "flip_average": False,
    }
)
_AGGREGATES = ("mean", "median", "first")


def item_seed(seed: int, item_id: str | int | None = None) -> int:
    """The seed of one image's noise: ``seed`` itself without an identity, else a stable hash of both.

    Python's ``hash`` changes between processes; this does not (SHA-256 of ``"<seed>/<id>"``, 63 bits).
    """
    if item_id is None:
        return int(seed)
    digest = hashlib.sha256(f"{int(seed)}/{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def build_scheduler(
    name: str, schedule: Mapping[str, Any] | None = None, clip_sample: bool = False, **kwargs: Any
) -> Scheduler:
    """A MONAI noise scheduler for a model's training schedule.

    Args:
        name: ``"ddpm"`` (the paper: 1000 ancestral steps), ``"ddim"`` or ``"pndm"`` (few steps).
        schedule: ``num_train_timesteps``, ``schedule``, ``beta_start``, ``beta_end``, ``prediction_type``...
            (``LPUWFModel.schedule``; every key is passed on).
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
    try:
        return cls(**args)
    except ValueError as e:
        if "prediction_type" not in str(e):
            raise
        raise ValueError(
            f"the '{name}' scheduler does not support prediction_type='{args.get('prediction_type')}' (the model's "
            f"training schedule): {e}; use a scheduler that does (e.g. 'ddim' or 'ddpm')."
        ) from e


class LPUWFSampler:
    """Turn SLO images into late-phase FA: sample latents with the ControlNet-steered U-Net, decode with the SLO.

    For each of ``num_samples`` draws: Gaussian latents, ``num_inference_steps`` scheduler steps of
    ``model.denoise(x_t, t, slo)`` (ControlNet on the full-resolution SLO), then ``model.decode_latents(z, slo)``
    (the decoder gets the gated SLO features). Inputs are multiples of ``model.size_divisor`` on every side: the
    inference transforms own the padding (:func:`~monai_lpuwf.transforms.uwf_inference_transforms` pads with -1,
    the black of [-1, 1] images, and :class:`monai.transforms.Invertd` crops the output back), so whole native
    frames (853 x 682 -> 864 x 704, or Optos' 4000 x 3200) work as well as the paper's 512 x 512 crops. Several
    samples give a per-pixel standard deviation map (uncertainty).

    **Reproducibility per image**: every image of a batch has its own random generator, seeded with
    :func:`item_seed` of ``seed + k`` (draw ``k``) and the image's identity (``ids``; none by default, i.e. every
    image uses ``seed + k``). Its initial noise and the scheduler's step noise (DDPM, DDIM with ``eta > 0``) come
    from that generator only, so an image's output does not depend on the batch size or on the other images of
    its batch (up to floating-point rounding of batched convolutions).

    **Large frames**: the U-Net's attention levels and the autoencoder's non-local attention cost time in the
    square of the number of latent pixels. Frames whose latent grid exceeds ``denoise_tile`` / ``decode_tile``
    (latent pixels a side) are denoised / decoded in overlapping tiles of that size blended with smooth windows
    (:mod:`monai_lpuwf.inferers.tiling`), so the cost grows linearly with the pixel count (a 4000 x 3200 Optos
    frame decodes ~12x faster than whole: ``benchmarks/bench_large_frames.py``) - on a CPU; on a GPU
    (``tile_policy="auto"``) only where the whole frame would not fit in memory or exceeds 4 tiles' area
    (:func:`~monai_lpuwf.inferers.tiling.choose_tiling`). Before starting, the memory needed is estimated and
    compared with the free memory of the device; a frame that cannot fit stops with a ``MemoryError`` that says
    how much is needed.

    Args:
        scheduler: ``"ddim"``, ``"ddpm"`` (the paper, use ``num_inference_steps=1000``), ``"pndm"``, or a MONAI
            scheduler instance (used as given; a scheduler whose ``step`` takes a ``generator`` is stepped image by
            image, so its ``step`` must be stateless, as MONAI's DDPM and DDIM are).
        num_inference_steps: sampling steps.
        num_samples: draws per input; with more than one, ``pred`` aggregates them and ``pred_std`` is their
            per-pixel standard deviation.
        seed: seed of the first draw (draw ``k`` uses ``seed + k``), combined with each image's identity.
        clip_sample: see :func:`build_scheduler` (``False``: latents are not bounded to [-1, 1]).
        eta: DDIM stochasticity (0 = deterministic DDIM).
        conditioning_scale: multiplier of the ControlNet residuals.
        t_start: residual method only: start the reverse process at this training timestep from the noised prior
            (the scheduler's timesteps up to ``t_start`` are run); ``None``: from pure noise; ``0``: no diffusion.
        flip_average: prior-based methods only: the prior's prediction is the mean over the flips of the SLO
            (:meth:`~monai_lpuwf.networks.SupervisedPrior.predict`; 4 forward passes in 2D); the latent model ignores
            it.
        aggregate: ``"mean"``, ``"median"`` or ``"first"`` (a single draw, e.g. for FID) over the samples.
        return_samples: also return every draw as ``"samples"`` (num_samples, B, 1, H, W).
        progress: on a terminal, show a tqdm bar counting denoising steps (times denoising tiles) and decoded tiles,
            with the sample, step and tile in its text and the remaining time.
        decode_tile: decode in latent tiles of at most this side (128 latent pixels = the 512 x 512 training
            crops) when the latent grid is larger; ``None``: always whole frames.
        decode_overlap: latent pixels shared by neighbouring decoder tiles (blended over).
        denoise_tile: denoise in latent tiles of at most this side (rounded down to the U-Net's multiple) when the
            latent grid is larger; ``None``: always whole frames. The residual method (pixel space) denoises
            frames larger than this many pixels in Gaussian-blended windows of this side.
        denoise_overlap: latent pixels shared by neighbouring denoiser tiles (blended over; the U-Net's
            receptive field is wider than the decoder's, hence a wider default); pixels for the residual method.
        tile_policy: when the tiles are used (:data:`~monai_lpuwf.inferers.tiling.TILE_POLICIES`): ``"auto"``
            (every frame larger than a tile on a CPU; on a GPU only frames that do not fit in memory or exceed 4
            tiles' area), ``"size"`` (every frame larger than a tile), ``"memory"`` (only frames that do not fit).
        memory_limit: bytes a call may use, for the tiling choice and the memory check; ``None``: the device's
            free memory.
        scheduler_kwargs: more arguments of the scheduler (see :func:`build_scheduler`).

    **Other generation methods** (the model's ``generation_method``): a
    :class:`~monai_lpuwf.networks.SupervisedPrior` is run once (``"prior"``: every draw is its prediction, so
    ``pred_std`` is 0); a :class:`~monai_lpuwf.networks.ResidualDiffusionModel` (``"residual"``) samples the
    residual of its prior in pixel space with the same scheduler, seeds and steps, starting from pure noise
    (``t_start=None``) or from the prior noised to training timestep ``t_start`` (SDEdit-style; ``t_start=0``
    returns the prior itself), and adds it to the prior's prediction. Latent tiling, the memory estimate and
    ``conditioning_scale`` concern the latent model only.

    Defaults of ``scheduler``, ``num_inference_steps``, ``num_samples``, ``seed``, ``clip_sample`` and ``eta``:
    :data:`INFERENCE_DEFAULTS`.

    Example::

        sampler = LPUWFSampler("ddim", num_inference_steps=50, num_samples=4)
        out = sampler(slo, model)  # slo (B,3,H,W) in [-1,1] -> out["pred"], out["pred_std"] (B,1,H,W)
    """

    def __init__(
        self,
        scheduler: str | Scheduler = INFERENCE_DEFAULTS["scheduler"],
        num_inference_steps: int = INFERENCE_DEFAULTS["num_inference_steps"],
        num_samples: int = INFERENCE_DEFAULTS["num_samples"],
        seed: int = INFERENCE_DEFAULTS["seed"],
        clip_sample: bool = INFERENCE_DEFAULTS["clip_sample"],
        eta: float = INFERENCE_DEFAULTS["eta"],
        conditioning_scale: float = INFERENCE_DEFAULTS["conditioning_scale"],
        t_start: int | None = INFERENCE_DEFAULTS["t_start"],
        flip_average: bool = INFERENCE_DEFAULTS["flip_average"],
        aggregate: str = "mean",
        return_samples: bool = False,
        progress: bool = False,
        decode_tile: int | None = 128,
        decode_overlap: int = 16,
        denoise_tile: int | None = 256,
        denoise_overlap: int = 32,
        scheduler_kwargs: Mapping[str, Any] | None = None,
        tile_policy: str = "auto",
        memory_limit: int | None = None,
    ) -> None:
        if num_inference_steps < 1 or num_samples < 1:
            raise ValueError("num_inference_steps and num_samples must be >= 1.")
        if isinstance(scheduler, str):
            look_up_option(scheduler.lower(), SCHEDULERS)
        tiles = (("decode", decode_tile, decode_overlap), ("denoise", denoise_tile, denoise_overlap))
        for name, tile, overlap in tiles:
            if overlap < 0 or (tile is not None and int(tile) <= overlap):
                raise ValueError(
                    f"{name}_tile={tile} must be larger than {name}_overlap={overlap} >= 0 (or {name}_tile=None)."
                )
        self.scheduler = scheduler
        self.num_inference_steps = int(num_inference_steps)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.clip_sample = clip_sample
        self.eta = float(eta)
        self.conditioning_scale = float(conditioning_scale)
        if t_start is not None and int(t_start) < 0:
            raise ValueError(f"t_start={t_start} must be >= 0 (or None: from pure noise).")
        self.t_start = None if t_start is None else int(t_start)
        self.flip_average = bool(flip_average)
        self.aggregate = look_up_option(aggregate, _AGGREGATES)
        self.return_samples = return_samples
        self.progress = progress and has_tqdm
        self.decode_tile = None if decode_tile is None else int(decode_tile)
        self.decode_overlap = int(decode_overlap)
        self.denoise_tile = None if denoise_tile is None else int(denoise_tile)
        self.denoise_overlap = int(denoise_overlap)
        self.tile_policy = look_up_option(tile_policy, TILE_POLICIES)
        self.memory_limit = None if memory_limit is None else int(memory_limit)
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
    def check_divisible(slo: torch.Tensor, divisor: int) -> None:
        """Raise a ``ValueError`` naming the size, the divisor and the fix when ``slo``'s spatial size is not a
        multiple of ``divisor`` on every side."""
        spatial = [int(s) for s in slo.shape[2:]]
        if any(s % divisor for s in spatial):
            padded = [s + (-s) % divisor for s in spatial]
            raise ValueError(
                f"SLO of {' x '.join(map(str, spatial))} pixels (H x W) is not a multiple of the model's size divisor "
                f"{divisor} on every side. Pad it with the inference transforms, "
                f"uwf_inference_transforms(divisor={divisor}) (value -1, to {' x '.join(map(str, padded))}), and crop "
                "the output back with monai.transforms.Invertd(keys='pred', transform=<those transforms>, "
                "orig_keys='slo'); or pad an array with monai.transforms.DivisiblePad(k="
                f"{divisor}, value=-1) and crop with its inverse."
            )

    def _step_kwargs(self, scheduler: Scheduler, generator: torch.Generator | None) -> dict[str, Any]:
        params = inspect.signature(scheduler.step).parameters
        kwargs: dict[str, Any] = {}
        if "generator" in params:
            kwargs["generator"] = generator
        if "eta" in params:
            kwargs["eta"] = self.eta
        return kwargs

    def tiling(
        self, model: nn.Module, image_spatial: Sequence[int], batch: int = 1, device: torch.device | str | None = None
    ) -> dict[str, list]:
        """The latent windows of the decoder and of the denoiser for ``batch`` images of a padded size (one window:
        no tiling), chosen by ``tile_policy`` for ``device`` (default: the model's)."""
        model = getattr(model, "module", model)
        device = next(model.parameters()).device if device is None else device
        return choose_tiling(
            model, batch, image_spatial, self.decode_tile, self.decode_overlap, self.denoise_tile,
            self.denoise_overlap, self.num_samples, self.tile_policy, device, self.memory_limit,
        )  # fmt: skip

    def memory_estimate(self, model: nn.Module, batch: int, image_spatial: Sequence[int]) -> int:
        """Rough peak memory in bytes (beyond the weights) of one call on ``batch`` images of this size."""
        model = getattr(model, "module", model)
        divisor = model.size_divisor
        padded = [int(s) + (-int(s)) % divisor for s in image_spatial]
        windows = self.tiling(model, padded, batch)
        return estimate_generation_memory(model, batch, padded, windows["decode"], windows["denoise"], self.num_samples)

    def __call__(
        self, slo: torch.Tensor, model: nn.Module, ids: Sequence[str | int | None] | None = None
    ) -> dict[str, torch.Tensor | None]:
        """
        Args:
            slo: SLO images (B, 3, H, W) in [-1, 1], H and W multiples of ``model.size_divisor`` (pad with
                :func:`~monai_lpuwf.transforms.uwf_inference_transforms`).
            model: an :class:`~monai_lpuwf.networks.LPUWFModel` (or a DDP wrapper of it).
            ids: optional identity of each image (e.g. its file name), mixed into its seed by :func:`item_seed`;
                ``None``: every image's noise comes from the seed alone.

        Returns:
            ``{"pred": (B, 1, H, W), "pred_std": (B, 1, H, W) or None}`` (+ ``"samples"`` if asked).
        """
        model = getattr(model, "module", model)
        if slo.ndim < 3 or slo.shape[1] != model.config["condition_channels"]:
            raise ValueError(
                f"expected SLO images (B, {model.config['condition_channels']}, *spatial), "
                f"got shape {tuple(slo.shape)}."
            )
        if ids is not None and len(ids) != slo.shape[0]:
            raise ValueError(f"got {len(ids)} ids for a batch of {slo.shape[0]} images; give one id per image.")
        self.check_divisible(slo, model.size_divisor)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                plain = slo.as_tensor() if isinstance(slo, MetaTensor) else torch.as_tensor(slo)  # tiles slice it
                samples = self._sample(plain.float(), model, ids)
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

    def _sample(self, slo: torch.Tensor, model: nn.Module, ids: Sequence[str | int | None] | None) -> torch.Tensor:
        method = getattr(model, "generation_method", "latent")
        if method != "latent":
            return self._sample_pixels(slo, model, ids, method)
        device = next(model.parameters()).device
        slo = slo.to(device)
        batch = slo.shape[0]
        windows = self.tiling(model, slo.shape[2:], batch, device)
        # the memory needed, estimated before starting: a clear MemoryError rather than an out-of-memory crash midway
        needed = estimate_generation_memory(
            model, batch, slo.shape[2:], windows["decode"], windows["denoise"], self.num_samples
        )
        check_memory(
            needed,
            device,
            f"generating {batch} image(s) of {' x '.join(str(s) for s in slo.shape[2:])} "
            f"({len(windows['denoise'])} denoising and {len(windows['decode'])} decoding tile(s))",
            f"use smaller tiles (decode_tile={self.decode_tile}, denoise_tile={self.denoise_tile} latent pixels), "
            "one image per batch, or a machine with more memory; memory_limit=BYTES overrides the available memory.",
            self.memory_limit,
        )
        whole_decode = len(windows["decode"]) == 1
        with_cond = model.autoencoder.condition_encoder is not None
        # untiled: the gated SLO features once for all draws; tiled: each tile encodes its own SLO crop
        cond = (model.autoencoder.encode_condition(slo) if whole_decode else slo) if with_cond else None
        latent_shape = (1, model.latent_channels) + tuple(s // model.downsample_factor for s in slo.shape[2:])
        n_den, n_dec = len(windows["denoise"]), len(windows["decode"])
        bar = None
        if self.progress:
            total = self.num_samples * (self.num_inference_steps * n_den + n_dec)
            bar = tqdm(  # disable=None: only on a terminal (logs and captured output stay clean)
                total=total,
                desc="sampling",
                unit="tile" if n_den > 1 or n_dec > 1 else "step",
                leave=False,
                disable=None,
            )
        draws = []
        try:
            for k in range(self.num_samples):
                scheduler = self.make_scheduler(model)
                seeds = [item_seed(self.seed + k, None if ids is None else ids[i]) for i in range(batch)]
                generators = [torch.Generator(device=device).manual_seed(value) for value in seeds]
                step_kwargs = [self._step_kwargs(scheduler, g) for g in generators]
                per_item = "generator" in step_kwargs[0]
                x = torch.cat([torch.randn(latent_shape, generator=g, device=device) for g in generators])
                steps = len(scheduler.timesteps)
                for s, t in enumerate(scheduler.timesteps):
                    t_batch = torch.full((batch,), int(t), device=device, dtype=torch.long)

                    def on_tile(i: int, n: int, s: int = s, k: int = k, steps: int = steps) -> None:
                        if bar is not None:
                            bar.set_postfix_str(
                                f"sample {k + 1}/{self.num_samples} step {s + 1}/{steps}"
                                + (f" tile {i}/{n}" if n > 1 else ""),
                                refresh=False,
                            )
                            bar.update(1)

                    eps = denoise_tiled(
                        model, x, t_batch, slo, None if n_den == 1 else self.denoise_tile, self.denoise_overlap,
                        self.conditioning_scale, on_tile,
                    )  # fmt: skip
                    if per_item:  # each image's step noise from its own generator
                        x = torch.cat(
                            [
                                scheduler.step(eps[i : i + 1], int(t), x[i : i + 1], **step_kwargs[i])[0]
                                for i in range(batch)
                            ]
                        )
                    else:
                        x, _ = scheduler.step(eps, int(t), x, **step_kwargs[0])

                def on_decode(i: int, n: int, k: int = k) -> None:
                    if bar is not None:
                        bar.set_postfix_str(f"sample {k + 1}/{self.num_samples} decoding tile {i}/{n}", refresh=False)
                        bar.update(1)

                if whole_decode:
                    image = model.decode_latents(x, cond)
                    on_decode(1, 1)
                else:
                    image = decode_tiled(model, x, cond, self.decode_tile, self.decode_overlap, on_decode)
                draws.append(image.clamp(-1, 1))
        finally:
            if bar is not None:
                bar.close()
        return torch.stack(draws)

    def residual_timesteps(self, scheduler: Scheduler) -> list[int]:
        """The scheduler's timesteps the residual method runs: all, or those up to ``t_start``."""
        steps = [int(t) for t in scheduler.timesteps]
        if self.t_start is None:
            return steps
        return [] if self.t_start == 0 else [t for t in steps if t <= self.t_start]

    def _denoise_pixels(self, model: nn.Module, x: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
        """The residual model's denoiser output for ``x`` (B, C, *spatial) at timestep ``t``: in one pass, or in
        overlapping windows of ``denoise_tile`` pixels (Gaussian-blended, MONAI's ``sliding_window_inference``) when
        the frame is larger - MONAI's ``DiffusionModelUNet`` keeps self-attention in its middle block, quadratic in
        the pixels of a whole frame (a native 853 x 682 frame: 213 x 170 tokens), and the model was trained on
        crops."""
        tile = self.denoise_tile
        if tile is None or max(x.shape[2:]) <= tile:
            return model.denoise(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), cond)
        channels = x.shape[1]

        def predictor(window: torch.Tensor) -> torch.Tensor:
            steps = torch.full((window.shape[0],), t, device=window.device, dtype=torch.long)
            return model.denoise(window[:, :channels], steps, window[:, channels:])

        return sliding_window_inference(
            torch.cat([x, cond], dim=1),
            roi_size=(tile,) * (x.ndim - 2),
            sw_batch_size=4,
            predictor=predictor,
            overlap=self.denoise_overlap / tile,
            mode="gaussian",
        )

    def _sample_pixels(
        self, slo: torch.Tensor, model: nn.Module, ids: Sequence[str | int | None] | None, method: str
    ) -> torch.Tensor:
        """Draws of the prior-based methods: the prior alone, or the prior plus a sampled residual (pixel space)."""
        device = next(model.parameters()).device
        slo = slo.to(device)
        batch = slo.shape[0]
        if method == "prior":
            base = model.predict(slo, flip_average=self.flip_average)
            return torch.stack([base.clamp(-1, 1)] * self.num_samples)
        look_up_option(method, ("residual",))
        base, cond = model.condition(slo, flip_average=self.flip_average)
        shape = (1, base.shape[1]) + tuple(base.shape[2:])
        draws = []
        bar = None
        if self.progress:
            bar = tqdm(total=self.num_samples * self.num_inference_steps, desc="sampling", unit="step", leave=False,
                       disable=None)  # fmt: skip
        try:
            for k in range(self.num_samples):
                scheduler = self.make_scheduler(model)
                timesteps = self.residual_timesteps(scheduler)
                seeds = [item_seed(self.seed + k, None if ids is None else ids[i]) for i in range(batch)]
                generators = [torch.Generator(device=device).manual_seed(value) for value in seeds]
                step_kwargs = [self._step_kwargs(scheduler, g) for g in generators]
                noise = torch.cat([torch.randn(shape, generator=g, device=device) for g in generators])
                if not timesteps:  # t_start == 0: the prior itself
                    x = torch.zeros_like(noise)
                elif self.t_start is None:
                    x = noise
                else:  # the prior (zero residual) noised to the first timestep run
                    t0 = torch.full((batch,), timesteps[0], device=device, dtype=torch.long)
                    x = scheduler.add_noise(original_samples=torch.zeros_like(noise), noise=noise, timesteps=t0)
                for s, t in enumerate(timesteps):
                    out = self._denoise_pixels(model, x, t, cond)
                    x = torch.cat(
                        [scheduler.step(out[i : i + 1], t, x[i : i + 1], **step_kwargs[i])[0] for i in range(batch)]
                    )
                    if bar is not None:
                        bar.set_postfix_str(f"sample {k + 1}/{self.num_samples} step {s + 1}/{len(timesteps)}",
                                            refresh=False)  # fmt: skip
                        bar.update(1)
                image = model.compose(base, x)
                draws.append(image.clamp(-1, 1))
        finally:
            if bar is not None:
                bar.close()
        return torch.stack(draws)
