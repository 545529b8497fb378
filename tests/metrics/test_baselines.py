"""Trivial predictors, the per-frame score table and LPIPS as a metric."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss
from monai_lpuwf.metrics import (
    compute_image_scores,
    compute_lesion_scores,
    compute_lpips,
    constant_prediction,
    difference_map,
    mean_intensity,
    score_frames,
    score_with_baselines,
)


def test_mean_intensity_is_pixel_weighted_and_masked():
    a, b = torch.full((1, 2, 2), 1.0), torch.full((1, 4, 4), -1.0)  # 4 px of 1, 16 px of -1
    assert mean_intensity([a, b]) == pytest.approx((4 - 16) / 20)
    ma, mb = torch.ones(1, 2, 2), torch.zeros(1, 4, 4)
    mb[0, 0, 0] = 1
    assert mean_intensity([a, b], [ma, mb]) == pytest.approx((4 - 1) / 5)
    with pytest.raises(ValueError, match="no pixels"):
        mean_intensity([])
    with pytest.raises(ValueError, match="fewer"):
        mean_intensity([a, b], [ma])


def test_training_intensity_record_computes_once_and_restores(tmp_path):
    """The model file's "data_stats": the mean of the training late phases in [-1, 1], computed on the first
    save only, restored (not recomputed) from a checkpoint, read back by ModelFile.training_mean."""
    import numpy as np
    from PIL import Image

    from monai_lpuwf.metrics.baselines import TrainingIntensityRecord
    from monai_lpuwf.networks import ModelFile

    items, total, count = [], 0.0, 0
    for i in range(3):
        path = tmp_path / f"{i}.2.png"
        image = np.random.default_rng(i).integers(0, 256, (8, 6 + 2 * i), dtype=np.uint8)
        Image.fromarray(image).save(path)
        items.append({"late": str(path)})
        total, count = total + float((image / 255.0 * 2 - 1).sum()), count + image.size
    expected = total / count
    record = TrainingIntensityRecord(items)
    state = record.state_dict()
    assert state == {"late_mean": pytest.approx(expected, abs=1e-6), "num_images": 3}
    for item in items:  # computed once: the files are no longer needed
        Path(item["late"]).unlink()
    assert record.state_dict() == state
    restored = TrainingIntensityRecord([])
    restored.load_state_dict({"late_mean": 0.5, "num_images": 9})
    assert restored.state_dict()["late_mean"] == 0.5
    torch.save({"model": {}, "config": {}, "data_stats": state}, tmp_path / "model.pt")
    assert ModelFile.load(tmp_path / "model.pt").training_mean() == pytest.approx(expected, abs=1e-6)
    torch.save({"model": {}, "config": {}}, tmp_path / "old.pt")
    assert ModelFile.load(tmp_path / "old.pt").training_mean() is None


def test_constant_prediction():
    like = torch.zeros(2, 1, 3, 4)
    assert torch.equal(constant_prediction(like, -0.25), torch.full_like(like, -0.25))


def _frames(seed=0):
    g = torch.Generator().manual_seed(seed)
    late = torch.rand(2, 1, 40, 48, generator=g) * 2 - 1
    early = (late + 0.3 * torch.randn(2, 1, 40, 48, generator=g)).clamp(-1, 1)
    pred = (late + 0.1 * torch.randn(2, 1, 40, 48, generator=g)).clamp(-1, 1)
    fov = torch.zeros(2, 1, 40, 48)
    fov[..., 5:35, 6:42] = 1
    return pred, late, early, fov


def test_score_frames_columns_match_component_functions():
    pred, late, early, fov = _frames()
    scores = score_frames(pred, late, fov=fov, early=early, top_percent=5)
    whole, in_fov = compute_image_scores(pred, late), compute_image_scores(pred, late, mask=fov)
    lesion = compute_lesion_scores(pred, late, difference_map(early, late), fov=fov, top_percent=5)
    for name in ("psnr", "ssim", "mse"):
        torch.testing.assert_close(scores[name], whole[name])
        torch.testing.assert_close(scores[f"{name}_fov"], in_fov[name])
        torch.testing.assert_close(scores[f"{name}_lesion"], lesion[name])
    assert "lpips" not in scores and set(score_frames(pred, late)) == {"psnr", "ssim", "ms_ssim", "mse"}


def test_score_with_baselines_orders_predictors():
    pred, late, early, fov = _frames(1)
    table = score_with_baselines(pred, late, constant_value=float(late.mean()), early=early, fov=fov)
    assert list(table) == ["model", "constant", "early"]
    const = compute_image_scores(torch.full_like(late, float(late.mean())), late)
    torch.testing.assert_close(table["constant"]["mse"], const["mse"])
    torch.testing.assert_close(table["early"]["psnr"], compute_image_scores(early, late)["psnr"])
    assert (table["model"]["psnr"] > table["early"]["psnr"]).all()  # a close prediction beats the floor
    assert list(score_with_baselines(None, late, constant_value=0.0)) == ["constant"]


def test_lpips_metric_requires_lpips_weights(tmp_path):
    pred, late, _, _ = _frames(2)
    base = OfflinePerceptualLoss("alexnet", allow_random_init=True)
    with pytest.raises(ValueError, match="linear-layer weights"):
        compute_lpips(pred, late, base)
    torch.save({f"lin{i}.model.1.weight": torch.ones(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))},
               tmp_path / "alex.pth")  # fmt: skip
    lp = OfflinePerceptualLoss("alexnet", allow_random_init=True, lpips_weights_path=tmp_path / "alex.pth")
    values = compute_lpips(pred, late, lp)
    base.reduction = "none"
    torch.testing.assert_close(values, base(pred, late).detach())  # unit linear weights = the channel sum
    assert lp.reduction == "mean"  # restored
    torch.testing.assert_close(score_frames(pred, late, perceptual=lp)["lpips"], values)


@pytest.mark.realdata
def test_constant_floor_on_real_frames(uwf_samples_dir):
    """The constant-image floor on a real 853 x 682 val frame, next to MONAI's MS-SSIM class computed directly."""
    from monai.metrics import MultiScaleSSIMMetric

    from monai_lpuwf.transforms import LoadUWFImage

    load = LoadUWFImage(modality="fa")
    value = mean_intensity(load(p) for p in sorted((uwf_samples_dir / "train").glob("*.2.bmp")))
    late = load(uwf_samples_dir / "val" / "7.2.bmp").as_tensor()[None]
    assert late.shape == (1, 1, 682, 853)
    scores = score_with_baselines(None, late, constant_value=value)["constant"]
    const01 = torch.full_like(late, (value + 1) / 2)
    direct = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, reduction="none")(const01, (late + 1) / 2)
    torch.testing.assert_close(scores["ms_ssim"], direct.flatten())
    assert 0.5 < float(scores["ms_ssim"]) < 0.9  # the floor a model must clear (0.70 measured for frame 7)
