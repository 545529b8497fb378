"""FID Inception-v3 against pytorch-fid's own network: same (random) weights, same images, same features.

pytorch-fid (``pip install -e ".[test]"``) builds its network from torchvision's Inception3 patched with its
``FIDInception*`` blocks and loads ``pt_inception-2015-12-05-6726825d.pth`` through ``load_state_dict_from_url``.
Here that download is replaced by our randomly initialised state dict (strict ``load_state_dict`` on their side,
so the layouts must agree key for key), and the pool features of :class:`InceptionFeatureExtractor` are compared
with ``InceptionV3([3])`` (their FID entry point, resizing and normalising itself) on random images.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch

from monai_lpuwf.metrics.inception import FID_WEIGHTS_URL, InceptionFeatureExtractor

# float32, the same convolutions in the same order on both sides: measured bitwise equal here (torch 2.13 CPU).
# The bound leaves room for other BLAS/oneDNN kernels while staying far below any layout error (a wrong pooling
# quirk or block changes features by tens of percent).
REL_TOL = 1e-5


def _python_only_torchvision() -> None:
    """Make ``import torchvision`` give its Python model definitions without its C++ ops.

    torchvision's package ``__init__`` registers its compiled operators (nms, roi_align, ...); the only
    torchvision wheels for torch 2.13 on this platform are CUDA builds, whose operators do not load next to the
    CPU torch ("operator torchvision::nms does not exist"). Inception3 and its blocks are plain Python modules,
    so the package is set up without running ``__init__``.
    """
    spec = importlib.util.find_spec("torchvision")
    pkg = types.ModuleType("torchvision")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["torchvision"] = pkg
    pkg.__version__ = importlib.import_module("torchvision.version").__version__
    pkg.models = importlib.import_module("torchvision.models")


@pytest.fixture
def pytorch_fid_inception():
    """``pytorch_fid.inception`` (skip where pytorch-fid or torchvision is not installed); the ``torchvision`` and
    ``pytorch_fid`` modules it imports are removed from ``sys.modules`` afterwards."""
    missing = [name for name in ("pytorch_fid", "torchvision") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: pip install -e '.[test]' (pytorch-fid is the oracle)")
    before = set(sys.modules)
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, ImportError, AttributeError):  # CUDA torchvision beside a CPU torch
        for name in set(sys.modules) - before:
            del sys.modules[name]
        _python_only_torchvision()
    import pytorch_fid.inception

    yield pytorch_fid.inception
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("torchvision", "pytorch_fid"):
            del sys.modules[name]


def _randomized_extractor() -> InceptionFeatureExtractor:
    """Random-init network with batch-norm statistics and affine parameters drawn too (not 0/1)."""
    extractor = InceptionFeatureExtractor(allow_random_init=True, batch_size=2)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for m in extractor.network.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return extractor


def test_pool_features_and_logits_match_pytorch_fid(pytorch_fid_inception, monkeypatch):
    pfi = pytorch_fid_inception
    ours = _randomized_extractor()
    state = ours.network.state_dict()
    fetched, built = [], []

    def fake_download(url, *args, **kwargs):  # pytorch-fid's weight download, served from memory
        fetched.append(url)
        return {k: v.clone() for k, v in state.items()}

    def recording_fid_inception_v3():
        net = original()
        built.append(net)
        return net

    original = pfi.fid_inception_v3
    monkeypatch.setattr(pfi, "load_state_dict_from_url", fake_download)
    monkeypatch.setattr(pfi, "fid_inception_v3", recording_fid_inception_v3)
    theirs = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()  # their FID defaults
    assert fetched == [FID_WEIGHTS_URL]  # the same file name and release on both sides

    g = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 96, 128, generator=g) * 2 - 1  # FA in [-1, 1], not 299 x 299 (both resize)
    feats, logits = ours(grey)
    with torch.no_grad():
        expected = theirs(((grey + 1) / 2).repeat(1, 3, 1, 1))[0].flatten(1)  # pytorch-fid takes RGB in [0, 1]
        expected_logits = built[0].fc(expected)
    scale = float(expected.abs().max())
    assert scale > 1e-3  # the random network does not collapse to zeros
    assert float((feats.float() - expected).abs().max()) / scale < REL_TOL
    logit_scale = float(expected_logits.abs().max())
    assert float((logits.float() - expected_logits).abs().max()) / logit_scale < REL_TOL
