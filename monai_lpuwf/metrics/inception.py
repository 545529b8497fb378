"""The FID Inception-v3 network (pytorch-fid variant) in plain PyTorch, loaded only from a local weights file.

FID and IS are defined by one particular network: the TensorFlow Inception-v3 of 2015-12-05, ported to
PyTorch by pytorch-fid as ``pt_inception-2015-12-05-6726825d.pth``. :class:`FIDInceptionV3` reproduces that
network's layout key for key (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch_pool.bn.running_var``, ...,
``fc.weight`` of shape (1008, 2048)) including the TensorFlow quirks pytorch-fid patches in: average pooling
inside the Inception blocks ignores the zero padding, and the last block (``Mixed_7c``) max-pools its pool
branch. It returns the 2048-d pool features (FID) and the 1008-way logits (IS).

Weights are never downloaded. Download the file yourself, once, from the pytorch-fid release

    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

(about 91 MB) and pass its path as ``weights_path`` or set ``MONAI_LPUWF_INCEPTION_WEIGHTS``. Without it,
:func:`load_fid_inception` stops with a message naming the file. ``allow_random_init=True`` builds a randomly
initialised network instead; it exists for tests of the pipeline and gives meaningless FID/IS values.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_lpuwf.scores import to_unit_range
from monai_lpuwf.weights import resolve_weights_path

__all__ = [
    "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URL",
    "INCEPTION_WEIGHTS_ENV",
    "FIDInceptionV3",
    "InceptionFeatureExtractor",
    "load_fid_inception",
]

FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILENAME}"
INCEPTION_WEIGHTS_ENV = "MONAI_LPUWF_INCEPTION_WEIGHTS"


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU: the unit every Inception block is made of."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pooling that, like TensorFlow's, leaves the zero padding out of the average."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block (``Mixed_5b/c/d``): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (``Mixed_6a``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``Mixed_6b..e``)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (``Mixed_7a``)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with expanded filter banks (``Mixed_7b`` average-pools, ``Mixed_7c`` max-pools its pool branch).

    Args:
        in_channels: 1280 for ``Mixed_7b``, 2048 for ``Mixed_7c``.
        max_pool: use the max pooling of the TensorFlow graph's last block (``Mixed_7c``).
    """

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID/IS (pytorch-fid's ``fid_inception_v3``), state-dict compatible with
    ``pt_inception-2015-12-05-6726825d.pth``.

    Input: (B, 3, 299, 299) in ``[-1, 1]`` (see :class:`InceptionFeatureExtractor` for the preprocessing).
    Output: ``(features, logits)``: (B, 2048) final average-pool features and (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 1008) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, kernel_size=3, stride=2)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        features = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return features, self.fc(features)


def load_fid_inception(
    weights_path: str | os.PathLike | None = None, allow_random_init: bool = False, seed: int = 0
) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` in eval mode with frozen weights from a local file.

    Args:
        weights_path: path of ``pt_inception-2015-12-05-6726825d.pth``; ``None`` reads the environment variable
            ``MONAI_LPUWF_INCEPTION_WEIGHTS``.
        allow_random_init: TESTS ONLY. With no weights file, build a randomly initialised network (seeded by
            ``seed``) instead of raising. Its FID/IS values mean nothing.
        seed: seed of the random initialisation.

    Raises:
        FileNotFoundError: no weights file, naming the file and where to download it.
        RuntimeError: the file's keys or shapes do not match the pytorch-fid layout.
    """
    given = weights_path if weights_path is not None else os.environ.get(INCEPTION_WEIGHTS_ENV) or None
    if given is None and allow_random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = FIDInceptionV3()
    else:
        what = f"the FID Inception-v3 ({FID_WEIGHTS_FILENAME})"
        path = resolve_weights_path(given, INCEPTION_WEIGHTS_ENV, what, FID_WEIGHTS_URL)
        net = FIDInceptionV3()
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise RuntimeError(
                f"{path} is not a pytorch-fid Inception state dict ({FID_WEIGHTS_FILENAME} from {FID_WEIGHTS_URL}): "
                f"{err}"
            ) from err
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class InceptionFeatureExtractor:
    """FID/IS features of grey or colour images with the FID Inception-v3, preprocessed as pytorch-fid does.

    Preprocessing of a (B, C, H, W) batch in ``value_range``: map to ``[0, 1]`` (clamped), replicate a single
    channel to 3 (grey FA), resize to 299 x 299 (bilinear, ``align_corners=False``), rescale to ``[-1, 1]``.

    Args:
        weights_path, allow_random_init: see :func:`load_fid_inception`.
        device: where the network runs.
        batch_size: images per forward pass.
        value_range: intensity range of the inputs (``[-1, 1]`` for this package's images).

    Example:
        >>> extractor = InceptionFeatureExtractor("~/weights/pt_inception-2015-12-05-6726825d.pth")  # doctest: +SKIP
        >>> feats, logits = extractor(images)   # (N, 2048), (N, 1008)                            # doctest: +SKIP
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        allow_random_init: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        value_range: tuple[float, float] | None = (-1.0, 1.0),
    ) -> None:
        self.device = torch.device(device)
        self.network = load_fid_inception(weights_path, allow_random_init=allow_random_init).to(self.device)
        self.batch_size = int(batch_size)
        self.value_range = value_range

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 or 3, H, W) in ``value_range`` -> (B, 3, 299, 299) in ``[-1, 1]``."""
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception input must be (B, 1 or 3, H, W), got {tuple(images.shape)}.")
        x = to_unit_range(images, self.value_range)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return 2 * x - 1

    @torch.no_grad()
    def __call__(self, images: torch.Tensor | Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, 2048) and logits (N, 1008), float64 on the CPU, of a batch or an iterable of batches."""
        batches = [images] if isinstance(images, torch.Tensor) else list(images)
        feats, logits = [], []
        for batch in batches:
            for chunk in torch.split(torch.as_tensor(batch), self.batch_size):
                f, lg = self.network(self.preprocess(chunk).to(self.device))
                feats.append(f.double().cpu())
                logits.append(lg.double().cpu())
        if not feats:
            raise ValueError("No images given to the Inception feature extractor.")
        return torch.cat(feats), torch.cat(logits)
