"""Inception Score (Salimans et al., 2016) from Inception-v3 logits."""

from __future__ import annotations

import torch

__all__ = ["inception_score"]


def inception_score(logits: torch.Tensor, splits: int = 1) -> tuple[float, float]:
    r"""Inception Score of a set of images from their classifier logits.

    .. math::
        \mathrm{IS} = \exp\Big(\mathbb{E}_x\, \mathrm{KL}\big(p(y \mid x)\,\|\,p(y)\big)\Big),
        \qquad p(y) = \mathbb{E}_x\, p(y \mid x),

    with :math:`p(y \mid x) = \mathrm{softmax}(\text{logits})`, computed in each of ``splits`` consecutive
    chunks of the images (the usual protocol uses 10 splits of 5000 images each). With the FID Inception
    network the logits have 1008 classes (the TensorFlow graph's), all of which are used.

    Args:
        logits: (N, K) logits, e.g. the second output of
            :class:`~monai_lpuwf.metrics.inception.InceptionFeatureExtractor`.
        splits: number of chunks; each needs at least one image.

    Returns:
        ``(mean, std)`` of the per-split scores (std is 0 for one split). Between 1 (every image gets the same
        class distribution) and K (each image one certain class, all classes equally used).
    """
    logits = torch.as_tensor(logits).double()
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, num_classes), got {tuple(logits.shape)}.")
    if not 1 <= int(splits) <= logits.shape[0]:
        raise ValueError(f"splits must be between 1 and the number of images ({logits.shape[0]}), got {splits}.")
    scores = []
    for chunk in torch.tensor_split(logits, int(splits)):
        log_p = torch.log_softmax(chunk, dim=1)
        log_marginal = torch.logsumexp(log_p, dim=0) - torch.log(
            torch.tensor(float(chunk.shape[0]), dtype=torch.float64)
        )
        kl = (log_p.exp() * (log_p - log_marginal)).sum(dim=1)
        scores.append(torch.exp(kl.mean()))
    stacked = torch.stack(scores)
    std = stacked.std(unbiased=False) if len(scores) > 1 else torch.zeros((), dtype=torch.float64)
    return float(stacked.mean()), float(std)
