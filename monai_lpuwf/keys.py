"""The one vocabulary of data keys used by transforms, engines, inferers and metrics."""

from __future__ import annotations

from monai.utils import StrEnum

__all__ = ["UWFKeys"]


class UWFKeys(StrEnum):
    """Dictionary keys of a UWF sample.

    ========== ============================================== ======================
    key        content                                        shape, range
    ========== ============================================== ======================
    slo        UWF-SLO, Optos pseudo-colour                   (3, H, W), [-1, 1]
    early      early-phase UWF-FA                             (1, H, W), [-1, 1]
    late       late-phase UWF-FA (the target)                 (1, H, W), [-1, 1]
    fov        field-of-view mask                             (1, H, W), {0, 1}
    ctrd       cross-temporal difference weight map           (1, H, W), >= 0
    pred       generated late-phase FA                        (1, H, W), [-1, 1]
    pred_std   per-pixel standard deviation over samples      (1, H, W), >= 0
    ========== ============================================== ======================

    Spatial axes are ``(H, W)`` = (image rows, image columns) as a viewer shows the file: row 0 is the top
    of the picture. See :mod:`monai_lpuwf.data.image_io`.
    """

    SLO = "slo"
    EARLY = "early"
    LATE = "late"
    FOV = "fov"
    CTRD = "ctrd"
    PRED = "pred"
    PRED_STD = "pred_std"
