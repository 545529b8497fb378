"""The parts of an evaluation run: Ignite handlers that collect per frame and give a summary at the end.

Each part reads, per frame, the merged ``engine.state.batch[i]`` / ``engine.state.output[i]`` dictionary of a
:class:`~monai.engines.SupervisedEvaluator` (after its post-processing: padding cropped off, prediction rounded to
the levels of the written file, field of view computed from the real late phase): ``pred`` and ``late`` (1, H, W)
in ``[-1, 1]``, optional ``early``, ``fov``, ``slo``, ``pred_std``. A part only collects; it writes nothing.

- :class:`FrameScoresHandler`: the model, the constant image and the early phase scored against the real late frame
  (whole frame, field of view, lesion region, LPIPS) with their ``vessel_corr``: rows ``model``, ``constant``,
  ``early``; ``without_early``, ``constant_value``, ``constant_source``, ``top_percent``, ``lpips`` in the summary.
- :class:`AlignedScoresHandler`: the model and the early phase scored after aligning each onto the real late frame
  (:class:`~monai_lpuwf.transforms.RegisterUWF`, mono-modal: vessels onto vessels): rows ``model_aligned``,
  ``early_aligned``; ``alignment`` in the summary.
- :class:`DistributionScoresHandler`: Inception-v3 features and radial power spectra of every predictor: ``fid``,
  ``inception_score``, ``spectral_distance`` in the summary, and ``spectrum.png``.
- :class:`SeedCheckHandler`: the frames for the input-sensitivity correlations, the first ones generated again with
  another seed: ``input_sensitivity`` in the summary.

:class:`~monai_lpuwf.metrics.evaluation.EvaluationReportWriter` takes the parts, attaches them and writes the
report folder when the run completes.

Real frames are not in the generated image's geometry (the SLO the model saw is not registered onto the late
frame it is scored against), hence the aligned rows: a frame whose alignment is refused is scored unmoved in the
aligned row, and ``"alignment"`` lists every frame's status and vessel correlation. ``vessel_corr`` is the vessel
correlation (:func:`~monai_lpuwf.transforms.vessel_correlation`, DoG sigma 1 and 4 px) with the real late frame
inside its field of view - whether a predictor draws vessels where the eye has them (a constant image scores 0).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import DivisiblePad

from monai_lpuwf.metrics.baselines import constant_prediction, score_with_baselines
from monai_lpuwf.metrics.fid import frechet_distance_from_features
from monai_lpuwf.metrics.frame_scores import score_frames
from monai_lpuwf.metrics.inception import InceptionFeatureExtractor
from monai_lpuwf.metrics.inception_score import inception_score
from monai_lpuwf.metrics.sensitivity import input_sensitivity, pairwise_correlation
from monai_lpuwf.metrics.spectrum import log_spectral_distance, plot_power_spectra, radial_power_spectrum
from monai_lpuwf.transforms.uwf_registration import RegisterUWF
from monai_lpuwf.transforms.vessels import registration_mask, vessel_correlation, vessel_grey

__all__ = [
    "EvaluationFrame",
    "EvaluationPart",
    "FrameScoresHandler",
    "AlignedScoresHandler",
    "DistributionScoresHandler",
    "SeedCheckHandler",
    "evaluator_items",
    "read_frame",
    "vessel_scorer",
]

logger = logging.getLogger(__name__)


def _batch(image: torch.Tensor | None) -> torch.Tensor | None:
    if image is None:
        return None
    image = torch.as_tensor(image).detach().float().cpu()
    return image[None] if image.ndim == 3 else image


@dataclass
class EvaluationFrame:
    """One evaluated frame: images as (1, C, H, W) CPU float tensors in ``[-1, 1]`` (``None`` where absent)."""

    id: str
    pred: torch.Tensor
    late: torch.Tensor
    early: torch.Tensor | None = None
    fov: torch.Tensor | None = None
    slo: torch.Tensor | None = None
    pred_std: torch.Tensor | None = None
    item: Mapping[str, Any] | None = None  # the evaluator's item as given (the seed check pads its SLO again)


def evaluator_items(engine: Any) -> list[dict[str, Any]]:
    """The merged ``engine.state.batch[i]`` / ``engine.state.output[i]`` dictionaries of the last iteration."""
    batch, output = engine.state.batch, engine.state.output
    items = []
    for i, out in enumerate(output):
        item = dict(batch[i]) if isinstance(batch, Sequence) and isinstance(batch[i], Mapping) else {}
        item.update(out)
        items.append(item)
    return items


def read_frame(item: Mapping[str, Any], keys: Mapping[str, str], id_root: str = "", index: int = 0) -> EvaluationFrame:
    """The :class:`EvaluationFrame` of an evaluator item.

    The id is the path of the prediction's (else the SLO's, else the late frame's) file relative to ``id_root``
    (the file name without ``id_root``), without extension; ``str(index)`` for an item without file names.

    Raises:
        KeyError: no prediction or no real late frame in the item.
    """
    pred, late = _batch(item.get(keys["pred"])), _batch(item.get(keys["late"]))
    if pred is None or late is None:
        raise KeyError(f"evaluation needs '{keys['pred']}' and '{keys['late']}' in every item; got {sorted(item)}.")
    image_id = str(index)
    for key in (keys["pred"], keys["slo"], keys["late"]):
        name = (getattr(item.get(key), "meta", None) or {}).get("filename_or_obj")
        if name:
            path = os.path.relpath(str(name), id_root) if id_root else os.path.basename(str(name))
            stem, ext = os.path.splitext(path)
            image_id = os.path.splitext(stem)[0] if ext == ".gz" else stem
            break
    return EvaluationFrame(
        image_id, pred, late, early=_batch(item.get(keys["early"])), fov=_batch(item.get(keys["fov"])),
        slo=_batch(item.get(keys["slo"])), pred_std=_batch(item.get(keys["std"])), item=item,
    )  # fmt: skip


def vessel_scorer(late: torch.Tensor, fov: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    """``score(image, support=None)``: the vessel correlation of ``image`` (1, 1, H, W) with the real ``late``
    frame inside its field of view (``fov``, else the late frame's own registration mask) and ``support``."""
    late_np = late[0].numpy()
    mask = fov[0, 0].numpy() > 0.5 if fov is not None else registration_mask(late_np, "fa")
    late_grey = vessel_grey(late_np, "fa")

    def score(image: torch.Tensor, support: np.ndarray | None = None) -> torch.Tensor:
        m = mask if support is None else mask & support
        return torch.tensor([vessel_correlation(late_grey, vessel_grey(image[0].numpy(), "fa"), m)])

    return score


class EvaluationPart:
    """Base of the parts: an Ignite handler that turns every item of an evaluator iteration into an
    :class:`EvaluationFrame` and collects it (:meth:`add_frame`); :meth:`summary` gives its entries of
    ``summary.json``.

    Args:
        id_root: frame ids are the file paths relative to this folder, without extension (see :func:`read_frame`).
        pred_key, late_key, early_key, slo_key, std_key, fov_key: item keys.

    Attributes:
        rows: ``(frame id, {predictor: {score: (1,) tensor}})`` per frame for the parts that add rows to
            ``scores.csv`` (empty for the others).
        num_frames: frames collected so far.
    """

    def __init__(
        self,
        id_root: str | os.PathLike = "",
        pred_key: str = "pred",
        late_key: str = "late",
        early_key: str = "early",
        slo_key: str = "slo",
        std_key: str = "pred_std",
        fov_key: str = "fov",
    ) -> None:
        self.id_root = str(id_root or "")
        self.keys = {"pred": pred_key, "late": late_key, "early": early_key, "slo": slo_key, "std": std_key,
                     "fov": fov_key}  # fmt: skip
        self.rows: list[tuple[str, dict[str, dict[str, torch.Tensor]]]] = []
        self.num_frames = 0

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def iteration_completed(self, engine: Any) -> None:
        for item in evaluator_items(engine):
            self.add_item(item)

    def add_item(self, item: Mapping[str, Any]) -> None:
        """Collect one evaluator item (a dict with ``pred``, ``late`` and optionally ``early``, ``fov``, ...)."""
        frame = read_frame(item, self.keys, self.id_root, self.num_frames)
        self.num_frames += 1
        self.add_frame(frame)

    def add_frame(self, frame: EvaluationFrame) -> None:
        raise NotImplementedError

    def summary(self, predictors: Sequence[str] = ()) -> dict[str, Any]:
        """This part's entries of ``summary.json``; ``predictors``: the predictors of ``scores.csv``, in order."""
        return {}

    def spectrum_figure(self) -> Any:
        """A figure for ``spectrum.png``, or ``None``."""
        return None

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Log this part's closing line(s) from its :meth:`summary`."""


class FrameScoresHandler(EvaluationPart):
    """Per-frame scores of the model beside the trivial predictors: rows ``model``, ``constant`` and ``early``.

    Every frame is scored with :func:`~monai_lpuwf.metrics.baselines.score_with_baselines` (whole frame, field of
    view, lesion region, LPIPS where a scorer is given) plus a ``vessel_corr`` column. A frame without an early
    phase is scored without the early-phase predictor and without the lesion-region scores (which need
    ``|early - late|``); the summary lists such frames under ``"without_early"``.

    Args:
        constant_value: intensity of the constant predictor (the training set's mean late phase, see
            :func:`~monai_lpuwf.metrics.evaluation.constant_baseline`); ``None`` leaves it out.
        constant_source: where ``constant_value`` comes from, recorded in the summary.
        top_percent: lesion share of the field of view (:func:`~monai_lpuwf.metrics.lesion.lesion_mask`).
        perceptual: LPIPS scorer (:func:`~monai_lpuwf.metrics.evaluation.optional_lpips`); ``None``: no LPIPS.
        kwargs: ``id_root`` and the item keys of :class:`EvaluationPart`.
    """

    def __init__(
        self,
        constant_value: float | None = None,
        constant_source: str | None = None,
        top_percent: float = 10.0,
        perceptual: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.constant_value = None if constant_value is None else float(constant_value)
        self.constant_source = constant_source
        self.top_percent = float(top_percent)
        self.perceptual = perceptual
        self.without_early: list[str] = []

    def add_frame(self, frame: EvaluationFrame) -> None:
        pred, late, early = frame.pred, frame.late, frame.early
        if early is None:
            self.without_early.append(frame.id)
            logger.warning("%s: no early phase; scored without the early-phase predictor and lesion scores.", frame.id)
        scores = score_with_baselines(
            pred, late, self.constant_value, early, fov=frame.fov, top_percent=self.top_percent,
            perceptual=self.perceptual,
        )  # fmt: skip
        vessel_corr = vessel_scorer(late, frame.fov)
        images = {"model": pred, "early": early}
        if self.constant_value is not None:
            images["constant"] = constant_prediction(late, self.constant_value)
        self.rows.append((frame.id, {name: {**cols, "vessel_corr": vessel_corr(images[name])}
                                     for name, cols in scores.items()}))  # fmt: skip

    def summary(self, predictors: Sequence[str] = ()) -> dict[str, Any]:
        return {
            "without_early": self.without_early,
            "constant_value": self.constant_value,
            "constant_source": self.constant_source,
            "top_percent": self.top_percent,
            "lpips": self.perceptual is not None,
        }

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if self.without_early:
            logger.info("%d image(s) without an early phase (no early-phase predictor): %s", len(self.without_early),
                        ", ".join(self.without_early))  # fmt: skip
        logger.info("constant baseline: %s", self.constant_source or self.constant_value)


class AlignedScoresHandler(EvaluationPart):
    """Scores after alignment: rows ``model_aligned`` and ``early_aligned``, and the summary's ``"alignment"``.

    The generated image and the early phase are each aligned onto the real late frame
    (:class:`~monai_lpuwf.transforms.RegisterUWF`, ``kind="mono"``) and scored like
    :class:`FrameScoresHandler`'s rows (:func:`~monai_lpuwf.metrics.frame_scores.score_frames` plus
    ``vessel_corr``), only where the moved image has pixels (the field of view times the moved frame's support).

    Args:
        top_percent: lesion share of the field of view.
        perceptual: LPIPS scorer or ``None``.
        kwargs: ``id_root`` and the item keys of :class:`EvaluationPart`.
    """

    def __init__(self, top_percent: float = 10.0, perceptual: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.top_percent = float(top_percent)
        self.perceptual = perceptual
        self.aligner = RegisterUWF(kind="mono", warn=False)
        self.alignment: dict[str, dict[str, Any]] = {}

    def add_frame(self, frame: EvaluationFrame) -> None:
        late, fov = frame.late, frame.fov
        vessel_corr = vessel_scorer(late, fov)
        self.alignment[frame.id] = {}
        row = {}
        for name, image in (("model", frame.pred), ("early", frame.early)):
            if image is None:
                continue
            moved = self.aligner(image[0], late[0])
            info = moved.meta["registration"]
            self.alignment[frame.id][name] = {
                k: info[k] for k in ("status", "vessel_correlation_before", "vessel_correlation_after", "matrix_rc")
            }
            aligned = moved.as_tensor()[None].float()
            # pixels moved in from outside the generated frame are not scored
            support = self.aligner.apply_transform(torch.ones_like(image[0]), moved, nearest=True)[None] > 0.5
            fov_aligned = support.float() if fov is None else fov * support
            cols = score_frames(
                aligned, late, fov=fov_aligned, early=frame.early, top_percent=self.top_percent,
                perceptual=self.perceptual,
            )  # fmt: skip
            row[f"{name}_aligned"] = {**cols, "vessel_corr": vessel_corr(aligned, support[0, 0].numpy())}
        self.rows.append((frame.id, row))

    def summary(self, predictors: Sequence[str] = ()) -> dict[str, Any]:
        return {"alignment": self.alignment}


class DistributionScoresHandler(EvaluationPart):
    """FID, Inception Score and the log-spectral distance of every predictor's frames to the real late phases'.

    Per frame it keeps the Inception-v3 features and logits (where an extractor is given) and the radial power
    spectrum of the real late frame, the model's, the constant image's (features only: a constant image has no
    power at any non-zero frequency) and the early phase's.

    Args:
        constant_value: intensity of the constant predictor; ``None`` leaves it out.
        inception: FID/IS feature extractor (:func:`~monai_lpuwf.metrics.evaluation.fid_extractor`); ``None``:
            FID and IS are reported as null, with a note.
        spectrum_bins: frequency rings of the radial power spectra (fixed, so frames of any size share them).
        is_splits: splits of the Inception Score.
        kwargs: the item keys of :class:`EvaluationPart`.
    """

    def __init__(
        self,
        constant_value: float | None = None,
        inception: InceptionFeatureExtractor | None = None,
        spectrum_bins: int = 64,
        is_splits: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.constant_value = None if constant_value is None else float(constant_value)
        self.inception = inception
        self.spectrum_bins = int(spectrum_bins)
        self.is_splits = int(is_splits)
        self.features: dict[str, list[torch.Tensor]] = {}
        self.logits: dict[str, list[torch.Tensor]] = {}
        self.spectra: dict[str, list[torch.Tensor]] = {}
        self.freqs: torch.Tensor | None = None

    def add_frame(self, frame: EvaluationFrame) -> None:
        images = {"real": frame.late, "model": frame.pred}
        if self.constant_value is not None:
            images["constant"] = constant_prediction(frame.late, self.constant_value)
        if frame.early is not None:
            images["early"] = frame.early
        for name, image in images.items():
            if name != "constant":  # a constant image has no power at any non-zero frequency
                self.freqs, power = radial_power_spectrum(image, self.spectrum_bins)
                self.spectra.setdefault(name, []).append(power)
            if self.inception is not None:
                feats, logits = self.inception(image)
                self.features.setdefault(name, []).append(feats)
                self.logits.setdefault(name, []).append(logits)

    def summary(self, predictors: Sequence[str] = ()) -> dict[str, Any]:
        """FID and IS of every predictor (``None`` without Inception, without features for it - the aligned rows -
        or with fewer than 2 frames) and the log-spectral distance of every predictor's mean radial power spectrum
        to the real late phase's; ``predictors`` defaults to those this part has images of."""
        out: dict[str, Any] = {"fid": {}, "inception_score": {}, "spectral_distance": {}}
        real_feats = torch.cat(self.features["real"]) if "real" in self.features else None
        names = list(predictors) or [n for n in ("model", "constant", "early") if n in self.spectra or n in self.logits]
        for name in names:
            fid, is_score = None, None
            if real_feats is not None and name in self.features:
                feats, logits = torch.cat(self.features[name]), torch.cat(self.logits[name])
                if min(len(feats), len(real_feats)) >= 2:
                    fid = frechet_distance_from_features(feats, real_feats)
                if len(logits) >= self.is_splits:
                    mean, std = inception_score(logits, splits=self.is_splits)
                    is_score = {"mean": mean, "std": std}
            out["fid"][name] = fid
            out["inception_score"][name] = is_score
            if name in self.spectra:
                out["spectral_distance"][name] = log_spectral_distance(
                    torch.cat(self.spectra[name]), torch.cat(self.spectra["real"])
                )
        if self.inception is None:
            out["fid_note"] = "FID and IS not computed (switched off with fid=false)."
        elif real_feats is not None and len(real_feats) < 2:
            out["fid_note"] = "FID needs at least 2 frames."
        return out

    def spectrum_figure(self) -> Any:
        if self.freqs is None:
            return None
        labels = {"real": "real late", "model": "generated", "early": "early phase"}
        return plot_power_spectra(
            self.freqs, {labels[n]: torch.cat(s) for n, s in self.spectra.items()}, title="Late-phase FA spectra"
        )


class SeedCheckHandler(EvaluationPart):
    """Does the output follow the input, and how much does it depend on the sampling seed?

    Keeps every frame for :func:`~monai_lpuwf.metrics.sensitivity.input_sensitivity` (outputs of different inputs
    against the real late phases' own cross-input correlation) and, with a ``sampler``, generates the first
    ``images`` frames a second time with it (another seed) for the same-input correlation
    ``same_input_seed_corr``.

    Args:
        network: the generating model (needed for the second draw).
        sampler: an :class:`~monai_lpuwf.inferers.LPUWFSampler` with a seed other than the run's; ``None``: no
            second draw.
        images: frames drawn a second time (the cost of a second generation is bounded).
        sensitivity_size: frames are area-resized to this square grid for the correlations when their sizes differ
            (same-size frames are correlated as they are).
        kwargs: the item keys of :class:`EvaluationPart`.
    """

    def __init__(
        self, network: Any = None, sampler: Any = None, images: int = 8, sensitivity_size: int = 128, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.sampler = sampler
        self.images = int(images)
        self.sensitivity_size = int(sensitivity_size)
        # the scored frames, and (for the first ``images`` of them) the same frames drawn with another seed
        self.frames: dict[str, list[torch.Tensor]] = {"pred": [], "late": [], "other_seed": []}

    def add_frame(self, frame: EvaluationFrame) -> None:
        pred = frame.pred
        self.frames["pred"].append(pred)
        self.frames["late"].append(frame.late)
        slo = (frame.item or {}).get(self.keys["slo"])
        if self.sampler is None or self.network is None or slo is None or len(self.frames["other_seed"]) >= self.images:
            return
        # the SLO was cropped back to the native frame with the prediction (Invertd): pad it again as the inference
        # transforms do (DivisiblePad, value -1, symmetric) and crop the new draw like the scored frame
        divisor = getattr(self.network, "module", self.network).size_divisor
        padded = DivisiblePad(k=divisor, mode="constant", value=-1.0)(torch.as_tensor(slo))
        again = self.sampler(_batch(torch.as_tensor(padded)), self.network)["pred"].float().cpu()
        h, w = pred.shape[-2:]
        top, left = (again.shape[-2] - h) // 2, (again.shape[-1] - w) // 2
        self.frames["other_seed"].append(again[..., top : top + h, left : left + w])

    def _common_grid(self, images: list[torch.Tensor]) -> torch.Tensor:
        if len({tuple(i.shape[-2:]) for i in images}) == 1:
            return torch.cat(images)
        size = (self.sensitivity_size, self.sensitivity_size)
        return torch.cat([torch.nn.functional.interpolate(i.float(), size=size, mode="area") for i in images])

    def input_sensitivity(self) -> dict[str, Any]:
        """:func:`~monai_lpuwf.metrics.sensitivity.input_sensitivity` of the frames (whole frame), plus the
        same-input correlation across two sampling seeds on the frames drawn twice."""
        frames = self.frames
        if len(frames["pred"]) < 2:
            return {"note": "input sensitivity needs at least two frames."}
        out: dict[str, Any] = input_sensitivity(self._common_grid(frames["pred"]), self._common_grid(frames["late"]))
        if frames["other_seed"]:
            pairs = [pairwise_correlation(a, b)[0, 0] for a, b in zip(frames["pred"], frames["other_seed"])]
            out["same_input_seed_corr"] = float(torch.stack(pairs).mean())
            out["seed_check_images"] = len(pairs)
        return out

    def summary(self, predictors: Sequence[str] = ()) -> dict[str, Any]:
        return {"input_sensitivity": self.input_sensitivity()}

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        sens = summary["input_sensitivity"]
        if "cross_input_corr" in sens:
            logger.info(
                "input sensitivity: outputs of different inputs correlate %.3f (real late phases %.3f); own - other "
                "late-phase correlation %.3f%s",
                sens["cross_input_corr"], sens["real_cross_input_corr"], sens["own_minus_other_corr"],
                f"; same input, two seeds {sens['same_input_seed_corr']:.3f}" if "same_input_seed_corr" in sens else "",
            )  # fmt: skip
