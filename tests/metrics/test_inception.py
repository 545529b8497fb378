"""FID Inception-v3: pytorch-fid state-dict layout, local-weights loading, preprocessing."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from monai_lpuwf.metrics.inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_URL,
    INCEPTION_WEIGHTS_ENV,
    FIDInceptionV3,
    InceptionFeatureExtractor,
    load_fid_inception,
)

# Shapes in pytorch-fid's pt_inception-2015-12-05 state dict (torchvision Inception3 names, 1008 classes, no aux).
EXPECTED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch1x1.bn.bias": (320,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# torchvision's Inception3 has 27,161,264 parameters with the aux head and 1000 classes; the aux head holds
# 3,326,696 of them; pytorch-fid's fc has 1008 classes (+8 * 2049).
EXPECTED_NUM_PARAMS = 27_161_264 - 3_326_696 + 8 * 2049


@pytest.fixture(scope="module")
def random_extractor():
    return InceptionFeatureExtractor(allow_random_init=True, batch_size=2)


def test_state_dict_layout_matches_pytorch_fid():
    net = FIDInceptionV3()
    state = net.state_dict()
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in net.parameters()) == EXPECTED_NUM_PARAMS
    assert not any(k.startswith("AuxLogits") for k in state)
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
        "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
        "Mixed_7a", "Mixed_7b", "Mixed_7c", "fc",
    }  # fmt: skip
    # every conv is bias-free and followed by a batch norm with TensorFlow's eps
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.eps == 1e-3
        if isinstance(m, torch.nn.Conv2d):
            assert m.bias is None


def test_tf_quirks_of_pooling():
    net = FIDInceptionV3()
    assert net.Mixed_7c.max_pool and not net.Mixed_7b.max_pool
    from monai_lpuwf.metrics.inception import _tf_avg_pool

    x = torch.arange(16.0).view(1, 1, 4, 4)
    # corner average over the 4 valid pixels only (TensorFlow), not over 9 with zero padding
    assert _tf_avg_pool(x)[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4


def test_missing_weights_raise_naming_file_and_url(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        load_fid_inception()
    msg = str(err.value)
    assert FID_WEIGHTS_FILENAME in msg and INCEPTION_WEIGHTS_ENV in msg and FID_WEIGHTS_URL in msg
    missing = tmp_path / FID_WEIGHTS_FILENAME
    with pytest.raises(FileNotFoundError, match="not found"):
        load_fid_inception(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_fid_inception(missing, allow_random_init=True)  # an explicit path is never replaced by random init
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_fid_inception(allow_random_init=True)


def test_load_from_local_file_and_env_var(tmp_path, monkeypatch, random_extractor):
    path = tmp_path / FID_WEIGHTS_FILENAME
    reference = random_extractor.network
    torch.save(reference.state_dict(), path)
    x = torch.rand(1, 3, 75, 75) * 2 - 1
    loaded = load_fid_inception(path)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(path))
    from_env = load_fid_inception()
    with torch.no_grad():
        for net in (loaded, from_env):
            for a, b in zip(net(x), reference(x)):
                torch.testing.assert_close(a, b)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(RuntimeError, match="pytorch-fid Inception"):
        load_fid_inception(bad)


def test_preprocess_like_pytorch_fid(random_extractor):
    grey = torch.rand(2, 1, 40, 50) * 2 - 1
    out = random_extractor.preprocess(grey)
    unit = (grey + 1) / 2
    expected = 2 * F.interpolate(unit.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="1 or 3"):
        random_extractor.preprocess(torch.zeros(1, 2, 8, 8))


def test_features_and_logits_shapes_and_batching(random_extractor):
    images = torch.rand(3, 1, 64, 80) * 2 - 1
    feats, logits = random_extractor(images)
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008) and feats.dtype == torch.float64
    assert (feats >= 0).all()  # after ReLU and average pooling
    feats2, _ = random_extractor([images[:1], images[1:]])  # iterable of batches, chunked by batch_size 2
    torch.testing.assert_close(feats2, feats)


@pytest.mark.skipif(
    not os.environ.get(INCEPTION_WEIGHTS_ENV), reason=f"set {INCEPTION_WEIGHTS_ENV} to test real weights"
)
def test_real_pytorch_fid_weights_load():
    net = load_fid_inception()
    with torch.no_grad():
        feats, logits = net(torch.zeros(1, 3, 299, 299))
    assert feats.shape == (1, 2048) and logits.shape == (1, 1008)
