"""Low-frequency enhanced noise for diffusion training (LPUWF-LDM's offset noise and a multi-scale variant)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.utils import look_up_option

__all__ = ["LowFrequencyEnhancedNoise"]

_MODES = ("offset", "pyramid")


class LowFrequencyEnhancedNoise:
    """Gaussian noise plus a scaled low-frequency component, drawn like a given tensor.

    A diffusion model trained on plain Gaussian noise never learns to change the mean brightness of an image
    much (the lowest frequencies keep most of their signal up to the last step). LPUWF-LDM adds a per-sample,
    per-channel constant ("offset noise") so that the model can produce the dark late-phase background.

    - ``mode="offset"`` (the authors'): ``eps + scale * o`` with ``o`` of shape ``(B, C, 1, ..., 1)``.
    - ``mode="pyramid"``: ``eps + scale * sum_{i=1..L} discount ** (i - 1) * up(eps_i)`` where ``eps_i`` is
      Gaussian noise on a grid ``2 ** i`` times coarser, upsampled with ``interp_mode``; ``L`` defaults to the
      number of halvings that reach one pixel, so the last level is the offset term.

    ``scale=0`` gives standard Gaussian noise. Every component is N(0, 1) per element, so the expected
    power of the DC coefficient of the N-point FFT is ``N * (1 + scale**2 * N)`` for the offset form and
    ``N * (1 + scale**2 * sum_i discount ** (2 (i - 1)) * 2 ** (i * D))`` for the pyramid with nearest
    upsampling on sizes divisible by ``2 ** L`` (D = spatial dims): the low-frequency power gained grows with
    ``scale ** 2`` and nothing else changes. Works for any number of spatial dimensions.

    Args:
        scale: weight of the low-frequency component (0.1 in the paper).
        mode: ``"offset"`` or ``"pyramid"``.
        discount: per-level weight ratio of the pyramid (finer levels weigh more).
        levels: number of pyramid levels; ``None`` = down to a single pixel.
        interp_mode: upsampling of the pyramid levels (``"nearest"``, ``"bilinear"``, ``"trilinear"``...).

    Example::

        noise = LowFrequencyEnhancedNoise(scale=0.1)(latents)  # same shape, dtype and device as latents
    """

    def __init__(
        self,
        scale: float = 0.1,
        mode: str = "offset",
        discount: float = 0.8,
        levels: int | None = None,
        interp_mode: str = "nearest",
    ) -> None:
        if scale < 0:
            raise ValueError(f"scale must be >= 0, got {scale}.")
        if levels is not None and levels < 1:
            raise ValueError(f"levels must be >= 1 or None, got {levels}.")
        self.scale = float(scale)
        self.mode = look_up_option(mode, _MODES)
        self.discount = float(discount)
        self.levels = levels
        self.interp_mode = interp_mode

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(scale={self.scale}, mode={self.mode!r}, discount={self.discount}, "
            f"levels={self.levels})"
        )

    @staticmethod
    def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else like.device
        return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)

    def __call__(self, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """
        Args:
            like: tensor (B, C, *spatial) whose shape, dtype and device the noise takes (e.g. the latents).
            generator: optional random generator for reproducible noise.

        Returns:
            noise of the shape of ``like``.
        """
        if like.ndim < 3:
            raise ValueError(f"expected a (B, C, *spatial) tensor, got shape {tuple(like.shape)}.")
        noise = self._randn(like.shape, like, generator)
        if self.scale == 0:
            return noise
        batch, channels, spatial = like.shape[0], like.shape[1], tuple(like.shape[2:])
        if self.mode == "offset":
            return noise + self.scale * self._randn((batch, channels) + (1,) * len(spatial), like, generator)
        max_levels = max(1, math.ceil(math.log2(max(spatial))))
        levels = max_levels if self.levels is None else min(self.levels, max_levels)
        for i in range(1, levels + 1):
            coarse = tuple(max(1, math.ceil(s / 2**i)) for s in spatial)
            low = self._randn((batch, channels) + coarse, like, generator)
            if self.interp_mode == "nearest" and all(s % c == 0 for s, c in zip(spatial, coarse)):
                for dim, (s, c) in enumerate(zip(spatial, coarse)):  # exact block replication
                    low = low.repeat_interleave(s // c, dim=dim + 2)
            else:
                low = F.interpolate(low, size=spatial, mode=self.interp_mode)
            noise = noise + self.scale * self.discount ** (i - 1) * low
        return noise
