"""A supervised prior and diffusion on its residual: the "predict and refine" generation method.

- :class:`SupervisedPrior`: a deterministic SLO -> late-phase translator (MONAI `BasicUNet`),
  trained with a regression loss. Used alone it is the fast mode: one forward pass per frame.
- :class:`ResidualDiffusionModel`: the prior plus a pixel-space :class:`~monai.networks.nets.DiffusionModelUNet`
  that learns the *residual* ``r = (late - prior(slo)) * residual_scale`` given the SLO and the prior's prediction
  (concatenated to its input), as in "predict and refine" (Whang et al., CVPR 2022) and Resfusion (NeurIPS 2024).
  A generated frame is ``prior(slo) + r / residual_scale``; it cannot collapse to one average picture, because
  the prior follows the input, and a residual of zero gives the prior back exactly.

Why pixel space and not the latent model's autoencoder: on the main job's 64 x 64 phantoms the 4x autoencoder
reconstructs the late phase at 26.0-26.5 dB (vessel pixels 22-23 dB, ``bundle/docs/README.md``), below what the
prior alone reaches, so a latent refinement could only lose detail the prior already has.

Both classes record their architecture in :attr:`config` (with ``"model_class"``), so a model file rebuilds
itself (:func:`model_from_config`).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import BasicUNet, DiffusionModelUNet
from torch import nn

__all__ = ["SupervisedPrior", "ResidualDiffusionModel"]


class SupervisedPrior(nn.Module):
    """Deterministic SLO -> late-phase FA translator on MONAI's :class:`~monai.networks.nets.BasicUNet`.

    Args:
        spatial_dims: 2 (or 3).
        image_channels: channels of the generated FA image (1).
        condition_channels: channels of the SLO (3).
        features: BasicUNet's six feature sizes (four down-sampling levels, so sizes are multiples of 16).
        act, norm, dropout, upsample: as :class:`~monai.networks.nets.BasicUNet`.

    ``forward(slo)``: (B, condition_channels, *spatial) in [-1, 1] -> (B, image_channels, *spatial), not clamped
    (the sampler clamps).
    """

    model_class = "prior"
    #: how :class:`~monai_lpuwf.inferers.LPUWFSampler` generates with this model
    generation_method = "prior"

    def __init__(
        self,
        spatial_dims: int = 2,
        image_channels: int = 1,
        condition_channels: int = 3,
        features: tuple[int, ...] = (16, 16, 32, 64, 128, 16),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        self._config = copy.deepcopy(
            {
                "model_class": self.model_class,
                "spatial_dims": spatial_dims,
                "image_channels": image_channels,
                "condition_channels": condition_channels,
                "features": tuple(features),
                "act": act,
                "norm": norm,
                "dropout": dropout,
                "upsample": upsample,
            }
        )
        self.net = BasicUNet(
            spatial_dims=spatial_dims,
            in_channels=condition_channels,
            out_channels=image_channels,
            features=tuple(features),
            act=act,
            norm=norm,
            dropout=dropout,
            upsample=upsample,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SupervisedPrior:
        """Rebuild from :attr:`config` (load the weights after)."""
        kwargs = {k: v for k, v in copy.deepcopy(dict(config)).items() if k != "model_class"}
        return cls(**kwargs)

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture, plus ``"model_class": "prior"``."""
        return copy.deepcopy(self._config)

    @property
    def size_divisor(self) -> int:
        """Image sizes are multiples of this (BasicUNet halves the size four times)."""
        return 16

    def forward(self, slo: torch.Tensor) -> torch.Tensor:
        return self.net(slo)

    def predict(self, slo: torch.Tensor, flip_average: bool = False) -> torch.Tensor:
        """The prediction for ``slo`` (B, condition_channels, *spatial); with ``flip_average`` the mean over the
        ``2 ** spatial_dims`` flips of the SLO (every combination of spatial axes), each prediction flipped back -
        test-time averaging over the flips training augments with, which makes the prediction exactly
        flip-equivariant, for ``2 ** spatial_dims`` forward passes."""
        if not flip_average:
            return self(slo)
        axes = range(2, slo.ndim)
        subsets = [dims for n in range(len(axes) + 1) for dims in itertools.combinations(axes, n)]
        total = self(slo)
        for dims in subsets[1:]:
            total = total + self(slo.flip(dims)).flip(dims)
        return total / len(subsets)


class ResidualDiffusionModel(nn.Module):
    """A :class:`SupervisedPrior` refined by pixel-space diffusion on its residual, as one module.

    Args:
        prior: keyword arguments of :class:`SupervisedPrior` (its ``config``).
        denoiser: keyword arguments of :class:`~monai.networks.nets.DiffusionModelUNet` other than the spatial
            dims and the in/out channels. Its input is ``cat([r_t, slo, prior(slo)])``
            (``2 * image_channels + condition_channels`` channels), its output the residual's channels.
        schedule: the training noise schedule, keyword arguments of MONAI's schedulers (``num_train_timesteps``,
            ``schedule``, ``prediction_type``...), read by training and sampling alike.
        residual_scale: multiplier of ``late - prior`` (set from data at the start of training,
            :meth:`set_residual_scale`: 1 / std of the residual, so that the diffusion sees unit variance).
        spatial_dims, image_channels, condition_channels: as :class:`SupervisedPrior`.
    """

    model_class = "residual"
    generation_method = "residual"

    def __init__(
        self,
        prior: Mapping[str, Any] | None = None,
        denoiser: Mapping[str, Any] | None = None,
        schedule: Mapping[str, Any] | None = None,
        residual_scale: float = 1.0,
        spatial_dims: int = 2,
        image_channels: int = 1,
        condition_channels: int = 3,
    ) -> None:
        super().__init__()
        prior_kw = {k: v for k, v in dict(prior or {}).items() if k != "model_class"}
        prior_kw.update(spatial_dims=spatial_dims, image_channels=image_channels, condition_channels=condition_channels)
        den_kw = dict(denoiser or {})
        self._config = copy.deepcopy(
            {
                "model_class": self.model_class,
                "spatial_dims": spatial_dims,
                "image_channels": image_channels,
                "condition_channels": condition_channels,
                "prior": prior_kw,
                "denoiser": den_kw,
                "schedule": dict(schedule or {"num_train_timesteps": 1000, "schedule": "linear_beta"}),
            }
        )
        self.prior = SupervisedPrior(**prior_kw)
        den_kw.setdefault("use_flash_attention", True)  # a compute choice, not recorded in `config`
        self.denoiser = DiffusionModelUNet(
            spatial_dims=spatial_dims,
            in_channels=2 * image_channels + condition_channels,
            out_channels=image_channels,
            **den_kw,
        )
        self.register_buffer("residual_scale", torch.tensor(float(residual_scale)))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ResidualDiffusionModel:
        kwargs = {k: v for k, v in copy.deepcopy(dict(config)).items() if k != "model_class"}
        return cls(**kwargs)

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture (``residual_scale`` = the buffer's value)."""
        cfg = copy.deepcopy(self._config)
        cfg["residual_scale"] = float(self.residual_scale)
        return cfg

    @property
    def schedule(self) -> dict[str, Any]:
        return copy.deepcopy(self._config["schedule"])

    @property
    def size_divisor(self) -> int:
        levels = 2 ** (len(self.denoiser.block_out_channels) - 1)
        return self.prior.size_divisor * levels // math.gcd(self.prior.size_divisor, levels)

    @torch.no_grad()
    def condition(self, slo: torch.Tensor, flip_average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prior(slo), cat([slo, prior(slo)]))``: the prior's prediction and the denoiser's condition
        (``flip_average``: the prior's flip-averaged prediction, :meth:`SupervisedPrior.predict`, in both)."""
        was_training = self.prior.training
        self.prior.eval()
        try:
            base = self.prior.predict(slo, flip_average=flip_average)
        finally:
            self.prior.train(was_training)
        return base, torch.cat([slo, base], dim=1)

    def residual_target(self, late: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The diffusion's clean sample: ``(late - base) * residual_scale`` (``base`` = the prior's prediction)."""
        return (late - base) * self.residual_scale

    def compose(self, base: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The generated frame from the prior's prediction and a (scaled) residual: ``base + residual / scale``."""
        return base + residual / self.residual_scale

    def set_residual_scale(self, residuals: torch.Tensor) -> float:
        """Set ``residual_scale`` to ``1 / std`` of unscaled residuals ``late - prior(slo)``; returns it."""
        std = float(residuals.double().std())
        if not std > 0:
            raise ValueError("cannot set the residual scale: the residuals late - prior(slo) are constant.")
        self.residual_scale.fill_(1.0 / std)
        return 1.0 / std

    def denoise(self, x_t: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Denoiser output for noisy residuals ``x_t`` (B, image_channels, *spatial) given the condition
        ``cat([slo, prior(slo)])`` of :meth:`condition` (B, condition_channels + image_channels, *spatial)."""
        return self.denoiser(torch.cat([x_t, condition], dim=1), timesteps)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`denoise` (the module a trainer and DDP call)."""
        return self.denoise(x_t, timesteps, condition)
