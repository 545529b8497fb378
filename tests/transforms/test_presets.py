"""Training / inference pipelines: identical geometry for every key, bundle-ready outputs, exact inversion."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor, decollate_batch
from monai.transforms import Invertd
from scipy import ndimage as ndi

from monai_lpuwf.data import generate_phantoms, save_uwf_image
from monai_lpuwf.networks import ModelFile
from monai_lpuwf.transforms import (
    CheckTrainingScaled,
    CrossTemporalDifference,
    FieldOfView,
    LoadUWFImage,
    TrainingScaleRecord,
    training_frame_size,
    uwf_inference_transforms,
    uwf_train_transforms,
)


def _asymmetric_triplet(tmp_path, h=90, w=110):
    """Grey frames with an off-centre, asymmetric retina and one off-centre leak (late only); SLO = early as RGB.

    Every flip or rotation of this content is visible, so a key transformed differently from the others shows.
    """
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)
    retina = ((rr - 0.42 * h) / (0.36 * h)) ** 2 + ((cc - 0.45 * w) / (0.4 * w)) ** 2 < 1
    retina &= ~((rr > 0.55 * h) & (cc > 0.55 * w))  # a missing quadrant: not symmetric under any flip
    texture = np.random.default_rng(0).normal(0, 0.05, (h, w))
    early = np.where(retina, 0.3 + 0.4 * cc / w + 0.1 * np.sin(rr / 5) + texture, -1.0)
    blob = np.exp(-((rr - 0.3 * h) ** 2 + (cc - 0.3 * w) ** 2) / (2 * 4.0**2))
    late = np.where(retina, early + 0.6 * blob, -1.0)
    paths = {}
    for key, img in (("slo", np.repeat(early[None], 3, 0)), ("early", early[None]), ("late", late[None])):
        paths[key] = str(save_uwf_image(img, tmp_path / f"{key}.tif", bit_depth=16))
    return paths


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_train_augmentation_identical_geometry_for_all_keys(tmp_path, seed):
    paths = _asymmetric_triplet(tmp_path)
    pipeline = uwf_train_transforms((64, 72), sharpen=False, crop_scale=1.2)
    pipeline.set_random_state(seed)
    out = pipeline(paths)
    assert {k: tuple(out[k].shape) for k in out} == {
        "slo": (3, 64, 72),
        "early": (1, 64, 72),
        "late": (1, 64, 72),
        "fov": (1, 64, 72),
        "ctrd": (1, 64, 72),
    }
    assert all(out[k].dtype == torch.float32 for k in out)
    # the same picture under slo (x3) and early: identical pixels after augmentation
    for c in range(3):
        torch.testing.assert_close(out["slo"][c], out["early"][0], atol=1e-5, rtol=0)
    # late differs from early only in the blob: outside it they must coincide pixel for pixel
    far = (out["ctrd"][0] < 1e-3) & (out["fov"][0] > 0)
    torch.testing.assert_close(out["late"][0][far], out["early"][0][far], atol=2e-2, rtol=0)
    # fov follows the transformed retina, ctrd the transformed |late - early|
    retina = out["early"][0] > -0.5
    fov = out["fov"][0] > 0.5
    dice = 2 * (retina & fov).sum() / (retina.sum() + fov.sum())
    assert dice > 0.95, dice
    diff = (out["late"][0] - out["early"][0]).abs()
    centre_ctrd = ndi.center_of_mass(out["ctrd"][0].numpy())
    centre_diff = ndi.center_of_mass(diff.numpy())
    assert np.hypot(*np.subtract(centre_ctrd, centre_diff)) <= 1.5, (centre_ctrd, centre_diff)
    corr = np.corrcoef(out["ctrd"][0].numpy().ravel(), diff.numpy().ravel())[0, 1]
    assert corr > 0.9, corr


def test_train_augmentation_draws_differ_between_items(tmp_path):
    """Augmentation really is random (a pipeline that never rotates or flips would pass the geometry test)."""
    paths = _asymmetric_triplet(tmp_path)
    pipeline = uwf_train_transforms((64, 72), sharpen=False)
    pipeline.set_random_state(0)
    outs = [pipeline(paths)["early"] for _ in range(4)]
    assert min(float((outs[0] - o).abs().max()) for o in outs[1:]) > 0.1


def test_validation_pipeline_is_deterministic_resize(tmp_path):
    paths = _asymmetric_triplet(tmp_path)
    out = uwf_train_transforms(48, sharpen=False, augment=False, val_resize=True)(paths)
    again = uwf_train_transforms(48, sharpen=False, augment=False, val_resize=True)(paths)
    assert tuple(out["early"].shape) == (1, 48, 48)
    for k in out:
        torch.testing.assert_close(out[k], again[k])
    # oracle: the CTRD map of the resized frames inside the recomputed field of view
    fov = FieldOfView("fa")(out["early"]) * FieldOfView("fa")(out["late"])
    torch.testing.assert_close(out["fov"].as_tensor(), fov.as_tensor())
    ctrd = CrossTemporalDifference()(out["early"], out["late"], fov)
    torch.testing.assert_close(out["ctrd"].as_tensor(), ctrd.as_tensor())


def test_without_late_and_sharpening_flags(tmp_path):
    paths = _asymmetric_triplet(tmp_path)
    no_late = uwf_train_transforms(32, with_late=False, augment=False, sharpen=False)(
        {k: paths[k] for k in ("slo", "early")}
    )
    assert set(no_late) == {"slo", "early", "fov"}
    sharp = uwf_train_transforms(32, with_late=False, augment=False, sharpen=True)(
        {k: paths[k] for k in ("slo", "early")}
    )
    assert float((sharp["slo"] - no_late["slo"]).abs().max()) > 1e-3  # sharpening is on by default, and does something
    torch.testing.assert_close(sharp["early"], no_late["early"])  # ... on the SLO only
    native_crop = uwf_train_transforms((32, 40), crop_scale=None, sharpen=False)(paths)  # the authors' recipe
    assert {tuple(v.shape[1:]) for v in native_crop.values()} == {(32, 40)}
    full = LoadUWFImage("fa")(paths["early"])  # a crop at native scale: its values are pixels of the frame
    assert float(native_crop["early"].max()) <= float(full.max()) + 1e-5
    with pytest.raises(ValueError, match="register"):
        uwf_train_transforms(32, with_late=False, register="late")
    with pytest.raises(ValueError, match="unknown target"):
        uwf_train_transforms(32, register="early")


def test_train_pipeline_batches_through_cache_dataset(tmp_path):
    """As the bundle uses it: CacheDataset + DataLoader on phantoms, batches of the keys the trainers read."""
    recs = generate_phantoms(tmp_path, num=3, size=(96, 80))
    items = [{k: r[k] for k in ("slo", "early", "late")} for r in recs]
    ds = CacheDataset(items, uwf_train_transforms((64, 48)), progress=False)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert tuple(batch["slo"].shape) == (3, 3, 64, 48)
    for k in ("early", "late", "fov", "ctrd"):
        assert tuple(batch[k].shape) == (3, 1, 64, 48)
    assert batch["early"].min() >= -1 and batch["early"].max() <= 1
    assert set(torch.unique(batch["fov"]).tolist()) <= {0.0, 1.0}
    assert batch["ctrd"].min() >= 0 and batch["ctrd"].max() <= 1


def test_device_option_caches_the_deterministic_work_and_augments_after_it(tmp_path):
    """``device=...`` (the bundle's ``data_device``, on a GPU ``cuda:0``; here the CPU, the same code path): the
    CacheDataset holds the whole frames after the field of view and CTRD map (no augmentation), every transform
    after the move runs on torch tensors (MONAI's torch backend: the GPU can run it), and the augmented items are
    the ones of the pipeline without the move, draw for draw."""
    from monai.transforms import Randomizable
    from monai.utils import TransformBackends

    recs = generate_phantoms(tmp_path, num=3, size=(96, 80))
    items = [{k: r[k] for k in ("slo", "early", "late")} for r in recs]
    moved = uwf_train_transforms((64, 48), device="cpu")
    plain = uwf_train_transforms((64, 48))
    first_random = next(i for i, t in enumerate(moved.transforms) if isinstance(t, Randomizable))
    assert type(moved.transforms[first_random - 1]).__name__ == "EnsureTyped"  # the move is the last cached step
    for t in moved.transforms[first_random:]:
        assert TransformBackends.TORCH in t.backend, f"{type(t).__name__} has no torch backend"
    ds = CacheDataset(items, moved, progress=False)
    cached = ds._cache[0]
    assert tuple(cached["slo"].shape) == (3, 96, 80) and cached["slo"].dtype == torch.float32  # whole frame
    assert isinstance(cached["slo"], torch.Tensor) and cached["slo"].device.type == "cpu"
    # configs/gpu.json caches without copying (copy_cache=False): the augmentation must leave the cache untouched
    nocopy = CacheDataset(items, uwf_train_transforms((64, 48), device="cpu"), progress=False, copy_cache=False)
    before = {k: (v.clone(), len(v.applied_operations)) for k, v in nocopy._cache[0].items()}
    for _ in range(3):
        nocopy[0]
    for k, (value, ops) in before.items():
        assert torch.equal(nocopy._cache[0][k], value) and len(nocopy._cache[0][k].applied_operations) == ops, k
    for seed in (0, 1):
        moved.set_random_state(seed)
        plain.set_random_state(seed)
        a, b = moved(items[1]), plain(items[1])
        for k in ("slo", "early", "late", "fov", "ctrd"):
            torch.testing.assert_close(a[k].as_tensor(), b[k].as_tensor(), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(682, 853), (512, 640), (37, 50)])
@pytest.mark.parametrize("divisor", [8, 32])
def test_inference_padding_is_inverted_to_native_size(tmp_path, size, divisor):
    rng = np.random.default_rng(0)
    slo = rng.uniform(-1, 1, (3, *size)).astype(np.float32)
    path = save_uwf_image(slo, tmp_path / "1.png")
    pre = uwf_inference_transforms(divisor, sharpen=False)
    item = pre({"slo": str(path)})
    padded = tuple(item["slo"].shape[1:])
    assert all(p % divisor == 0 and 0 <= p - s < divisor for p, s in zip(padded, size))
    assert float(item["slo"].min()) >= -1.0
    # a "generated" image: here the padded SLO's green channel, so the native crop is known exactly
    item["pred"] = item["slo"][1:2].clone()
    inverted = Invertd(keys="pred", transform=pre, orig_keys="slo")(item)
    assert tuple(inverted["pred"].shape) == (1, *size)
    expected = LoadUWFImage("slo")(path)[1:2]
    torch.testing.assert_close(inverted["pred"].as_tensor(), expected.as_tensor())


def test_inference_inversion_through_a_batch(tmp_path):
    """As the inference bundle runs it: DataLoader batch -> decollate -> Invertd, with sharpening on."""
    paths = []
    for i, size in enumerate([(682, 853), (682, 853)]):
        img = np.random.default_rng(i).uniform(-1, 1, (3, *size)).astype(np.float32)
        paths.append({"slo": str(save_uwf_image(img, tmp_path / f"{i}.png"))})
    pre = uwf_inference_transforms(8)
    batch = next(iter(DataLoader(Dataset(paths, pre), batch_size=2)))
    assert tuple(batch["slo"].shape) == (2, 3, 688, 856)
    batch["pred"] = batch["slo"][:, :1] * 0.5
    items = [Invertd(keys="pred", transform=pre, orig_keys="slo")(d) for d in decollate_batch(batch)]
    assert [tuple(d["pred"].shape) for d in items] == [(1, 682, 853)] * 2


def test_inference_missing_late_is_allowed_when_asked(tmp_path):
    img = np.random.default_rng(0).uniform(-1, 1, (3, 20, 30)).astype(np.float32)
    slo = save_uwf_image(img, tmp_path / "1.png")
    pre = uwf_inference_transforms(8, keys=("slo", "late"), allow_missing_keys=True)
    out = pre({"slo": str(slo)})
    assert set(out) == {"slo"} and tuple(out["slo"].shape) == (3, 24, 32)


def test_train_pipeline_with_registration_batches(tmp_path):
    """register=True: late registered onto early before the CTRD map; its record survives batching."""
    recs = generate_phantoms(tmp_path, num=2, size=(96, 112), misregistration=2.0)
    items = [{k: r[k] for k in ("slo", "early", "late")} for r in recs]
    fast = {"resolutions": 3, "iterations": 150, "spatial_samples": 2048}
    pipeline = uwf_train_transforms(64, register=True, register_method="elastix", augment=False, register_kwargs=fast)
    registered = [pipeline(item) for item in items]
    assert all(r["late"].meta["registration"]["status"] == "registered" for r in registered)
    unregistered = [uwf_train_transforms(64, augment=False)(item) for item in items]
    for reg, unreg in zip(registered, unregistered):  # aligned phases: the map no longer lights up moved vessels
        assert float(reg["ctrd"].mean()) < float(unreg["ctrd"].mean())
    batch = next(iter(DataLoader(Dataset(items, pipeline), batch_size=2)))
    assert tuple(batch["late"].shape) == (2, 1, 64, 64) and tuple(batch["ctrd"].shape) == (2, 1, 64, 64)


def _stripes(tmp_path, h, w, period=8.0):
    """Frames of vertical stripes of ``period`` pixels: their period after a pipeline measures its scale."""
    cc = np.mgrid[0:h, 0:w][1].astype(np.float32)
    img = (0.5 * np.cos(2 * np.pi * cc / period))[None]
    return {
        "slo": str(save_uwf_image(np.repeat(img, 3, 0), tmp_path / "s.tif", bit_depth=16)),
        "early": str(save_uwf_image(img, tmp_path / "e.tif", bit_depth=16)),
        "late": str(save_uwf_image(img * 0.8, tmp_path / "l.tif", bit_depth=16)),
    }


def _period(image):
    """Dominant horizontal period in pixels of a (1, H, W) image (mean spectrum of its rows)."""
    rows = np.asarray(image[0], dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(rows - rows.mean(1, keepdims=True), axis=1)).mean(0)
    spectrum[0] = 0
    return rows.shape[1] / int(np.argmax(spectrum))


def test_training_crops_at_the_scale_generation_uses(tmp_path):
    """Default: crops of the native frame (stripes keep their 8-pixel period, as generation sees them);
    ``crop_scale=1.125``: the frame is squashed first (period 8 * 81 / 160 here)."""
    paths = _stripes(tmp_path, 120, 160)
    pipeline = uwf_train_transforms((64, 64), sharpen=False, rotate_deg=0.0)
    pipeline.set_random_state(0)
    assert _period(pipeline(paths)["early"]) == pytest.approx(8.0, rel=0.05)
    squashed = uwf_train_transforms((64, 72), sharpen=False, rotate_deg=0.0, crop_scale=1.125)
    squashed.set_random_state(0)
    assert _period(squashed(paths)["early"]) == pytest.approx(8.0 * 81 / 160, rel=0.1)
    # validation follows the training scale: the central crop of the native frame, pixel for pixel
    val = uwf_train_transforms((64, 64), sharpen=False, augment=False)(paths)
    full = LoadUWFImage("fa")(paths["early"])
    torch.testing.assert_close(val["early"].as_tensor(), full[:, 28:92, 48:112].as_tensor())
    resized = uwf_train_transforms((64, 64), sharpen=False, augment=False, val_resize=True)(paths)
    assert _period(resized["early"]) == pytest.approx(8.0 * 64 / 160, rel=0.1)  # the authors' whole-frame resize


def test_native_crops_pad_frames_smaller_than_the_crop(tmp_path):
    paths = _asymmetric_triplet(tmp_path, h=30, w=50)
    for augment in (True, False):
        out = uwf_train_transforms((40, 64), sharpen=False, augment=augment)(paths)
        assert {tuple(v.shape[1:]) for v in out.values()} == {(40, 64)}
        assert float(out["early"][0, 0].max()) == pytest.approx(-1.0)  # padded rows: black
        assert float(out["fov"][0, 0].max()) == 0.0 and float(out["ctrd"][0, 0].max()) == 0.0


def test_training_scale_record_and_the_generation_warning(tmp_path):
    """A model trained on 64 x 64 phantoms, given a 640 x 512 photograph: generation warns naming the file."""
    recs = generate_phantoms(tmp_path / "ph", num=3, size=(64, 64))
    record = TrainingScaleRecord([{k: r[k] for k in ("slo", "early", "late")} for r in recs], (64, 64))
    state = record.state_dict()
    assert state["frame_size"] == [64.0, 64.0] and state["pixel_scale"] == [1.0, 1.0] and state["num_images"] == 3
    torch.save({"model": {}, "training_scale": state}, tmp_path / "model.pt")
    assert ModelFile.load(tmp_path / "model.pt").training_scale == state
    torch.save({"model": {}}, tmp_path / "old.pt")
    assert ModelFile.load(tmp_path / "old.pt").training_scale is None
    # resized training (crop_scale): the model saw the frames at ceil(1.125 * 32) = 36 pixels
    squashed = TrainingScaleRecord([{"slo": recs[0]["slo"]}], (32, 32), crop_scale=1.125).state_dict()
    assert squashed["pixel_scale"] == [36 / 64, 36 / 64]

    photo = np.random.default_rng(0).uniform(-1, 1, (3, 512, 640)).astype(np.float32)
    photo_path = save_uwf_image(photo, tmp_path / "photo.png")
    pre = uwf_inference_transforms(8, sharpen=False, training_scale=state)
    with pytest.warns(UserWarning, match=r"photo\.png.*640 x 512 pixels.*64 x 64"):
        item = pre({"slo": str(photo_path)})
    assert tuple(item["slo"].shape) == (3, 512, 640)  # the data pass unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a phantom of the training size: no warning
        pre({"slo": recs[0]["slo"]})
        uwf_inference_transforms(8, sharpen=False)({"slo": str(photo_path)})  # no record: nothing checked
    # colour far from the training SLOs at the right size
    green = np.full((3, 64, 64), -1.0, np.float32)
    green[1] = 0.9
    with pytest.warns(UserWarning, match="mean colour"):
        pre({"slo": str(save_uwf_image(green, tmp_path / "green.png"))})
    with pytest.raises(ValueError, match="tolerance"):
        CheckTrainingScaled(record=state, tolerance=0.5)


def test_generation_resizes_to_the_training_frames_and_inverts_bilinearly(tmp_path):
    """A model trained on frames resized to 36 x 36 (crop_scale 1.125 of 32-px crops) sees a 512 x 640 photograph
    at 36 x 36 - no scale warning - and its prediction comes back at 512 x 640, upsampled bilinearly (oracle:
    ``torch.nn.functional.interpolate``), while the other keys stay native."""
    recs = generate_phantoms(tmp_path / "ph", num=1, size=(64, 64))
    squashed = TrainingScaleRecord([{"slo": recs[0]["slo"]}], (32, 32), crop_scale=1.125).state_dict()
    assert training_frame_size(squashed) == (36, 36)
    assert training_frame_size({**squashed, "crop_scale": None}) is None and training_frame_size(None) is None
    photo = np.random.default_rng(0).uniform(-1, 1, (3, 512, 640)).astype(np.float32)
    path = str(save_uwf_image(photo, tmp_path / "photo.png"))
    late = str(save_uwf_image(photo[:1], tmp_path / "late.png"))
    pre = uwf_inference_transforms(8, sharpen=False, keys=("slo", "late"), training_scale=squashed,
                                   resize_to=training_frame_size(squashed), allow_missing_keys=True)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = pre({"slo": path, "late": late})
    assert not [w for w in caught if "never saw" in str(w.message)]  # at the size the model was trained at
    with pytest.warns(UserWarning, match="never saw"):  # the same photograph at its native size
        uwf_inference_transforms(8, sharpen=False, training_scale=squashed)({"slo": path})
    assert tuple(item["slo"].shape) == (3, 40, 40)  # 36 padded to a multiple of 8
    assert tuple(item["late"].shape) == (1, 512, 640)
    small = torch.linspace(-1, 1, 40 * 40).reshape(1, 40, 40)
    pred = MetaTensor(small, meta=item["slo"].meta, applied_operations=list(item["slo"].applied_operations))
    back = Invertd(keys="pred", transform=pre, orig_keys="slo", nearest_interp=False)({**item, "pred": pred})["pred"]
    assert tuple(back.shape) == (1, 512, 640)
    oracle = torch.nn.functional.interpolate(small[None, :, 2:38, 2:38], size=(512, 640), mode="bilinear")[0]
    assert (back.as_tensor() - oracle).abs().max() < 1e-5
