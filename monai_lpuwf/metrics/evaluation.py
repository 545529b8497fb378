"""Evaluation of a generation run: per-frame scores, FID/IS, spectra, baselines and the report folder.

:class:`GenerationEvaluationHandler` is attached to the :class:`~monai.engines.SupervisedEvaluator` of
``bundle/configs/evaluate.json``. After the evaluator's post-processing (padding cropped off, prediction rounded
to the levels of the written file, field of view computed from the real late phase), it scores every frame with
:func:`~monai_lpuwf.metrics.baselines.score_with_baselines` (model, constant image, early phase; whole frame,
field of view, lesion region, LPIPS where weights are given), keeps Inception-v3 features and radial power
spectra, and at the end of the run writes :class:`~monai_lpuwf.metrics.report.EvaluationReport`'s
``scores.csv``, ``summary.json`` (with FID, IS and spectral distances of every predictor), ``examples.png`` and
``spectrum.png``.

Real frames are not in the generated image's geometry (the SLO the model saw is not registered onto the late
frame it is scored against), so with ``align=True`` (default) every frame is also scored after aligning the
generated image, and the early-phase predictor, onto the real late frame (:class:`~monai_lpuwf.transforms.
RegisterUWF`, mono-modal: vessels onto vessels): rows ``model_aligned`` and ``early_aligned`` beside the raw
``model`` and ``early`` rows (a frame whose alignment is refused is scored unmoved in the aligned row, and
``summary.json``'s ``"alignment"`` lists every frame's status and vessel correlation). Every row has a
``vessel_corr`` column: the vessel correlation (:func:`~monai_lpuwf.transforms.vessel_correlation`, DoG sigma 1
and 4 px) with the real late frame inside its field of view - whether the model draws vessels where the eye has
them (a constant image scores 0).

The helpers :func:`fid_extractor`, :func:`optional_lpips` and :func:`constant_baseline` build the handler's
inputs from bundle options with messages that name the option to change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import DivisiblePad
from monai.utils import str2bool

from monai_lpuwf.data import datalist_from_file, datalist_from_folder
from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss, perceptual_network_name
from monai_lpuwf.metrics.baselines import (
    constant_prediction,
    score_with_baselines,
    training_mean_intensity,
)
from monai_lpuwf.metrics.fid import frechet_distance_from_features
from monai_lpuwf.metrics.frame_scores import score_frames
from monai_lpuwf.metrics.inception import INCEPTION_WEIGHTS_ENV, InceptionFeatureExtractor
from monai_lpuwf.metrics.inception_score import inception_score
from monai_lpuwf.metrics.report import EvaluationReport
from monai_lpuwf.metrics.sensitivity import input_sensitivity, pairwise_correlation
from monai_lpuwf.metrics.spectrum import log_spectral_distance, plot_power_spectra, radial_power_spectrum
from monai_lpuwf.networks import ModelFile
from monai_lpuwf.transforms.uwf_registration import RegisterUWF
from monai_lpuwf.transforms.vessels import registration_mask, vessel_correlation, vessel_grey

__all__ = [
    "GenerationEvaluationHandler",
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


def _batch(image: torch.Tensor | None) -> torch.Tensor | None:
    if image is None:
        return None
    image = torch.as_tensor(image).detach().float().cpu()
    return image[None] if image.ndim == 3 else image


class GenerationEvaluationHandler:
    """Score every generated frame of an evaluator run and write the report when the run completes.

    Args:
        output_dir: report folder (``scores.csv``, ``summary.json``, ``examples.png``, ``spectrum.png``).
        constant_value: intensity of the constant predictor (:func:`training_mean_intensity`); ``None`` leaves it
            out.
        top_percent: lesion share of the field of view (:func:`~monai_lpuwf.metrics.lesion.lesion_mask`).
        inception: FID/IS feature extractor (:func:`fid_extractor`); ``None``: no FID/IS (reported as null).
        perceptual: LPIPS scorer (:func:`optional_lpips`); ``None``: no LPIPS column.
        spectrum_bins: frequency rings of the radial power spectra (fixed, so frames of any size share them).
        max_examples: frames drawn in ``examples.png``.
        is_splits: splits of the Inception Score.
        id_root: image ids are the SLO paths relative to this folder, without extension.
        protected: input files the report must never overwrite.
        settings: run settings recorded in ``summary.json`` (sampler, steps, model file...).
        scored: what is scored (:func:`~monai_lpuwf.bundle_support.evaluation_datalist`'s description),
            recorded in ``summary.json`` next to the list of image ids.
        constant_source: where ``constant_value`` comes from (:func:`constant_baseline`), recorded likewise.
        generated_dir: folder of the generated images, named in the final log line.
        network: the generating model; with ``seed_check_sampler``, the first ``seed_check_images`` frames are
            generated a second time with that sampler (another seed) for the same-input correlation.
        seed_check_sampler: an :class:`~monai_lpuwf.inferers.LPUWFSampler` with a seed other than the run's.
        seed_check_images: frames regenerated for the seed check (the cost of a second generation is bounded).
        sensitivity_size: frames are area-resized to this square grid for the input-sensitivity correlations when
            their sizes differ (same-size frames are correlated as they are).
        align: also score the model and the early phase after aligning them onto the real late frame (rows
            ``model_aligned``, ``early_aligned``; see the module docstring).
        pred_key, late_key, early_key, slo_key, std_key, fov_key: item keys.

    The handler reads, per frame, the merged ``engine.state.batch[i]`` / ``engine.state.output[i]`` dictionary:
    ``pred`` and ``late`` (1, H, W) in ``[-1, 1]``, optional ``early``, ``fov``, ``slo``, ``pred_std``. A frame
    without an early phase is scored without the early-phase predictor and without the lesion-region scores
    (which need ``|early - late|``); ``summary.json`` lists such frames under ``"without_early"``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        constant_value: float | None = None,
        top_percent: float = 10.0,
        inception: InceptionFeatureExtractor | None = None,
        perceptual: Any = None,
        spectrum_bins: int = 64,
        max_examples: int = 8,
        is_splits: int = 1,
        id_root: str | os.PathLike = "",
        protected: Iterable[str | os.PathLike] = (),
        settings: Mapping[str, Any] | None = None,
        scored: str | None = None,
        constant_source: str | None = None,
        generated_dir: str | os.PathLike | None = None,
        network: Any = None,
        seed_check_sampler: Any = None,
        seed_check_images: int = 8,
        sensitivity_size: int = 128,
        align: bool = True,
        pred_key: str = "pred",
        late_key: str = "late",
        early_key: str = "early",
        slo_key: str = "slo",
        std_key: str = "pred_std",
        fov_key: str = "fov",
    ) -> None:
        self.report = EvaluationReport(output_dir, protected=protected)
        self.constant_value = None if constant_value is None else float(constant_value)
        self.top_percent = float(top_percent)
        self.inception = inception
        self.perceptual = perceptual
        self.spectrum_bins = int(spectrum_bins)
        self.max_examples = int(max_examples)
        self.is_splits = int(is_splits)
        self.id_root = str(id_root or "")
        self.settings = dict(settings or {})
        self.scored = scored
        self.constant_source = constant_source
        self.generated_dir = None if generated_dir is None else str(generated_dir)
        self.without_early: list[str] = []
        self.network = network
        self.seed_check_sampler = seed_check_sampler
        self.seed_check_images = int(seed_check_images)
        self.sensitivity_size = int(sensitivity_size)
        self.aligner = RegisterUWF(kind="mono", warn=False) if align else None
        self.alignment: dict[str, dict[str, Any]] = {}
        # the scored frames, and (for the first seed_check_images of them) the same frames drawn with another seed
        self.sensitivity: dict[str, list[torch.Tensor]] = {"pred": [], "late": [], "other_seed": []}
        self.keys = {"pred": pred_key, "late": late_key, "early": early_key, "slo": slo_key, "std": std_key,
                     "fov": fov_key}  # fmt: skip
        self.features: dict[str, list[torch.Tensor]] = {}
        self.logits: dict[str, list[torch.Tensor]] = {}
        self.spectra: dict[str, list[torch.Tensor]] = {}
        self.freqs: torch.Tensor | None = None
        self.paths: dict[str, Path] = {}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine: Any) -> None:
        batch, output = engine.state.batch, engine.state.output
        for i, out in enumerate(output):
            item = dict(batch[i]) if isinstance(batch, Sequence) and isinstance(batch[i], Mapping) else {}
            item.update(out)
            self.add_item(item)

    def _image_id(self, item: Mapping[str, Any]) -> str:
        """The SLO path relative to ``id_root`` (file name without ``id_root``), without extension."""
        for key in (self.keys["pred"], self.keys["slo"], self.keys["late"]):
            name = (getattr(item.get(key), "meta", None) or {}).get("filename_or_obj")
            if name:
                path = os.path.relpath(str(name), self.id_root) if self.id_root else os.path.basename(str(name))
                stem, ext = os.path.splitext(path)
                return os.path.splitext(stem)[0] if ext == ".gz" else stem
        return str(len({r["id"] for r in self.report.records}))

    def add_item(self, item: Mapping[str, Any]) -> None:
        """Score one frame (a dict with ``pred``, ``late`` and optionally ``early``, ``fov``, ``slo``, ``pred_std``)."""
        k = self.keys
        pred, late = _batch(item.get(k["pred"])), _batch(item.get(k["late"]))
        if pred is None or late is None:
            raise KeyError(f"evaluation needs '{k['pred']}' and '{k['late']}' in every item; got {sorted(item)}.")
        early, fov = _batch(item.get(k["early"])), _batch(item.get(k["fov"]))
        image_id = self._image_id(item)
        if early is None:
            self.without_early.append(image_id)
            logger.warning("%s: no early phase; scored without the early-phase predictor and lesion scores.", image_id)
        scores = score_with_baselines(
            pred, late, self.constant_value, early, fov=fov, top_percent=self.top_percent, perceptual=self.perceptual
        )
        scores = self._add_vessel_and_aligned_scores(image_id, scores, pred, late, early, fov)
        self.report.add([image_id], scores)
        images = {"real": late, "model": pred}
        if self.constant_value is not None:
            images["constant"] = constant_prediction(late, self.constant_value)
        if early is not None:
            images["early"] = early
        for name, image in images.items():
            if name != "constant":  # a constant image has no power at any non-zero frequency
                self.freqs, power = radial_power_spectrum(image, self.spectrum_bins)
                self.spectra.setdefault(name, []).append(power)
            if self.inception is not None:
                feats, logits = self.inception(image)
                self.features.setdefault(name, []).append(feats)
                self.logits.setdefault(name, []).append(logits)
        self._add_sensitivity_item(item, pred, late)
        if len(self.report.examples) < self.max_examples:
            self.report.add_examples(
                [{"id": image_id, "slo": _batch(item.get(k["slo"])), "pred": pred, "late": late,
                  "pred_std": _batch(item.get(k["std"]))}],
                max_rows=self.max_examples,
            )  # fmt: skip

    def _add_vessel_and_aligned_scores(self, image_id, scores, pred, late, early, fov) -> dict:
        """``vessel_corr`` for every predictor; with ``align``, the ``model_aligned`` / ``early_aligned`` rows."""
        late_np = late[0].numpy()
        mask = fov[0, 0].numpy() > 0.5 if fov is not None else registration_mask(late_np, "fa")
        late_grey = vessel_grey(late_np, "fa")

        def vessel_corr(image: torch.Tensor, support=None) -> torch.Tensor:
            m = mask if support is None else mask & support
            return torch.tensor([vessel_correlation(late_grey, vessel_grey(image[0].numpy(), "fa"), m)])

        out = {name: {**cols, "vessel_corr": vessel_corr(constant_prediction(late, self.constant_value))
                      if name == "constant" else vessel_corr(pred if name == "model" else early)}
               for name, cols in scores.items()}  # fmt: skip
        if self.aligner is None:
            return out
        self.alignment[image_id] = {}
        for name, image in (("model", pred), ("early", early)):
            if image is None:
                continue
            moved = self.aligner(image[0], late[0])
            info = moved.meta["registration"]
            self.alignment[image_id][name] = {
                k: info[k] for k in ("status", "vessel_correlation_before", "vessel_correlation_after", "matrix_rc")
            }
            aligned = moved.as_tensor()[None].float()
            # pixels moved in from outside the generated frame are not scored
            support = self.aligner.apply_transform(torch.ones_like(image[0]), moved, nearest=True)[None] > 0.5
            fov_aligned = support.float() if fov is None else fov * support
            cols = score_frames(
                aligned, late, fov=fov_aligned, early=early, top_percent=self.top_percent, perceptual=self.perceptual
            )
            out[f"{name}_aligned"] = {**cols, "vessel_corr": vessel_corr(aligned, support[0, 0].numpy())}
        return out

    def _add_sensitivity_item(self, item: Mapping[str, Any], pred: torch.Tensor, late: torch.Tensor) -> None:
        """Keep the frame for the input-sensitivity figures; regenerate it with another seed when asked."""
        self.sensitivity["pred"].append(pred)
        self.sensitivity["late"].append(late)
        slo = item.get(self.keys["slo"])
        checked = len(self.sensitivity["other_seed"])
        if self.seed_check_sampler is None or self.network is None or slo is None or checked >= self.seed_check_images:
            return
        # the SLO was cropped back to the native frame with the prediction (Invertd): pad it again as the inference
        # transforms do (DivisiblePad, value -1, symmetric) and crop the new draw like the scored frame
        divisor = getattr(self.network, "module", self.network).size_divisor
        padded = DivisiblePad(k=divisor, mode="constant", value=-1.0)(torch.as_tensor(slo))
        again = self.seed_check_sampler(_batch(torch.as_tensor(padded)), self.network)["pred"].float().cpu()
        h, w = pred.shape[-2:]
        top, left = (again.shape[-2] - h) // 2, (again.shape[-1] - w) // 2
        self.sensitivity["other_seed"].append(again[..., top : top + h, left : left + w])

    def _common_grid(self, images: list[torch.Tensor]) -> torch.Tensor:
        if len({tuple(i.shape[-2:]) for i in images}) == 1:
            return torch.cat(images)
        size = (self.sensitivity_size, self.sensitivity_size)
        return torch.cat([torch.nn.functional.interpolate(i.float(), size=size, mode="area") for i in images])

    def input_sensitivity(self) -> dict[str, Any]:
        """:func:`~monai_lpuwf.metrics.sensitivity.input_sensitivity` of the scored frames (whole frame), plus the
        same-input correlation across two sampling seeds on the frames regenerated for the seed check."""
        frames = self.sensitivity
        if len(frames["pred"]) < 2:
            return {"note": "input sensitivity needs at least two frames."}
        out: dict[str, Any] = input_sensitivity(self._common_grid(frames["pred"]), self._common_grid(frames["late"]))
        if frames["other_seed"]:
            pairs = [pairwise_correlation(a, b)[0, 0] for a, b in zip(frames["pred"], frames["other_seed"])]
            out["same_input_seed_corr"] = float(torch.stack(pairs).mean())
            out["seed_check_images"] = len(pairs)
        return out

    def distribution_scores(self) -> dict[str, Any]:
        """FID and IS of every predictor (``None`` without Inception or with fewer than 2 frames) and the
        log-spectral distance of every predictor's mean radial power spectrum to the real late phase's."""
        out: dict[str, Any] = {"fid": {}, "inception_score": {}, "spectral_distance": {}}
        real_feats = torch.cat(self.features["real"]) if "real" in self.features else None
        predictors = list(dict.fromkeys(str(r["predictor"]) for r in self.report.records))
        for name in predictors:
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

    def completed(self, engine: Any = None) -> dict[str, Path]:
        """Write the report files; returns their paths (also kept in :attr:`paths`)."""
        if not self.report.records:
            raise ValueError("no frame was evaluated: the evaluation split is empty.")
        ids = list(dict.fromkeys(str(r["id"]) for r in self.report.records))
        extra = {
            "num_images": len(ids),
            "scored": self.scored,
            "images": ids,
            "without_early": self.without_early,
            "constant_value": self.constant_value,
            "constant_source": self.constant_source,
            "top_percent": self.top_percent,
            "lpips": self.perceptual is not None,
            **self.distribution_scores(),
            "input_sensitivity": self.input_sensitivity(),
            "alignment": self.alignment,
            "settings": self.settings,
        }
        figure = None
        if self.freqs is not None:
            labels = {"real": "real late", "model": "generated", "early": "early phase"}
            figure = plot_power_spectra(
                self.freqs, {labels[n]: torch.cat(s) for n, s in self.spectra.items()}, title="Late-phase FA spectra"
            )
        self.paths = self.report.write(extra=extra, spectrum_figure=figure)
        summary = self.report.summary()
        for predictor, scores in summary.items():
            shown = ", ".join(
                f"{n}={v['mean']:.4f}" for n, v in scores.items() if n in ("psnr", "ms_ssim", "ms_ssim_fov")
            )
            logger.info("%s: %s", predictor, shown)
        sens = extra["input_sensitivity"]
        if "cross_input_corr" in sens:
            logger.info(
                "input sensitivity: outputs of different inputs correlate %.3f (real late phases %.3f); own - other "
                "late-phase correlation %.3f%s",
                sens["cross_input_corr"], sens["real_cross_input_corr"], sens["own_minus_other_corr"],
                f"; same input, two seeds {sens['same_input_seed_corr']:.3f}" if "same_input_seed_corr" in sens else "",
            )  # fmt: skip
        if self.scored:
            logger.info("scored %s", self.scored)
        if self.without_early:
            logger.info("%d image(s) without an early phase (no early-phase predictor): %s", len(self.without_early),
                        ", ".join(self.without_early))  # fmt: skip
        logger.info("constant baseline: %s", self.constant_source or self.constant_value)
        logger.info(
            "evaluation report (scores.csv, summary.json, examples.png, spectrum.png) in %s%s",
            self.report.output_dir,
            f"; generated images in {self.generated_dir}" if self.generated_dir else "",
        )
        return self.paths
