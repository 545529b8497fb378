"""Registration of real UWF frames: SLO onto FA (cross-modal) and late onto early FA, with an honest score.

Intensity-based elastix (:class:`~monai_lpuwf.transforms.RegisterElastix`) does not align real UWF pairs: the
frames start tens of pixels, a few degrees and a few per cent of scale apart (the FA field squeezed vertically),
and mutual information between an Optos SLO and an angiogram has no basin there. :class:`RegisterUWF` registers
the vessels instead, in three steps:

1. **global multi-start search**: ridge maps of the vessels of both frames (:func:`~monai_lpuwf.transforms.
   vessels.vessel_map`) shrunk 8 x; for every scale, anisotropic scale and rotation of a grid, the shift is the
   peak of the masked normalised cross-correlation (Padfield's FFT form, the fields of view as masks); the best
   few distinct candidates are searched again at 4 x on a finer local grid;
2. **refinement** of each candidate: OpenCV's ECC (enhanced correlation coefficient, affine) on the vessel bands
   at 2 x and at full size - ECC maximises exactly the correlation that step 3 measures;
3. **an honest measure and a refusal**: the vessel correlation (:func:`~monai_lpuwf.transforms.vessels.
   vessel_correlation`, DoG sigma 1 and 4 px, inside both fields of view) of the unregistered and of the registered
   pair is recorded; the candidate with the highest one wins; a pair whose correlation after registration stays
   under ``min_vessel_correlation`` is ``"refused"``: not aligned, left as it was (identity onto the fixed grid),
   one warning naming the files - never reported as registered. The default 0.10
   (:data:`MIN_VESSEL_CORRELATION`): frames of two different eyes reach 0.03-0.08 after the search (8 pairs of
   the shared samples: the search maximises the score, so a wrong pair still gets some), while the SLO - early
   and late - early pairs that the hand landmarks confirm (<= 3 px) reach 0.25-0.78.

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
from scipy import ndimage as ndi
from scipy.fft import next_fast_len

from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.transforms.registration import REGISTRATION_KEY, RegisterElastixd
from monai_lpuwf.transforms.vessels import (
    VESSEL_SIGMAS,
    registration_mask,
    vessel_band,
    vessel_correlation,
    vessel_grey,
    vessel_map,
)

__all__ = [
    "RegisterUWF",
    "RegisterUWFd",
    "RegisterUWFD",
    "RegisterUWFDict",
    "SEARCH_GRIDS",
    "MIN_VESSEL_CORRELATION",
]

MIN_VESSEL_CORRELATION = 0.10  # below this after registration a pair is refused (see the module docstring)

# global search grids (start, stop, step) of scale, anisotropy (x scale / y scale) and rotation (degrees), and the
# largest shift in native pixels: "cross" for SLO onto FA, "mono" for FA onto FA
SEARCH_GRIDS: dict[str, dict[str, Any]] = {
    "cross": {"scale": (0.86, 1.18, 0.04), "aspect": (0.90, 1.10, 0.04), "rotation": (-10.0, 10.0, 2.0), "shift": 160},
    "mono": {"scale": (0.96, 1.04, 0.04), "aspect": (1.0, 1.0, 1.0), "rotation": (-4.0, 4.0, 2.0), "shift": 160},
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

    def _fft(self, x: np.ndarray) -> np.ndarray:
        return np.fft.rfft2(x, s=self.shape)

    def _ifft(self, x: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(x, s=self.shape)

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
        min_vessel_correlation: a pair whose vessel correlation after registration is below this is refused.
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
        min_vessel_correlation: float = MIN_VESSEL_CORRELATION,
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
        self.min_vessel_correlation = float(min_vessel_correlation)
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
        for k, params, top in ((8, None, self.candidates), (4, "local", 1)):
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

    def _ecc(self, fixed_grey, fixed_mask, moving_grey, matrix, k: int, sigmas) -> np.ndarray:
        """ECC (affine) on the vessel bands shrunk by ``k``; the input matrix when ECC does not converge."""
        f = _shrink(vessel_band(fixed_grey, sigmas), k)
        g = _shrink(vessel_band(moving_grey, sigmas), k)
        m = _shrink_mask(ndi.binary_erosion(fixed_mask, iterations=int(2 * sigmas[1])), k).astype(np.uint8)
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
        fg = vessel_grey(fixed, self.fixed_modality, self.channel)
        mg = vessel_grey(img, self.moving_modality, self.channel)
        fm = registration_mask(fixed, self.fixed_modality) if fixed_mask is None else np.asarray(fixed_mask)[0] > 0.5
        mm = registration_mask(img, self.moving_modality) if moving_mask is None else np.asarray(moving_mask)[0] > 0.5
        shape = fg.shape

        def measure(matrix):
            moved = _warp(mg, matrix, shape)
            support = _warp(mm.astype(np.float32), matrix, shape, nearest=True) > 0.5
            return vessel_correlation(fg, moved, fm & support)

        identity = np.eye(3)
        before = measure(identity)
        vf, vfm = vessel_map(fg, fm)
        vm, vmm = vessel_map(mg, mm, equalize=img.shape[0] == 3)
        found = self._search(vf, vfm, vm, vmm, grid)
        best_score, best_matrix, best_after = (found[0][0], found[0][1], -np.inf) if found else (-1.0, identity, -1)
        for score, matrix in found:  # every candidate refined at half size, the best one then at full size
            if self.refine:
                matrix = self._ecc(fg, fm, mg, matrix, 2, (1.5, 6.0))
            after = measure(matrix)
            if np.isfinite(after) and after > best_after:
                best_score, best_matrix, best_after = score, matrix, after
        if self.refine and found:
            matrix = self._ecc(fg, fm, mg, best_matrix, 1, VESSEL_SIGMAS)
            after = measure(matrix)
            if np.isfinite(after) and after > best_after:
                best_matrix, best_after = matrix, after
        accepted = np.isfinite(best_after) and best_after >= self.min_vessel_correlation
        return {
            "matrix_xy": best_matrix,
            "kind": kind,
            "search_score": float(best_score),
            "vessel_correlation_before": float(before),
            "vessel_correlation_after": float(best_after),
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
            "similarity_before": est["vessel_correlation_before"],
            "similarity_after": est["vessel_correlation_after"],
            "min_vessel_correlation": self.min_vessel_correlation,
            "fixed": names[0],
            "moving": names[1],
            "time_s": time.perf_counter() - start,
        }
        if est["status"] != "registered" and self.warn:
            warnings.warn(
                f"RegisterUWF: refused {names[1] or 'moving'} onto {names[0] or 'fixed'}: vessel correlation after "
                f"registration {est['vessel_correlation_after']:.3f} < {self.min_vessel_correlation} (before "
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
