"""Registration of real UWF frames: SLO onto FA (cross-modal) and late onto early FA, with an honest score.

Intensity-based elastix (:class:`~monai_lpuwf.transforms.RegisterElastix`) does not align real UWF pairs: the
frames start tens of pixels, a few degrees and a few per cent of scale apart (the FA field squeezed vertically),
and mutual information between an Optos SLO and an angiogram has no basin there. :class:`RegisterUWF` registers
the vessels instead, in three steps:

1. **global multi-start search**: images of the vessels of both frames shrunk 4 x (cross-modal) or 8 x (FA onto
   FA): the FA's major vessels (:func:`~monai_lpuwf.transforms.vessels.vessel_map`, Hessian ridges) and, for an
   SLO, the thin ridges (1-1.5 px) of its equalised green channel, clipped at their 99th percentile
   (:func:`~monai_lpuwf.transforms.vessels.slo_vessel_image`: an SLO's thresholded ridge map is mostly dust,
   choroidal texture and eyelid edges, and a wider band keeps the blotches of a cloudy SLO). For every scale,
   anisotropic scale and rotation of a grid (:data:`SEARCH_GRIDS`) the shift is the peak of the masked normalised
   cross-correlation (Padfield's FFT form, the fields of view as masks); the best few distinct candidates are
   searched again at twice the size on a finer local grid;
2. **refinement** of each candidate: OpenCV's ECC (enhanced correlation coefficient, affine) at half and at full
   size - on the vessel bands for FA onto FA, on the ridge images of both frames for SLO onto FA (the SLO's search
   image and the FA's ridges at 1.5-2.5 px, :func:`~monai_lpuwf.transforms.vessels.ridge_image`, blurred by
   :data:`ECC_RIDGE_BLUR`; ECC on the SLO's band does not converge);
3. **an honest measure and a refusal**: the vessel correlation (:func:`~monai_lpuwf.transforms.vessels.
   vessel_correlation`, DoG sigma 1 and 4 px) of the unregistered and of the registered pair, inside both fields of
   view - for SLO onto FA with the SLO equalised and only near the FA's major vessels
   (:func:`~monai_lpuwf.transforms.vessels.near_vessels`), where an aligned SLO must show vessels too (the
   global figure is recorded as ``vessel_correlation_global_*``). The candidate with the highest score wins; a
   pair under ``min_vessel_correlation`` (:data:`MIN_VESSEL_CORRELATION`: 0.15 SLO - FA, 0.10 FA - FA) is
   ``"refused"``: not aligned, left as it was (identity onto the fixed grid), one warning naming the files, never
   reported as registered. Measured on the shared samples (``benchmarks/bench_registration.py``): the SLO of one
   eye searched onto the early FA of another reaches 0.03-0.11 (all 42 such pairs, median 0.07, largest 0.107,
   val/10 onto train/1: the search maximises the score, so a wrong pair still gets some); the SLO - early pairs
   the hand landmarks confirm (all seven, 1.5-3.5 px) 0.20-0.54; late - early 0.26-0.78. So 0.15 leaves 0.04 above
   the wrong eyes' largest score and 0.05 below the smallest right one (val/7). train/4's SLO shows few, faint
   vessels (the hand landmarks found four): it registers 2.7 px off and scores 0.29 (at the landmarks' own
   transform 0.015: its vessels are 2-3 px wide and the four landmarks fix the transform within a few pixels).

The result, like :class:`~monai_lpuwf.transforms.RegisterElastix`'s, is the moving image resampled onto the fixed
image's grid (a MetaTensor with the fixed affine) with ``meta["registration"]``: ``status`` (``"registered"`` or
``"refused"``), ``matrix_rc`` (3 x 3 fixed -> moving in ``(row, col)`` pixels, JSON), ``vessel_correlation_before``
/ ``_after`` (also as ``similarity_before`` / ``_after``), ``method`` (``"uwf"``), ``kind`` (``"cross"`` or
``"mono"``), the search's best score, file names and ``time_s``. :meth:`RegisterUWF.apply_transform` moves other
images (masks with nearest neighbour); :class:`RegisterUWFd` is the dictionary version, with the registration
cache of :class:`~monai_lpuwf.transforms.RegisterElastixd`.

Libraries: OpenCV for the warps, the ECC refinement and the Gaussian / Sobel filters (fast, well kept, one
thread when asked); numpy FFTs for the cross-correlation search; scipy for masks. Elastix is not used here.
"""

from __future__ import annotations

import itertools
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy, look_up_option
from scipy import fft as sp_fft
from scipy import ndimage as ndi
from scipy.fft import next_fast_len

from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.transforms.registration import REGISTRATION_KEY, RegisterElastixd
from monai_lpuwf.transforms.vessels import (
    FA_RIDGE_SIGMAS,
    VESSEL_SIGMAS,
    equalize_grey,
    is_slo,
    near_vessels,
    registration_mask,
    ridge_image,
    slo_vessel_image,
    vessel_band,
    vessel_correlation,
    vessel_grey,
    vessel_map,
)

__all__ = [
    "ECC_RIDGE_BLUR",
    "RegisterUWF",
    "RegisterUWFd",
    "RegisterUWFD",
    "RegisterUWFDict",
    "SEARCH_GRIDS",
    "MIN_VESSEL_CORRELATION",
]

# below this score after registration a pair is refused, by kind (see the module docstring). "cross": set from
# the null of the shared samples - each SLO searched onto the early FA of every other eye (42 pairs) scores
# 0.032-0.107 - with a margin of 0.04; the seven right pairs score 0.20-0.54
MIN_VESSEL_CORRELATION: dict[str, float] = {"cross": 0.15, "mono": 0.10}

# Gaussian blur (px) of the ridge images that the cross-modal ECC refines on, at half and at full size: 1 px keeps
# the SLO's thin vessels (measured from train/4's hand-landmark transform: blur 1, 2, 3 px end 3.1, 3.3, 3.9 px
# off; the previous smoothed search images, blur 4 and 1.5 px, 6.8 px)
ECC_RIDGE_BLUR = 1.0

# global search grids (start, stop, step) of scale, anisotropy (x scale / y scale) and rotation (degrees), the
# largest shift in native pixels: "cross" for SLO onto FA, "mono" for FA onto FA. The cross grid is the prior of
# (one device, one session: the seven shared pairs' hand landmarks give scales 0.96-1.04, x / y 0.95-1.02,
# rotations up to 8 degrees, shifts up to 110 px), and the levels (shrink factors) of the global and local search
SEARCH_GRIDS: dict[str, dict[str, Any]] = {
    "cross": {
        "scale": (0.90, 1.10, 0.04),
        "aspect": (0.94, 1.06, 0.04),
        "rotation": (-10.0, 10.0, 2.0),
        "shift": 160,
        "levels": (4, 2),
    },
    "mono": {
        "scale": (0.96, 1.04, 0.04),
        "aspect": (1.0, 1.0, 1.0),
        "rotation": (-4.0, 4.0, 2.0),
        "shift": 160,
        "levels": (8, 4),
    },
}


def _arange(start: float, stop: float, step: float) -> np.ndarray:
    return np.arange(start, stop + step / 2, step)


def _linear(scale: float, aspect: float, rotation: float) -> np.ndarray:
    """2 x 2 fixed -> moving map in (x, y): rotation after the anisotropic scale (x: scale * aspect, y: / aspect)."""
    r = np.deg2rad(rotation)
    rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    return rot @ np.diag([scale * aspect, scale / aspect])


def _shrink(img: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return img
    h, w = img.shape
    blurred = cv2.GaussianBlur(img, (0, 0), k / 3)
    return cv2.resize(blurred, (w // k, h // k), interpolation=cv2.INTER_AREA)


def _shrink_mask(mask: np.ndarray, k: int) -> np.ndarray:
    h, w = mask.shape
    return cv2.resize(mask.astype(np.float32), (w // k, h // k), interpolation=cv2.INTER_AREA) > 0.99


def _warp(img: np.ndarray, matrix_xy: np.ndarray, shape: tuple[int, int], nearest: bool = False, fill=0.0):
    """``img`` (H', W') sampled at ``matrix_xy @ (x, y, 1)`` for every pixel of an ``shape`` grid."""
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(
        np.ascontiguousarray(img, dtype=np.float32),
        np.asarray(matrix_xy[:2], dtype=np.float64),
        (int(shape[1]), int(shape[0])),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=float(fill),
    )


def _distinct(p: Sequence[float], q: Sequence[float]) -> bool:
    """Two search parameters (scale, aspect, rotation) far enough apart to be separate candidates."""
    return max(abs(p[0] - q[0]), abs(p[1] - q[1])) > 0.05 or abs(p[2] - q[2]) > 3


def _xy_to_rc(m: np.ndarray) -> np.ndarray:
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
    return p @ m @ p


class _MaskedNCC:
    """Masked normalised cross-correlation of a fixed map against moving maps over all shifts up to ``max_shift``
    (Padfield, IEEE TIP 2012: six FFT products), in pixels of the maps."""

    def __init__(self, fixed: np.ndarray, mask: np.ndarray, max_shift: int, min_overlap: float = 0.3) -> None:
        h, w = fixed.shape
        self.shape = (next_fast_len(h + max_shift + 1, real=True), next_fast_len(w + max_shift + 1, real=True))
        m = mask.astype(np.float64)
        f = fixed * m
        f = (f - f[mask].mean()) * m if mask.any() else f
        self.ff, self.ff2, self.fm = self._fft(f), self._fft(f * f), self._fft(m)
        self.n0, self.max_shift, self.min_overlap = m.sum(), max_shift, min_overlap

    def _fft(self, x: np.ndarray) -> np.ndarray:  # single precision: twice as fast, ample for a peak search
        return sp_fft.rfft2(np.asarray(x, np.float32), s=self.shape, workers=1)

    def _ifft(self, x: np.ndarray) -> np.ndarray:
        return sp_fft.irfft2(x, s=self.shape, workers=1)

    def __call__(self, moving: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray]:
        """Best ``(score, (dx, dy))`` with ``fixed(p) ~ moving(p - d)``."""
        m = mask.astype(np.float64)
        if m.sum() < 16:
            return -1.0, np.zeros(2)
        g = moving * m
        g = (g - g[mask].mean()) * m
        gf, g2f, gm = np.conj(self._fft(g)), np.conj(self._fft(g * g)), np.conj(self._fft(m))
        n = np.maximum(self._ifft(self.fm * gm), 1.0)
        sf, sg = self._ifft(self.ff * gm), self._ifft(self.fm * gf)
        num = self._ifft(self.ff * gf) - sf * sg / n
        var_f = np.maximum(self._ifft(self.ff2 * gm) - sf * sf / n, 1e-9)
        var_g = np.maximum(self._ifft(self.fm * g2f) - sg * sg / n, 1e-9)
        cc = num / np.sqrt(var_f * var_g)
        cc[n < self.min_overlap * self.n0] = -1.0
        s = self.max_shift
        cc = np.roll(cc, (s, s), (0, 1))[: 2 * s + 1, : 2 * s + 1]
        i = np.unravel_index(int(np.argmax(cc)), cc.shape)
        return float(cc[i]), np.array([i[1] - s, i[0] - s], dtype=float)


class RegisterUWF(Transform):
    """Register a UWF frame onto another by its vessels: global multi-start search, ECC refinement, honest score.

    See the module docstring for the method. ``RegisterUWF()(slo, early)`` registers an SLO onto an FA frame
    (``kind="auto"``: 3 channels onto 1 is cross-modal), ``RegisterUWF()(late, early)`` late onto early FA.

    Backend: numpy (OpenCV / numpy FFT on the CPU); tensors are copied to the CPU and returned on their device.

    Args:
        kind: ``"auto"``, ``"cross"`` (SLO onto FA) or ``"mono"`` (FA onto FA, or any frames of one modality).
        moving_modality, fixed_modality: ``"auto"`` (3 channels: SLO, else FA), ``"slo"`` or ``"fa"``: how the
            vessel images are made (:func:`~monai_lpuwf.transforms.vessels.vessel_grey`).
        min_vessel_correlation: a pair whose score after registration is below this is refused (``None``: the
            kind's default in :data:`MIN_VESSEL_CORRELATION`).
        candidates: distinct global-search candidates refined (each costs an ECC run).
        grid: overrides of :data:`SEARCH_GRIDS` for this kind (``scale``, ``aspect``, ``rotation``: ``(start, stop,
            step)``; ``shift``: largest shift in native pixels).
        refine: run the ECC refinement (``False``: the global estimate only).
        ecc_iterations: ECC iterations per level.
        channel: the SLO channel (1 = green).
        threads: OpenCV threads during the call (restored afterwards).
        warn: issue a warning for a refused pair.

    Example::

        slo_on_early = RegisterUWF()(slo, early)              # (3, H, W) MetaTensor on early's grid
        info = slo_on_early.meta["registration"]               # status, matrix_rc, vessel_correlation_before/after
        fov_on_early = RegisterUWF().apply_transform(slo_fov, slo_on_early, nearest=True)
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.NUMPY]

    def __init__(
        self,
        kind: str = "auto",
        moving_modality: str = "auto",
        fixed_modality: str = "auto",
        min_vessel_correlation: float | None = None,
        candidates: int = 3,
        grid: Mapping[str, Any] | None = None,
        refine: bool = True,
        ecc_iterations: int = 50,
        channel: int = 1,
        threads: int = 1,
        warn: bool = True,
    ) -> None:
        self.kind = look_up_option(kind, ("auto", "cross", "mono"))
        self.moving_modality = look_up_option(moving_modality, ("auto", "slo", "fa"))
        self.fixed_modality = look_up_option(fixed_modality, ("auto", "slo", "fa"))
        self.min_vessel_correlation = None if min_vessel_correlation is None else float(min_vessel_correlation)
        self.candidates = int(candidates)
        self.grid = dict(grid or {})
        self.refine = refine
        self.ecc_iterations = int(ecc_iterations)
        self.channel = channel
        self.threads = threads
        self.warn = warn

    # -- the steps ------------------------------------------------------------------------------------------------
    def _search(self, vf, mf, vm, mm, grid: Mapping[str, Any]) -> list[tuple[float, np.ndarray]]:
        """Global multi-start search: ``[(score, 3 x 3 fixed -> moving (x, y) at native size)]``, best first."""
        results = []
        coarse, fine = grid["levels"]
        for k, params, top in ((coarse, None, self.candidates), (fine, "local", 1)):
            f, fm, g, gm = _shrink(vf, k), _shrink_mask(mf, k), _shrink(vm, k), _shrink_mask(mm, k)
            ncc = _MaskedNCC(f, fm, max(2, int(grid["shift"]) // k))
            h, w = f.shape
            centre = np.array([w / 2, h / 2])

            def score(p, g=g, gm=gm, ncc=ncc, centre=centre, h=h, w=w):
                lin = _linear(*p)
                a = np.eye(3)
                a[:2, :2], a[:2, 2] = lin, centre - lin @ centre
                s, d = ncc(_warp(g, a, (h, w)), _warp(gm.astype(np.float32), a, (h, w)) > 0.5)
                a[:2, 2] -= lin @ d
                return s, p, a

            if params is None:
                grids = [_arange(*grid[n]) for n in ("scale", "aspect", "rotation")]
                scored = sorted((score(p) for p in itertools.product(*grids)), key=lambda t: -t[0])
                starts: list = []
                for s, p, a in scored:  # distinct candidates (non-maximum suppression in parameter space)
                    if all(_distinct(p, q) for _, q, _ in starts):
                        starts.append((s, p, a))
                    if len(starts) >= top:
                        break
                starts = starts or scored[:1]
            else:
                steps = (grid["scale"][2] / 2, grid["aspect"][2] / 2 if grid["aspect"][2] < 1 else 0, 1.0)
                for _, p0, _ in starts:
                    local = itertools.product(*[(v - st, v, v + st) if st else (v,) for v, st in zip(p0, steps)])
                    s, p, a = max((score(p) for p in local), key=lambda t: t[0])
                    scale = np.diag([k, k, 1.0])
                    results.append((s, scale @ a @ np.linalg.inv(scale)))
        return sorted(results, key=lambda t: -t[0])

    def _ecc(self, fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray, matrix: np.ndarray, k: int) -> np.ndarray:
        """ECC (affine) of two prepared full-size images shrunk by ``k`` inside ``mask``; the input matrix when ECC
        does not converge."""
        f, g = _shrink(fixed, k), _shrink(moving, k)
        m = _shrink_mask(mask, k).astype(np.uint8)
        scale = np.diag([k, k, 1.0])
        warp = (np.linalg.inv(scale) @ matrix @ scale)[:2].astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, self.ecc_iterations, 1e-6)
        try:
            _, warp = cv2.findTransformECC(f, g, warp, cv2.MOTION_AFFINE, criteria, m, 1)
        except cv2.error:  # "images may be uncorrelated": keep the estimate
            return matrix
        out = np.eye(3)
        out[:2] = warp
        return scale @ out @ np.linalg.inv(scale)

    def estimate(self, img: np.ndarray, fixed: np.ndarray, fixed_mask=None, moving_mask=None) -> dict[str, Any]:
        """The transform of ``img`` onto ``fixed`` (numpy ``(C, h, w)`` and ``(C', H, W)`` in ``[-1, 1]``) and its
        scores, without resampling: ``{"matrix_xy", "kind", "search_score", "vessel_correlation_before",
        "vessel_correlation_after", "status"}``."""
        kind = self.kind if self.kind != "auto" else ("cross" if img.shape[0] != fixed.shape[0] else "mono")
        grid = {**SEARCH_GRIDS[kind], **self.grid}
        fixed_slo = is_slo(fixed, self.fixed_modality)
        moving_slo = is_slo(img, self.moving_modality)
        fg = vessel_grey(fixed, self.fixed_modality, self.channel)
        mg = vessel_grey(img, self.moving_modality, self.channel)
        fm = registration_mask(fixed, self.fixed_modality) if fixed_mask is None else np.asarray(fixed_mask)[0] > 0.5
        mm = registration_mask(img, self.moving_modality) if moving_mask is None else np.asarray(moving_mask)[0] > 0.5
        shape = fg.shape
        cross = kind == "cross" and fixed_slo != moving_slo
        if cross:  # the SLO side equalised; scored near the FA side's major vessels (see the module docstring)
            fg_s, mg_s = (equalize_grey(fg) if fixed_slo else fg), (equalize_grey(mg) if moving_slo else mg)
        else:
            fg_s, mg_s = fg, mg

        def search_image(grey, mask, slo):
            if cross and slo:
                mask = ndi.binary_erosion(mask, iterations=8)
                return slo_vessel_image(grey, mask), mask
            return vessel_map(grey, mask, top=0.06 if cross else 0.12, equalize=slo)

        vf, vfm = search_image(fg, fm, fixed_slo)
        vm, vmm = search_image(mg, mm, moving_slo)
        near = near_vessels(vm if fixed_slo else vf) if cross else None  # the FA side's major vessels

        def measure(matrix, fixed_grey=fg_s, moving_grey=mg_s, within=near):
            moved = _warp(moving_grey, matrix, shape)
            support = _warp(mm.astype(np.float32), matrix, shape, nearest=True) > 0.5
            if within is not None and fixed_slo:  # the FA is the moving frame: its vessels moved with it
                within = _warp(within.astype(np.float32), matrix, shape, nearest=True) > 0.5
            return vessel_correlation(fixed_grey, moved, fm & support, within=within)

        identity = np.eye(3)
        before, before_global = measure(identity), measure(identity, fg, mg, None)

        found = self._search(vf, vfm, vm, vmm, grid)
        if cross:  # ECC on the ridge images of both frames, lightly smoothed (see ECC_RIDGE_BLUR)
            ridges = [
                slo_img if slo else ridge_image(grey, mask, FA_RIDGE_SIGMAS)
                for slo_img, grey, mask, slo in ((vf, fg, fm, fixed_slo), (vm, mg, mm, moving_slo))
            ]
            blurred = [cv2.GaussianBlur(r, (0, 0), ECC_RIDGE_BLUR) for r in ridges]
            levels = [(*blurred, vfm)] * 2
        else:  # ECC on the vessel bands: wider at half size, the measure's band at full size
            levels = [
                (vessel_band(fg, s), vessel_band(mg, s), ndi.binary_erosion(fm, iterations=int(2 * s[1])))
                for s in ((1.5, 6.0), VESSEL_SIGMAS)
            ]
        best_score, best_matrix, best_after = (found[0][0], found[0][1], -np.inf) if found else (-1.0, identity, -1)
        for score, matrix in found:  # every candidate refined at half size, the best one then at full size
            if self.refine:
                matrix = self._ecc(*levels[0], matrix, 2)
            after = measure(matrix)
            if np.isfinite(after) and after > best_after:
                best_score, best_matrix, best_after = score, matrix, after
        if self.refine and found:
            matrix = self._ecc(*levels[1], best_matrix, 1)
            after = measure(matrix)
            if np.isfinite(after) and after > best_after:
                best_matrix, best_after = matrix, after
        threshold = MIN_VESSEL_CORRELATION[kind] if self.min_vessel_correlation is None else self.min_vessel_correlation
        accepted = np.isfinite(best_after) and best_after >= threshold
        return {
            "matrix_xy": best_matrix,
            "kind": kind,
            "search_score": float(best_score),
            "vessel_correlation_before": float(before),
            "vessel_correlation_after": float(best_after),
            "vessel_correlation_global_before": float(before_global),
            "vessel_correlation_global_after": float(measure(best_matrix, fg, mg, None)),
            "score": "near_fa_vessels" if cross else "global",
            "min_vessel_correlation": threshold,
            "status": "registered" if accepted else "refused",
        }

    def __call__(
        self,
        img: NdarrayOrTensor,
        fixed: NdarrayOrTensor,
        fixed_mask: NdarrayOrTensor | None = None,
        moving_mask: NdarrayOrTensor | None = None,
    ) -> MetaTensor:
        """Register ``img`` onto ``fixed``.

        Args:
            img: ``(C, h, w)`` moving frame in ``[-1, 1]`` (any size).
            fixed: ``(C', H, W)`` reference frame in ``[-1, 1]``.
            fixed_mask, moving_mask: optional ``(1, ., .)`` fields of view (else computed,
                :func:`~monai_lpuwf.transforms.vessels.registration_mask`).

        Returns:
            ``(C, H, W)`` float32 MetaTensor on ``img``'s device: ``img`` registered onto ``fixed``'s grid (refused:
            ``img`` unchanged, cropped / padded onto that grid), with ``fixed``'s affine and the record in
            ``meta["registration"]``.
        """
        start = time.perf_counter()
        threads_before = cv2.getNumThreads()
        cv2.setNumThreads(self.threads)
        try:
            f = convert_to_numpy(fixed, dtype=np.float32)
            m = convert_to_numpy(img, dtype=np.float32)
            fmask = None if fixed_mask is None else convert_to_numpy(fixed_mask)
            mmask = None if moving_mask is None else convert_to_numpy(moving_mask)
            est = self.estimate(m, f, fmask, mmask)
            matrix = est["matrix_xy"] if est["status"] == "registered" else np.eye(3)
            out = self._resample(m, matrix, f.shape[1:], nearest=False)
        finally:
            cv2.setNumThreads(threads_before)
        names = [str(getattr(x, "meta", {}).get("filename_or_obj", "")) for x in (fixed, img)]
        info = {
            "status": est["status"],
            "method": "uwf",
            "kind": est["kind"],
            "mode": "affine",
            "metric": "vessel_correlation",
            "matrix_rc": json.dumps(_xy_to_rc(matrix).tolist()),
            "estimate_rc": json.dumps(_xy_to_rc(est["matrix_xy"]).tolist()),
            "transform": "[]",
            "search_score": est["search_score"],
            "vessel_correlation_before": est["vessel_correlation_before"],
            "vessel_correlation_after": est["vessel_correlation_after"],
            "vessel_correlation_global_before": est["vessel_correlation_global_before"],
            "vessel_correlation_global_after": est["vessel_correlation_global_after"],
            "score": est["score"],
            "similarity_before": est["vessel_correlation_before"],
            "similarity_after": est["vessel_correlation_after"],
            "min_vessel_correlation": est["min_vessel_correlation"],
            "fixed": names[0],
            "moving": names[1],
            "time_s": time.perf_counter() - start,
        }
        if est["status"] != "registered" and self.warn:
            warnings.warn(
                f"RegisterUWF: refused {names[1] or 'moving'} onto {names[0] or 'fixed'}: vessel correlation after "
                f"registration {est['vessel_correlation_after']:.3f} < {est['min_vessel_correlation']} (before "
                f"{est['vessel_correlation_before']:.3f}); the frames are not aligned (different eyes, or too few "
                "vessels); kept unregistered and left out of training by default.",
                stacklevel=2,
            )
        return self._wrap(out, img, fixed, info, as_meta=True)

    @staticmethod
    def _resample(arr: np.ndarray, matrix_xy: np.ndarray, shape, nearest: bool) -> np.ndarray:
        fill = -1.0 if float(arr.min()) < 0 else 0.0
        out = np.stack([_warp(ch, matrix_xy, shape, nearest=nearest, fill=fill) for ch in arr])
        return out if nearest else np.clip(out, float(arr.min()), float(arr.max()))

    def apply_transform(self, img: NdarrayOrTensor, registered: MetaTensor, nearest: bool = False) -> NdarrayOrTensor:
        """Resample another ``(C, h, w)`` image of the moving frame's grid with the transform recorded in
        ``registered`` (an output of this transform): identity when the pair was refused.

        Returns:
            ``(C, H, W)`` float32 of ``img``'s type and device on ``registered``'s grid.
        """
        info = getattr(registered, "meta", {}).get(REGISTRATION_KEY)
        if info is None or info.get("method") != "uwf":
            raise ValueError(
                f"RegisterUWF.apply_transform: `registered` has no RegisterUWF record in meta[{REGISTRATION_KEY!r}]; "
                "pass the MetaTensor that RegisterUWF returned for the moving image."
            )
        arr = convert_to_numpy(img, dtype=np.float32)
        matrix = _xy_to_rc(np.asarray(json.loads(info["matrix_rc"])))
        out = self._resample(arr, matrix, tuple(registered.shape[1:]), nearest)
        return self._wrap(out, img, registered, info)

    @staticmethod
    def _wrap(arr, src, fixed, info, as_meta: bool = False):
        out, *_ = convert_to_dst_type(
            arr, dst=src, dtype=torch.float32 if isinstance(src, torch.Tensor) else np.float32
        )
        if as_meta and not isinstance(out, MetaTensor):
            out = MetaTensor(torch.as_tensor(out, device=getattr(src, "device", None)))
        if isinstance(out, MetaTensor):
            if isinstance(fixed, MetaTensor):
                out.affine = fixed.affine.clone()
            out.meta[REGISTRATION_KEY] = dict(info)
            out.meta["spatial_shape"] = np.asarray(arr.shape[1:])
        return out


class RegisterUWFd(RegisterElastixd):
    """Dictionary version of :class:`RegisterUWF` (with :class:`RegisterElastixd`'s other keys, record key and
    on-disk cache).

    Examples::

        RegisterUWFd(fixed_key="early", moving_key="slo")    # SLO onto early FA (cross-modal)
        RegisterUWFd(fixed_key="early", moving_key="late")   # late onto early FA

    Args:
        fixed_key, moving_key, other_keys, nearest_keys, fixed_mask_key, moving_mask_key, allow_missing_keys,
            cache_dir, record_key: as :class:`RegisterElastixd`.
        kwargs: passed to :class:`RegisterUWF`.
    """

    backend = RegisterUWF.backend

    def __init__(
        self,
        fixed_key: str = UWFKeys.EARLY.value,
        moving_key: str = UWFKeys.LATE.value,
        other_keys: Sequence[str] = (),
        nearest_keys: Sequence[str] = (UWFKeys.FOV.value,),
        fixed_mask_key: str | None = None,
        moving_mask_key: str | None = None,
        allow_missing_keys: bool = False,
        cache_dir=None,
        record_key: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(
            fixed_key,
            moving_key,
            other_keys,
            nearest_keys,
            fixed_mask_key,
            moving_mask_key,
            allow_missing_keys,
            cache_dir,
            record_key,
        )
        self.register = RegisterUWF(**kwargs)

    def cache_settings(self, others: Sequence[str]) -> dict[str, Any]:
        return {"method": "uwf", **super().cache_settings(others)}


RegisterUWFD = RegisterUWFDict = RegisterUWFd
