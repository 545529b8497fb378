"""Fréchet Inception Distance and Inception Score of generated images, with the local FID Inception-v3."""

from __future__ import annotations

import torch
from monai.metrics import FIDMetric

from monai_lpuwf.metrics.inception import InceptionFeatureExtractor
from monai_lpuwf.metrics.inception_score import inception_score

__all__ = ["frechet_distance_from_features", "compute_fid_is"]


def frechet_distance_from_features(generated: torch.Tensor, real: torch.Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to two feature sets.

    .. math:: \|\mu_g - \mu_r\|^2 + \operatorname{tr}\Sigma_g + \operatorname{tr}\Sigma_r
              - 2 \operatorname{tr}\big(\Sigma_g\Sigma_r\big)^{1/2}

    With centred features :math:`X_g` (N x D) and :math:`X_r` (M x D), the non-zero eigenvalues of
    :math:`\Sigma_g\Sigma_r` are the squared singular values of :math:`X_g X_r^T / \sqrt{(N-1)(M-1)}`, so
    :math:`\operatorname{tr}(\Sigma_g\Sigma_r)^{1/2}` is that matrix's nuclear norm: exact, and far cheaper
    than a D x D matrix square root when ``N * M <= D * D`` (the usual case for a validation split). Larger sets
    use MONAI's :class:`~monai.metrics.FIDMetric` (``scipy.linalg.sqrtm``).

    Args:
        generated: (N, D) features of generated images.
        real: (M, D) features of real images. Both need at least 2 rows. With fewer images than feature
            dimensions (2048) FID is strongly biased upwards: compare FIDs only at equal N.
    """
    generated, real = torch.as_tensor(generated).double(), torch.as_tensor(real).double()
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(
            f"features must be (N, D) with the same D, got {tuple(generated.shape)} and {tuple(real.shape)}."
        )
    (n, d), m = generated.shape, real.shape[0]
    if min(n, m) < 2:
        raise ValueError("FID needs at least 2 generated and 2 real images.")
    if n * m > d * d:
        return float(FIDMetric()(generated, real))
    xg, xr = generated - generated.mean(0), real - real.mean(0)
    tr_covmean = torch.linalg.svdvals(xg @ xr.T).sum() / ((n - 1) * (m - 1)) ** 0.5
    mean_term = (generated.mean(0) - real.mean(0)).pow(2).sum()
    trace_g, trace_r = xg.pow(2).sum() / (n - 1), xr.pow(2).sum() / (m - 1)
    return float(mean_term + trace_g + trace_r - 2 * tr_covmean)


def compute_fid_is(
    generated: torch.Tensor, real: torch.Tensor, extractor: InceptionFeatureExtractor, is_splits: int = 1
) -> dict[str, float]:
    """FID between generated and real images, and the Inception Score of the generated ones.

    Args:
        generated: (N, C, H, W) generated late-phase images (C = 1 or 3), in the extractor's ``value_range``.
        real: (M, C, H, W) real late-phase images.
        extractor: an :class:`~monai_lpuwf.metrics.inception.InceptionFeatureExtractor` (local weights).
        is_splits: splits of the Inception Score.

    Returns:
        ``{"fid", "is_mean", "is_std", "num_generated", "num_real"}``.
    """
    gen_feats, gen_logits = extractor(generated)
    real_feats, _ = extractor(real)
    is_mean, is_std = inception_score(gen_logits, splits=is_splits)
    return {
        "fid": frechet_distance_from_features(gen_feats, real_feats),
        "is_mean": is_mean,
        "is_std": is_std,
        "num_generated": int(gen_feats.shape[0]),
        "num_real": int(real_feats.shape[0]),
    }
