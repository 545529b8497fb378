"""Evaluation in one geometry: the generated image is also scored after aligning it onto the real late frame, and
every predictor gets the vessel correlation with the real late frame (``vessel_corr``)."""

from __future__ import annotations

import json

import numpy as np
import torch

from monai_lpuwf.data import render_phantom
from monai_lpuwf.metrics import AlignedScoresHandler, EvaluationReportWriter, FrameScoresHandler
from monai_lpuwf.metrics.acceptance import format_acceptance


def test_aligned_rows_and_vessel_correlation(tmp_path):
    """A "generated" image that is the real late frame moved by (9, -12) px: raw it scores low, aligned it scores
    near the frame itself (PSNR up by > 10 dB, vessel correlation > 0.8); the constant image's vessel correlation
    is 0; summary.json records the alignment and the table shows the aligned rows."""
    ph = render_phantom((320, 384), seed=5)
    late = torch.as_tensor(ph["late"] * 2 - 1)[None].float()  # (1, 1, H, W)
    early = torch.as_tensor(ph["early"] * 2 - 1)[None].float()
    pred = torch.roll(late, shifts=(9, -12), dims=(-2, -1))
    fov = torch.as_tensor(ph["fov"])[None, None].float()
    parts = [FrameScoresHandler(constant_value=-0.5), AlignedScoresHandler()]
    writer = EvaluationReportWriter(tmp_path / "report", parts, max_examples=1)
    for part in (*parts, writer):
        part.add_item({"pred": pred[0], "late": late[0], "early": early[0], "fov": fov[0]})
    writer.completed()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    scores = summary["scores"]
    assert {"model", "model_aligned", "early", "early_aligned", "constant"} <= set(scores)
    raw, aligned = scores["model"], scores["model_aligned"]
    assert aligned["psnr_fov"]["mean"] > raw["psnr_fov"]["mean"] + 10
    assert raw["vessel_corr"]["mean"] < 0.2 < 0.8 < aligned["vessel_corr"]["mean"]
    assert abs(scores["constant"]["vessel_corr"]["mean"]) < 1e-6
    (record,) = summary["alignment"].values()
    assert record["model"]["status"] == "registered"
    matrix = np.asarray(json.loads(record["model"]["matrix_rc"]))
    np.testing.assert_allclose(matrix[:2, 2], [9, -12], atol=0.5)  # late pixel p sits at p + shift in the generated
    table = format_acceptance(summary)
    assert "model_aligned" in table and "vessel_corr" in table
