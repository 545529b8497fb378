"""Issue 18: the vessel-band L1 loss of the supervised prior, against torch's L1 and scipy's Gaussian filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from monai_lpuwf.losses import VesselBandL1Loss, vessel_band
from monai_lpuwf.metrics import vessel_band as metrics_vessel_band


def _images(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((2, 1, 48, 48), generator=g) * 2 - 1


def test_weight_zero_is_plain_l1_and_terms_are_reported():
    a, b = _images(0), _images(1)
    out = VesselBandL1Loss(band_weight=0.0)(a, b)
    assert float(out["loss"]) == pytest.approx(float(torch.nn.functional.l1_loss(a, b)), rel=1e-6)
    out = VesselBandL1Loss(band_weight=2.0)(a, b)
    assert float(out["loss"]) == pytest.approx(float(out["loss_l1"] + 2.0 * out["loss_band"]), rel=1e-6)
    assert float(VesselBandL1Loss()(a, a)["loss"]) == 0.0


def test_band_term_against_scipy():
    """The element-wise band term is |DoG(pred) - DoG(target)| with scipy's filters (interior: the two differ only
    at the border)."""
    a, b = _images(2), _images(3)
    loss = VesselBandL1Loss(band_weight=1.0, reduction="none")(a, b)
    dog = [gaussian_filter(x[0, 0].numpy(), 0.7) - gaussian_filter(x[0, 0].numpy(), 2.5) for x in (a, b)]
    ref = np.abs(a[0, 0].numpy() - b[0, 0].numpy()) + np.abs(dog[0] - dog[1])
    np.testing.assert_allclose(loss[0, 0, 12:-12, 12:-12].numpy(), ref[12:-12, 12:-12], atol=2e-3)


def test_band_term_charges_a_blur_more_than_l1_does():
    """A blurred copy of thin lines: its band error relative to its L1 error is far larger than that of a copy with
    the same L1 error spread as a constant offset (which has no band at all)."""
    img = torch.zeros((1, 1, 48, 48))
    img[..., 10::8, :] = 1.0
    blurred = torch.from_numpy(gaussian_filter(img[0, 0].numpy(), 1.5))[None, None]
    offset = img + float((blurred - img).abs().mean())
    loss = VesselBandL1Loss(band_weight=1.0, reduction="none")

    def band_error(x: torch.Tensor) -> float:  # the band term, away from the zero-padded border
        return float((loss(x, img) - (x - img).abs())[..., 12:-12, 12:-12].mean())

    assert float((offset - img).abs().mean()) == pytest.approx(float((blurred - img).abs().mean()), rel=1e-5)
    assert band_error(offset) < 1e-3 * band_error(blurred)


def test_gradients_flow_and_one_band_definition():
    pred = _images(4).requires_grad_(True)
    VesselBandL1Loss(band_weight=1.0)(pred, _images(5))["loss"].backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    assert metrics_vessel_band is vessel_band  # the metric scores the band the loss trains on


def test_bad_arguments():
    with pytest.raises(ValueError, match="band_weight"):
        VesselBandL1Loss(band_weight=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        VesselBandL1Loss(reduction="sum")
    with pytest.raises(ValueError, match="differ"):
        VesselBandL1Loss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
