"""OfflinePerceptualLoss: torchvision layout, local files only, LPIPS formula."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss, build_feature_network

# Parameter counts of torchvision's feature extractors: AlexNet 61,100,840 in all minus its classifier
# (9216*4096+4096 + 4096*4096+4096 + 4096*1000+1000); VGG16's 13 convolutions hold the well-known 14,714,688.
EXPECTED = {
    "alexnet": {
        "params": 61_100_840 - (9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000),
        "convs": [0, 3, 6, 8, 10],
        "shapes": {"features.0.weight": (64, 3, 11, 11), "features.3.weight": (192, 64, 5, 5),
                   "features.10.weight": (256, 256, 3, 3)},
        "len": 13,
    },
    "vgg16": {
        "params": 14_714_688,
        "convs": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
        "shapes": {"features.0.weight": (64, 3, 3, 3), "features.28.weight": (512, 512, 3, 3),
                   "features.17.bias": (512,)},
        "len": 31,
    },
}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for var in ("ALEXNET", "VGG16", "LPIPS_ALEXNET", "LPIPS_VGG16"):
        monkeypatch.delenv(f"MONAI_LPUWF_{var}_WEIGHTS", raising=False)


def _images(shape=(2, 1, 48, 56), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1


@pytest.mark.parametrize("network", ["alexnet", "vgg16"])
def test_feature_network_has_torchvision_layout(network):
    features = build_feature_network(network)
    expected = EXPECTED[network]
    assert len(features) == expected["len"]
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    assert sorted({int(k.split(".")[1]) for k in state}) == expected["convs"]
    for key, shape in expected["shapes"].items():
        assert tuple(state[key].shape) == shape
    assert sum(p.numel() for p in features.parameters()) == expected["params"]


def test_missing_weights_raise_naming_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("alexnet-owt-7be5be79.pth")) as err:
        OfflinePerceptualLoss("alexnet")
    assert "MONAI_LPUWF_ALEXNET_WEIGHTS" in str(err.value) and "download.pytorch.org" in str(err.value)
    with pytest.raises(FileNotFoundError, match=re.escape("vgg16-397923af.pth")):
        OfflinePerceptualLoss("vgg", weights_path=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=re.escape("alex.pth")):
        OfflinePerceptualLoss("alex", allow_random_init=True, lpips_weights_path=tmp_path / "alex.pth")
    with pytest.raises(ValueError):
        OfflinePerceptualLoss("resnet", allow_random_init=True)


def _reference_alexnet_lpips(state, lins, x, y):
    """LPIPS written out with functional ops on the torchvision state dict (the oracle)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(z):
        z = (z.repeat(1, 3, 1, 1) - shift) / scale
        w = lambda i: (state[f"features.{i}.weight"], state[f"features.{i}.bias"])  # noqa: E731
        r1 = F.relu(F.conv2d(z, *w(0), stride=4, padding=2))
        r2 = F.relu(F.conv2d(F.max_pool2d(r1, 3, 2), *w(3), padding=2))
        r3 = F.relu(F.conv2d(F.max_pool2d(r2, 3, 2), *w(6), padding=1))
        r4 = F.relu(F.conv2d(r3, *w(8), padding=1))
        r5 = F.relu(F.conv2d(r4, *w(10), padding=1))
        return [r1, r2, r3, r4, r5]

    total = 0
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        na = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        nb = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        d = (na - nb) ** 2
        total = total + ((d * lins[k].view(1, -1, 1, 1)).sum(1) if lins else d.sum(1)).mean(dim=(1, 2))
    return total


def test_loads_torchvision_and_lpips_files_and_matches_formula(tmp_path):
    g = torch.Generator().manual_seed(1)
    net = build_feature_network("alexnet")
    state = {f"features.{k}": v for k, v in net.state_dict().items()}
    full = dict(state, **{"classifier.1.weight": torch.zeros(4096, 9216)})  # a classifier is ignored
    torch.save(full, tmp_path / "alexnet-owt-7be5be79.pth")
    lins = [torch.rand(1, c, 1, 1, generator=g) for c in (64, 192, 384, 256, 256)]
    torch.save({f"lin{i}.model.1.weight": w for i, w in enumerate(lins)}, tmp_path / "alex.pth")
    x, y = _images()
    base = OfflinePerceptualLoss("alexnet", weights_path=tmp_path / "alexnet-owt-7be5be79.pth", reduction="none")
    lpips = OfflinePerceptualLoss(
        "alexnet", tmp_path / "alexnet-owt-7be5be79.pth", lpips_weights_path=tmp_path / "alex.pth", reduction="none"
    )
    assert lpips.lpips and not base.lpips
    with torch.no_grad():
        torch.testing.assert_close(base(x, y), _reference_alexnet_lpips(state, None, x, y))
        torch.testing.assert_close(lpips(x, y), _reference_alexnet_lpips(state, [w.flatten() for w in lins], x, y))
    torch.save({"lin0.model.1.weight": lins[0]}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="LPIPS linear layers"):
        OfflinePerceptualLoss("alexnet", allow_random_init=True, lpips_weights_path=tmp_path / "partial.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="torchvision-format"):
        OfflinePerceptualLoss("alexnet", weights_path=tmp_path / "bad.pth")


def test_env_var_is_used(tmp_path, monkeypatch):
    torch.save(
        {f"features.{k}": v for k, v in build_feature_network("alexnet").state_dict().items()}, tmp_path / "a.pth"
    )
    monkeypatch.setenv("MONAI_LPUWF_ALEXNET_WEIGHTS", str(tmp_path / "a.pth"))
    OfflinePerceptualLoss("alexnet")  # no error: found through the environment


@pytest.mark.parametrize("network", ["alexnet", "vgg16"])
def test_random_init_loss_properties(network):
    loss = OfflinePerceptualLoss(network, allow_random_init=True)
    x, y = _images()
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x, y).item() > 0
    # grey input = the same grey replicated to RGB
    torch.testing.assert_close(loss(x, y), loss(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))
    # gradients reach the input, never the frozen network
    x_req = x.clone().requires_grad_(True)
    loss(x_req, y).backward()
    assert x_req.grad is not None and x_req.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    per_image = OfflinePerceptualLoss(network, allow_random_init=True, reduction="none")(x, y)
    assert per_image.shape == (2,)
    torch.testing.assert_close(per_image.mean(), loss(x, y))
    with pytest.raises(ValueError, match="same shape"):
        loss(x, y[:1])


def _shipped_lpips_weights():
    import importlib.util

    spec = importlib.util.find_spec("lpips")  # locates the package without importing it (it needs torchvision)
    if spec is None or not spec.submodule_search_locations:
        return None
    from pathlib import Path

    folder = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1"
    return folder if folder.is_dir() else None


@pytest.mark.skipif(_shipped_lpips_weights() is None, reason="the lpips wheel (pip install --no-deps lpips) is absent")
@pytest.mark.parametrize("network, name", [("alexnet", "alex.pth"), ("vgg16", "vgg.pth")])
def test_real_lpips_linear_weights_load(network, name):
    loss = OfflinePerceptualLoss(network, allow_random_init=True, lpips_weights_path=_shipped_lpips_weights() / name)
    assert loss.lpips and all((w >= 0).all() for w in loss.lins)  # LPIPS v0.1 weights are non-negative


def test_offline_perceptual_loss_is_none_at_weight_zero_and_built_on_the_device_otherwise(tmp_path):
    from monai_lpuwf.losses.perceptual import offline_perceptual_loss

    assert offline_perceptual_loss(0.0, "alexnet", weights_path=tmp_path / "missing.pth") is None  # nothing read
    path = tmp_path / "a.pth"
    torch.save({f"features.{k}": v for k, v in build_feature_network("alexnet").state_dict().items()}, path)
    loss = offline_perceptual_loss(0.1, "alexnet", weights_path=path, device=torch.device("cpu"))
    assert isinstance(loss, OfflinePerceptualLoss) and loss.network == "alexnet"
    assert all(p.device.type == "cpu" for p in loss.parameters())
    with pytest.raises(FileNotFoundError):
        offline_perceptual_loss(0.1, "alexnet", weights_path=tmp_path / "missing.pth")
