"""LPUWFModel: the conditional FA autoencoder, the latent diffusion U-Net and its SLO ControlNet in one module."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.utils import ensure_tuple
from torch import nn

from monai_lpuwf.errors import SettingError

from .autoencoder import ConditionalAutoencoderKL

__all__ = ["LPUWFModel", "check_image_size"]

# U-Net arguments that a ControlNet mirrors ("keep consistent with the diffusion model")
_CONTROLNET_ARGS = frozenset(inspect.signature(ControlNet).parameters)


class LPUWFModel(nn.Module):
    """LPUWF-LDM (Fang et al., arXiv 2409.00726) as one module with one state dict.

    Holds ``autoencoder`` (:class:`ConditionalAutoencoderKL`: FA autoencoder + gated SLO encoder), ``unet``
    (:class:`monai.networks.nets.DiffusionModelUNet` on the latents) and ``controlnet``
    (:class:`monai.networks.nets.ControlNet` that reads the *full-resolution* SLO through its conditioning
    embedding, whose ``len(conditioning_embedding_num_channels) - 1`` stride-2 convolutions bring it to the
    latent grid), plus the buffer ``scale_factor`` (latents are multiplied by it before diffusion).
    ``LPUWFModel(**model.config)`` rebuilds the same architecture, so a checkpoint holding ``config`` and
    ``state_dict()`` is self-describing. Presets: :func:`monai_lpuwf.networks.build_model`.

    MONAI's :class:`~monai.inferers.ControlNetLatentDiffusionInferer` interpolates the condition down to the
    latent size before the ControlNet, which discards vessel detail; :meth:`denoise` does not.

    Attention runs through PyTorch's ``scaled_dot_product_attention`` (MONAI's ``use_flash_attention=True``)
    unless a section sets ``use_flash_attention=False``: the same function without materialising the
    (tokens x tokens) attention matrix. The autoencoder's non-local attention sits at latent resolution, so
    decoding a whole 853 x 682 frame (216 x 176 latents, 38016 tokens) would otherwise allocate a 5.8 GB matrix
    (timings: ``bundle/docs/README.md``). This default is not written into :attr:`config`.

    Args:
        spatial_dims: 2 (or 3).
        image_channels: channels of the generated FA image (1).
        condition_channels: channels of the SLO (3).
        autoencoder: keyword arguments of :class:`ConditionalAutoencoderKL` (``channels``, ``latent_channels``,
            ``num_res_blocks``, ``attention_levels``, ``norm_num_groups``, ``include_fc``, ...).
        unet: keyword arguments of :class:`~monai.networks.nets.DiffusionModelUNet` other than the spatial
            dims and in/out channels (which are the latent channels).
        controlnet: keyword arguments of :class:`~monai.networks.nets.ControlNet` on top of those it shares
            with ``unet``, typically ``conditioning_embedding_num_channels``.
        scale_factor: initial latent scale factor (the paper uses 0.18215; computed from data otherwise).
        schedule: the training noise schedule, keyword arguments of MONAI's schedulers
            (``num_train_timesteps``, ``schedule``, ``beta_start``, ``beta_end``); kept here so that training
            and sampling use the same one (see :attr:`schedule`).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        image_channels: int = 1,
        condition_channels: int = 3,
        autoencoder: Mapping[str, Any] | None = None,
        unet: Mapping[str, Any] | None = None,
        controlnet: Mapping[str, Any] | None = None,
        scale_factor: float = 1.0,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        ae_kw = dict(autoencoder or {})
        unet_kw = dict(unet or {})
        cn_kw = dict(controlnet or {})
        self._config = copy.deepcopy(
            {
                "spatial_dims": spatial_dims,
                "image_channels": image_channels,
                "condition_channels": condition_channels,
                "autoencoder": ae_kw,
                "unet": unet_kw,
                "controlnet": cn_kw,
                "schedule": dict(schedule or {"num_train_timesteps": 1000, "schedule": "linear_beta"}),
            }
        )
        # a compute choice, not part of the architecture (same weights, same outputs up to rounding): not recorded
        # in `config`, so checkpoints compare equal whichever attention kernel they were trained with
        ae_kw.setdefault("use_flash_attention", True)
        unet_kw.setdefault("use_flash_attention", True)
        self.autoencoder = ConditionalAutoencoderKL(
            spatial_dims=spatial_dims,
            in_channels=image_channels,
            out_channels=image_channels,
            condition_in_channels=condition_channels,
            **ae_kw,
        )
        latent_channels = self.autoencoder.latent_channels
        self.unet = DiffusionModelUNet(
            spatial_dims=spatial_dims, in_channels=latent_channels, out_channels=latent_channels, **unet_kw
        )
        shared = {k: v for k, v in unet_kw.items() if k in _CONTROLNET_ARGS}
        self.controlnet = ControlNet(
            spatial_dims=spatial_dims,
            in_channels=latent_channels,
            conditioning_embedding_in_channels=condition_channels,
            **{**shared, **cn_kw},
        )
        embed_channels = self.controlnet.controlnet_cond_embedding.blocks
        embed_factor = 2 ** (len(embed_channels) // 2)
        if embed_factor != self.downsample_factor:
            raise ValueError(
                f"the ControlNet conditioning embedding downsamples the SLO by {embed_factor} but the autoencoder by "
                f"{self.downsample_factor}: give controlnet['conditioning_embedding_num_channels'] "
                f"{len(self.autoencoder.channels)} entries (as many as autoencoder['channels'])."
            )
        self.register_buffer("scale_factor", torch.tensor(float(scale_factor)))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LPUWFModel:
        """Rebuild a model from :attr:`config` (weights are not included: load ``state_dict`` after)."""
        return cls(**copy.deepcopy(dict(config)))

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture (``scale_factor`` = the buffer's current value)."""
        cfg = copy.deepcopy(self._config)
        cfg["scale_factor"] = float(self.scale_factor)
        return cfg

    @property
    def schedule(self) -> dict[str, Any]:
        """The training noise schedule, e.g. ``DDPMScheduler(**model.schedule)``."""
        return copy.deepcopy(self._config["schedule"])

    @property
    def downsample_factor(self) -> int:
        """Image size / latent size: ``2 ** (len(autoencoder channels) - 1)``."""
        return self.autoencoder.downsample_factor

    @property
    def size_divisor(self) -> int:
        """Image sizes the whole model accepts are multiples of this: ``downsample_factor`` times the U-Net's
        own factor ``2 ** (len(unet channels) - 1)`` (32 for the paper preset)."""
        return self.downsample_factor * 2 ** (len(self.unet.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.autoencoder.latent_channels)

    def encode_latents(self, fa: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Scaled latents of an FA image.

        Args:
            fa: FA image (B, image_channels, *spatial) in [-1, 1].
            sample: draw ``z_mu + eps * z_sigma`` (as ``encode_stage_2_inputs`` and the authors) or use ``z_mu``.

        Returns:
            ``z * scale_factor``, (B, latent_channels, *spatial / downsample_factor).
        """
        if sample:
            z = self.autoencoder.encode_stage_2_inputs(fa)
        else:
            z, _ = self.autoencoder.encode(fa)
        return z * self.scale_factor

    def decode_latents(self, z_scaled: torch.Tensor, slo: torch.Tensor | None) -> torch.Tensor:
        """FA image from scaled latents, decoded with the gated SLO features (``slo=None``: without).

        Args:
            z_scaled: (B, latent_channels, *latent_spatial).
            slo: (B, condition_channels, *latent_spatial * downsample_factor) or ``None``.
        """
        return self.autoencoder.decode_stage_2_outputs(z_scaled / self.scale_factor, cond=slo)

    def denoise(
        self, x_t: torch.Tensor, timesteps: torch.Tensor, slo: torch.Tensor, conditioning_scale: float = 1.0
    ) -> torch.Tensor:
        """Diffusion model output (the predicted noise) for noisy latents, steered by the full-resolution SLO.

        Args:
            x_t: noisy scaled latents (B, latent_channels, *latent_spatial).
            timesteps: (B,) integer timesteps.
            slo: (B, condition_channels, *latent_spatial * downsample_factor), full resolution.
            conditioning_scale: multiplier of the ControlNet residuals.
        """
        expected = tuple(s * self.downsample_factor for s in x_t.shape[2:])
        if tuple(slo.shape[2:]) != expected:
            raise ValueError(
                f"the SLO must have the full image size {expected} for latents of shape {tuple(x_t.shape)}, got "
                f"{tuple(slo.shape)}; do not resize it to the latent grid."
            )
        down, mid = self.controlnet(
            x=x_t, timesteps=timesteps, controlnet_cond=slo, conditioning_scale=conditioning_scale
        )
        return self.unet(
            x=x_t, timesteps=timesteps, down_block_additional_residuals=down, mid_block_additional_residual=mid
        )

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, slo: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`denoise` (so that wrappers such as DDP see the diffusion pass)."""
        return self.denoise(x_t, timesteps, slo)


def check_image_size(network: nn.Module, image_size: Any, option: str = "--image_size") -> tuple[int, ...]:
    """A training crop size the whole model can take: every side a multiple of ``network.size_divisor``.

    Checked when a training stage starts (stage 1 already): the autoencoder alone takes multiples of its own
    ``downsample_factor``, so without this check a size such as 100 would train stages 1 and 2 and only fail in
    stage 3, inside the U-Net, with "Sizes of tensors must match".

    Args:
        network: an :class:`LPUWFModel` (or a wrapper with a ``module`` attribute, e.g. DDP).
        image_size: an int (a square) or one int per spatial side.
        option: the setting's name in messages.

    Returns:
        the size as a tuple of ints.

    Raises:
        SettingError: a side is not a positive multiple of the divisor, naming the nearest valid sizes.
    """
    model = getattr(network, "module", network)
    divisor = int(model.size_divisor)
    size = tuple(int(s) for s in ensure_tuple(image_size))
    bad = [s for s in size if s <= 0 or s % divisor]
    if bad:
        down = [max(divisor, s // divisor * divisor) for s in size]
        up = [max(divisor, -(-s // divisor) * divisor) for s in size]
        raise SettingError(
            f"{option} {list(size)}: {bad[0]} is not a multiple of {divisor}, the size divisor of this network (the "
            f"autoencoder shrinks images {model.downsample_factor} x, the U-Net halves the latents "
            f"{len(model.unet.block_out_channels) - 1} times); stage 3 would stop on it with 'Sizes of tensors must "
            f"match'. Use {option} {down if down != up else up}" + (f" or {up}" if down != up else "") + "."
        )
    return size
