"""Evaluation of a generation run: the report writer and the helpers that build the parts' inputs from bundle
options.

An evaluation is composed of parts (:mod:`monai_lpuwf.metrics.evaluation_parts`: per-frame scores, aligned scores,
FID/IS and spectra, the seed check), each an Ignite handler that only collects, and
:class:`EvaluationReportWriter`, which attaches them to the :class:`~monai.engines.SupervisedEvaluator` of
``bundle/configs/evaluate.json`` and, when the run completes, writes
:class:`~monai_lpuwf.metrics.report.EvaluationReport`'s ``scores.csv`` (the parts' rows), ``summary.json`` (the
parts' summaries), ``examples.png`` and ``spectrum.png``, then logs the closing lines.

The helpers :func:`fid_extractor`, :func:`optional_lpips` and :func:`constant_baseline` build the parts' inputs
from bundle options with messages that name the option to change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import str2bool

from monai_lpuwf.data import datalist_from_file, datalist_from_folder
from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss, perceptual_network_name
from monai_lpuwf.metrics.baselines import training_mean_intensity
from monai_lpuwf.metrics.evaluation_parts import (
    EvaluationFrame,
    EvaluationPart,
)
from monai_lpuwf.metrics.inception import INCEPTION_WEIGHTS_ENV, InceptionFeatureExtractor
from monai_lpuwf.metrics.report import EvaluationReport
from monai_lpuwf.networks import ModelFile

__all__ = [
    "EvaluationReportWriter",
    "constant_baseline",
    "fid_extractor",
    "optional_lpips",
    "training_mean_intensity",
]

logger = logging.getLogger(__name__)


def fid_extractor(
    enabled: bool | str = True, weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> InceptionFeatureExtractor | None:
    """The FID Inception-v3 feature extractor for an evaluation, or ``None`` when FID/IS are switched off.

    Args:
        enabled: ``False`` (bundle option ``--fid false``; strings such as ``"false"`` / ``"true"`` from the
            command line are read with :func:`monai.utils.str2bool`) evaluates without FID and IS, saying so in the
            log and in ``summary.json``. There is no silent fallback: with ``enabled`` and no weights file, this
            raises.
        weights_path: ``pt_inception-2015-12-05-6726825d.pth``; ``None`` reads ``MONAI_LPUWF_INCEPTION_WEIGHTS``.
        device: where the network runs.

    Raises:
        FileNotFoundError: no weights file, naming the file, where to get it and the options.
    """
    if not str2bool(enabled):
        logger.warning("FID and Inception Score are switched off (fid=false): summary.json reports them as null.")
        return None
    try:
        return InceptionFeatureExtractor(weights_path, device=device)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}\nIn the bundle: pass --fid_weights /path/to/pt_inception-2015-12-05-6726825d.pth or set "
            f"{INCEPTION_WEIGHTS_ENV}; or run with --fid false to evaluate without FID and IS."
        ) from err


def optional_lpips(
    network: str = "alexnet",
    weights_path: str | os.PathLike | None = None,
    lpips_weights_path: str | os.PathLike | None = None,
):
    """An LPIPS scorer where the LPIPS v0.1 linear-layer weights are given, else ``None`` (no LPIPS column).

    Args:
        network: ``"alexnet"`` or ``"vgg16"``.
        weights_path: torchvision backbone weights (or ``MONAI_LPUWF_ALEXNET_WEIGHTS`` / ``..._VGG16_WEIGHTS``).
        lpips_weights_path: ``alex.pth`` / ``vgg.pth`` of LPIPS v0.1 (or ``MONAI_LPUWF_LPIPS_ALEXNET_WEIGHTS`` /
            ``MONAI_LPUWF_LPIPS_VGG16_WEIGHTS``).

    Raises:
        FileNotFoundError: LPIPS weights given but the backbone weights are missing (see
            :class:`~monai_lpuwf.losses.perceptual.OfflinePerceptualLoss`).
    """
    name = perceptual_network_name(network)
    env = f"MONAI_LPUWF_LPIPS_{name.upper()}_WEIGHTS"
    if lpips_weights_path is None and not os.environ.get(env):
        logger.info("LPIPS not computed: no LPIPS v0.1 weights given (--lpips_weights or %s).", env)
        return None
    return OfflinePerceptualLoss(name, weights_path=weights_path, lpips_weights_path=lpips_weights_path)


def constant_baseline(
    train_dir: str | os.PathLike | None = None,
    train_datalist: str | os.PathLike | None = None,
    model_file: ModelFile | str | os.PathLike | None = None,
    split_training: Sequence[Mapping[str, Any]] = (),
    load_kwargs: Mapping[str, Any] | None = None,
    key: str = "late",
) -> dict[str, Any]:
    """The constant predictor's intensity (the training set's mean late phase) and where it comes from.

    In order: the late phases of ``train_dir`` / ``train_datalist`` (``--train_dir`` / ``--train_datalist``); the
    value training stored in the model file (:class:`~monai_lpuwf.metrics.baselines.TrainingIntensityRecord`,
    :meth:`ModelFile.training_mean <monai_lpuwf.networks.ModelFile.training_mean>`); the training split of the
    evaluated source when a split was asked for (``split_training``). With none of these the constant predictor is
    left out, with a warning saying how to get it.

    Args:
        train_dir: ``--train_dir``: a folder of training triplets.
        train_datalist: ``--train_datalist``: a datalist file (its ``training`` section).
        model_file: the evaluated :class:`~monai_lpuwf.networks.ModelFile` (the bundle's ``model_file``, read once
            for the whole run), or its path (read where it exists).
        split_training: the training items of a split of the evaluated source.
        load_kwargs: :class:`~monai_lpuwf.transforms.LoadUWFImage` arguments.
        key: the image key whose mean is the constant (``"late"``).

    Returns:
        ``{"value": float | None, "source": str}`` (both recorded in ``summary.json``).
    """
    if train_dir and train_datalist:
        raise ValueError(f"give either train_dir ({train_dir}) or train_datalist ({train_datalist}), not both.")
    if train_dir or train_datalist:
        if train_dir:
            if not Path(train_dir).is_dir():
                raise FileNotFoundError(f"train_dir '{train_dir}' does not exist (--train_dir).")
            items, source = datalist_from_folder(train_dir, require_early=False), f"train_dir '{train_dir}'"
        else:
            if not Path(train_datalist).is_file():
                raise FileNotFoundError(f"train_datalist file '{train_datalist}' does not exist (--train_datalist).")
            items = datalist_from_file(train_datalist, require_early=False, section="training")
            source = f"train_datalist '{train_datalist}'"
        value = training_mean_intensity(items, key, load_kwargs)
        return {"value": value, "source": f"mean {key} intensity of the {len(items)} image(s) of {source}"}
    if model_file is not None and not isinstance(model_file, ModelFile):
        model_file = ModelFile.load(model_file) if os.path.isfile(model_file) else None
    value = model_file.training_mean(key) if model_file is not None else None
    if value is not None:
        return {"value": value, "source": f"training-set mean {key} intensity stored in {model_file.name}"}
    if split_training:
        value = training_mean_intensity(split_training, key, load_kwargs)
        return {"value": value, "source": f"mean {key} intensity of the {len(split_training)} training-split image(s)"}
    logger.warning(
        "constant-image baseline left out: the model file has no training-set mean intensity (trained before it was "
        "stored) and no training data was given; pass --train_dir DIR or --train_datalist FILE to add it."
    )
    return {"value": None, "source": "not available (no --train_dir / --train_datalist, none stored in the model)"}


class EvaluationReportWriter(EvaluationPart):
    """Attach the parts of an evaluation and write the report folder when the run completes.

    :meth:`attach` attaches every part, then the writer (which keeps the first ``max_examples`` frames for
    ``examples.png``). At ``COMPLETED`` it writes ``scores.csv`` (for every frame, the rows of each part in the order
    given), ``summary.json`` (``scores``: mean/std/n of every score and predictor; ``num_images``, ``scored``,
    ``images``; each part's :meth:`~monai_lpuwf.metrics.evaluation_parts.EvaluationPart.summary` in the order
    given; ``settings``), ``examples.png`` and ``spectrum.png`` (from the part that draws one), and logs the
    closing lines.

    Args:
        output_dir: report folder.
        parts: the parts (:mod:`monai_lpuwf.metrics.evaluation_parts`); ``None`` entries (parts a bundle config
            disables) are left out.
        scored: what is scored (:func:`~monai_lpuwf.bundle_support.evaluation_datalist`'s description), recorded in
            ``summary.json`` next to the list of image ids.
        settings: run settings recorded in ``summary.json`` (sampler, steps, model file...).
        max_examples: frames drawn in ``examples.png``.
        protected: input files the report must never overwrite.
        generated_dir: folder of the generated images, named in the final log line.
        kwargs: ``id_root`` and the item keys of :class:`~monai_lpuwf.metrics.evaluation_parts.EvaluationPart`.

    Raises:
        RuntimeError: at the end, a part saw another number of frames than the writer (attached twice, or not by
            this writer).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        parts: Sequence[EvaluationPart | None] = (),
        scored: str | None = None,
        settings: Mapping[str, Any] | None = None,
        max_examples: int = 8,
        protected: Iterable[str | os.PathLike] = (),
        generated_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.report = EvaluationReport(output_dir, protected=protected)
        self.parts = [p for p in parts if p is not None]
        self.scored = scored
        self.settings = dict(settings or {})
        self.max_examples = int(max_examples)
        self.generated_dir = None if generated_dir is None else str(generated_dir)
        self.paths: dict[str, Path] = {}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        for part in self.parts:
            part.attach(engine)
        super().attach(engine)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def add_frame(self, frame: EvaluationFrame) -> None:
        if len(self.report.examples) < self.max_examples:
            example = {"id": frame.id, "slo": frame.slo, "pred": frame.pred, "late": frame.late}
            self.report.add_examples([{**example, "pred_std": frame.pred_std}], max_rows=self.max_examples)

    def completed(self, engine: Any = None) -> dict[str, Path]:
        """Write the report files; returns their paths (also kept in :attr:`paths`)."""
        for part in self.parts:
            if part.num_frames != self.num_frames:
                raise RuntimeError(
                    f"{type(part).__name__} collected {part.num_frames} frame(s), the report writer {self.num_frames}: "
                    "attach each part once, through the writer (EvaluationReportWriter.attach attaches its parts)."
                )
        for i in range(self.num_frames):
            for part in self.parts:
                if part.rows:
                    image_id, row = part.rows[i]
                    self.report.add([image_id], row)
        if not self.report.records:
            raise ValueError("no frame was evaluated: the evaluation split is empty.")
        ids = list(dict.fromkeys(str(r["id"]) for r in self.report.records))
        predictors = list(dict.fromkeys(str(r["predictor"]) for r in self.report.records))
        summaries = [part.summary(predictors) for part in self.parts]
        extra = {"num_images": len(ids), "scored": self.scored, "images": ids}
        for summary in summaries:
            extra.update(summary)
        extra["settings"] = self.settings
        figures = [f for f in (part.spectrum_figure() for part in self.parts) if f is not None]
        self.paths = self.report.write(extra=extra, spectrum_figure=figures[-1] if figures else None)
        for predictor, scores in self.report.summary().items():
            shown = ", ".join(
                f"{n}={v['mean']:.4f}" for n, v in scores.items() if n in ("psnr", "ms_ssim", "ms_ssim_fov")
            )
            logger.info("%s: %s", predictor, shown)
        for part, summary in zip(self.parts, summaries):
            part.log_summary(summary)
        if self.scored:
            logger.info("scored %s", self.scored)
        logger.info(
            "evaluation report (scores.csv, summary.json, examples.png, spectrum.png) in %s%s",
            self.report.output_dir,
            f"; generated images in {self.generated_dir}" if self.generated_dir else "",
        )
        return self.paths
