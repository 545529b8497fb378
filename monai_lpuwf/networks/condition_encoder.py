"""Gated Convolutional Encoder of LPUWF-LDM: SLO features, one gated map per decoder resolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from monai.utils import ensure_tuple
from torch import nn

__all__ = ["GatedConditionEncoder"]


class GatedConditionEncoder(nn.Module):
    """Encode a conditioning image (the UWF-SLO) into gated feature maps for a conditional decoder.

    Level ``i`` holds a convolution to ``channels[i]`` channels (3x3 stride 1 at level 0, 4x4 stride 2 after,
    so level ``i`` has the resolution of the image divided by ``2 ** i``: the resolutions of an
    :class:`monai.networks.nets.AutoencoderKL` built with the same ``channels``) and a 3x3 gate convolution.
    The feature map of a level is ``x * sigmoid(gate(x))``; ``relu(x)`` is passed to the next level.
    All convolutions start at zero, so an untrained encoder yields all-zero features and leaves the decoder
    unchanged.

    The parameter names (``layers.{i}``, ``gated_cnns.{i}``) are those of the authors' ``MaskConditionEncoder``
    (``Tinysqua/LPUWF-LDM``, ``my_vqvae/conditional_encoder.py``); their unused ``adjust_chs`` convolutions
    are left out (see :func:`monai_lpuwf.networks.load_monai_generative_state_dict`).

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: channels of the conditioning image (3 for the RGB SLO).
        channels: feature channels per level, the autoencoder's ``channels`` (e.g. ``(128, 256, 512)``).

    Example::

        enc = GatedConditionEncoder(2, 3, (128, 256, 512))
        feats = enc(torch.randn(1, 3, 512, 512))  # shapes (1,128,512,512), (1,256,256,256), (1,512,128,128)
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        channels = ensure_tuple(channels)
        if len(channels) < 1:
            raise ValueError("GatedConditionEncoder needs at least one level in `channels`.")
        conv_type = Conv[Conv.CONV, spatial_dims]
        layers, gates = [], []
        prev = in_channels
        for level, ch in enumerate(channels):
            if level == 0:
                layers.append(conv_type(prev, ch, kernel_size=3, stride=1, padding=1))
            else:
                layers.append(conv_type(prev, ch, kernel_size=4, stride=2, padding=1))
            gates.append(conv_type(ch, ch, kernel_size=3, stride=1, padding=1))
            prev = ch
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.channels = channels
        self.layers = nn.ModuleList(layers)
        self.gated_cnns = nn.ModuleList(gates)
        for p in self.parameters():
            nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """
        Args:
            x: conditioning image (B, in_channels, *spatial), spatial sizes divisible by ``2 ** (len(channels) - 1)``.

        Returns:
            list of ``len(channels)`` gated feature maps, finest first: level ``i`` is
            (B, channels[i], *spatial / 2 ** i).
        """
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"GatedConditionEncoder expects {self.in_channels} condition channels (the SLO), got input of shape "
                f"{tuple(x.shape)}."
            )
        features = []
        for layer, gate in zip(self.layers, self.gated_cnns):
            x = layer(x)
            features.append(x * torch.sigmoid(gate(x)))
            x = torch.relu(x)
        return features
