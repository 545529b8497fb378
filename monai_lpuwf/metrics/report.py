"""Evaluation reports: a CSV row per image and predictor, a JSON summary, PNG figures; all written atomically.

Every file is first written to a temporary file in the output folder and then renamed over its final name, so
a reader never sees half a report. A path that is one of the evaluation's inputs (``protected`` paths: the
images, the datalist, the checkpoint) is never written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch

from monai_lpuwf.atomic_write import atomic_path
from monai_lpuwf.scores import to_unit_range

__all__ = [
    "GRID_COLUMNS",
    "atomic_write_bytes",
    "save_figure",
    "scores_to_records",
    "summarize_records",
    "write_scores_csv",
    "write_summary_json",
    "figure_grid",
    "EvaluationReport",
]

GRID_COLUMNS: tuple[str, ...] = ("SLO", "generated", "real late", "|difference|", "uncertainty")


def _check_target(path: Path, protected: Iterable[str | os.PathLike] = ()) -> Path:
    path = Path(path)
    resolved = path.resolve()
    for p in protected:
        if Path(p).resolve() == resolved:
            raise FileExistsError(f"Refusing to overwrite an input file: {path}. Choose another output folder.")
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, protected: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    Raises:
        FileExistsError: ``path`` is one of the ``protected`` input paths.
    """
    path = _check_target(Path(path), protected)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 100, protected: Sequence = ()) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue(), protected)


def _value(v) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


def scores_to_records(
    ids: Sequence[str], scores_by_predictor: Mapping[str, Mapping[str, torch.Tensor]]
) -> list[dict[str, object]]:
    """Flatten ``{predictor: {score: (B,)}}`` for B images into rows ``{"id", "predictor", score...}``."""
    records = []
    for predictor, scores in scores_by_predictor.items():
        for i, image_id in enumerate(ids):
            row: dict[str, object] = {"id": str(image_id), "predictor": predictor}
            for name, values in scores.items():
                values = torch.as_tensor(values).flatten()
                if values.numel() != len(ids):
                    raise ValueError(f"score {name!r} of {predictor!r} has {values.numel()} values for {len(ids)} ids.")
                row[name] = _value(values[i])
            records.append(row)
    return records


def summarize_records(records: Sequence[Mapping[str, object]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{predictor: {score: {"mean", "std", "n"}}}`` over the images, ignoring NaN (and infinite PSNR of
    identical images); ``std`` is the population standard deviation."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for row in records:
        by_score = grouped.setdefault(str(row["predictor"]), {})
        for key, value in row.items():
            if key not in ("id", "predictor") and isinstance(value, (int, float)):
                by_score.setdefault(key, []).append(float(value))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for predictor, by_score in grouped.items():
        summary[predictor] = {}
        for name, values in by_score.items():
            finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
            summary[predictor][name] = {
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std()) if finite.size else float("nan"),
                "n": int(finite.size),
            }
    return summary


def write_scores_csv(
    records: Sequence[Mapping[str, object]], path: str | os.PathLike, protected: Sequence = ()
) -> Path:
    """One row per record (image and predictor); columns ``id, predictor`` (where the records have them) then every
    other in first-seen order."""
    columns: list[str] = [c for c in ("id", "predictor") if any(c in row for row in records)]
    for row in records:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return atomic_write_bytes(path, text.getvalue().encode("utf-8"), protected)


def _json_safe(obj):
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None  # strict JSON has no NaN / Infinity
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_summary_json(summary: Mapping, path: str | os.PathLike, protected: Sequence = ()) -> Path:
    """Write a summary (e.g. from :func:`summarize_records`, plus FID/IS and spectral distance) as strict JSON;
    NaN and infinities become ``null``."""
    data = json.dumps(_json_safe(summary), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_bytes(path, (data + "\n").encode("utf-8"), protected)


def _to_display(image: torch.Tensor | None, value_range: Sequence[float] | None) -> np.ndarray | None:
    if image is None:
        return None
    image = torch.as_tensor(image).detach().float().cpu()
    if image.ndim == 4:
        image = image[0]
    image = to_unit_range(image, value_range)
    return image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()


def figure_grid(
    rows: Sequence[Mapping[str, object]], value_range: Sequence[float] | None = (-1.0, 1.0), panel_size: float = 2.5
) -> plt.Figure:
    """A grid with one row per frame: SLO | generated | real late | |difference| | uncertainty.

    Args:
        rows: one mapping per frame with ``"slo"`` (3, H, W), ``"pred"`` (1, H, W), ``"late"`` (1, H, W) in
            ``value_range``, optional ``"pred_std"`` (1, H, W) and ``"id"`` (row label). A missing panel stays
            blank with "n/a".
        value_range: intensity range of slo/pred/late.
        panel_size: inches per panel.

    Returns:
        a matplotlib Figure (save with :func:`save_figure`). Difference ``|pred - late|`` is shown in ``[0, 1]``
        units on a fixed 0-1 scale; uncertainty on its own scale (per-pixel std over samples).
    """
    if not rows:
        raise ValueError("figure_grid needs at least one row.")
    fig, axes = plt.subplots(
        len(rows), len(GRID_COLUMNS), figsize=(panel_size * len(GRID_COLUMNS), panel_size * len(rows)), squeeze=False
    )
    for r, row in enumerate(rows):
        pred, late = _to_display(row.get("pred"), value_range), _to_display(row.get("late"), value_range)
        diff = np.abs(pred - late) if pred is not None and late is not None else None
        std = row.get("pred_std")
        std = None if std is None else torch.as_tensor(std).detach().float().cpu().reshape(std.shape[-2:]).numpy()
        panels = [
            (_to_display(row.get("slo"), value_range), {}),
            (pred, {"cmap": "gray", "vmin": 0, "vmax": 1}),
            (late, {"cmap": "gray", "vmin": 0, "vmax": 1}),
            (diff, {"cmap": "magma", "vmin": 0, "vmax": 1}),
            (std, {"cmap": "viridis"}),
        ]
        for c, (image, style) in enumerate(panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(GRID_COLUMNS[c])
            if c == 0 and row.get("id") is not None:
                ax.set_ylabel(str(row["id"]))
            if image is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
                continue
            if image.ndim == 2 and not style:
                style = {"cmap": "gray"}
            ax.imshow(image, **style)
    fig.tight_layout()
    return fig


class EvaluationReport:
    """Collects per-image scores of the model and the baselines, then writes the report folder.

    Files written by :meth:`write` into ``output_dir``: ``scores.csv`` (one row per image and predictor),
    ``summary.json`` (mean/std/n per score and predictor, plus ``extra``), ``examples.png`` (figure grid of the
    frames given to :meth:`add_examples`) and ``spectrum.png`` when a spectrum figure is given.

    Args:
        output_dir: report folder (created).
        protected: input paths that must never be overwritten.

    Example:
        >>> report = EvaluationReport("eval_out", protected=[datalist_path])              # doctest: +SKIP
        >>> report.add(ids, score_with_baselines(pred, late, mean_late, early=early, fov=fov))  # doctest: +SKIP
        >>> report.write(extra={"fid": 12.3})                                             # doctest: +SKIP
    """

    def __init__(self, output_dir: str | os.PathLike, protected: Iterable[str | os.PathLike] = ()) -> None:
        self.output_dir = Path(output_dir)
        self.protected = [Path(p) for p in protected]
        for p in self.protected:
            if p.resolve() == self.output_dir.resolve():
                raise FileExistsError(f"The output folder {self.output_dir} is an input path; choose another one.")
        self.records: list[dict[str, object]] = []
        self.examples: list[dict[str, object]] = []

    def add(self, ids: Sequence[str], scores_by_predictor: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Add a batch of per-image scores ``{predictor: {score: (B,)}}`` for the images ``ids``."""
        self.records.extend(scores_to_records(ids, scores_by_predictor))

    def add_examples(self, rows: Sequence[Mapping[str, object]], max_rows: int = 8) -> None:
        """Keep frames for the figure grid (see :func:`figure_grid`), up to ``max_rows`` in all."""
        for row in rows:
            if len(self.examples) < max_rows:
                self.examples.append(dict(row))

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per-predictor mean/std/n of every score collected so far."""
        return summarize_records(self.records)

    def write(self, extra: Mapping | None = None, spectrum_figure: plt.Figure | None = None) -> dict[str, Path]:
        """Write the report files; returns ``{"csv", "json", ["grid"], ["spectrum"]}`` paths."""
        if not self.records:
            raise ValueError("EvaluationReport has no scores: call add() before write().")
        out = self.output_dir
        paths = {
            "csv": write_scores_csv(self.records, out / "scores.csv", self.protected),
            "json": write_summary_json(
                {"scores": self.summary(), **dict(extra or {})}, out / "summary.json", self.protected
            ),
        }
        if self.examples:
            paths["grid"] = save_figure(figure_grid(self.examples), out / "examples.png", protected=self.protected)
        if spectrum_figure is not None:
            paths["spectrum"] = save_figure(spectrum_figure, out / "spectrum.png", protected=self.protected)
        return paths
