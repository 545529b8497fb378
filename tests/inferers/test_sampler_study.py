"""benchmarks/sampler_study.py: the study's core on a tiny random model with few steps."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from monai.metrics import PSNRMetric

from monai_lpuwf.inferers import LPUWFSampler

STUDY = Path(__file__).resolve().parents[2] / "benchmarks" / "sampler_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("sampler_study", STUDY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_run_study_scores_against_the_reference(study, tiny_model):
    slo = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    late = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference = study.SamplerConfig("ddim", 4, False)
    configs = [
        study.SamplerConfig("ddim", 2, False),
        study.SamplerConfig("ddim", 2, True),
        study.SamplerConfig("pndm", 3, None),
    ]
    rows = study.run_study(tiny_model, slo, late, configs, reference=reference, seed=7, log=None)
    assert [r["sampler"] for r in rows] == ["ddim-4 clip=F", "ddim-2 clip=F", "ddim-2 clip=T", "pndm-3"]
    assert math.isinf(rows[0]["psnr_vs_ddpm1000"]) and rows[0]["ms_ssim_vs_ddpm1000"] == pytest.approx(1.0)
    # oracle: MONAI's PSNR on [0, 1] of the sampler's own outputs with the same seed
    ref = LPUWFSampler("ddim", num_inference_steps=4, seed=7)(slo, tiny_model)["pred"]
    pred = LPUWFSampler("ddim", num_inference_steps=2, seed=7)(slo, tiny_model)["pred"]
    expected = PSNRMetric(max_val=1.0)((pred + 1) / 2, (ref + 1) / 2).mean()
    assert rows[1]["psnr_vs_ddpm1000"] == pytest.approx(float(expected), rel=1e-5)
    expected_late = PSNRMetric(max_val=1.0)((pred + 1) / 2, (late + 1) / 2).mean()
    assert rows[1]["psnr_vs_late"] == pytest.approx(float(expected_late), rel=1e-5)
    assert all(r["seconds_per_image"] > 0 and r["ms_ssim_scales"] == 2 for r in rows)
    assert rows[3]["clip_sample"] == ""


def test_ms_ssim_weights_follow_monai_size_rule(study):
    from monai.metrics import MultiScaleSSIMMetric

    assert len(study.ms_ssim_weights_for((512, 512))) == 5
    for size in (128, 64, 32):
        weights = study.ms_ssim_weights_for((size, size))
        assert sum(weights) == pytest.approx(1.0)
        x = torch.rand(1, 1, size, size)
        MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, weights=weights)(x, x)  # MONAI accepts the scales
    assert len(study.ms_ssim_weights_for((128, 128))) == 4


def test_outputs_and_sampler_specs(study, tmp_path):
    configs = study._parse_configs(["ddim:10,25", "pndm:5"])
    assert [c.name for c in configs] == [
        "ddim-10 clip=F",
        "ddim-25 clip=F",
        "ddim-10 clip=T",
        "ddim-25 clip=T",
        "pndm-5",
    ]
    with pytest.raises(ValueError, match="ddim:10,25,50"):
        study._parse_configs(["ddim"])
    rows = [
        {
            "sampler": "ddpm-1000 clip=F",
            "scheduler": "ddpm",
            "steps": 1000,
            "clip_sample": False,
            "seconds_per_image": 9.0,
            "psnr_vs_ddpm1000": float("inf"),
            "ms_ssim_vs_ddpm1000": 1.0,
            "psnr_vs_late": 20.0,
            "ms_ssim_vs_late": 0.8,
        },
        {
            "sampler": "ddim-10 clip=F",
            "scheduler": "ddim",
            "steps": 10,
            "clip_sample": False,
            "seconds_per_image": 0.1,
            "psnr_vs_ddpm1000": 25.0,
            "ms_ssim_vs_ddpm1000": 0.9,
            "psnr_vs_late": 19.0,
            "ms_ssim_vs_late": 0.7,
        },
    ]
    csv_path = study.write_csv(rows, tmp_path / "s.csv")
    assert csv_path.read_text().splitlines()[0].startswith("sampler,scheduler,steps,clip_sample,seconds_per_image")
    assert study.plot(rows, tmp_path / "s.png").stat().st_size > 0
