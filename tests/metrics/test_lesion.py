"""Lesion region = top-k % of the difference map within the field of view."""

from __future__ import annotations

import math

import pytest
import torch

from monai_lpuwf.metrics import compute_image_scores, compute_lesion_scores, difference_map, lesion_mask


def test_difference_map_formula():
    early = torch.tensor([[[[0.5, -1.0]], [[0.1, 0.0]]]])  # (1, 2, 1, 2)
    late = torch.tensor([[[[0.0, 1.0]], [[0.3, 0.0]]]])
    torch.testing.assert_close(difference_map(early, late), torch.tensor([[[[0.35, 1.0]]]]))
    with pytest.raises(ValueError, match="same shape"):
        difference_map(early, late[..., :1])


def test_lesion_mask_selects_exact_top_share_within_fov():
    g = torch.Generator().manual_seed(0)
    diff = torch.rand(2, 1, 20, 30, generator=g)
    fov = torch.zeros(2, 1, 20, 30)
    fov[0, :, 2:18, 3:27] = 1
    fov[1] = 1
    mask = lesion_mask(diff, fov, top_percent=7.5)
    for b in range(2):
        inside = fov[b] > 0
        n = int(inside.sum())
        sel = mask[b] > 0
        assert int(sel.sum()) == math.ceil(0.075 * n)
        assert not (sel & ~inside).any()  # never outside the field of view
        assert diff[b][sel].min() >= diff[b][inside & ~sel].max()  # the largest values


def test_lesion_mask_ties_and_whole_frame():
    diff = torch.zeros(1, 1, 10, 10)
    diff[0, 0, 0, :3] = 1.0
    mask = lesion_mask(diff, top_percent=3)
    torch.testing.assert_close(mask, (diff > 0).float())
    assert int(lesion_mask(torch.zeros(1, 1, 10, 10), top_percent=5).sum()) == 5  # ties: still exactly 5
    with pytest.raises(ValueError, match="top_percent"):
        lesion_mask(diff, top_percent=0)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        lesion_mask(torch.zeros(1, 2, 4, 4))


def test_lesion_scores_equal_scores_within_lesion_mask():
    g = torch.Generator().manual_seed(1)
    early = torch.rand(1, 1, 64, 64, generator=g) * 1.2 - 1  # [-1, 0.2]: the leak stays in range
    late = early.clone()
    late[..., 20:30, 40:50] += 0.8  # a 'leak'
    pred = early.clone()  # a model that misses the lesion
    diff = difference_map(early, late)
    scores = compute_lesion_scores(pred, late, diff, top_percent=2.44140625)  # 100 of 4096 px
    # the lesion region is exactly the 10x10 leak: MSE there is the leak's squared error in [0, 1] units
    expected_mse = (((pred - late) / 2)[..., 20:30, 40:50] ** 2).mean()
    torch.testing.assert_close(scores["mse"], expected_mse.view(1))
    whole = compute_image_scores(pred, late)
    assert scores["psnr"] < whole["psnr"]  # missed lesions are worse than the frame average
