"""The evaluation's parts, each fed frames by an Ignite engine (or directly), against the formulas they compute;
the report writer's composition of their rows and summaries."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from monai_lpuwf.data import render_phantom
from monai_lpuwf.metrics import (
    DistributionScoresHandler,
    EvaluationReportWriter,
    FrameScoresHandler,
    SeedCheckHandler,
    frechet_distance_from_features,
    inception_score,
    log_spectral_distance,
    radial_power_spectrum,
)
from monai_lpuwf.metrics.evaluation_parts import read_frame

SIZE = (64, 80)


def _frames(n: int = 2, early: bool = True) -> list[dict]:
    """``n`` evaluator items of phantoms (H, W) = SIZE, ``[-1, 1]``; the prediction is the late frame plus noise."""
    items = []
    for i in range(n):
        ph = render_phantom(SIZE, seed=i)
        late = torch.as_tensor(ph["late"] * 2 - 1).float()
        g = torch.Generator().manual_seed(100 + i)
        pred = (late + 0.2 * torch.randn(late.shape, generator=g)).clamp(-1, 1)
        item = {
            "pred": MetaTensor(pred, meta={"filename_or_obj": f"/data/val/{i + 1}.png"}),
            "late": late,
            "fov": torch.as_tensor(ph["fov"])[None].float(),
            "slo": torch.as_tensor(ph["slo"] * 2 - 1).float(),
        }
        if early:
            item["early"] = torch.as_tensor(ph["early"] * 2 - 1).float()
        items.append(item)
    return items


def _run(handlers, items: list[dict], batch_size: int = 1) -> Engine:
    """An Ignite engine whose iterations give ``engine.state.output`` = the items (as a SupervisedEvaluator's
    post-processing does: a list of dicts, the batch a list of dicts too)."""
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    engine = Engine(lambda e, batch: [dict(b) for b in batch])
    for handler in handlers:
        handler.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def test_frame_scores_give_the_formulas_values_for_two_frames():
    items = _frames(2)
    items[1].pop("early")
    part = FrameScoresHandler(constant_value=-0.5, constant_source="test", id_root="/data")
    _run([part], items, batch_size=2)
    assert part.num_frames == 2 and [i for i, _ in part.rows] == ["val/1", "val/2"]
    assert set(part.rows[0][1]) == {"model", "constant", "early"} and set(part.rows[1][1]) == {"model", "constant"}
    for (_, row), item in zip(part.rows, items):
        pred, late, fov = _unit(item["pred"].as_tensor()), _unit(item["late"]), item["fov"]
        mse = float(((pred - late) ** 2).mean())
        assert float(row["model"]["mse"]) == pytest.approx(mse, rel=1e-5)
        assert float(row["model"]["psnr"]) == pytest.approx(-10 * math.log10(mse), rel=1e-5)
        assert float(row["model"]["mse_fov"]) == pytest.approx(float((fov * (pred - late) ** 2).sum() / fov.sum()))
        assert float(row["constant"]["mse"]) == pytest.approx(float(((0.25 - late) ** 2).mean()), rel=1e-5)
        assert float(row["constant"]["vessel_corr"]) == pytest.approx(0.0, abs=1e-6)
        assert 0.3 < float(row["model"]["vessel_corr"]) <= 1.0  # noise on the real frame keeps its vessels
    assert "psnr_lesion" in part.rows[0][1]["model"] and "psnr_lesion" not in part.rows[1][1]["model"]
    summary = part.summary()
    assert summary == {"without_early": ["val/2"], "constant_value": -0.5, "constant_source": "test",
                       "top_percent": 10.0, "lpips": False}  # fmt: skip


def test_distribution_scores_against_fid_is_and_spectral_distance():
    """A stand-in feature extractor (features: 4 image statistics; logits: 3 of them) makes FID and IS checkable."""

    def extractor(image):
        x = image.flatten(1)
        feats = torch.stack([x.mean(1), x.std(1), x.amax(1), (x**2).mean(1)], 1).double()
        return feats, feats[:, :3].float()

    items = _frames(3)
    part = DistributionScoresHandler(constant_value=-0.5, inception=extractor, spectrum_bins=16)
    _run([part], items)
    summary = part.summary(["model", "constant", "early", "model_aligned"])
    real = torch.cat([extractor(i["late"][None])[0] for i in items])
    model = torch.cat([extractor(i["pred"].as_tensor()[None])[0] for i in items])
    assert summary["fid"]["model"] == pytest.approx(frechet_distance_from_features(model, real), rel=1e-6)
    assert summary["fid"]["model_aligned"] is None and summary["inception_score"]["model_aligned"] is None
    mean, std = inception_score(torch.cat([extractor(i["pred"].as_tensor()[None])[1] for i in items]), splits=1)
    assert summary["inception_score"]["model"] == {"mean": pytest.approx(mean), "std": pytest.approx(std)}
    spectra = {k: torch.cat([radial_power_spectrum(i[k][None], 16)[1] for i in items]) for k in ("pred", "late")}
    assert summary["spectral_distance"]["model"] == pytest.approx(log_spectral_distance(spectra["pred"],
                                                                                        spectra["late"]))  # fmt: skip
    assert set(summary["spectral_distance"]) == {"model", "early"}  # a constant image has no spectrum
    assert "fid_note" not in summary and part.spectrum_figure() is not None
    off = DistributionScoresHandler()
    _run([off], items[:1])
    assert off.summary(["model"])["fid"] == {"model": None} and "switched off" in off.summary()["fid_note"]


class _Network(torch.nn.Module):
    size_divisor = 16


def test_seed_check_draws_the_first_frames_again_padded_and_cropped_back():
    """A stand-in sampler returns half the padded SLO's green channel: the second draw of a 60 x 75 frame is asked
    at 64 x 80 (the size divisor) and cropped back onto the frame, so it correlates with the frame's own SLO."""
    calls = []

    def sampler(slo, network):
        calls.append(tuple(slo.shape))
        return {"pred": slo[:, 1:2] * 0.5}

    items = _frames(3)
    for item in items:  # 60 x 75 frames: padded to 64 x 80 for the network, cropped back after
        for k in ("pred", "late", "fov", "slo", "early"):
            item[k] = item[k][..., 2:62, 3:78]
    part = SeedCheckHandler(network=_Network(), sampler=sampler, images=2)
    _run([part], items)
    assert calls == [(1, 3, 64, 80)] * 2  # only the first two frames, padded to the size divisor
    sens = part.summary()["input_sensitivity"]
    pairs = [np.corrcoef(i["pred"].numpy().ravel(), i["slo"][1].numpy().ravel())[0, 1] for i in items[:2]]
    assert sens["seed_check_images"] == 2
    assert sens["same_input_seed_corr"] == pytest.approx(float(np.mean(pairs)), abs=1e-6)
    preds = np.stack([i["pred"].numpy().ravel() for i in items])
    assert sens["cross_input_corr"] == pytest.approx(np.corrcoef(preds)[~np.eye(3, dtype=bool)].mean(), abs=1e-6)
    alone = SeedCheckHandler()
    alone.add_item(items[0])
    assert alone.summary() == {"input_sensitivity": {"note": "input sensitivity needs at least two frames."}}


def test_the_writer_composes_rows_and_summaries_in_the_parts_order(tmp_path):
    items = _frames(2)
    scores = FrameScoresHandler(constant_value=-0.5, id_root="/data")
    seed_check = SeedCheckHandler()
    writer = EvaluationReportWriter(tmp_path / "report", [scores, None, seed_check], scored="two phantoms",
                                    settings={"seed": 0}, max_examples=1, id_root="/data")  # fmt: skip
    _run([writer], items)  # the writer attaches its parts
    assert scores.num_frames == seed_check.num_frames == writer.num_frames == 2
    assert set(writer.paths) == {"csv", "json", "grid"} and len(writer.report.examples) == 1
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert list(summary) == ["scores", "num_images", "scored", "images", "without_early", "constant_value",
                             "constant_source", "top_percent", "lpips", "input_sensitivity", "settings"]  # fmt: skip
    assert summary["images"] == ["val/1", "val/2"] and summary["scored"] == "two phantoms"
    with open(tmp_path / "report" / "scores.csv", newline="") as f:
        rows = [(r["id"], r["predictor"], float(r["mse"])) for r in csv.DictReader(f)]
    assert [r[:2] for r in rows] == [(i, p) for i in ("val/1", "val/2") for p in ("model", "constant", "early")]
    assert rows[0][2] == pytest.approx(float(scores.rows[0][1]["model"]["mse"]))
    assert summary["scores"]["model"]["mse"]["mean"] == pytest.approx(np.mean([r[2] for r in rows[::3]]))


def test_the_writer_refuses_a_part_attached_twice(tmp_path):
    scores = FrameScoresHandler()
    writer = EvaluationReportWriter(tmp_path / "report", [scores])
    with pytest.raises(RuntimeError, match="FrameScoresHandler collected 4 frame"):
        _run([scores, writer], _frames(2))
    with pytest.raises(ValueError, match="no frame was evaluated"):
        EvaluationReportWriter(tmp_path / "r2", [FrameScoresHandler()]).completed()


KEYS = {"pred": "pred", "late": "late", "early": "early", "slo": "slo", "std": "pred_std", "fov": "fov"}


def test_frame_ids_and_missing_keys():
    item = _frames(1)[0]
    assert read_frame(item, KEYS, "/data").id == "val/1" and read_frame(item, KEYS).id == "1"
    item["pred"] = item["pred"].as_tensor()
    assert read_frame(item, KEYS, index=7).id == "7"  # no file name anywhere: the frame's index
    with pytest.raises(KeyError, match="'pred' and 'late'"):
        read_frame({"late": item["late"]}, KEYS)
