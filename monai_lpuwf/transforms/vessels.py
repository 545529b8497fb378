"""Vessel maps of UWF frames and the vessel correlation: the independent measure of whether two frames are aligned.

Vessels are the one structure SLO and FA frames share at the pixel level: dark in the SLO's green channel (the
532 nm laser), bright in fluorescein angiography. So both are turned into "vessels bright" grey images
(:func:`vessel_grey`: ``1 - green`` for an SLO, the grey level for FA, in ``[0, 1]``) and compared through their
vessel band, a difference of Gaussians (sigma 1 and 4 px: vessels of about 2-8 px, without the slow background
and the pixel noise):

- :func:`vessel_correlation`: the Pearson correlation of the two vessel bands inside a mask (the fields of view,
  eroded by ``2 * sigma_high`` so that the band's response to the field-of-view edge does not count). A frame
  against itself gives 1; a constant, a blur or frames of two different eyes about 0; the real UWF pairs as
  stored 0.00, and aligned 0.1-0.4 (SLO - FA) or 0.2-0.7 (early - late FA).
- :func:`vessel_map`: a ridge map (bright curvilinear structures, Hessian-based, blobs and step edges
  suppressed; the strongest ``top`` fraction kept) that :mod:`~monai_lpuwf.transforms.uwf_registration` searches
  transforms on.
- :func:`registration_mask`: the field of view used for both, with the SLO's eyelids and lashes (outside a
  central ellipse) left out.
- :func:`near_vessels`, :func:`slo_vessel_image` and :func:`ridge_image`: what the cross-modal (SLO - FA) search,
  refinement and score use. An SLO's vessels are thin and faint beside its choroidal texture, dust and eyelid
  edges, and an FA frame shows many more vessels and lesions than the SLO; so the SLO is equalised
  (:func:`equalize_grey`), searched on its thin ridges, and compared with the FA only near the FA's major vessels
  (``vessel_correlation(..., within=near_vessels(fa))``). On the seven shared pairs aligned by the hand landmarks
  the global correlation is 0.01-0.30 (train/1 0.04, below frames of two different eyes after a search,
  0.03-0.08), while near the FA's vessels it separates them (see
  :mod:`~monai_lpuwf.transforms.uwf_registration`).

All functions take numpy ``(H, W)`` arrays (or ``(C, H, W)`` images in ``[-1, 1]`` for :func:`vessel_grey`) and
run with OpenCV / scipy on the CPU.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

from monai_lpuwf.transforms.fov import FieldOfView

__all__ = [
    "VESSEL_SIGMAS",
    "vessel_grey",
    "vessel_band",
    "vessel_correlation",
    "vessel_map",
    "registration_mask",
    "equalize_grey",
    "near_vessels",
    "ridge_image",
    "slo_vessel_image",
    "SLO_RIDGE_SIGMAS",
    "FA_RIDGE_SIGMAS",
]

VESSEL_SIGMAS = (1.0, 4.0)  # the difference-of-Gaussians band of the vessel correlation, in pixels
# ridge scales (px) of the cross-modal search / refinement images: the SLO's thin, faint vessels and the FA's
# wider ones; chosen on the shared samples (SLO 1-1.5 px: train/4's search lands 2.7 px off the hand landmarks,
# 15-20 px with the sigma 1-4 band; FA 1.5-2.5 px: the ECC refinement from train/4's landmark transform stays
# within 3.1 px, 6.8 px on the smoothed major-vessel map)
SLO_RIDGE_SIGMAS = (1.0, 1.5)
FA_RIDGE_SIGMAS = (1.5, 2.5)


def is_slo(img: np.ndarray, modality: str = "auto") -> bool:
    """Whether a ``(C, H, W)`` frame is treated as an SLO: ``modality == "slo"``, or ``"auto"`` and 3 channels."""
    return modality == "slo" or (modality == "auto" and np.shape(img)[0] == 3)


def vessel_grey(img: np.ndarray, modality: str = "auto", channel: int = 1) -> np.ndarray:
    """``(H, W)`` float32 "vessels bright" grey image in ``[0, 1]`` of a ``(C, H, W)`` image in ``[-1, 1]``.

    Args:
        img: the frame, channel first, in ``[-1, 1]`` (as :class:`~monai_lpuwf.transforms.LoadUWFImage` gives).
        modality: ``"slo"`` (``1 - channel``: vessels are dark in the SLO), ``"fa"`` (the mean of the channels:
            vessels are bright), ``"auto"`` (3 channels -> SLO, else FA).
        channel: the SLO channel used (1 = green: the retinal vessels in Optos pseudo-colour).
    """
    x = (np.clip(np.asarray(img, dtype=np.float32), -1, 1) + 1) / 2
    slo = is_slo(x, modality)
    return (1.0 - x[min(channel, x.shape[0] - 1)]) if slo else x.mean(0)


def vessel_band(grey: np.ndarray, sigmas: tuple[float, float] = VESSEL_SIGMAS) -> np.ndarray:
    """Difference of Gaussians ``G(sigma_low) - G(sigma_high)`` of an ``(H, W)`` image (float32)."""
    g = np.ascontiguousarray(grey, dtype=np.float32)
    return cv2.GaussianBlur(g, (0, 0), sigmas[0]) - cv2.GaussianBlur(g, (0, 0), sigmas[1])


def vessel_correlation(
    fixed_grey: np.ndarray,
    moving_grey: np.ndarray,
    mask: np.ndarray,
    sigmas: tuple[float, float] = VESSEL_SIGMAS,
    erode: bool = True,
    within: np.ndarray | None = None,
) -> float:
    """Pearson correlation of the vessel bands of two ``(H, W)`` "vessels bright" images inside ``mask``.

    Args:
        fixed_grey, moving_grey: :func:`vessel_grey` images on the same grid.
        mask: bool ``(H, W)``: where both frames show the retina (e.g. the intersection of their fields of view).
        sigmas: the difference-of-Gaussians band.
        erode: erode ``mask`` by ``2 * sigmas[1]`` pixels first (the band answers the field-of-view edge).
        within: optional bool ``(H, W)``: only these pixels count (after the erosion), e.g. :func:`near_vessels`.

    Returns:
        the correlation in ``[-1, 1]``; ``nan`` when fewer than 100 pixels are left.
    """
    m = np.asarray(mask, bool)
    if erode:
        m = ndi.binary_erosion(m, iterations=round(2 * sigmas[1]))
    if within is not None:
        m = m & np.asarray(within, bool)
    if m.sum() < 100:
        return float("nan")
    a = vessel_band(fixed_grey, sigmas)[m].astype(np.float64)
    b = vessel_band(moving_grey, sigmas)[m].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def _ridge(grey: np.ndarray, sigma: float) -> np.ndarray:
    """Bright-ridge strength at scale ``sigma``: ``max(0, -l1 - |l2|)`` of the Hessian eigenvalues ``l1 <= l2``
    (a line: ``l1`` strongly negative, ``l2`` about 0; blobs and step edges answer less), scale-normalised."""
    g = cv2.GaussianBlur(grey, (0, 0), sigma)
    gxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
    gyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
    gxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
    root = np.sqrt((gxx - gyy) ** 2 + 4 * gxy**2)
    l1, l2 = (gxx + gyy - root) / 2, (gxx + gyy + root) / 2
    return np.maximum(-l1 - np.abs(l2), 0) * sigma**2


def vessel_map(
    grey: np.ndarray,
    mask: np.ndarray,
    sigmas: tuple[float, ...] = (2.0, 3.0),
    top: float = 0.12,
    min_size: int = 40,
    equalize: bool = False,
    erode: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge map of the vessels of a "vessels bright" ``(H, W)`` image, for registration.

    The Hessian ridge strength summed over ``sigmas``, inside ``mask`` eroded by ``erode`` px; only the strongest
    ``top`` fraction, in connected pieces of at least ``min_size`` pixels, is kept (texture and noise are
    dropped), scaled to ``[0, 3]``.

    Args:
        grey: :func:`vessel_grey` image.
        mask: bool field of view.
        sigmas: ridge scales in pixels.
        top: fraction of the field of view kept as vessels.
        min_size: smallest connected vessel piece kept, in pixels.
        equalize: contrast-limited histogram equalisation first (CLAHE; the SLO's vessels are faint and unevenly
            lit).
        erode: pixels removed from the mask's edge.

    Returns:
        ``(map, mask)``: float32 ``(H, W)`` and the eroded bool mask.
    """
    g = equalize_grey(grey) if equalize else np.ascontiguousarray(grey, dtype=np.float32)
    v = sum(_ridge(g, s) for s in sigmas)
    m = ndi.binary_erosion(mask, iterations=erode) if erode else np.asarray(mask, bool)
    if m.sum() < 100:
        return np.zeros_like(g), m
    v = v * m
    thr = max(float(np.percentile(v[m], 100 * (1 - top))), 1e-12)
    keep = v > thr
    labels, n = ndi.label(keep)
    if n:
        sizes = ndi.sum_labels(keep, labels, np.arange(1, n + 1))
        keep = np.concatenate([[False], sizes >= min_size])[labels]
    return (keep * np.minimum(v / thr, 3.0)).astype(np.float32), m


def registration_mask(img: np.ndarray, modality: str = "auto", ellipse: tuple[float, float] = (0.46, 0.47)):
    """Bool ``(H, W)`` field of view of a ``(C, H, W)`` frame in ``[-1, 1]`` (:class:`FieldOfView`); for an SLO
    also inside the central ellipse with half-axes ``ellipse`` (fractions of height and width), which leaves out
    the eyelids, lashes and the scanner housing at the frame's corners."""
    slo = is_slo(img, modality)
    mask = FieldOfView("slo" if slo else "fa").mask(np.asarray(img, dtype=np.float32))
    if slo and ellipse:
        h, w = mask.shape
        rr, cc = np.ogrid[:h, :w]
        mask &= ((rr - h / 2) / (ellipse[0] * h)) ** 2 + ((cc - w / 2) / (ellipse[1] * w)) ** 2 < 1
    return mask


def equalize_grey(grey: np.ndarray, clip: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV's CLAHE) of an ``(H, W)`` image in ``[0, 1]``:
    float32 in ``[0, 1]``. Brings out an SLO's faint, unevenly lit vessels."""
    u8 = (np.clip(np.asarray(grey, dtype=np.float32), 0, 1) * 255).astype(np.uint8)
    return cv2.createCLAHE(clip, (tiles, tiles)).apply(u8).astype(np.float32) / 255


def near_vessels(vessels: np.ndarray, radius: int = 4) -> np.ndarray:
    """Bool ``(H, W)``: the pixels within ``radius`` px of the vessels of a :func:`vessel_map` (``> 0``; for the
    score of :mod:`~monai_lpuwf.transforms.uwf_registration`, an FA frame's strongest 6 %) - where an aligned SLO
    must show vessels too."""
    return ndi.binary_dilation(vessels > 0, iterations=radius)


def ridge_image(grey: np.ndarray, mask: np.ndarray, sigmas: tuple[float, ...], clip: float = 99.0) -> np.ndarray:
    """The bright-ridge strength of an ``(H, W)`` "vessels bright" image summed over ``sigmas`` (the Hessian measure
    of :func:`vessel_map`, not thresholded), clipped at its ``clip`` percentile inside ``mask`` and zero outside,
    float32 ``(H, W)``. The clipping keeps the few strong structures (the disc's rim, eyelid edges, dust) from
    outweighing the many faint vessels."""
    m = np.asarray(mask, bool)
    ridge = sum(_ridge(np.ascontiguousarray(grey, dtype=np.float32), s) for s in sigmas) * m
    inside = ridge[m]
    top = float(np.percentile(inside, clip)) if inside.size else 0.0
    return np.minimum(ridge, max(top, 1e-12)).astype(np.float32)


def slo_vessel_image(grey: np.ndarray, mask: np.ndarray, clip: float = 99.0) -> np.ndarray:
    """The SLO's vessels for the cross-modal search and refinement: the thin-ridge image (:func:`ridge_image`,
    :data:`SLO_RIDGE_SIGMAS`) of the equalised "vessels bright" SLO (:func:`equalize_grey`), clipped at its
    ``clip`` percentile inside ``mask`` and zero outside, float32 ``(H, W)``.

    An SLO's vessels are thinner and fainter than the FA's (about 2-3 px at native 853 x 682); the ridge measure at
    1-1.5 px keeps them where a difference-of-Gaussians band (sigma 1 and 4 px, the previous image) also kept the
    choroidal texture and the blotches of a cloudy SLO. Measured on the shared samples: train/4's search (an SLO
    with few, faint vessels) landed 15-20 px off on the band and lands 2.7 px off on this image.
    """
    return ridge_image(equalize_grey(grey), mask, SLO_RIDGE_SIGMAS, clip)
