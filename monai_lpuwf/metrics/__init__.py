"""Evaluation of generated late-phase UWF-FA: image scores, FID/IS, LPIPS, lesion scores, spectra, baselines, reports,
a sampler comparison (:mod:`~monai_lpuwf.metrics.sampler_comparison`), and the Ignite handlers that compute them
during a run: the evaluation's parts (``FrameScoresHandler``, ``AlignedScoresHandler``, ``DistributionScoresHandler``,
``SeedCheckHandler``) with their ``EvaluationReportWriter``, and
``ConditioningGapHandler`` during training.

All scores are computed on ``[0, 1]`` intensities from images in ``[-1, 1]``. Pretrained networks (FID
Inception-v3, LPIPS AlexNet/VGG16) are loaded only from local files; nothing is downloaded.
"""

from __future__ import annotations

from monai_lpuwf.metrics.baselines import BASELINE_NAMES, constant_prediction, mean_intensity, score_with_baselines
from monai_lpuwf.metrics.diagnostics import ConditioningGapHandler
from monai_lpuwf.metrics.evaluation import (
    EvaluationReportWriter,
    constant_baseline,
    fid_extractor,
    optional_lpips,
    training_mean_intensity,
)
from monai_lpuwf.metrics.evaluation_parts import (
    AlignedScoresHandler,
    DistributionScoresHandler,
    EvaluationFrame,
    EvaluationPart,
    FrameScoresHandler,
    SeedCheckHandler,
)
from monai_lpuwf.metrics.fid import compute_fid_is, frechet_distance_from_features
from monai_lpuwf.metrics.frame_scores import score_frames
from monai_lpuwf.metrics.inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_URL,
    INCEPTION_WEIGHTS_ENV,
    FIDInceptionV3,
    InceptionFeatureExtractor,
    load_fid_inception,
)
from monai_lpuwf.metrics.inception_score import inception_score
from monai_lpuwf.metrics.lesion import compute_lesion_scores, difference_map, lesion_mask
from monai_lpuwf.metrics.lpips import compute_lpips
from monai_lpuwf.metrics.report import (
    GRID_COLUMNS,
    EvaluationReport,
    atomic_write_bytes,
    figure_grid,
    save_figure,
    scores_to_records,
    summarize_records,
    write_scores_csv,
    write_summary_json,
)
from monai_lpuwf.metrics.sampler_comparison import (
    DEFAULT_SAMPLERS,
    REFERENCE_SAMPLER,
    SamplerConfig,
    compare_samplers,
    parse_sampler_specs,
    plot_sampler_comparison,
)
from monai_lpuwf.metrics.sensitivity import (
    conditioning_gap,
    input_sensitivity,
    pairwise_correlation,
    predicted_clean_latents,
)
from monai_lpuwf.metrics.spectrum import (
    band_log_spectral_distance,
    log_spectral_distance,
    plot_power_spectra,
    radial_power_spectrum,
)
from monai_lpuwf.metrics.structure import VESSEL_BAND_SIGMAS, detail_ratio, vessel_band, vessel_band_correlation
from monai_lpuwf.scores import (
    MS_SSIM_WEIGHTS,
    SCORE_NAMES,
    compute_image_scores,
    compute_masked_image_scores,
    ms_ssim_min_size,
    ms_ssim_weights_for,
    to_unit_range,
)

__all__ = [
    "VESSEL_BAND_SIGMAS",
    "detail_ratio",
    "vessel_band",
    "vessel_band_correlation",
    "BASELINE_NAMES", "constant_prediction", "mean_intensity", "score_with_baselines",
    "fid_extractor", "optional_lpips", "training_mean_intensity",
    "EvaluationReportWriter", "constant_baseline", "EvaluationFrame", "EvaluationPart", "FrameScoresHandler",
    "AlignedScoresHandler", "DistributionScoresHandler", "SeedCheckHandler",
    "compute_fid_is", "frechet_distance_from_features", "score_frames",
    "MS_SSIM_WEIGHTS", "SCORE_NAMES", "compute_image_scores", "compute_masked_image_scores", "ms_ssim_min_size",
    "ms_ssim_weights_for", "to_unit_range", "FID_WEIGHTS_FILENAME",
    "FID_WEIGHTS_URL", "INCEPTION_WEIGHTS_ENV", "FIDInceptionV3",
    "InceptionFeatureExtractor", "load_fid_inception", "inception_score", "compute_lesion_scores",
    "difference_map", "lesion_mask", "compute_lpips", "GRID_COLUMNS", "EvaluationReport", "atomic_write_bytes",
    "figure_grid", "save_figure", "scores_to_records", "summarize_records", "write_scores_csv",
    "write_summary_json", "log_spectral_distance", "plot_power_spectra", "radial_power_spectrum",
    "conditioning_gap", "ConditioningGapHandler", "input_sensitivity", "pairwise_correlation",
    "predicted_clean_latents", "band_log_spectral_distance",
    "SamplerConfig", "REFERENCE_SAMPLER", "DEFAULT_SAMPLERS", "parse_sampler_specs", "compare_samplers",
    "plot_sampler_comparison",
]  # fmt: skip
