"""Report writers: CSV, JSON, PNG grid; atomic, never over an input."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from monai_lpuwf.metrics import (
    EvaluationReport,
    atomic_write_bytes,
    figure_grid,
    save_figure,
    scores_to_records,
    summarize_records,
    write_scores_csv,
    write_summary_json,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _scores():
    return {
        "model": {"psnr": torch.tensor([20.0, 30.0]), "ms_ssim": torch.tensor([0.8, float("nan")])},
        "constant": {"psnr": torch.tensor([10.0, 12.0]), "ms_ssim": torch.tensor([0.6, 0.7])},
    }


def test_records_and_summary_formula():
    records = scores_to_records(["a", "b"], _scores())
    assert records[0] == {"id": "a", "predictor": "model", "psnr": 20.0, "ms_ssim": pytest.approx(0.8)}
    summary = summarize_records(records)
    assert summary["model"]["psnr"] == {"mean": 25.0, "std": 5.0, "n": 2}
    assert summary["model"]["ms_ssim"]["n"] == 1  # NaN ignored
    assert summary["constant"]["ms_ssim"]["mean"] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="values for 3 ids"):
        scores_to_records(["a", "b", "c"], _scores())


def test_csv_and_json_round_trip(tmp_path):
    records = scores_to_records(["a", "b"], _scores())
    path = write_scores_csv(records, tmp_path / "out" / "scores.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["predictor"] for r in rows] == ["model", "model", "constant", "constant"]
    assert float(rows[1]["psnr"]) == 30.0 and math.isnan(float(rows[1]["ms_ssim"]))
    jpath = write_summary_json({"scores": summarize_records(records), "fid": float("inf")}, tmp_path / "s.json")
    data = json.loads(jpath.read_text())  # strict JSON: NaN / inf -> null
    assert data["fid"] is None and data["scores"]["model"]["psnr"]["mean"] == 25.0
    assert not list(tmp_path.glob("**/*.tmp"))  # no temporary file left behind


def test_csv_columns_without_id_and_predictor(tmp_path):
    """Records of another kind (a sampler comparison's rows) keep their own first-seen column order."""
    rows = [{"sampler": "ddim-10", "steps": 10, "psnr": float("inf")}, {"sampler": "pndm-5", "steps": 5, "x": 1.5}]
    path = write_scores_csv(rows, tmp_path / "rows.csv")
    assert path.read_text().splitlines() == ["sampler,steps,psnr,x", "ddim-10,10,inf,", "pndm-5,5,,1.5"]


def test_atomic_write_never_overwrites_inputs_and_keeps_old_file_on_failure(tmp_path):
    src = tmp_path / "input.png"
    src.write_bytes(b"original")
    with pytest.raises(FileExistsError, match="input"):
        atomic_write_bytes(src, b"x", protected=[src])
    assert src.read_bytes() == b"original"
    with pytest.raises(FileExistsError, match="output folder"):
        EvaluationReport(tmp_path, protected=[tmp_path])

    target = tmp_path / "r.csv"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, 12345)  # cannot write an int: the old file stays whole
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))


def test_figure_grid_and_report_folder(tmp_path):
    g = torch.Generator().manual_seed(0)
    row = {
        "id": "7",
        "slo": torch.rand(3, 24, 30, generator=g) * 2 - 1,
        "pred": torch.rand(1, 24, 30, generator=g) * 2 - 1,
        "late": torch.rand(1, 24, 30, generator=g) * 2 - 1,
        "pred_std": torch.rand(1, 24, 30, generator=g),
    }
    fig = figure_grid([row, {k: v for k, v in row.items() if k != "pred_std"}])
    assert len(fig.axes) == 10 and fig.axes[0].get_title() == "SLO" and fig.axes[4].get_title() == "uncertainty"
    diff = fig.axes[3].images[0].get_array()
    expected = ((row["pred"] - row["late"]).abs() / 2)[0].numpy()
    assert abs(diff - expected).max() < 1e-6
    assert fig.axes[9].texts[0].get_text() == "n/a"  # no uncertainty map for the second row
    save_figure(fig, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG

    report = EvaluationReport(tmp_path / "report")
    with pytest.raises(ValueError, match="add"):
        report.write()
    report.add(["a", "b"], _scores())
    report.add_examples([row] * 3, max_rows=2)
    paths = report.write(extra={"fid": 1.5})
    assert set(paths) == {"csv", "json", "grid"} and len(report.examples) == 2
    summary = json.loads(paths["json"].read_text())
    assert summary["fid"] == 1.5 and summary["scores"]["constant"]["psnr"]["mean"] == 11.0
    assert paths["grid"].read_bytes()[:8] == PNG
