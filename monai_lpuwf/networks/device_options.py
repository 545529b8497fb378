"""Compute options for an accelerator that keep the architecture and the state dict: memory format and norms.

- **channels-last** (``torch.channels_last``): convolution weights in NHWC order, so cuDNN runs its tensor-core
  kernels without transposing every activation (PyTorch picks the channels-last kernel when the weight is
  channels-last);
- **GroupNorm in bfloat16 under autocast** (:class:`AutocastGroupNorm`): PyTorch's autocast runs ``group_norm``
  in float32, so every normalisation of a U-Net/autoencoder block casts its bfloat16 input up and its output
  down again: two extra passes over the largest activations for each of the networks' ~100 norms. The native
  kernel accumulates the statistics in float32 whatever the input dtype, so running it on the bfloat16 tensor is
  safe (only its output is rounded to bfloat16, as the next convolution's input is anyway). float16 keeps
  PyTorch's float32 norm (its narrow range is not safe for unnormalised activations).

Neither changes parameter names or values: checkpoints load and compare as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AutocastGroupNorm", "optimize_for_device"]


class AutocastGroupNorm(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm` that runs in bfloat16 when bfloat16 autocast is on for its input's device.

    Outside autocast (or under float16 autocast) it is exactly ``nn.GroupNorm``. Under bfloat16 autocast the input
    is cast to bfloat16 (a no-op for the bfloat16 output of a convolution), the affine parameters too, and the
    native kernel computes the mean and variance in float32; the output is bfloat16 instead of float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if not torch.is_autocast_enabled(device_type) or torch.get_autocast_dtype(device_type) != torch.bfloat16:
            return super().forward(x)
        dtype = torch.bfloat16
        weight = None if self.weight is None else self.weight.to(dtype)
        bias = None if self.bias is None else self.bias.to(dtype)
        with torch.autocast(device_type, enabled=False):
            return F.group_norm(x.to(dtype), self.num_groups, weight, bias, self.eps)


def optimize_for_device(module: nn.Module, channels_last: bool = False, low_precision_norms: bool = False) -> nn.Module:
    """Set the compute options of ``module`` in place (see the module docstring); returns ``module``.

    Args:
        module: e.g. an :class:`~monai_lpuwf.networks.LPUWFModel` (already on its device, or moved later:
            ``Module.to(device)`` keeps both options).
        channels_last: convert the 4-D parameters and buffers to ``torch.channels_last`` (2-D networks; 3-D
            networks are left as they are).
        low_precision_norms: make every ``nn.GroupNorm`` an :class:`AutocastGroupNorm` (same parameters), so that
            it runs in bfloat16 under bfloat16 autocast. No effect without autocast.

    Returns:
        ``module``, with unchanged parameter names and values.
    """
    if low_precision_norms:
        for sub in module.modules():
            if type(sub) is nn.GroupNorm:
                sub.__class__ = AutocastGroupNorm
    if channels_last:
        module.to(memory_format=torch.channels_last)  # 4-D parameters and buffers only
    return module
