"""RandRotateCrop(d): the pixels of MONAI's whole-frame rotation followed by a crop, resampling only the crop.

Oracle: :class:`monai.transforms.Rotate` (``keep_size=True``) of the whole frame, then :class:`SpatialCrop` at the
drawn start - what the training preset did before. Tolerance 1e-4 on values in [0, 1]: the two evaluate the same
bilinear samples, up to float32 rounding of the grid coordinates (measured 5e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.data.utils import set_rnd
from monai.transforms import Rotate, SpatialCrop

from monai_lpuwf.transforms import RandRotateCrop, RandRotateCropd, uwf_train_transforms


def _frame(h=60, w=80, c=1, seed=0):
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


def _oracle(img, angle, start, size, mode="bilinear", padding_mode="border"):
    rotated = Rotate(angle=angle, keep_size=True, mode=mode, padding_mode=padding_mode)(img)
    return SpatialCrop(roi_start=start, roi_end=[s + c for s, c in zip(start, size)])(rotated)


@pytest.mark.parametrize("mode,padding_mode", [("bilinear", "border"), ("bilinear", "zeros"), ("nearest", "zeros")])
def test_equals_whole_frame_rotation_then_crop(mode, padding_mode):
    img = _frame()
    t = RandRotateCrop((20, 30), rotate_range=0.3, mode=mode, padding_mode=padding_mode).set_random_state(3)
    for _ in range(6):
        out = t(img)
        assert out.shape == (1, 20, 30)
        ref = _oracle(img, t.angle, t.start, (20, 30), mode, padding_mode)
        assert abs(t.angle) <= 0.3
        if mode == "nearest":  # a sample point on a pixel boundary may round either way: compare almost all pixels
            assert (out - ref).abs().gt(1e-4).float().mean() < 0.01
        else:
            torch.testing.assert_close(torch.as_tensor(out), torch.as_tensor(ref), atol=1e-4, rtol=0)


def test_no_rotation_is_an_exact_crop_and_starts_cover_the_frame():
    img = _frame(30, 40)
    t = RandRotateCrop(8, rotate_range=0.0).set_random_state(0)
    starts = set()
    for _ in range(400):
        out = t(img)
        (r, c) = t.start
        torch.testing.assert_close(torch.as_tensor(out), img[:, r : r + 8, c : c + 8], atol=1e-5, rtol=0)
        starts.add(t.start)
    rows, cols = {s[0] for s in starts}, {s[1] for s in starts}
    assert min(rows) == 0 and max(rows) == 30 - 8 and min(cols) == 0 and max(cols) == 40 - 8  # as RandSpatialCrop


def test_axis_shorter_than_the_crop_keeps_the_frame_length():
    out = RandRotateCrop((50, 10), rotate_range=0.1).set_random_state(1)(_frame(30, 40))
    assert out.shape == (1, 30, 10)


def test_metatensor_affine_follows_the_crop():
    img = MetaTensor(_frame(30, 40), affine=torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0])))
    t = RandRotateCrop(8).set_random_state(2)
    out = t(img)
    assert isinstance(out, MetaTensor)
    r, c = t.start
    # output pixel (0, 0) is input pixel (r, c): world coordinates (2 r, 3 c)
    np.testing.assert_allclose(np.asarray(out.affine)[:2, 3], [2.0 * r, 3.0 * c], atol=1e-4)


def _item(h=60, w=80):
    slo = _frame(h, w, c=3, seed=1)
    fov = (_frame(h, w, seed=2) > 0.5).float()
    return {"slo": slo, "early": slo[:1].clone(), "fov": fov, "ctrd": slo[1:2].clone()}


def test_dictionary_one_draw_for_every_key_and_a_mode_per_key():
    t = RandRotateCropd(
        keys=["slo", "early", "fov", "ctrd"],
        roi_size=(20, 30),
        rotate_range=0.3,
        mode=["bilinear", "bilinear", "nearest", "bilinear"],
        padding_mode=["border", "border", "zeros", "zeros"],
    ).set_random_state(5)
    item = _item()
    out = t(item)
    angle, start = t.cropper.angle, t.cropper.start
    torch.testing.assert_close(out["early"], out["slo"][:1])  # same draw for both keys
    ref = _oracle(item["ctrd"], angle, start, (20, 30), padding_mode="zeros")
    torch.testing.assert_close(torch.as_tensor(out["ctrd"]), torch.as_tensor(ref), atol=1e-4, rtol=0)
    assert set(torch.unique(torch.as_tensor(out["fov"])).tolist()) <= {0.0, 1.0}  # nearest keeps the mask binary


def test_dictionary_missing_key_and_size_mismatch():
    t = RandRotateCropd(keys=["slo", "late"], roi_size=8, allow_missing_keys=True)
    assert t({"slo": _frame(20, 20, c=3)})["slo"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="one spatial size"):
        t({"slo": _frame(20, 20, c=3), "late": _frame(20, 24)})
    with pytest.raises(KeyError):
        RandRotateCropd(keys=["slo", "late"], roi_size=8)({"slo": _frame(20, 20, c=3)})


def test_monai_seeding_reaches_the_draws():
    """DataLoader workers and the bundle's seed handler seed transforms with MONAI's ``set_rnd``."""
    outs = []
    for _ in range(2):
        t = RandRotateCropd(keys="slo", roi_size=8, rotate_range=0.2)
        set_rnd(t, 123)
        outs.append(t({"slo": _frame(30, 30, c=3)})["slo"])
    torch.testing.assert_close(outs[0], outs[1])
    t = RandRotateCropd(keys="slo", roi_size=8, rotate_range=0.2)
    set_rnd(t, 124)
    assert not torch.equal(t({"slo": _frame(30, 30, c=3)})["slo"], outs[0])


def test_rejects_an_image_without_channel_axis():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandRotateCrop(8)(torch.zeros(20, 20))


def test_training_preset_uses_it():
    names = [type(x).__name__ for x in uwf_train_transforms(32).transforms]
    assert "RandRotateCropd" in names and "RandRotated" not in names and "RandSpatialCropd" not in names
