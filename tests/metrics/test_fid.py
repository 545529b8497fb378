"""FID against the closed form with scipy's sqrtm, IS against a direct formula, and the whole image pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from monai_lpuwf.metrics import (
    InceptionFeatureExtractor,
    compute_fid_is,
    frechet_distance_from_features,
    inception_score,
)


def _frechet_formula(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n, m, d", [(400, 300, 6), (5, 7, 40), (10, 3, 8)])
def test_frechet_distance_of_samples_matches_scipy_formula(n, m, d):
    """Both code paths (MONAI's sqrtm for large sets, the exact nuclear norm for small ones) vs scipy."""
    rng = np.random.default_rng(n)
    a = rng.normal(size=(d, d))
    x = rng.multivariate_normal(np.zeros(d), a @ a.T / d + np.eye(d) * 0.1, size=n)
    y = rng.normal(loc=0.5, scale=2.0, size=(m, d))
    expected = _frechet_formula(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    got = frechet_distance_from_features(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(expected, rel=1e-5)


def test_frechet_distance_converges_to_known_gaussians():
    # N(0, I) vs N(m, s^2 I) in d dims: |m|^2 + d (1 + s^2 - 2 s)
    g = torch.Generator().manual_seed(0)
    d, n, m, s = 4, 20000, 0.5, 2.0
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = m + s * torch.randn(n, d, generator=g, dtype=torch.float64)
    assert frechet_distance_from_features(x, y) == pytest.approx(d * m**2 + d * (1 + s**2 - 2 * s), rel=0.03)


def test_frechet_distance_errors():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance_from_features(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance_from_features(torch.zeros(1, 4), torch.zeros(3, 4))


def test_inception_score_direct_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 7, generator=g, dtype=torch.float64) * 3
    p = torch.softmax(logits, 1).numpy()
    per_split = []
    for chunk in np.array_split(p, 3):
        py = chunk.mean(0)
        kl = (chunk * (np.log(chunk) - np.log(py))).sum(1)
        per_split.append(math.exp(kl.mean()))
    mean, std = inception_score(logits, splits=3)
    assert mean == pytest.approx(np.mean(per_split)) and std == pytest.approx(np.std(per_split))


def test_inception_score_bounds():
    assert inception_score(torch.zeros(5, 10))[0] == pytest.approx(1.0)  # same distribution everywhere
    confident = torch.eye(10) * 100  # each image a different certain class
    assert inception_score(confident) == pytest.approx((10.0, 0.0))
    with pytest.raises(ValueError, match="splits"):
        inception_score(confident, splits=11)


def test_fid_is_pipeline_with_random_init_network():
    """Images -> grey-to-RGB, 299 px, random-init Inception -> FID and IS (values meaningless, plumbing real)."""
    extractor = InceptionFeatureExtractor(allow_random_init=True, batch_size=4)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 1, 48, 60, generator=g) * 2 - 1
    generated = torch.rand(2, 1, 48, 60, generator=g) * 2 - 1
    result = compute_fid_is(generated, real, extractor)
    gen_feats, gen_logits = extractor(generated)
    real_feats, _ = extractor(real)
    assert result["fid"] == pytest.approx(frechet_distance_from_features(gen_feats, real_feats))
    assert result["fid"] > 0
    assert result["is_mean"] == pytest.approx(inception_score(gen_logits)[0])
    assert result["num_generated"] == 2 and result["num_real"] == 2
    assert compute_fid_is(real, real, extractor)["fid"] == pytest.approx(0.0, abs=1e-6)
