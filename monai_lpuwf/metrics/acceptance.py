"""Does a trained model beat the trivial predictors and follow its input? The main job's closing table.

:func:`acceptance_checks` reads an evaluation ``summary.json`` (written by
:class:`~monai_lpuwf.metrics.EvaluationReportWriter`) and compares the model with the constant-image and
early-phase predictors and with the real late phases' own cross-input correlation:

=========================== =====================================================================
check                       passes when
=========================== =====================================================================
PSNR                        model >= constant + 3 dB
PSNR in the field of view   model >= early-phase predictor
PSNR in the lesion region   model >= early-phase predictor + 1 dB (the leakage the early phase lacks)
cross-input correlation     within 0.1 of the real late phases' (outputs differ as eyes differ)
same input, two seeds       correlation >= 0.8 (the SLO, not the noise, decides the picture)
=========================== =====================================================================

    python -m monai_lpuwf.metrics.acceptance bundle/eval/report/summary.json   # prints the table, exit 1 on a miss
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["acceptance_checks", "format_acceptance"]


def _mean(summary: Mapping[str, Any], predictor: str, score: str) -> float | None:
    value = summary.get("scores", {}).get(predictor, {}).get(score, {}).get("mean")
    return None if value is None else float(value)


def acceptance_checks(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checks of the module docstring on an evaluation summary.

    Args:
        summary: the content of ``summary.json`` (``scores`` per predictor, ``input_sensitivity``).

    Returns:
        one dict per check: ``name``, ``value`` (the model's), ``bar`` (the value to reach), ``rule`` (text) and
        ``passed`` (``None`` when the summary lacks what the check needs, e.g. no early phase).
    """

    def check(name: str, value: float | None, bar: float | None, rule: str, lower_is_ok: bool = False) -> dict:
        passed = None if value is None or bar is None else (value <= bar if lower_is_ok else value >= bar)
        return {"name": name, "value": value, "bar": bar, "rule": rule, "passed": passed}

    constant, early = _mean(summary, "constant", "psnr"), _mean(summary, "early", "psnr_fov")
    early_lesion = _mean(summary, "early", "psnr_lesion")
    sens = summary.get("input_sensitivity", {}) or {}
    cross, real_cross = sens.get("cross_input_corr"), sens.get("real_cross_input_corr")
    return [
        check("PSNR", _mean(summary, "model", "psnr"), None if constant is None else constant + 3.0,
              ">= constant image + 3 dB"),
        check("PSNR field of view", _mean(summary, "model", "psnr_fov"), early, ">= early-phase predictor"),
        check("PSNR lesion region", _mean(summary, "model", "psnr_lesion"),
              None if early_lesion is None else early_lesion + 1.0, ">= early-phase predictor + 1 dB"),
        check("cross-input correlation gap", None if cross is None or real_cross is None else abs(cross - real_cross),
              0.1, "|generated - real late| <= 0.1", lower_is_ok=True),
        check("same input, two seeds", sens.get("same_input_seed_corr"), 0.8, "correlation >= 0.8"),
    ]  # fmt: skip


def format_acceptance(summary: Mapping[str, Any]) -> str:
    """A plain-text table of the model's and the trivial predictors' scores and of :func:`acceptance_checks`."""
    lines = []
    scores = summary.get("scores", {})
    names = [p for p in ("model", "constant", "early", "model_aligned", "early_aligned") if p in scores]
    cols = ("psnr", "psnr_fov", "psnr_lesion", "ssim", "ms_ssim")
    if any("vessel_corr" in scores[p] for p in names):
        cols += ("vessel_corr",)
    lines.append(f"{'predictor':<14}" + "".join(f"{c:>13}" for c in cols))
    for p in names:
        cells = []
        for c in cols:
            v = _mean(summary, p, c)
            cells.append(f"{v:>13.3f}" if v is not None and v == v else f"{'n/a':>13}")
        lines.append(f"{p:<14}" + "".join(cells))
    sens = summary.get("input_sensitivity", {}) or {}
    if "cross_input_corr" in sens:
        lines.append(
            f"outputs of different inputs correlate {sens['cross_input_corr']:.3f} (real late phases "
            f"{sens['real_cross_input_corr']:.3f}); own - other late-phase correlation "
            f"{sens['own_minus_other_corr']:.3f}"
            + (f"; same input, two seeds {sens['same_input_seed_corr']:.3f}" if "same_input_seed_corr" in sens else "")
        )
    for c in acceptance_checks(summary):
        mark = {True: "pass", False: "MISS", None: "n/a "}[c["passed"]]
        value = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        bar = "n/a" if c["bar"] is None else f"{c['bar']:.3f}"
        lines.append(f"[{mark}] {c['name']:<28} {value:>8}  (bar {bar}: {c['rule']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m monai_lpuwf.metrics.acceptance SUMMARY_JSON", file=sys.stderr)
        return 2
    path = Path(args[0])
    if not path.is_file():
        print(f"{path}: no such file; run the evaluation first (configs/evaluate.json).", file=sys.stderr)
        return 2
    summary = json.loads(path.read_text())
    print(format_acceptance(summary))
    return 0 if all(c["passed"] is not False for c in acceptance_checks(summary)) else 1


if __name__ == "__main__":
    sys.exit(main())
