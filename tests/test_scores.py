"""Image scores (:mod:`monai_lpuwf.scores`) against MONAI's metric classes and closed-form formulas."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import MSEMetric, MultiScaleSSIMMetric, PSNRMetric, SSIMMetric

import monai_lpuwf.engines
import monai_lpuwf.metrics
from monai_lpuwf.scores import (
    MS_SSIM_WEIGHTS,
    compute_image_scores,
    compute_masked_image_scores,
    ms_ssim_min_size,
    ms_ssim_weights_for,
    to_unit_range,
)


def _pair(shape=(2, 1, 180, 192), seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g) * 2 - 1
    target = torch.nn.functional.avg_pool2d(target, 5, 1, 2)  # some spatial structure
    pred = (target + 0.2 * torch.randn(shape, generator=g)).clamp(-1, 1)
    return pred, target


def test_to_unit_range_maps_and_clamps():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0])
    assert torch.equal(to_unit_range(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert torch.equal(to_unit_range(torch.tensor([0.0, 255.0]), (0, 255)), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="high > low"):
        to_unit_range(x, (1, 1))


def test_whole_frame_matches_monai_classes():
    pred, target = _pair()
    scores = compute_image_scores(pred, target)
    p01, t01 = (pred + 1) / 2, (target + 1) / 2
    expected = {
        "psnr": PSNRMetric(max_val=1.0, reduction="none")(p01, t01),
        "ssim": SSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(p01, t01),
        "ms_ssim": MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(p01, t01),
        "mse": MSEMetric(reduction="none")(p01, t01),
    }
    for name, value in expected.items():
        torch.testing.assert_close(scores[name], value.flatten(), msg=name)
    assert list(scores) == ["psnr", "ssim", "ms_ssim", "mse"]


def test_mse_and_psnr_formula():
    target = torch.zeros(1, 1, 32, 32) - 1  # 0 in [0, 1]
    pred = torch.full_like(target, -0.6)  # 0.2 in [0, 1]
    scores = compute_image_scores(pred, target)
    torch.testing.assert_close(scores["mse"], torch.tensor([0.04]))
    torch.testing.assert_close(scores["psnr"], torch.tensor([-10 * math.log10(0.04)]))
    assert torch.isnan(scores["ms_ssim"]).all()  # 32 px < 176 px


def test_ms_ssim_size_rule_matches_monai():
    assert ms_ssim_min_size() == 176
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0)
    ok = torch.rand(1, 1, 176, 176)
    metric(ok, ok)  # accepted by MONAI
    small = torch.rand(1, 1, 175, 200)
    with pytest.raises(ValueError):
        metric(small, small)
    assert torch.isnan(compute_image_scores(small, small)["ms_ssim"]).all()
    assert torch.isnan(compute_image_scores(small, small, mask=torch.ones(1, 1, 175, 200))["ms_ssim"]).all()
    assert ms_ssim_min_size(7, 3) == 28


def test_mask_of_ones_equals_whole_frame():
    pred, target = _pair()
    whole = compute_image_scores(pred, target)
    masked = compute_image_scores(pred, target, mask=torch.ones(2, 1, 180, 192))
    for name in whole:
        torch.testing.assert_close(masked[name], whole[name], msg=name)


def test_masked_mse_psnr_formula():
    pred, target = _pair(seed=1)
    mask = torch.zeros(2, 1, 180, 192)
    mask[0, :, 10:50, 20:90] = 1
    mask[1, :, 100:170, 5:60] = 1
    scores = compute_image_scores(pred, target, mask=mask)
    p01, t01 = (pred + 1) / 2, (target + 1) / 2
    for b in range(2):
        sel = mask[b, 0] > 0
        mse = ((p01[b, 0] - t01[b, 0])[sel] ** 2).mean()
        torch.testing.assert_close(scores["mse"][b], mse)
        torch.testing.assert_close(scores["psnr"][b], -10 * torch.log10(mse))


def test_masked_ssim_on_rectangle_equals_monai_on_crop():
    """Windows centred in a rectangle = MONAI's SSIM on the rectangle grown by half a window."""
    pred, target = _pair(seed=2)
    r0, r1, c0, c1 = 40, 100, 30, 150
    mask = torch.zeros(2, 1, 180, 192)
    mask[:, :, r0:r1, c0:c1] = 1
    scores = compute_image_scores(pred, target, mask=mask)
    p01, t01 = (pred + 1) / 2, (target + 1) / 2
    crop = (slice(None), slice(None), slice(r0 - 5, r1 + 5), slice(c0 - 5, c1 + 5))
    expected = SSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(p01[crop], t01[crop]).flatten()
    torch.testing.assert_close(scores["ssim"], expected)


def test_masked_ms_ssim_binary_weights_change_score_and_empty_mask_is_nan():
    pred, target = _pair(seed=3)
    mask = torch.zeros(2, 1, 180, 192)
    mask[0, :, :90] = 1  # top half of image 0, nothing for image 1
    scores = compute_masked_image_scores((pred + 1) / 2, (target + 1) / 2, mask)
    assert 0 < scores["ms_ssim"][0] < 1
    for name in scores:
        assert torch.isnan(scores[name][1]), name


def test_identical_images_are_perfect():
    _, target = _pair()
    scores = compute_image_scores(target, target, mask=torch.ones(2, 1, 180, 192))
    torch.testing.assert_close(scores["ssim"], torch.ones(2))
    torch.testing.assert_close(scores["ms_ssim"], torch.ones(2))
    assert torch.equal(scores["mse"], torch.zeros(2))
    assert torch.isinf(scores["psnr"]).all()


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        compute_image_scores(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        compute_image_scores(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        compute_image_scores(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), mask=torch.ones(1, 1, 4, 4))


def test_ms_ssim_weights_follow_monai_size_rule():
    total = sum(MS_SSIM_WEIGHTS)
    assert ms_ssim_weights_for((512, 512)) == pytest.approx([w / total for w in MS_SSIM_WEIGHTS])
    assert [len(ms_ssim_weights_for((s, s))) for s in (176, 175, 128, 64, 32, 8)] == [5, 4, 4, 3, 2, 1]
    assert len(ms_ssim_weights_for((512, 128))) == 4  # the smaller side decides
    for size in (128, 64, 32):
        weights = ms_ssim_weights_for((size, size))
        assert sum(weights) == pytest.approx(1.0)
        x = torch.rand(1, 1, size, size)
        MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, weights=weights)(x, x)  # MONAI accepts the scales
        with pytest.raises(ValueError):  # one scale more is refused by MONAI
            MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, weights=MS_SSIM_WEIGHTS[: len(weights) + 1])(x, x)


def test_one_definition_shared_by_engines_and_metrics():
    """The engines' validation metrics and the evaluation use the same functions (not copies)."""
    assert monai_lpuwf.engines.ms_ssim_min_size is ms_ssim_min_size is monai_lpuwf.metrics.ms_ssim_min_size
    assert monai_lpuwf.metrics.compute_image_scores is compute_image_scores
    assert monai_lpuwf.metrics.to_unit_range is to_unit_range
