"""CTRD loss against the direct formula MSE + alpha * mean(W * err^2), W area-resized to the latent grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_lpuwf.losses import CTRDLoss


def _block_mean(w: torch.Tensor, factor: int) -> torch.Tensor:
    """Oracle for area resizing by an integer factor: the mean of each factor^D block, by reshaping."""
    b, c, *spatial = w.shape
    shape = [b, c]
    for s in spatial:
        shape += [s // factor, factor]
    w = w.reshape(shape)
    return w.mean(dim=tuple(range(3, w.ndim, 2)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_matches_formula(spatial_dims):
    g = torch.Generator().manual_seed(0)
    lat = (4,) * spatial_dims
    pred, noise = torch.randn(2, 4, *lat, generator=g), torch.randn(2, 4, *lat, generator=g)
    w_img = torch.rand(2, 1, *(16,) * spatial_dims, generator=g)
    w = _block_mean(w_img, 4)
    err = (pred - noise) ** 2
    expected = err.mean() + 0.25 * (w * err).mean()
    torch.testing.assert_close(CTRDLoss()(pred, noise, weight_map=w_img), expected)
    torch.testing.assert_close(CTRDLoss(alpha=0.0)(pred, noise, weight_map=w_img), F.mse_loss(pred, noise))
    torch.testing.assert_close(CTRDLoss()(pred, noise), F.mse_loss(pred, noise))
    torch.testing.assert_close(
        CTRDLoss(alpha=1.0, reduction="sum")(pred, noise, weight_map=w_img), err.sum() + (w * err).sum()
    )
    none = CTRDLoss(alpha=0.5, reduction="none")(pred, noise, weight_map=w_img)
    torch.testing.assert_close(none, err + 0.5 * w * err)


def test_authors_nearest_variant():
    """interp_mode="nearest" reproduces the authors' F.interpolate(ffa_diff, size) (default mode nearest)."""
    pred, noise, w = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.rand(1, 1, 32, 32)
    authors = (
        F.mse_loss(pred, noise)
        + 0.25 * (F.interpolate(w, size=(8, 8)) * F.mse_loss(pred, noise, reduction="none")).mean()
    )
    torch.testing.assert_close(CTRDLoss(interp_mode="nearest")(pred, noise, weight_map=w), authors)


def test_area_is_not_nearest():
    w = torch.zeros(1, 1, 8, 8)
    w[..., 1, 1] = 1.0  # a one-pixel lesion off the nearest-neighbour sampling grid
    pred, noise = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    assert float(CTRDLoss(alpha=1.0, interp_mode="nearest")(pred, noise, weight_map=w)) == pytest.approx(1.0)
    assert float(CTRDLoss(alpha=1.0)(pred, noise, weight_map=w)) == pytest.approx(1.0 + 1 / 16 / 4)


def test_mask():
    g = torch.Generator().manual_seed(1)
    pred, noise = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    w_img = torch.rand(2, 1, 16, 16, generator=g)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :8, :] = 1  # top half: whole latent rows 0-1
    err = (pred - noise) ** 2 * (1 + 0.25 * _block_mean(w_img, 4))
    expected = err[..., :2, :].mean()
    torch.testing.assert_close(CTRDLoss()(pred, noise, weight_map=w_img, mask=mask), expected)
    none = CTRDLoss(reduction="none")(pred, noise, weight_map=w_img, mask=mask)
    assert float(none[..., 2:, :].abs().max()) == 0.0


def test_gradient_and_errors():
    pred = torch.randn(1, 4, 4, 4, requires_grad=True)
    CTRDLoss()(pred, torch.zeros(1, 4, 4, 4), weight_map=torch.rand(1, 1, 16, 16)).backward()
    assert pred.grad is not None
    with pytest.raises(ValueError, match="weight_map"):
        CTRDLoss()(pred, torch.zeros(1, 4, 4, 4), weight_map=torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        CTRDLoss()(pred, torch.zeros(1, 4, 4, 5))
    with pytest.raises(ValueError):
        CTRDLoss(reduction="max")
    with pytest.raises(ValueError):
        CTRDLoss(alpha=-1)


def test_package_exports_both_losses():
    import monai_lpuwf.losses as losses
    from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss

    assert losses.OfflinePerceptualLoss is OfflinePerceptualLoss and losses.CTRDLoss is CTRDLoss
    assert set(losses.__all__) >= {"CTRDLoss", "OfflinePerceptualLoss"}
