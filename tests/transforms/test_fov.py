"""Field-of-view masks: borders, burnt-in boxes and eyelids excluded; dictionary version intersects keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage as ndi

from monai_lpuwf.data import render_phantom
from monai_lpuwf.transforms import FieldOfView, FieldOfViewd, LoadUWFImage, flat_box_mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantom():
    return render_phantom((192, 240), seed=3)


def _box(shape):
    h, w = shape
    box = np.zeros(shape, bool)
    box[int(0.9 * h) : int(0.975 * h), int(0.745 * w) : int(0.955 * w)] = True
    return box


def test_fa_mask_matches_the_phantom_retina_without_the_box(phantom):
    early = phantom["early"] * 2 - 1
    mask = FieldOfView("fa")(early)[0] > 0.5
    box = _box(mask.shape)
    truth = phantom["fov"] & ~box
    assert _dice(mask, truth) > 0.97
    assert not (mask & box).any()
    assert not mask[0].any() and not mask[:, 0].any()  # black border out


def test_slo_mask_excludes_the_bright_eyelids(phantom):
    slo = phantom["slo"] * 2 - 1
    mask = FieldOfView("slo")(slo)[0] > 0.5
    eyelid = ~phantom["fov"] & (phantom["slo"][:2].min(0) > 0.5)
    assert eyelid.mean() > 0.1  # the phantom has eyelids to exclude
    beyond_edge = eyelid & ~ndi.binary_dilation(phantom["fov"], iterations=3)  # the retina's rim blurs a little
    assert (mask & beyond_edge).sum() / beyond_edge.sum() < 0.02
    assert _dice(mask, phantom["fov"]) > 0.9
    # the FA rule alone would keep the eyelids: they are bright
    assert (FieldOfView("fa")(slo[:2].mean(0, keepdims=True))[0] > 0.5)[eyelid].mean() > 0.5


def test_mask_follows_flips_of_the_image(phantom):
    early = phantom["early"] * 2 - 1
    mask = FieldOfView("fa")(early)
    flipped = FieldOfView("fa")(early[:, ::-1, ::-1].copy())
    assert (mask[:, ::-1, ::-1] != flipped).mean() < 1e-3


def test_types_metadata_and_values(phantom):
    early = MetaTensor(torch.as_tensor(phantom["early"] * 2 - 1), meta={"filename_or_obj": "e.png"})
    out = FieldOfView()(early)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.meta["filename_or_obj"] == "e.png"
    assert set(torch.unique(out).tolist()) == {0.0, 1.0}
    assert isinstance(FieldOfView()(phantom["early"]), np.ndarray)
    eroded = FieldOfView(erode=3)(early)
    assert eroded.sum() < out.sum() and bool((eroded <= out).all())


def test_flat_box_detector_finds_rectangles_not_smooth_retina():
    rng = np.random.default_rng(0)
    _, cc = np.mgrid[0:100, 0:120] / 120.0
    grey = 0.3 + 0.3 * cc + 0.002 * rng.standard_normal((100, 120))  # smooth ramp: not a box
    grey[70:90, 80:115] = 0.08  # burnt-in box
    found = flat_box_mask(grey)
    assert found[72:88, 82:113].all()
    assert found.sum() < 1.3 * 20 * 35 + 4 * (20 + 35) * 2  # the box grown by 2 px, nothing else


def test_dictionary_version_intersects_the_keys(phantom):
    late = render_phantom((192, 240), seed=3, misregistration=2.0)["late"] * 2 - 1
    data = {"early": phantom["early"] * 2 - 1, "late": late}
    out = FieldOfViewd(["early", "late"])(data)
    expected = FieldOfView("fa")(data["early"]) * FieldOfView("fa")(late)
    np.testing.assert_array_equal(out["fov"], expected)
    assert out["fov"].sum() < FieldOfView("fa")(data["early"]).sum()
    slo_only = FieldOfViewd("slo", mask_key="slo_fov")({"slo": phantom["slo"] * 2 - 1})
    np.testing.assert_array_equal(slo_only["slo_fov"], FieldOfView("slo")(phantom["slo"] * 2 - 1))
    with pytest.raises(KeyError):
        FieldOfViewd(["early", "late"])({"early": data["early"]})
    partial = FieldOfViewd(["early", "late"], allow_missing_keys=True)({"early": data["early"]})
    np.testing.assert_array_equal(partial["fov"], FieldOfView("fa")(data["early"]))


@pytest.mark.realdata
def test_real_fa_mask_excludes_border_and_burnt_in_box(uwf_samples_dir):
    for name in ("1.1.bmp", "3.2.bmp"):
        img = LoadUWFImage("fa")(uwf_samples_dir / "train" / name)
        mask = FieldOfView()(img)[0].numpy() > 0.5
        assert 0.45 < mask.mean() < 0.85, (name, mask.mean())
        assert mask[300:380, 380:470].all()  # the posterior pole is in
        assert not mask[615:660, 640:810].any()  # the burnt-in box (bottom right) is out
        assert not mask[:5].any()  # the black border is out
        grey = (img[0].numpy() + 1) / 2
        assert grey[mask].mean() > 3 * grey[~mask].mean()


def test_tensor_input_returns_a_tensor_on_its_device(phantom):
    """Numpy backend: a tensor in gives a tensor out, on the input's device, equal to the numpy result."""
    early = (phantom["early"] * 2 - 1).astype(np.float32)
    tensor = torch.as_tensor(early)
    out = FieldOfView("fa")(tensor)
    assert type(out) is torch.Tensor and out.device == tensor.device and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), FieldOfView("fa")(early))
    d = FieldOfViewd("early")({"early": tensor})
    assert type(d["fov"]) is torch.Tensor and d["fov"].device == tensor.device
