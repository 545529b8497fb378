"""Evaluation of generated late-phase UWF-FA: image scores, FID/IS, LPIPS, lesion scores, spectra, baselines, reports."""

from __future__ import annotations

from monai_lpuwf.metrics.image_scores import (
    MS_SSIM_WEIGHTS,
    SCORE_NAMES,
    compute_image_scores,
    compute_masked_image_scores,
    ms_ssim_min_size,
    to_unit_range,
)
from monai_lpuwf.metrics.lesion import compute_lesion_scores, difference_map, lesion_mask
from monai_lpuwf.metrics.inception import (
    FID_WEIGHTS_FILENAME,
    FID_WEIGHTS_URL,
    INCEPTION_WEIGHTS_ENV,
    FIDInceptionV3,
    InceptionFeatureExtractor,
    load_fid_inception,
)
from monai_lpuwf.metrics.inception_score import inception_score
from monai_lpuwf.metrics.fid import compute_fid_is, frechet_distance_from_features
from monai_lpuwf.metrics.weights import resolve_weights_path
