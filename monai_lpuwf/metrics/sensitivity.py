"""Does the model follow its input? Two diagnostics that every score table should sit beside.

- :func:`conditioning_gap`: how much worse the denoiser predicts the clean latents when it is given *another*
  item's SLO instead of the item's own, at a few timesteps. A ratio near 1 means the ControlNet is ignored.
- :func:`input_sensitivity`: how similar generated images of *different* inputs are to each other (beside the
  same figure for the real late phases), how similar two draws of the same input are, and how much better an
  output correlates with its own real late phase than with the other items'.

A model whose outputs are the same picture whatever the SLO can still beat a constant image on PSNR; these
figures expose it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.schedulers import DDPMScheduler
from torch import nn

__all__ = ["pairwise_correlation", "conditioning_gap", "input_sensitivity", "predicted_clean_latents"]


def pairwise_correlation(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of every image of ``a`` with every image of ``b``.

    Args:
        a: (N, C, *spatial) images.
        b: (M, C, *spatial) images of the same size.
        mask: optional (N or 1, 1, *spatial) mask shared by the pair (``a``'s item's mask when ``N == M``): only
            pixels where ``mask > 0`` count. With a per-item mask, entry ``(i, j)`` uses item ``i``'s mask.

    Returns:
        (N, M) correlation matrix (float64).
    """
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"images of different shapes: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}.")
    if mask is None:
        w = torch.ones_like(a)
    else:
        m = (torch.as_tensor(mask) > 0).double()
        if m.ndim != a.ndim or m.shape[0] not in (1, a.shape[0]) or m.shape[2:] != a.shape[2:]:
            raise ValueError(f"mask of shape {tuple(m.shape)} does not fit images of shape {tuple(a.shape)}.")
        w = m.expand(a.shape[0], a.shape[1], *a.shape[2:])
    a, b, w = a.flatten(1), b.flatten(1), w.flatten(1)
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64)
    for i in range(a.shape[0]):
        wi = w[i] / w[i].sum().clamp_min(1.0)
        ai = a[i] - (a[i] * wi).sum()
        bj = b - (b * wi).sum(1, keepdim=True)
        cov = (ai * bj * wi).sum(1)
        var_a = (ai * ai * wi).sum()
        var_b = (bj * bj * wi).sum(1)
        out[i] = cov / (var_a * var_b).sqrt().clamp_min(1e-12)
    return out


def _off_diagonal_mean(matrix: torch.Tensor) -> float:
    n = matrix.shape[0]
    if n < 2:
        raise ValueError("cross-input figures need at least two items.")
    return float((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1)))


def input_sensitivity(
    pred: torch.Tensor,
    target: torch.Tensor,
    fov: torch.Tensor | None = None,
    other_seed: torch.Tensor | None = None,
) -> dict[str, float]:
    """Input-sensitivity figures of a set of generated images (one per different input).

    Args:
        pred: (N, 1, H, W) generated late phases of N different inputs (N >= 2).
        target: (N, 1, H, W) their real late phases.
        fov: optional (N, 1, H, W) field-of-view masks: correlations over the field of view only.
        other_seed: optional (N, 1, H, W) the same inputs generated with another sampling seed.

    Returns:
        ``cross_input_corr``: mean correlation between outputs of different inputs;
        ``real_cross_input_corr``: the same for the real late phases (what a model that follows its input
        should approach; near 1 for the generated images means one picture for every input);
        ``own_corr`` / ``other_corr``: mean correlation of each output with its own real late phase / with the
        other items'; ``own_minus_other_corr`` their difference (> 0: outputs carry their input's content);
        ``same_input_seed_corr`` (with ``other_seed``): mean correlation of the two draws of each input.
    """
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape.")
    cross = pairwise_correlation(pred, pred, fov)
    real = pairwise_correlation(target, target, fov)
    vs_real = pairwise_correlation(pred, target, fov)
    own = float(vs_real.diagonal().mean())
    other = _off_diagonal_mean(vs_real)
    out = {
        "cross_input_corr": _off_diagonal_mean(cross),
        "real_cross_input_corr": _off_diagonal_mean(real),
        "own_corr": own,
        "other_corr": other,
        "own_minus_other_corr": own - other,
    }
    if other_seed is not None:
        out["same_input_seed_corr"] = float(
            pairwise_correlation(pred, torch.as_tensor(other_seed), fov).diagonal().mean()
        )
    return out


def predicted_clean_latents(
    output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor, scheduler: DDPMScheduler
) -> torch.Tensor:
    """The clean latents implied by a denoiser output of the scheduler's ``prediction_type``.

    Args:
        output: denoiser output (B, C, *spatial): noise, velocity or clean latents.
        x_t: the noisy latents it was computed from.
        timesteps: (B,) integer timesteps.
        scheduler: a MONAI scheduler with ``alphas_cumprod`` and ``prediction_type``.
    """
    alpha = scheduler.alphas_cumprod.to(x_t.device)[timesteps].view(-1, *([1] * (x_t.ndim - 1)))
    kind = scheduler.prediction_type
    if kind == "epsilon":
        return (x_t - (1 - alpha).sqrt() * output) / alpha.sqrt()
    if kind == "v_prediction":
        return alpha.sqrt() * x_t - (1 - alpha).sqrt() * output
    if kind == "sample":
        return output
    raise ValueError(f"unknown prediction_type {kind!r}.")


def conditioning_gap(
    model: nn.Module,
    latents: torch.Tensor,
    slo: torch.Tensor,
    timesteps: Sequence[int] = (50, 200, 600, 900),
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Error of the denoiser with the true SLO vs with the SLOs of the other items of the batch.

    The same noise and timestep are used for both; the SLOs are rolled by one item for "other". Errors are
    measured on the implied clean latents (:func:`predicted_clean_latents`), so that epsilon-, v- and
    sample-prediction models compare on one scale.

    Args:
        model: an :class:`~monai_lpuwf.networks.LPUWFModel` (its ``schedule`` gives the scheduler).
        latents: (B, C, h, w) scaled clean latents (``model.encode_latents(fa)``), B >= 2.
        slo: (B, 3, H, W) the items' own SLOs at full resolution.
        timesteps: diffusion timesteps to probe.
        seed: seed of the noise.

    Returns:
        ``{str(t): {"true": mse, "other": mse, "ratio": other / true}}``; a ratio near 1 means the SLO is ignored.
    """
    if latents.shape[0] < 2:
        raise ValueError("the conditioning gap needs a batch of at least two items (their SLOs are swapped).")
    model = getattr(model, "module", model)
    scheduler = DDPMScheduler(**model.schedule)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    other_slo = torch.roll(slo, shifts=1, dims=0)
    was_training = model.training
    model.eval()
    out: dict[str, dict[str, float]] = {}
    try:
        with torch.no_grad():
            for t in timesteps:
                t_batch = torch.full((latents.shape[0],), int(t), dtype=torch.long, device=latents.device)
                x_t = scheduler.add_noise(latents, noise, t_batch)
                errors = {}
                for name, cond in (("true", slo), ("other", other_slo)):
                    x0 = predicted_clean_latents(model.denoise(x_t, t_batch, cond), x_t, t_batch, scheduler)
                    errors[name] = float(((x0 - latents) ** 2).mean())
                errors["ratio"] = errors["other"] / max(errors["true"], 1e-12)
                out[str(int(t))] = errors
    finally:
        model.train(was_training)
    return out
