"""A tiny, untrained LPUWF-LDM: the small preset's topology at toy widths, for demos and tests.

One definition for the apps' demo model (``apps/demo_model.py``) and the test fixtures (inferers, bundle
inference, export). Its output is noise shaped by the SLO, never an angiogram.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .model import LPUWFModel
from .presets import build_model

__all__ = ["SLO_PATH", "TINY_OVERRIDES", "build_tiny_model"]

# the small preset's topology (size divisor 32) at a fraction of its widths: a full 853 x 682 frame takes about a
# second per sampling step on one CPU core
TINY_OVERRIDES: dict[str, Any] = {
    "autoencoder": {"channels": (8, 8, 16), "norm_num_groups": 4},
    "unet": {"channels": (8, 8, 16, 16), "norm_num_groups": 4, "num_head_channels": 8},
    "controlnet": {"conditioning_embedding_num_channels": (4, 8, 8)},
    "scale_factor": 0.5,
}
# the parts MONAI and LPUWF-LDM zero-initialise that carry the SLO and the noise into the output
SLO_PATH = ("autoencoder.condition_encoder", "controlnet", "unet")


def build_tiny_model(
    seed: int = 0,
    weight_seed: int | None = None,
    randomize: Sequence[str] = SLO_PATH,
    weight_std: float = 0.05,
    **overrides: Any,
) -> LPUWFModel:
    """The small preset at :data:`TINY_OVERRIDES` widths, in eval mode, with random instead of zero weights.

    The gated SLO encoder, the ControlNet and the U-Net's output layer start at zero in training, which would make
    an untrained model ignore its input (and, with the small preset's clean-latent prediction, its noise too);
    their all-zero parameters are replaced by ``N(0, weight_std)`` draws so that the output depends on the SLO and
    on the sampling seed. The global torch generator is left as it was.

    Args:
        seed: seed of the initialisation of :func:`build_model`.
        weight_seed: seed of the replacement weights (default ``seed + 1``).
        randomize: sub-modules (``model.get_submodule`` names, ``""`` for the whole model) whose all-zero
            parameters are drawn, in this order: :data:`SLO_PATH`, or e.g. ``("unet.out",)`` for the U-Net's
            output convolution only.
        weight_std: standard deviation of the replacement weights.
        overrides: on top of :data:`TINY_OVERRIDES` (section dicts merged), as :func:`build_model`'s, e.g.
            ``schedule={"prediction_type": "epsilon"}``.

    Returns:
        an :class:`LPUWFModel` in eval mode.
    """
    config = dict(TINY_OVERRIDES)
    for key, value in overrides.items():
        base = config.get(key)
        config[key] = {**base, **value} if isinstance(base, Mapping) and isinstance(value, Mapping) else value
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("small", **config).eval()
    generator = torch.Generator().manual_seed(seed + 1 if weight_seed is None else weight_seed)
    with torch.no_grad():
        for name in randomize:
            for p in model.get_submodule(name).parameters():
                if float(p.abs().max()) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=generator) * weight_std)
    return model
