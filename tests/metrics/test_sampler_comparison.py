"""monai_lpuwf.metrics.sampler_comparison on a tiny random model with few steps (benchmarks/sampler_study.py runs
it on a trained model file)."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import PSNRMetric

from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.metrics.sampler_comparison import (
    DEFAULT_SAMPLERS,
    SamplerConfig,
    compare_samplers,
    parse_sampler_specs,
    plot_sampler_comparison,
)
from monai_lpuwf.networks.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny_model():
    """Random SLO-encoder, ControlNet and U-Net output weights (so the SLO and the noise matter); epsilon prediction,
    which every MONAI scheduler takes (PNDM refuses "sample")."""
    randomize = ("autoencoder.condition_encoder", "controlnet", "unet.out")
    return build_tiny_model(0, weight_seed=1, randomize=randomize, schedule={"prediction_type": "epsilon"})


def test_compare_samplers_scores_against_the_reference(tiny_model):
    slo = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    late = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference = SamplerConfig("ddim", 4, False)
    configs = [SamplerConfig("ddim", 2, False), SamplerConfig("ddim", 2, True), SamplerConfig("pndm", 3, None)]
    lines = []
    rows = compare_samplers(tiny_model, slo, late, configs, reference=reference, seed=7, log=lines.append)
    assert [r["sampler"] for r in rows] == ["ddim-4 clip=F", "ddim-2 clip=F", "ddim-2 clip=T", "pndm-3"]
    assert len(lines) == 4 and lines[1].startswith("ddim-2 clip=F")
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
    reseeded = compare_samplers(tiny_model, slo, None, [SamplerConfig("ddim", 4, False, 1)], reference, 7, None)
    assert reseeded[1]["sampler"] == "ddim-4 clip=F reseed" and "psnr_vs_late" not in reseeded[1]
    assert math.isfinite(reseeded[1]["psnr_vs_ddpm1000"])  # another draw of the initial latents


def test_sampler_specs():
    assert [c.name for c in parse_sampler_specs(["ddim:10,25", "pndm:5"])] == [
        "ddim-10 clip=F",
        "ddim-25 clip=F",
        "ddim-10 clip=T",
        "ddim-25 clip=T",
        "pndm-5",
    ]
    assert parse_sampler_specs(None) == parse_sampler_specs([]) == DEFAULT_SAMPLERS
    with pytest.raises(ValueError, match="ddim:10,25,50"):
        parse_sampler_specs(["ddim"])


def test_plot(tmp_path):
    row = {"scheduler": "ddim", "steps": 10, "clip_sample": False, "seconds_per_image": 0.1}
    rows = [
        {**row, "sampler": "ddpm-1000 clip=F", "scheduler": "ddpm", "steps": 1000, "seconds_per_image": 9.0,
         "psnr_vs_ddpm1000": float("inf"), "ms_ssim_vs_ddpm1000": 1.0, "psnr_vs_late": 20.0, "ms_ssim_vs_late": 0.8},
        {**row, "sampler": "ddim-10 clip=F", "psnr_vs_ddpm1000": 25.0, "ms_ssim_vs_ddpm1000": 0.9,
         "psnr_vs_late": 19.0, "ms_ssim_vs_late": 0.7},
    ]  # fmt: skip
    path = plot_sampler_comparison(rows, tmp_path / "s.png", title="two rows")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp"))
