"""Cross-temporal Regional Difference (CTRD) loss of LPUWF-LDM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["CTRDLoss"]


class CTRDLoss(_Loss):
    """Noise-prediction MSE plus an extra weight where the early and late phases differ (the lesions).

    ``loss = MSE(pred, target) + alpha * mean(W * (pred - target) ** 2)`` where ``W`` is the cross-temporal
    difference map (e.g. ``|early - late|``, :class:`monai_lpuwf.transforms.CrossTemporalDifferenced`) given at
    image resolution and resized to the latent grid with area averaging (each latent cell gets the mean of the
    pixels it covers; the authors' nearest-neighbour resizing, ``interp_mode="nearest"``, samples one pixel).
    Per element this is ``(1 + alpha * W) * (pred - target) ** 2``; a one-channel ``W`` applies to all latent
    channels. With a field-of-view ``mask`` (image resolution, {0, 1}; area-resized too, so border cells count
    by the fraction of their pixels inside) the mean runs over the masked elements only.

    Caution with ``mask`` for diffusion training: latents outside the mask get no gradient at all, yet the
    sampler denoises the whole latent grid. Measured on a small model whose last stage was trained with the
    field-of-view mask: noise-prediction MSE 0.013 inside the field of view and 0.29 outside (t = 900), and
    DDIM sampling with ``clip_sample=False`` diverged from the untrained border. The authors do not mask
    (``mask=None``, the default here).

    Args:
        alpha: weight of the regional term (0.25 in the paper).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (element-wise map, shaped like ``pred``; masked
            elements are 0) as MONAI losses.
        interp_mode: resizing of ``weight_map`` and ``mask`` to the latent grid (``"area"``, or e.g.
            ``"nearest"`` to reproduce the authors' code, ``"bilinear"`` with antialiasing).

    Example::

        loss = CTRDLoss()(noise_pred, noise, weight_map=batch["ctrd"])  # noise_pred (B,4,h,w), ctrd (B,1,H,W)
    """

    def __init__(
        self, alpha: float = 0.25, reduction: LossReduction | str = LossReduction.MEAN, interp_mode: str = "area"
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}.")
        self.alpha = float(alpha)
        self.interp_mode = interp_mode

    def _to_latent_grid(self, x: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
        if x.ndim != like.ndim or x.shape[0] != like.shape[0] or x.shape[1] not in (1, like.shape[1]):
            raise ValueError(
                f"{name} of shape {tuple(x.shape)} does not fit predictions of shape {tuple(like.shape)}: expected "
                f"(B, 1 or {like.shape[1]}, *spatial) with the same batch size and number of spatial dims."
            )
        x = x.to(dtype=like.dtype, device=like.device)
        if x.shape[2:] == like.shape[2:]:
            return x
        if self.interp_mode in ("bilinear", "bicubic"):
            return F.interpolate(x, size=like.shape[2:], mode=self.interp_mode, antialias=True, align_corners=False)
        return F.interpolate(x, size=like.shape[2:], mode=self.interp_mode)

    def forward(
        self,
        input: torch.Tensor,
        target: torch.Tensor,
        weight_map: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            input: predicted noise (B, C, *latent_spatial).
            target: true noise, same shape.
            weight_map: cross-temporal difference map (B, 1 or C, *spatial) at image or latent resolution,
                ``>= 0``; ``None`` = plain MSE.
            mask: field of view (B, 1 or C, *spatial), optional.

        Returns:
            the loss (a scalar for ``"mean"``/``"sum"``, shaped like ``input`` for ``"none"``).
        """
        if input.shape != target.shape:
            raise ValueError(f"input {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape.")
        error = (input - target) ** 2
        if weight_map is not None:
            error = error * (1 + self.alpha * self._to_latent_grid(weight_map, input, "weight_map"))
        if mask is None:
            if self.reduction == LossReduction.MEAN.value:
                return error.mean()
            return error.sum() if self.reduction == LossReduction.SUM.value else error
        m = self._to_latent_grid(mask, input, "mask").expand_as(error)
        error = error * m
        if self.reduction == LossReduction.MEAN.value:
            return error.sum() / m.sum().clamp_min(torch.finfo(error.dtype).eps)
        return error.sum() if self.reduction == LossReduction.SUM.value else error
