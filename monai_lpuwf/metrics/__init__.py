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
