""":class:`monai_lpuwf.generation.Generator`: where its sampling settings come from, and its one call."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from monai_lpuwf.data import generate_phantoms
from monai_lpuwf.generation import Generator, SamplingRecord, recommended_sampling
from monai_lpuwf.inferers import INFERENCE_DEFAULTS, LPUWFInferer, LPUWFSampler
from monai_lpuwf.networks import ModelFile
from monai_lpuwf.transforms import uwf_inference_transforms

APPS_DIR = Path(__file__).resolve().parents[2] / "apps"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("lpuwf_demo_model_generator", APPS_DIR / "demo_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(demo, tmp_path_factory):
    """``(model.pt without a sampling record, model.pt recommending strength 2 and 3 steps, a 70 x 90 SLO)``."""
    root = tmp_path_factory.mktemp("generator")
    model = demo.build_demo_model()
    plain = demo.write_demo_model(root / "plain" / "model.pt")
    recommending = root / "recommending" / "model.pt"
    recommending.parent.mkdir()
    record = SamplingRecord(conditioning_scale=2.0, num_inference_steps=3)
    torch.save({"model": model.state_dict(), "config": model.config, "sampling": record.state_dict()}, recommending)
    generate_phantoms(root / "slo", num=1, size=(70, 90), seed=0)
    return plain, recommending, root / "slo" / "1.png"


def test_settings_defaults_then_the_file_then_the_arguments(files):
    plain, recommending, _ = files
    assert Generator.from_file(plain, device="cpu").settings == dict(INFERENCE_DEFAULTS)
    assert recommended_sampling(plain) == dict(INFERENCE_DEFAULTS) == recommended_sampling(None)
    expected = {**INFERENCE_DEFAULTS, "conditioning_scale": 2.0, "num_inference_steps": 3}
    assert recommended_sampling(recommending) == expected
    generator = Generator.from_file(recommending, device="cpu")
    assert generator.settings == expected
    assert generator.sampler.conditioning_scale == 2.0 and generator.sampler.num_inference_steps == 3
    overridden = Generator.from_file(recommending, device="cpu", conditioning_scale=1.5, eta=None, decode_tile=64)
    assert overridden.settings == {**expected, "conditioning_scale": 1.5}  # None keeps the value below
    assert overridden.sampler.decode_tile == 64  # other sampler arguments pass through
    again = overridden.with_settings(seed=7, num_samples=2)
    assert again.network is overridden.network and again.transforms is overridden.transforms
    assert again.settings == {**expected, "conditioning_scale": 1.5, "seed": 7, "num_samples": 2}
    assert again.with_std and again.sampler.decode_tile == 64 and not overridden.with_std


def test_records_and_inferer_arguments_are_checked(files):
    plain, recommending, _ = files
    record = SamplingRecord(conditioning_scale=2.0, num_inference_steps=3)
    with pytest.raises(ValueError, match="strength"):
        SamplingRecord(strength=2.0)
    assert ModelFile.load(plain).sampling is None and ModelFile.load(recommending).sampling == record.state_dict()
    assert recommended_sampling(plain.parent / "missing.pt") == dict(INFERENCE_DEFAULTS)
    assert recommended_sampling(ModelFile.load(recommending)) == recommended_sampling(recommending)
    inferer = LPUWFInferer(num_inference_steps=4, conditioning_scale=2.0)
    generator = Generator.from_file(plain, device="cpu", inferer=inferer)
    assert generator.inferer is inferer and generator.settings["conditioning_scale"] == 2.0
    with pytest.raises(ValueError, match="either an inferer or sampling settings"):
        Generator.from_file(plain, device="cpu", inferer=inferer, seed=1)


def test_one_call_equals_the_sampler_on_the_padded_slo_cropped_back(files):
    _, recommending, slo = files
    generator = Generator.from_file(recommending, device="cpu", num_samples=2, seed=5)
    out = generator.generate(slo)
    assert tuple(out["pred"].shape) == (1, 70, 90) and tuple(out["pred_std"].shape) == (1, 70, 90)
    assert torch.equal(generator(str(slo)), out["pred"])  # the same draw again (fixed seed)
    padded = uwf_inference_transforms(divisor=generator.network.size_divisor)({"slo": str(slo)})["slo"]
    sampler = LPUWFSampler(num_inference_steps=3, num_samples=2, seed=5, conditioning_scale=2.0)
    with torch.no_grad():
        direct = sampler(padded.as_tensor()[None], generator.network)
    crop = (slice(None), slice(13, 83), slice(3, 93))  # 70 x 90 padded to 96 x 96
    assert (out["pred"].as_tensor() - direct["pred"][0][crop]).abs().max() < 1e-6
    assert (out["pred_std"].as_tensor() - direct["pred_std"][0][crop]).abs().max() < 1e-6
    assert out["pred"].meta["filename_or_obj"] == str(slo)


def test_writers_name_the_outputs_after_the_slo(files, tmp_path):
    _, recommending, slo = files
    generator = Generator.from_file(recommending, device="cpu", num_samples=2)
    generator.generate(slo, writers=generator.writers(tmp_path, data_root_dir=slo.parent))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1_late.png", "1_late_std.png"]


def test_a_model_trained_on_resized_frames_generates_at_their_size(demo, files, tmp_path):
    """The model file's training-scale record says frames were resized to ceil(1.25 * 32) = 40 pixels: the
    generator samples the SLO resized to 40 x 40 and returns the 70 x 90 native size (bilinear upsampling)."""
    _, _, slo = files
    model = demo.build_demo_model()
    record = {"frame_size": [70.0, 90.0], "pixel_scale": [40 / 70, 40 / 90], "crop_size": [32, 32],
              "crop_scale": 1.25, "slo_mean": [0.0, 0.0, -1.0], "slo_mean_spread": 0.0, "num_images": 1}  # fmt: skip
    path = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "config": model.config, "training_scale": record}, path)
    generator = Generator.from_file(path, device="cpu", num_inference_steps=2, seed=3)
    item = generator.preprocess(slo)
    assert generator.network.size_divisor == 32 and tuple(item["slo"].shape[1:]) == (64, 64)  # 40 padded to 64
    out = generator(slo)
    assert tuple(out.shape) == (1, 70, 90)
    with torch.no_grad():
        direct = LPUWFSampler(num_inference_steps=2, seed=3)(item["slo"].as_tensor()[None], generator.network)["pred"]
    oracle = torch.nn.functional.interpolate(direct[..., 12:52, 12:52], size=(70, 90), mode="bilinear")[0]
    assert (out.as_tensor() - oracle).abs().max() < 1e-5
