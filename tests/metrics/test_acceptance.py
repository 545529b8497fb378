"""The main job's acceptance table: each bar against hand-made summaries."""

from __future__ import annotations

import json

from monai_lpuwf.metrics.acceptance import acceptance_checks, format_acceptance, main


def _summary(model_psnr=20.0, cross=0.5, seed_corr=0.9):
    return {
        "scores": {
            "model": {"psnr": {"mean": model_psnr}, "psnr_fov": {"mean": 18.0}, "psnr_lesion": {"mean": 12.0}},
            "constant": {"psnr": {"mean": 16.0}, "psnr_fov": {"mean": 15.0}, "psnr_lesion": {"mean": 6.0}},
            "early": {"psnr": {"mean": 19.0}, "psnr_fov": {"mean": 17.5}, "psnr_lesion": {"mean": 10.0}},
        },
        "input_sensitivity": {"cross_input_corr": cross, "real_cross_input_corr": 0.45, "own_minus_other_corr": 0.2,
                              "same_input_seed_corr": seed_corr},
    }  # fmt: skip


def test_checks_and_bars():
    checks = {c["name"]: c for c in acceptance_checks(_summary())}
    assert checks["PSNR"]["bar"] == 19.0 and checks["PSNR"]["passed"]
    assert checks["PSNR field of view"]["bar"] == 17.5 and checks["PSNR field of view"]["passed"]
    assert checks["PSNR lesion region"]["bar"] == 11.0 and checks["PSNR lesion region"]["passed"]
    assert (
        abs(checks["cross-input correlation gap"]["value"] - 0.05) < 1e-9
        and checks["cross-input correlation gap"]["passed"]
    )
    bad = {c["name"]: c["passed"] for c in acceptance_checks(_summary(model_psnr=18.9, cross=0.98, seed_corr=0.2))}
    assert bad == {"PSNR": False, "PSNR field of view": True, "PSNR lesion region": True,
                   "cross-input correlation gap": False, "same input, two seeds": False}  # fmt: skip
    # without an early phase the early-phase bars are not applicable, not failed
    summary = _summary()
    del summary["scores"]["early"]
    assert {c["name"]: c["passed"] for c in acceptance_checks(summary)}["PSNR lesion region"] is None


def test_table_and_exit_code(tmp_path, capsys):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(_summary()))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "[pass] PSNR " in out and "constant" in out and "same input, two seeds 0.900" in out
    path.write_text(json.dumps(_summary(cross=0.9)))
    assert main([str(path)]) == 1
    assert "[MISS] cross-input correlation gap" in format_acceptance(_summary(cross=0.9))
    assert main([str(tmp_path / "missing.json")]) == 2
