"""``bundle/configs/evaluate.json`` (composed on inference.json) through ``monai.bundle`` with a tiny checkpoint.

Every reported score is recomputed here from the files the run wrote (generated PNGs) and the real frames:
whole-frame PSNR/SSIM/MS-SSIM/MSE with MONAI's metric classes, field-of-view MSE from its formula, FID/IS/LPIPS
from features of the written files.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from monai.metrics import MSEMetric, MultiScaleSSIMMetric, PSNRMetric, SSIMMetric
from PIL import Image

from monai_lpuwf.data import generate_phantoms
from monai_lpuwf.losses.perceptual import PERCEPTUAL_NETWORKS, OfflinePerceptualLoss, build_feature_network
from monai_lpuwf.metrics import (
    INCEPTION_WEIGHTS_ENV,
    InceptionFeatureExtractor,
    compute_lesion_scores,
    difference_map,
    frechet_distance_from_features,
)
from monai_lpuwf.metrics.inception import FIDInceptionV3
from monai_lpuwf.transforms import FieldOfView, LoadUWFImage

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")

_spec = importlib.util.spec_from_file_location("_helpers", Path(__file__).with_name("test_inference_helpers.py"))
h = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(h)

CONFIGS = ("inference.json", "evaluate.json")
SIZE = (192, 224)  # (H, W): MS-SSIM needs 176 pixels a side
PREDICTORS = ("model", "constant", "early")
# rows of the model and the early phase after aligning each onto its real late frame (evaluate.json: align true)
ALIGNED = ("model_aligned", "early_aligned")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with h.one_thread():
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return h.write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """train/ and val/ with two phantom triplets each (the authors' layout)."""
    root = tmp_path_factory.mktemp("data")
    generate_phantoms(root / "train", num=2, size=SIZE, seed=0)
    generate_phantoms(root / "val", num=2, size=SIZE, seed=1)
    return root


def run_evaluation(bundle, tmp_path: Path, checkpoint: Path, dataset: Path, **overrides) -> Path:
    """Evaluate ``dataset`` (every triplet unless ``eval_split`` is given); returns the report folder."""
    overrides.setdefault("eval_dir", str(tmp_path / "report"))
    h.run_bundle(bundle, tmp_path, CONFIGS, checkpoint, dataset_dir=str(dataset), **overrides)
    return Path(overrides["eval_dir"])


def read_rows(report: Path) -> dict[tuple[str, str], dict[str, float]]:
    with open(report / "scores.csv", newline="") as f:
        return {
            (r["id"], r["predictor"]): {
                k: float(v) if v != "" else math.nan for k, v in r.items() if k not in ("id", "predictor")
            }
            for r in csv.DictReader(f)
        }


def unit(path: Path) -> torch.Tensor:
    """A grey frame as (1, 1, H, W) in [0, 1]."""
    return ((LoadUWFImage("fa")(path).as_tensor() + 1) / 2)[None]


def generated(report: Path, image_id: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(Image.open(report / "generated" / f"{image_id}_late.png")) / 255.0)[None, None]


def monai_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    pred, target = pred.float(), target.float()
    return {
        "psnr": float(PSNRMetric(max_val=1.0)(pred, target)),
        "ssim": float(SSIMMetric(spatial_dims=2, data_range=1.0)(pred, target)),
        "ms_ssim": float(MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0)(pred, target)),
        "mse": float(MSEMetric()(pred, target)),
    }


def test_scores_equal_monai_metrics_on_the_written_files(bundle, tmp_path, checkpoint, dataset, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    """Every triplet of the folder given is scored (train/ and val/ alike: no split asked for); the constant image
    is the mean late phase of --train_dir."""
    report = run_evaluation(bundle, tmp_path, checkpoint, dataset, fid="false", train_dir=str(dataset / "train"))
    assert {p.name for p in report.iterdir()} == {"scores.csv", "summary.json", "examples.png", "spectrum.png",
                                                  "generated"}  # fmt: skip
    for name in ("examples.png", "spectrum.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_rows(report)
    ids = ["train/1", "train/2", "val/1", "val/2"]
    assert set(rows) == {(i, p) for i in ids for p in PREDICTORS + ALIGNED}
    constant = np.mean([LoadUWFImage("fa")(dataset / "train" / f"{n}.2.png").numpy() for n in (1, 2)])
    for image_id in ids:
        late, early = unit(dataset / f"{image_id}.2.png"), unit(dataset / f"{image_id}.1.png")
        pred = generated(report, image_id)
        assert pred.shape[2:] == late.shape[2:] == SIZE
        predictions = {"model": pred, "constant": torch.full_like(late, (constant + 1) / 2), "early": early}
        fov = FieldOfView("fa")(LoadUWFImage("fa")(dataset / f"{image_id}.2.png")).as_tensor()[None]
        for predictor, p in predictions.items():
            row = rows[(image_id, predictor)]
            for name, value in monai_scores(p, late).items():
                assert row[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (image_id, predictor, name)
            fov_mse = float((fov * (p - late) ** 2).sum() / fov.sum())
            assert row["mse_fov"] == pytest.approx(fov_mse, rel=1e-4), (image_id, predictor)
            lesion = compute_lesion_scores(p, late, difference_map(early, late), fov=fov, value_range=None)
            for name, value in lesion.items():
                assert row[f"{name}_lesion"] == pytest.approx(float(value), rel=1e-4, abs=1e-6), (image_id, name)
    summary = json.loads((report / "summary.json").read_text())
    for predictor in PREDICTORS:
        psnr = [rows[(i, predictor)]["psnr"] for i in ids]
        assert summary["scores"][predictor]["psnr"]["mean"] == pytest.approx(float(np.mean(psnr)))
        assert summary["scores"][predictor]["psnr"]["n"] == 4
    assert summary["fid"] == summary["inception_score"] == dict.fromkeys(PREDICTORS + ALIGNED)
    assert "switched off" in summary["fid_note"]
    assert summary["constant_value"] == pytest.approx(float(constant), rel=1e-5)
    assert "train_dir" in summary["constant_source"] and str(dataset / "train") in summary["constant_source"]
    assert set(summary["spectral_distance"]) == {"model", "early"}
    assert summary["num_images"] == 4 and summary["images"] == ids and summary["lpips"] is False
    assert summary["scored"].startswith("every triplet of folder") and summary["without_early"] == []
    assert summary["settings"]["sampler"] == "ddim" and summary["settings"]["num_inference_steps"] == h.STEPS
    # input sensitivity on the written files (numpy oracle), and a second draw of each frame with another seed
    sens = summary["input_sensitivity"]
    preds = np.stack([generated(report, i).numpy().ravel() for i in ids])
    lates = np.stack([unit(dataset / f"{i}.2.png").numpy().ravel() for i in ids])
    off = ~np.eye(len(ids), dtype=bool)
    assert sens["cross_input_corr"] == pytest.approx(np.corrcoef(preds)[off].mean(), abs=2e-3)  # 8-bit files
    assert sens["real_cross_input_corr"] == pytest.approx(np.corrcoef(lates)[off].mean(), abs=1e-4)
    assert sens["seed_check_images"] == 4 and -1 <= sens["same_input_seed_corr"] <= 1


def _kaiming_inception(path: Path) -> Path:
    """A pytorch-fid-layout Inception-v3 with variance-keeping random weights (features vary between images)."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def _lpips_files(folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    backbone = {f"features.{k}": v for k, v in build_feature_network("alexnet").state_dict().items()}
    torch.save(backbone, folder / "alexnet.pth")
    channels = PERCEPTUAL_NETWORKS["alexnet"]["channels"]
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(channels)}
    torch.save(lins, folder / "alex.pth")
    return folder / "alexnet.pth", folder / "alex.pth"


def test_fid_is_lpips_and_uncertainty_from_local_weights(bundle, tmp_path, checkpoint, dataset):
    inception = _kaiming_inception(tmp_path / "inception.pth")
    backbone, lins = _lpips_files(tmp_path)
    report = run_evaluation(
        bundle, tmp_path, checkpoint, dataset, fid_weights=str(inception), lpips_backbone_weights=str(backbone),
        lpips_weights=str(lins), num_samples=2, eval_split="validation",
    )  # fmt: skip
    assert (report / "generated" / "val" / "1_late_std.png").is_file()
    ids = ["val/1", "val/2"]
    preds = torch.cat([generated(report, i) for i in ids])
    lates = torch.cat([unit(dataset / f"{i}.2.png") for i in ids])
    extractor = InceptionFeatureExtractor(inception, value_range=None)
    gen_feats, gen_logits = extractor(preds)
    real_feats, _ = extractor(lates)
    fid = frechet_distance_from_features(gen_feats, real_feats)
    assert fid > 1.0  # the features tell generated from real frames apart
    summary = json.loads((report / "summary.json").read_text())
    assert summary["fid"]["model"] == pytest.approx(fid, rel=1e-3)
    p = torch.softmax(gen_logits, 1)
    kl = (p * (p.log() - p.mean(0, keepdim=True).log())).sum(1)
    assert summary["inception_score"]["model"]["mean"] == pytest.approx(float(torch.exp(kl.mean())), rel=1e-4)
    assert set(summary["fid"]) == set(PREDICTORS + ALIGNED)
    lpips = OfflinePerceptualLoss("alexnet", weights_path=backbone, lpips_weights_path=lins, reduction="none",
                                  value_range=(0.0, 1.0))(preds.float(), lates.float())  # fmt: skip
    rows = read_rows(report)
    for i, image_id in enumerate(ids):
        assert rows[(image_id, "model")]["lpips"] == pytest.approx(float(lpips[i]), rel=1e-4)
    assert summary["lpips"] is True


def _summary(report: Path) -> dict:
    return json.loads((report / "summary.json").read_text())


def test_a_split_when_asked_with_the_constant_from_the_other_split(bundle, tmp_path, checkpoint, dataset, capsys):
    report = run_evaluation(bundle, tmp_path, checkpoint, dataset, fid=False, eval_split="validation")
    log = capsys.readouterr().out  # the bundle's logging.conf logs to stdout
    assert "Engine run resuming from iteration 0" not in log
    assert f"evaluation report (scores.csv, summary.json, examples.png, spectrum.png) in {report}" in log
    assert f"evaluation finished: images in {report / 'generated'}" in log
    assert {i for i, _ in read_rows(report)} == {"val/1", "val/2"}
    summary = _summary(report)
    constant = np.mean([LoadUWFImage("fa")(dataset / "train" / f"{n}.2.png").numpy() for n in (1, 2)])
    assert summary["constant_value"] == pytest.approx(float(constant), rel=1e-5)
    assert summary["images"] == ["val/1", "val/2"] and summary["scored"].startswith("the validation split")
    assert summary["settings"]["split"] == "validation"


def test_the_constant_comes_from_the_model_file_and_else_is_left_out(
    bundle, tmp_path, checkpoint, dataset, capsys, monkeypatch
):
    """Training stores the training mean in model.pt ("data_stats"); a model file without it and no --train_dir:
    no constant predictor, and the report and the log say why. The run reads the model file once (the bundle's
    ``model_file``: weights, sampling recommendation, training scale and the constant)."""
    stored = tmp_path / "model_with_stats.pt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({**state, "data_stats": {"late_mean": -0.25, "num_images": 7}}, stored)
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(str(f)) or load(f, *a, **k))
    report = run_evaluation(bundle, tmp_path, stored, dataset / "val", fid=False)
    monkeypatch.undo()
    assert reads.count(str(stored)) == 1, reads
    summary = _summary(report)
    assert summary["constant_value"] == -0.25 and str(stored) in summary["constant_source"]
    assert {i for i, _ in read_rows(report)} == {"1", "2"}
    rows = read_rows(report)
    late = unit(dataset / "val" / "1.2.png")
    assert rows[("1", "constant")]["mse"] == pytest.approx(float(((late - 0.375) ** 2).mean()), rel=1e-4)

    capsys.readouterr()
    report = run_evaluation(bundle, tmp_path, checkpoint, dataset / "val", fid=False, eval_dir=str(tmp_path / "r2"))
    summary = _summary(report)
    assert summary["constant_value"] is None and "--train_dir" in summary["constant_source"]
    assert {p for _, p in read_rows(report)} == {"model", "early", *ALIGNED}
    assert "constant-image baseline left out" in capsys.readouterr().out  # the bundle's logging.conf: stdout


def test_a_missing_early_phase_is_scored_without_the_early_predictor(bundle, tmp_path, checkpoint, dataset):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("1.png", "1.1.png", "1.2.png", "2.png", "2.2.png"):  # triplet 2 has no early phase
        (data / name).write_bytes((dataset / "val" / name).read_bytes())
    report = run_evaluation(bundle, tmp_path, checkpoint, data, fid=False, train_dir=str(dataset / "train"))
    rows = read_rows(report)
    assert set(rows) == {("1", "model"), ("1", "constant"), ("1", "early"), ("2", "model"), ("2", "constant"),
                         ("1", "model_aligned"), ("1", "early_aligned"), ("2", "model_aligned")}  # fmt: skip
    assert "psnr_lesion" in rows[("1", "model")] and math.isnan(rows[("2", "model")].get("psnr_lesion", math.nan))
    summary = _summary(report)
    assert summary["without_early"] == ["2"] and summary["scores"]["early"]["psnr"]["n"] == 1
    assert summary["scores"]["model"]["psnr"]["n"] == 2


def test_fid_without_weights_stops_before_generating(bundle, tmp_path, checkpoint, dataset, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    err = h.bundle_error(FileNotFoundError, run_evaluation, bundle, tmp_path, checkpoint, dataset)
    message = str(err)
    assert "pt_inception-2015-12-05-6726825d.pth" in message and INCEPTION_WEIGHTS_ENV in message
    assert "--fid false" in message
    assert not (tmp_path / "report").exists()


@pytest.mark.realdata
def test_real_frame_at_native_size_and_the_constant_floor(bundle, tmp_path, checkpoint, uwf_samples_dir, monkeypatch):
    """A decathlon datalist over ../shared/uwf-samples (training 1-4, validation 7): the generated frame has the
    native 853 x 682 size, and the constant image (mean training late phase) reaches an MS-SSIM near 0.65."""
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)

    def triplet(split: str, n: int) -> dict[str, str]:
        return {k: f"{split}/{n}{s}.bmp" for k, s in (("slo", ""), ("early", ".1"), ("late", ".2"))}

    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [triplet("train", n) for n in (1, 2, 3, 4)],
                                    "validation": [triplet("val", 7)]}))  # fmt: skip
    (tmp_path / "train").symlink_to(uwf_samples_dir / "train")  # relative paths resolve against the list's folder
    (tmp_path / "val").symlink_to(uwf_samples_dir / "val")
    report = tmp_path / "report"
    h.run_bundle(bundle, tmp_path, CONFIGS, checkpoint, datalist=str(datalist), eval_dir=str(report), fid=False,
                 num_inference_steps=1, eval_split="validation")  # fmt: skip
    rows = read_rows(report)
    assert {i for i, _ in rows} == {"7"}
    assert Image.open(report / "generated" / "7_late.png").size == (853, 682)
    floor = rows[("7", "constant")]["ms_ssim"]
    assert 0.5 < floor < 0.8, floor
    assert math.isfinite(rows[("7", "model")]["ms_ssim_fov"]) and math.isfinite(rows[("7", "early")]["psnr_lesion"])
