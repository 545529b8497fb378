"""LPIPS-style perceptual loss with AlexNet / VGG16 features loaded from local files, never from a hub.

MONAI's :class:`monai.losses.PerceptualLoss` downloads its networks through ``torchvision`` / ``torch.hub`` /
the ``lpips`` package at construction, which fails offline (and there is no CPU ``torchvision`` build here).
:class:`OfflinePerceptualLoss` computes the same LPIPS distance (Zhang et al., 2018, "The unreasonable
effectiveness of deep features as a perceptual metric") with plain-PyTorch AlexNet / VGG16 feature extractors
whose layer layout matches torchvision's ``features.N.weight`` keys, so the standard torchvision checkpoints
load as they are:

* AlexNet: ``alexnet-owt-7be5be79.pth`` from https://download.pytorch.org/models/alexnet-owt-7be5be79.pth
* VGG16:   ``vgg16-397923af.pth``      from https://download.pytorch.org/models/vgg16-397923af.pth

Optional LPIPS linear-layer weights (``lin0.model.1.weight`` ... ``lin4.model.1.weight``): ``alex.pth`` /
``vgg.pth`` of LPIPS v0.1, from https://github.com/richzhang/PerceptualSimilarity (``lpips/weights/v0.1/``;
also inside the ``lpips`` wheel on PyPI). Without them the per-channel distances are summed with equal weights
(LPIPS's "baseline" variant), which is still a useful perceptual training term but not the LPIPS metric.

Distance, for images ``x, y`` in ``[-1, 1]`` (grey images are replicated to 3 channels)::

    d(x, y) = sum_l mean_hw( sum_c w_lc * (f_l(x) / |f_l(x)|_c - f_l(y) / |f_l(y)|_c)^2 )

with ``f_l`` the ReLU outputs at five depths of the network (after LPIPS's input scaling layer) and ``|.|_c`` the
L2 norm over channels at each pixel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import LossReduction, look_up_option

from monai_lpuwf.weights import resolve_weights_path

__all__ = [
    "PERCEPTUAL_NETWORKS",
    "OfflinePerceptualLoss",
    "build_feature_network",
    "offline_perceptual_loss",
    "perceptual_network_name",
]

# name -> (layer spec, feature slice ends, channels per slice, torchvision file, LPIPS file).
# spec items: (out_channels, kernel, stride, padding) for a conv (+ ReLU), "M" for 3x3/2 (AlexNet) or 2x2/2 max pool.
_ALEXNET_SPEC = [(64, 11, 4, 2), "M3", (192, 5, 1, 2), "M3", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M3"]
_VGG16_SPEC = [
    *[(64, 3, 1, 1)] * 2, "M2", *[(128, 3, 1, 1)] * 2, "M2", *[(256, 3, 1, 1)] * 3, "M2",
    *[(512, 3, 1, 1)] * 3, "M2", *[(512, 3, 1, 1)] * 3, "M2",
]  # fmt: skip
PERCEPTUAL_NETWORKS: dict[str, dict] = {
    "alexnet": {
        "spec": _ALEXNET_SPEC,
        "slices": (2, 5, 8, 10, 12),
        "channels": (64, 192, 384, 256, 256),
        "file": "alexnet-owt-7be5be79.pth",
        "url": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "lpips_file": "alex.pth",
    },
    "vgg16": {
        "spec": _VGG16_SPEC,
        "slices": (4, 9, 16, 23, 30),
        "channels": (64, 128, 256, 512, 512),
        "file": "vgg16-397923af.pth",
        "url": "https://download.pytorch.org/models/vgg16-397923af.pth",
        "lpips_file": "vgg.pth",
    },
}
_ALIASES = {"alex": "alexnet", "vgg": "vgg16"}
_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1"
# LPIPS's input scaling: ImageNet mean/std expressed for [-1, 1] inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def perceptual_network_name(network: str) -> str:
    """``"alexnet"`` or ``"vgg16"`` for a network name or alias (``"alex"``, ``"vgg"``); raises for others."""
    return look_up_option(_ALIASES.get(str(network).lower(), str(network).lower()), tuple(PERCEPTUAL_NETWORKS))


def build_feature_network(network: str) -> nn.Sequential:
    """torchvision-layout ``features`` of AlexNet or VGG16 (same module indices, so the same state-dict keys)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in PERCEPTUAL_NETWORKS[network]["spec"]:
        if isinstance(item, str):
            size = int(item[1:])
            layers.append(nn.MaxPool2d(kernel_size=size, stride=2))
        else:
            out_ch, k, s, p = item
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=s, padding=p), nn.ReLU()]
            in_ch = out_ch
    return nn.Sequential(*layers)


class OfflinePerceptualLoss(nn.Module):
    """LPIPS-style perceptual distance from locally stored AlexNet / VGG16 weights; never downloads.

    Args:
        network: ``"alexnet"`` (``"alex"``) or ``"vgg16"`` (``"vgg"``).
        weights_path: torchvision-format state dict of the network (``features.*`` keys are used, a classifier
            is ignored); ``None`` reads ``MONAI_LPUWF_ALEXNET_WEIGHTS`` / ``MONAI_LPUWF_VGG16_WEIGHTS``.
        lpips_weights_path: LPIPS v0.1 linear-layer weights; ``None`` reads ``MONAI_LPUWF_LPIPS_ALEXNET_WEIGHTS`` /
            ``MONAI_LPUWF_LPIPS_VGG16_WEIGHTS`` and, if that is unset too, weighs all channels equally.
        allow_random_init: TESTS ONLY. With no backbone weights file, use a randomly initialised backbone
            (seeded by ``seed``) instead of raising.
        value_range: intensity range of the inputs, mapped to LPIPS's ``[-1, 1]`` (no clamping, so gradients
            flow everywhere).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` over the batch (``"none"`` gives (B,)).
        seed: seed of the random initialisation.

    Raises:
        FileNotFoundError: a weights file is missing, naming it and where to download it.
        RuntimeError: a file does not hold the expected keys/shapes.

    Example:
        >>> loss = OfflinePerceptualLoss("alexnet", weights_path="~/weights/alexnet-owt-7be5be79.pth")  # doctest: +SKIP
        >>> loss(recon, target)  # (B, 1 or 3, H, W) in [-1, 1]                                       # doctest: +SKIP
    """

    def __init__(
        self,
        network: str = "alexnet",
        weights_path: str | os.PathLike | None = None,
        lpips_weights_path: str | os.PathLike | None = None,
        allow_random_init: bool = False,
        value_range: Sequence[float] = (-1.0, 1.0),
        reduction: LossReduction | str = LossReduction.MEAN,
        seed: int = 0,
    ) -> None:
        super().__init__()
        name = perceptual_network_name(network)
        info = PERCEPTUAL_NETWORKS[name]
        self.network = name
        self.reduction = look_up_option(reduction, LossReduction).value
        self.value_range = (float(value_range[0]), float(value_range[1]))
        env = f"MONAI_LPUWF_{name.upper()}_WEIGHTS"
        given = weights_path if weights_path is not None else os.environ.get(env) or None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.features = build_feature_network(name)
        if given is not None or not allow_random_init:
            path = resolve_weights_path(given, env, f"{name} features ({info['file']})", info["url"])
            self._load(self.features, path, "features.", info["file"])
        self.slices = info["slices"]
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.lins = nn.ParameterList([nn.Parameter(torch.ones(1, c, 1, 1)) for c in info["channels"]])
        self.lpips = False
        lpips_env = f"MONAI_LPUWF_LPIPS_{name.upper()}_WEIGHTS"
        lpips_given = lpips_weights_path if lpips_weights_path is not None else os.environ.get(lpips_env) or None
        if lpips_given is not None:
            what = f"LPIPS v0.1 linear layers for {name} ({info['lpips_file']})"
            self._load_lins(resolve_weights_path(lpips_given, lpips_env, what, _LPIPS_URL))
            self.lpips = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @staticmethod
    def _load(module: nn.Module, path, prefix: str, expected: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(picked, strict=True)
        except RuntimeError as err:
            raise RuntimeError(f"{path} is not a torchvision-format state dict like {expected}: {err}") from err

    def _load_lins(self, path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        found = {}
        for key, value in state.items():
            match = re.fullmatch(r"lin(\d+)\.model\.\d+\.weight", key)
            if match:
                found[int(match.group(1))] = value
        shapes = [tuple(p.shape) for p in self.lins]
        if sorted(found) != list(range(len(self.lins))) or any(
            tuple(found[i].shape) != shapes[i] for i in range(len(shapes))
        ):
            raise RuntimeError(
                f"{path} does not hold LPIPS linear layers lin0..lin{len(shapes) - 1}.model.1.weight of shapes "
                f"{shapes} for {self.network}; got keys {sorted(state)}."
            )
        with torch.no_grad():
            for i, p in enumerate(self.lins):
                p.copy_(found[i])

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU feature maps of (B, 1 or 3, H, W) images in ``value_range``."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"perceptual loss input must be (B, 1 or 3, H, W), got {tuple(x.shape)}.")
        low, high = self.value_range
        x = 2 * (x.float() - low) / (high - low) - 1
        x = (x.expand(-1, 3, -1, -1) - self.shift) / self.scale
        outs, start = [], 0
        for end in self.slices:
            for layer in self.features[start:end]:
                x = layer(x)
            outs.append(x)
            start = end
        return outs

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Perceptual distance of (B, C, H, W) ``input`` to ``target`` (C = 1 or 3), reduced over the batch."""
        if input.shape != target.shape:
            raise ValueError(f"input {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape.")
        dist = input.new_zeros(input.shape[0], dtype=torch.float32)
        for fx, fy, w in zip(self.feature_maps(input), self.feature_maps(target), self.lins):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            dist = dist + F.conv2d((nx - ny) ** 2, w).mean(dim=(1, 2, 3))
        if self.reduction == LossReduction.MEAN.value:
            return dist.mean()
        if self.reduction == LossReduction.SUM.value:
            return dist.sum()
        return dist


def offline_perceptual_loss(
    weight: float,
    network: str = "alexnet",
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> OfflinePerceptualLoss | None:
    """The perceptual term of a training loss on ``device``, or ``None`` where its ``weight`` is 0 (then no network
    is built and no weights file is needed).

    Args:
        weight: weight of the term in the loss (the trainer's ``perceptual_weight``); 0 disables it.
        network: ``"alexnet"`` or ``"vgg16"`` (:class:`OfflinePerceptualLoss`).
        weights_path: the backbone's torchvision weights file (``None``: the environment variable).
        device: where the loss runs (``None``: the CPU).
    """
    if not weight:
        return None
    return OfflinePerceptualLoss(network=network, weights_path=weights_path).to(device)
