"""``prepare_batch`` callables for the LPUWF-LDM training stages.

They follow :class:`monai.engines.PrepareBatch`: called as ``prepare_batch(batchdata, device, non_blocking,
**kwargs)`` by a MONAI engine and return ``(inputs, targets, args, kwargs)``.

- :class:`AutoencoderPrepareBatch` (stages 1 and 2): one FA phase per batch (the authors pick early or late at
  random for every batch) as input and target, plus the SLO as the decoder condition when asked.
- :class:`LatentDiffusionPrepareBatch` (stages 3 and 4): encodes the FA phase with the frozen autoencoder into
  *scaled* latents and draws latent-shaped noise (low-frequency enhanced, see
  :class:`monai_lpuwf.noise.LowFrequencyEnhancedNoise`) and timesteps. MONAI's
  :class:`~monai.engines.DiffusionPrepareBatch` draws image-sized noise and has no slot for a ControlNet
  condition; this class keeps its ``get_noise`` / ``get_timesteps`` / ``get_target`` hooks and adds both.
- :class:`ResidualDiffusionPrepareBatch` (the residual method): the same hooks on the residual between the late
  phase and a :class:`~monai_lpuwf.networks.ResidualDiffusionModel`'s prior prediction, in pixel space.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch, PrepareBatch
from monai.utils import convert_to_tensor, ensure_tuple, look_up_option

from monai_lpuwf.keys import UWFKeys

__all__ = [
    "AutoencoderPrepareBatch",
    "LatentDiffusionPrepareBatch",
    "PREDICTION_TYPES",
    "ResidualDiffusionPrepareBatch",
    "get_batch_item",
]

#: denoiser targets, named as MONAI's schedulers name them (``prediction_type``)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def get_batch_item(
    batchdata: Mapping[str, Any],
    key: str,
    device: str | torch.device | None,
    non_blocking: bool = False,
    keep_meta: bool = False,
    **kwargs,
) -> torch.Tensor:
    """``batchdata[key]`` on ``device`` as a plain tensor (a MetaTensor's metadata dropped unless ``keep_meta``), with
    an error naming the key and the keys present when missing.

    Training steps take plain tensors (``keep_meta=False``): every operation on a :class:`~monai.data.MetaTensor`
    goes through its ``__torch_function__`` (metadata bookkeeping), a fixed cost per operation that made a training
    step of the small preset 15-20 ms slower (measured on a CPU; on a GPU that cost is not hidden behind the
    kernels). Generation keeps the metadata (``keep_meta=True``: the file names for the writer, the applied
    transforms for :class:`~monai.transforms.Invertd`).
    """
    if not isinstance(batchdata, Mapping):
        raise TypeError(f"expected a dictionary batch (keys such as {UWFKeys.SLO!r}), got {type(batchdata).__name__}.")
    if key not in batchdata:
        raise KeyError(
            f"batch has no key {key!r} (keys present: {sorted(batchdata)}); check the datalist and the transforms, "
            f"e.g. stage 4 needs {UWFKeys.LATE!r} and {UWFKeys.CTRD!r} (uwf_train_transforms(with_late=True))."
        )
    item = batchdata[key] if keep_meta else convert_to_tensor(batchdata[key], track_meta=False)
    return torch.as_tensor(item).to(device=device, non_blocking=non_blocking, **kwargs)


class AutoencoderPrepareBatch(PrepareBatch):
    """Batch for the autoencoder stages: ``(fa, fa, (), {"cond": slo})``.

    Args:
        image_keys: FA keys to train on. With several keys, one is drawn per batch from the global torch
            generator (reproducible under :class:`~monai_lpuwf.engines.DeterministicSeedHandler`), as the authors
            draw early or late phase per batch.
        condition_key: key of the SLO passed to the decoder as ``cond`` (stage 2), or ``None`` (stage 1).

    Returns (from ``__call__``):
        ``fa`` (B, 1, H, W) twice (input and target), no positional arguments, and ``{"cond": slo (B, 3, H, W)}``
        or ``{}``.
    """

    def __init__(
        self, image_keys: str | Sequence[str] = (UWFKeys.EARLY, UWFKeys.LATE), condition_key: str | None = None
    ):
        self.image_keys = ensure_tuple(image_keys)
        if not self.image_keys:
            raise ValueError("image_keys must name at least one FA key, e.g. ('early', 'late').")
        self.condition_key = condition_key

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        index = int(torch.randint(len(self.image_keys), (1,)).item()) if len(self.image_keys) > 1 else 0
        images = get_batch_item(batchdata, self.image_keys[index], device, non_blocking, **kwargs)
        extra = {}
        if self.condition_key is not None:
            extra["cond"] = get_batch_item(batchdata, self.condition_key, device, non_blocking, **kwargs)
        return images, images, (), extra


class LatentDiffusionPrepareBatch(DiffusionPrepareBatch):
    """Batch for the latent diffusion stages: scaled FA latents, latent-shaped noise, timesteps and the SLO.

    Args:
        num_train_timesteps: number of diffusion training timesteps; timesteps are drawn uniformly in
            ``[0, num_train_timesteps)``.
        encoder: callable ``fa (B, 1, H, W) -> scaled latents (B, C, H/f, W/f)``, normally
            ``LPUWFModel.encode_latents`` (it multiplies by the model's ``scale_factor``). Run under
            ``torch.no_grad``: the autoencoder is frozen in these stages.
        image_key: FA phase to encode: ``"early"`` (stage 3) or ``"late"`` (stage 4).
        condition_key: key of the full-resolution SLO given to the ControlNet.
        noise: callable ``noise(like) -> tensor`` of the same shape, e.g.
            :class:`monai_lpuwf.noise.LowFrequencyEnhancedNoise`; ``None`` = standard Gaussian noise.
        weight_key: key of a weight map (the CTRD map, image resolution) passed on as ``weight_map`` (stage 4).
        mask_key: key of a field-of-view mask passed on as ``mask``.
        prediction_type: what the denoiser learns to output, as MONAI's schedulers name it: ``"epsilon"`` (the
            noise; the paper), ``"v_prediction"`` (the velocity ``sqrt(a) * noise - sqrt(1 - a) * z``, Salimans &
            Ho 2022; MONAI's :class:`~monai.engines.VPredictionPrepareBatch`) or ``"sample"`` (the clean latents).
            It must match the sampler's scheduler: keep it in the model's ``schedule`` (``LPUWFModel.schedule``),
            which both read.
        scheduler: the training noise scheduler; needed for ``"v_prediction"`` (its ``get_velocity``).

    Returns (from ``__call__``):
        ``(latents, target, (), kwargs)`` where ``target`` is the noise, the velocity or the latents (see
        ``prediction_type``) and ``kwargs`` holds
        ``noise``, ``timesteps`` (B,), ``condition`` (the SLO, (B, 3, H, W)) and, when configured,
        ``weight_map`` (B, 1, H, W) and ``mask`` (B, 1, H, W).
    """

    def __init__(
        self,
        num_train_timesteps: int,
        encoder: Callable[[torch.Tensor], torch.Tensor],
        image_key: str = UWFKeys.EARLY,
        condition_key: str = UWFKeys.SLO,
        noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
        weight_key: str | None = None,
        mask_key: str | None = None,
        prediction_type: str = "epsilon",
        scheduler: Any = None,
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, condition_name=condition_key)
        self.prediction_type = look_up_option(prediction_type, PREDICTION_TYPES)
        if self.prediction_type == "v_prediction" and scheduler is None:
            raise ValueError("prediction_type='v_prediction' needs the training noise scheduler (scheduler=...).")
        self.scheduler = scheduler
        self.encoder = encoder
        self.image_key = image_key
        self.noise = noise
        self.weight_key = weight_key
        self.mask_key = mask_key

    def get_noise(self, images: torch.Tensor) -> torch.Tensor:
        """Latent-shaped noise: the configured generator, or standard Gaussian noise."""
        return torch.randn_like(images) if self.noise is None else self.noise(images)

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The regression target of ``prediction_type`` for clean latents ``images``."""
        if self.prediction_type == "v_prediction":
            return self.scheduler.get_velocity(images, noise, timesteps)
        if self.prediction_type == "sample":
            return images
        return noise

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        images = get_batch_item(batchdata, self.image_key, device, non_blocking, **kwargs)
        with torch.no_grad():
            latents = self.encoder(images).detach()
        noise = self.get_noise(latents)
        timesteps = self.get_timesteps(latents)
        target = self.get_target(latents, noise, timesteps)
        infer_kwargs: dict[str, Any] = {
            "noise": noise,
            "timesteps": timesteps,
            "condition": get_batch_item(batchdata, self.condition_name, device, non_blocking, **kwargs),
        }
        if self.weight_key is not None:
            infer_kwargs["weight_map"] = get_batch_item(batchdata, self.weight_key, device, non_blocking, **kwargs)
        if self.mask_key is not None:
            infer_kwargs["mask"] = get_batch_item(batchdata, self.mask_key, device, non_blocking, **kwargs)
        return latents, target, (), infer_kwargs


class ResidualDiffusionPrepareBatch(LatentDiffusionPrepareBatch):
    """Batch for diffusion on the prior's residual (:class:`~monai_lpuwf.networks.ResidualDiffusionModel`).

    The clean sample is ``x0 = (late - prior(slo)) * residual_scale`` (:meth:`ResidualDiffusionModel.residual_target`,
    the prior frozen and run under ``torch.no_grad``); noise, timesteps and the target (``prediction_type``) come
    from :class:`LatentDiffusionPrepareBatch`'s hooks, so :class:`~monai_lpuwf.engines.LatentDiffusionTrainer` trains
    it unchanged. The denoiser's condition is ``cat([slo, prior(slo)])``.

    Args:
        num_train_timesteps, noise, weight_key, mask_key, prediction_type, scheduler: as
            :class:`LatentDiffusionPrepareBatch`.
        model: the :class:`~monai_lpuwf.networks.ResidualDiffusionModel` (or a DDP wrapper of it).
        image_key: the FA phase the residual is taken of (``"late"``).
        condition_key: the SLO key.
        flip_average: take the residual of (and condition on) the prior's flip-averaged prediction
            (:meth:`~monai_lpuwf.networks.SupervisedPrior.predict`, four prior passes per batch): the base the model
            is then sampled from with ``flip_average=True``, so that it learns what the average misses.

    Returns (from ``__call__``):
        ``(x0 (B, 1, H, W), target, (), kwargs)`` with ``noise``, ``timesteps``, ``condition`` (B, 4, H, W) and, when
        configured, ``weight_map`` and ``mask``.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        model: Any,
        image_key: str = UWFKeys.LATE,
        condition_key: str = UWFKeys.SLO,
        noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
        weight_key: str | None = None,
        mask_key: str | None = None,
        prediction_type: str = "sample",
        scheduler: Any = None,
        flip_average: bool = False,
    ) -> None:
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            encoder=lambda x: x,
            image_key=image_key,
            condition_key=condition_key,
            noise=noise,
            weight_key=weight_key,
            mask_key=mask_key,
            prediction_type=prediction_type,
            scheduler=scheduler,
        )
        self.model = getattr(model, "module", model)
        self.flip_average = bool(flip_average)

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        late = get_batch_item(batchdata, self.image_key, device, non_blocking, **kwargs)
        slo = get_batch_item(batchdata, self.condition_name, device, non_blocking, **kwargs)
        with torch.no_grad():
            base, condition = self.model.condition(slo, flip_average=self.flip_average)
            x0 = self.model.residual_target(late, base).detach()
        noise = self.get_noise(x0)
        timesteps = self.get_timesteps(x0)
        infer_kwargs: dict[str, Any] = {
            "noise": noise,
            "timesteps": timesteps,
            "condition": condition.detach(),
        }
        if self.weight_key is not None:
            infer_kwargs["weight_map"] = get_batch_item(batchdata, self.weight_key, device, non_blocking, **kwargs)
        if self.mask_key is not None:
            infer_kwargs["mask"] = get_batch_item(batchdata, self.mask_key, device, non_blocking, **kwargs)
        return x0, self.get_target(x0, noise, timesteps), (), infer_kwargs
