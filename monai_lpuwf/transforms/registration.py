"""Registration of UWF frames with ITK-elastix (``itk.elastix_registration_method`` / ``itk.transformix_filter``).

Two uses, one transform:

- late-phase FA onto early-phase FA: mono-modal, ``metric="auto"`` picks normalised correlation;
  ``mode="rigid"``, ``"affine"`` or ``"affine+bspline"`` / ``"rigid+bspline"`` for a non-rigid refinement;
- SLO onto FA: multi-modal, ``metric="auto"`` picks Mattes mutual information, computed on one grey channel of the
  SLO (green by default: it shows the vessels best in Optos pseudo-colour).

The moving image is resampled onto the fixed image's pixel grid (so frames of different sizes end up the same
size) and returned as a MetaTensor, like MONAI's spatial transforms; the transform found is recorded in its
metadata under ``"registration"`` (:data:`REGISTRATION_KEY`): the elastix parameter maps, a similarity before and
after (in the fixed image's field of view), the status and, for linear transforms, the 3 x 3 matrix in
``(row, col)`` pixel coordinates (fixed -> moving). :meth:`RegisterElastix.apply_transform` applies the recorded
transform to other images (e.g. a mask: nearest neighbour); :class:`RegisterElastixd` does so for its other keys.
When registration does not improve the similarity, the moving image is kept as it was (identity resampling onto
the fixed grid), the status says ``"identity_fallback"`` and a warning is issued; when elastix itself gives up
(e.g. a blank frame), the same happens with status ``"elastix_failed"``.

Pixel grids are used as physical space (spacing 1, origin 0, x = column, y = row). Elastix runs with
``threads`` threads (default 2) and a fixed random seed, so results are reproducible.

Speed: with the default ``settings="fast"``, elastix registers the frames averaged over ``shrink`` x ``shrink``
blocks (4: 853 x 682 -> 213 x 170; never below ``MIN_SHRUNK_SIZE`` pixels a side) with a 2-level pyramid, 300
iterations and 2048 random-coordinate samples per level; the shrunk images keep full-size pixel coordinates as
physical space (spacing ``shrink``), so the transform found is applied by transformix to the full-size frames.
The field-of-view masks are computed on the shrunk frames too. ``settings="legacy"`` keeps the full-size 4-level
settings used before (``benchmarks/bench_data.py`` compares both; timings in ``bundle/docs/README.md``). Loading
ITK takes a while once per process; registered results can
be cached on disk (``RegisterElastixd(cache_dir=...)``, :mod:`monai_lpuwf.data.registration_cache`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from monai.config import NdarrayOrTensor, PathLike
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import (
    TransformBackends,
    convert_to_dst_type,
    convert_to_numpy,
    ensure_tuple,
    look_up_option,
    optional_import,
)

from monai_lpuwf.data.registration_cache import RegistrationCache
from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.transforms.fov import FieldOfView


def _itk():
    """The ``itk`` module, imported on first use (loading elastix takes seconds; plain transform users skip it)."""
    itk, has_itk = optional_import("itk")
    if not has_itk or not hasattr(itk, "ElastixRegistrationMethod"):
        raise ImportError("RegisterElastix needs itk-elastix: pip install 'itk-elastix>=0.25'.")
    return itk


__all__ = [
    "REGISTRATION_KEY",
    "RegisterElastix",
    "RegisterElastixd",
    "RegisterElastixD",
    "RegisterElastixDict",
    "MODES",
    "METRICS",
    "REGISTRATION_SETTINGS",
    "similarity",
]

MODES = ("translation", "rigid", "similarity", "affine", "rigid+bspline", "affine+bspline", "bspline")
METRICS = ("auto", "ncc", "mi", "msd")
_ELASTIX_METRIC = {
    "ncc": "AdvancedNormalizedCorrelation",
    "mi": "AdvancedMattesMutualInformation",
    "msd": "AdvancedMeanSquares",
}
_ELASTIX_TRANSFORM = {"translation": "translation", "rigid": "rigid", "similarity": "rigid", "affine": "affine"}
REGISTRATION_SETTINGS: dict[str, dict[str, int]] = {
    # register on frames block-averaged by ``shrink`` (a 2-level pyramid on top), fewer samples and iterations;
    # the transform is then applied to the full-size frames
    "fast": {"shrink": 4, "resolutions": 2, "iterations": 300, "spatial_samples": 2048},
    # the settings before the speed-up (full-size frames, 4 levels): kept for comparison (benchmarks/bench_data.py)
    "legacy": {"shrink": 1, "resolutions": 4, "iterations": 300, "spatial_samples": 4096},
}
REGISTRATION_KEY = "registration"  # the output metadata entry recording the registration (see RegisterElastix)
GREY_CHANNEL = 1  # the grey channel of a multi-channel (SLO) image the metric uses: green, where the vessels are
BSPLINE_GRID_SPACING = 64.0  # control point spacing of the B-spline stage, in pixels
MIN_SHRUNK_SIZE = 128  # ``shrink`` never makes the shorter side of the registered frames smaller than this


def similarity(a: np.ndarray, b: np.ndarray, mask: np.ndarray, metric: str, bins: int = 32) -> float:
    """Similarity of two ``(H, W)`` images inside ``mask`` (higher is better).

    ``"ncc"``: normalised cross-correlation; ``"mi"``: normalised mutual information
    ``(H(a) + H(b)) / H(a, b)`` from a ``bins`` x ``bins`` joint histogram; ``"msd"``: negative mean squared
    difference.
    """
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    if x.size < 16:
        return float("-inf")
    if metric == "ncc":
        x, y = x - x.mean(), y - y.mean()
        return float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-12))
    if metric == "msd":
        return float(-np.mean((x - y) ** 2))
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(0)) + entropy(p.sum(1))) / max(entropy(p), 1e-12)


def _grey(img: np.ndarray, channel: int) -> np.ndarray:
    return img[0] if img.shape[0] == 1 else img[min(channel, img.shape[0] - 1)]


def _fill(img: np.ndarray) -> float:
    """Value outside the image after resampling: black (-1) for ``[-1, 1]`` images, 0 for masks and maps."""
    return -1.0 if float(img.min()) < 0 else 0.0


def _on_grid(img: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
    """Identity resampling of ``(C, h, w)`` onto an ``(H, W)`` grid with the same origin (crop / pad)."""
    out = np.full(img.shape[:1] + tuple(shape), fill, dtype=img.dtype)
    h, w = min(shape[0], img.shape[1]), min(shape[1], img.shape[2])
    out[:, :h, :w] = img[:, :h, :w]
    return out


def _block_mean(img: np.ndarray, k: int) -> np.ndarray:
    """``(..., H, W)`` averaged over ``k`` x ``k`` blocks -> ``(..., H // k, W // k)`` (the last rows/cols that do
    not fill a block are dropped). Pixel ``i`` of the result is centred on full-size pixel ``k * i + (k - 1) / 2``."""
    if k == 1:
        return img
    h, w = img.shape[-2] // k, img.shape[-1] // k
    blocks = img[..., : h * k, : w * k].reshape(*img.shape[:-2], h, k, w, k)
    return blocks.mean((-3, -1), dtype=np.float64).astype(img.dtype)


def _block_upsample(mask: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_block_mean` for a ``(h, w)`` mask: nearest neighbour, edge rows/cols repeated."""
    if k == 1:
        return mask
    up = np.repeat(np.repeat(mask, k, 0), k, 1)
    return np.pad(up, [(0, shape[0] - up.shape[0]), (0, shape[1] - up.shape[1])], mode="edge")


def _linear_matrix_rc(pmap: dict) -> np.ndarray | None:
    """3 x 3 fixed -> moving matrix in (row, col) pixels of a linear elastix parameter map, else ``None``."""
    kind = pmap["Transform"][0]
    p = np.asarray([float(v) for v in pmap["TransformParameters"]])
    c = np.asarray([float(v) for v in pmap.get("CenterOfRotationPoint", ("0", "0"))])
    if kind == "TranslationTransform":
        m, t = np.eye(2), p[:2]
    elif kind == "EulerTransform":
        a = p[0]
        m, t = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]), p[1:3]
    elif kind == "SimilarityTransform":
        a = p[1]
        m, t = p[0] * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]), p[2:4]
    elif kind == "AffineTransform":
        m, t = p[:4].reshape(2, 2), p[4:6]
    else:
        return None
    b = c + t - m @ c  # T(p) = M (p - c) + c + t, in (x, y)
    perm = np.array([[0, 1], [1, 0]])
    out = np.eye(3)
    out[:2, :2], out[:2, 2] = perm @ m @ perm, perm @ b
    return out


class RegisterElastix(Transform):
    """Register an image onto a fixed image with elastix; the transform found is recorded in the output's metadata.

    Like MONAI's spatial transforms, the output is the resampled image (on the fixed image's pixel grid, with its
    affine) and carries what was done in its metadata: ``meta["registration"]`` (:data:`REGISTRATION_KEY`) holds the
    elastix parameter maps of the transform found (``"transform"``, JSON: the transform parameters, the B-spline
    coefficients included), the fixed -> moving ``(row, col)`` matrix of linear transforms (``"matrix_rc"``, JSON),
    ``"status"`` (``"registered"``, ``"identity_fallback"``, ``"elastix_failed"``), ``"mode"``, ``"metric"``,
    ``"shrink"``, ``"similarity_before"``/``"similarity_after"``, the file names and ``"time_s"``.
    :meth:`apply_transform` resamples other images (masks, other channels) with that recorded transform;
    :class:`RegisterElastixd` does both for a dictionary. Not differentiable and not invertible
    (``applied_operations`` is left alone).

    Backend: numpy only: elastix / transformix (ITK) run on CPU arrays; tensor inputs are copied to the CPU and the
    result is returned on the input's device.

    Args:
        mode: ``"translation"``, ``"rigid"``, ``"similarity"``, ``"affine"``, ``"rigid+bspline"``,
            ``"affine+bspline"`` (``"bspline"`` = ``"affine+bspline"``).
        metric: ``"auto"`` (normalised correlation when both images have the same number of channels, i.e. FA onto
            FA; Mattes mutual information otherwise, i.e. SLO onto FA), ``"ncc"``, ``"mi"``, ``"msd"``.
        resolutions: number of multi-resolution pyramid levels.
        iterations: optimiser iterations per level (linear stage).
        bspline_iterations: iterations per level of the B-spline stage.
        spatial_samples: random samples per iteration.
        shrink: elastix registers the frames averaged over ``shrink`` x ``shrink`` blocks (reduced so that the
            shorter side stays >= ``MIN_SHRUNK_SIZE``); the transform is applied at full size.
        settings: named defaults for ``shrink``, ``resolutions``, ``iterations`` and ``spatial_samples``
            (``REGISTRATION_SETTINGS``): ``"fast"`` or ``"legacy"`` (full size, 4 levels, 300 iterations, 4096
            samples: the settings before the speed-up). Those arguments, when given, override them.
        min_improvement: improvement of the similarity required to accept the registration.
        threads: elastix / transformix threads.
        seed: random seed of elastix's sampler.

    Example::

        late_on_early = RegisterElastix(mode="affine")(late, fixed=early)   # (1, H, W) MetaTensor on early's grid
        record = late_on_early.meta["registration"]                         # status, transform, similarities
        fov_on_early = RegisterElastix().apply_transform(late_fov, late_on_early, nearest=True)
    """

    backend: ClassVar[list[TransformBackends]] = [TransformBackends.NUMPY]

    def __init__(
        self,
        mode: str = "affine",
        metric: str = "auto",
        resolutions: int | None = None,
        iterations: int | None = None,
        bspline_iterations: int = 200,
        spatial_samples: int | None = None,
        shrink: int | None = None,
        settings: str = "fast",
        min_improvement: float = 0.0,
        threads: int = 2,
        seed: int = 0,
    ) -> None:
        self.mode = "affine+bspline" if mode == "bspline" else look_up_option(mode, MODES)
        self.metric = look_up_option(metric, METRICS)
        preset = look_up_option(settings, REGISTRATION_SETTINGS)
        self.settings = settings
        self.resolutions = int(preset["resolutions"] if resolutions is None else resolutions)
        self.iterations = int(preset["iterations"] if iterations is None else iterations)
        self.spatial_samples = int(preset["spatial_samples"] if spatial_samples is None else spatial_samples)
        self.shrink = int(preset["shrink"] if shrink is None else shrink)
        if min(self.resolutions, self.iterations, self.spatial_samples, self.shrink) < 1:
            raise ValueError(
                f"RegisterElastix: resolutions, iterations, spatial_samples and shrink must be >= 1, got "
                f"{self.resolutions}, {self.iterations}, {self.spatial_samples}, {self.shrink}."
            )
        self.bspline_iterations = bspline_iterations
        self.min_improvement = min_improvement
        self.threads = threads
        self.seed = seed

    def parameter_object(self, metric: str):
        """The elastix :class:`itk.ParameterObject` for ``metric`` (``"ncc"``, ``"mi"`` or ``"msd"``)."""
        itk = _itk()
        params = itk.ParameterObject.New()
        linear, _, spline = self.mode.partition("+")
        stages = [(_ELASTIX_TRANSFORM[linear], self.iterations)] + (
            [("bspline", self.bspline_iterations)] if spline else []
        )
        for name, iterations in stages:
            pmap = params.GetDefaultParameterMap(name, self.resolutions)
            if linear == "similarity" and name == "rigid":
                pmap["Transform"] = ("SimilarityTransform",)
            if name == "bspline":
                pmap["FinalGridSpacingInPhysicalUnits"] = (str(BSPLINE_GRID_SPACING),)
            pmap["Metric"] = (
                (_ELASTIX_METRIC[metric],)
                if name != "bspline"
                else (_ELASTIX_METRIC[metric], "TransformBendingEnergyPenalty")
            )
            if name == "bspline":
                pmap["Metric0Weight"], pmap["Metric1Weight"] = ("1.0",), ("0.01",)
                pmap["Registration"] = ("MultiMetricMultiResolutionRegistration",)
            pmap["MaximumNumberOfIterations"] = (str(iterations),)
            pmap["NumberOfSpatialSamples"] = (str(self.spatial_samples),)
            pmap["ImageSampler"] = ("RandomCoordinate",)
            pmap["RandomSeed"] = (str(self.seed),)
            pmap["ErodeMask"] = ("false",)
            pmap["AutomaticTransformInitialization"] = ("true",)
            pmap["AutomaticTransformInitializationMethod"] = ("GeometricalCenter",)
            pmap["WriteResultImage"] = ("false",)
            pmap["ResultImagePixelType"] = ("float",)
            params.AddParameterMap(pmap)
        return params

    def shrink_factor(self, fixed_shape: Sequence[int], moving_shape: Sequence[int]) -> int:
        """The block size the frames are averaged over before elastix: ``shrink``, reduced so that the shorter side
        of either frame stays at least ``MIN_SHRUNK_SIZE`` pixels (small frames register at full size)."""
        smallest = min(*fixed_shape[-2:], *moving_shape[-2:])
        return max(1, min(self.shrink, smallest // MIN_SHRUNK_SIZE))

    @staticmethod
    def _itk_image(arr: np.ndarray, k: int):
        """ITK image of a ``(h, w)`` array shrunk by ``k``: full-size pixel coordinates as physical space."""
        img = _itk().image_from_array(np.ascontiguousarray(arr))
        img.SetSpacing((float(k), float(k)))
        img.SetOrigin(((k - 1) / 2, (k - 1) / 2))
        return img

    @staticmethod
    def _masks(img: np.ndarray, given: NdarrayOrTensor | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Field-of-view mask at full size and shrunk by ``k`` (computed on the shrunk frame unless ``given``)."""
        if given is not None:
            full = convert_to_numpy(given)[0] > 0.5
            return full, _block_mean(full.astype(np.float32), k) > 0.5
        small = FieldOfView().mask(_block_mean(img, k))
        return _block_upsample(small, k, img.shape[-2:]), small

    @staticmethod
    def _full_size(transform, shape: tuple[int, int]):
        """The elastix result transform with its output grid set to the full-size fixed frame ``(H, W)``."""
        out = _itk().ParameterObject.New()
        for i in range(transform.GetNumberOfParameterMaps()):
            pmap = transform.GetParameterMap(i)
            pmap["Size"] = (str(shape[1]), str(shape[0]))
            pmap["Index"], pmap["Spacing"], pmap["Origin"] = ("0", "0"), ("1", "1"), ("0", "0")
            out.AddParameterMap(pmap)
        return out

    def _transformix(self, img: np.ndarray, transform, nearest: bool, fill: float) -> np.ndarray:
        """Apply an elastix result transform to every channel of a ``(C, h, w)`` image."""
        itk = _itk()
        local = itk.ParameterObject.New()
        for i in range(transform.GetNumberOfParameterMaps()):
            pmap = transform.GetParameterMap(i)
            pmap["FinalBSplineInterpolationOrder"] = ("0" if nearest else "3",)
            pmap["DefaultPixelValue"] = (str(fill),)
            pmap["ResultImagePixelType"] = ("float",)
            local.AddParameterMap(pmap)
        out = []
        for ch in img:
            moved = itk.transformix_filter(itk.image_from_array(np.ascontiguousarray(ch, np.float32)), local)
            out.append(np.asarray(moved, dtype=np.float32))
        res = np.stack(out)
        return res if nearest else np.clip(res, float(img.min()), float(img.max()))

    def __call__(
        self,
        img: NdarrayOrTensor,
        fixed: NdarrayOrTensor,
        fixed_mask: NdarrayOrTensor | None = None,
        moving_mask: NdarrayOrTensor | None = None,
    ) -> MetaTensor:
        """Register ``img`` onto ``fixed``.

        Args:
            img: ``(C, h, w)`` moving image (any size: it is resampled onto ``fixed``'s grid).
            fixed: ``(C', H, W)`` reference image; ``C' != C`` (SLO onto FA) selects mutual information with
                ``metric="auto"``.
            fixed_mask: optional ``(1, H, W)`` field of view of ``fixed`` restricting the metric (else computed,
                always used).
            moving_mask: optional ``(1, h, w)`` field of view of ``img``.

        Returns:
            ``(C, H, W)`` float32 MetaTensor on ``img``'s device: ``img`` registered onto ``fixed`` (or, when
            registration failed or did not improve the similarity, ``img`` unchanged on ``fixed``'s grid, with a
            warning), with ``fixed``'s affine and the record in ``meta["registration"]``.
        """
        itk = _itk()
        start = time.perf_counter()
        moving = img
        f, m = convert_to_numpy(fixed, dtype=np.float32), convert_to_numpy(moving, dtype=np.float32)
        metric = self.metric if self.metric != "auto" else ("ncc" if f.shape[0] == m.shape[0] else "mi")
        fg, mg = _grey(f, GREY_CHANNEL), _grey(m, GREY_CHANNEL)
        shape = fg.shape
        k = self.shrink_factor(shape, mg.shape)
        # masks of the shrunk frames (what elastix samples), brought back to full size for the similarity: burnt-in
        # boxes and borders, identical in both frames, would pull towards identity
        fmask, fmask_k = self._masks(f, fixed_mask, k)
        mmask, mmask_k = self._masks(m, moving_mask, k)

        method = itk.ElastixRegistrationMethod.New(
            self._itk_image(_block_mean(fg, k), k), self._itk_image(_block_mean(mg, k), k)
        )
        method.SetParameterObject(self.parameter_object(metric))
        method.SetFixedMask(self._itk_image(fmask_k.astype(np.uint8), k))
        method.SetMovingMask(self._itk_image(mmask_k.astype(np.uint8), k))
        method.SetLogToConsole(False)
        # thread count through ITK's global default, restored afterwards: the method's own SetNumberOfThreads
        # crashes elastix 0.25 in the B-spline stage
        threads_before = itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(self.threads)
        failure = ""
        try:
            method.Update()
            transform = self._full_size(method.GetTransformParameterObject(), shape)
            registered = self._transformix(m, transform, nearest=False, fill=_fill(m))
            support = self._transformix(mmask[None].astype(np.float32), transform, nearest=True, fill=0.0)[0] > 0.5
        except RuntimeError as e:  # elastix gives up, e.g. on blank frames or masks too small to sample
            failure = (str(e).strip().splitlines() or ["elastix error"])[-1][:200]
        finally:
            itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads_before)

        unregistered = _on_grid(m, shape, _fill(m))
        before = similarity(fg, _grey(unregistered, GREY_CHANNEL), fmask & _on_grid(mmask[None], shape, 0)[0], metric)
        if failure:
            after, maps, accepted = float("nan"), [], False
        else:
            after = similarity(fg, _grey(registered, GREY_CHANNEL), fmask & support, metric)
            accepted = after > before + self.min_improvement
            maps = [dict(transform.GetParameterMap(i)) for i in range(transform.GetNumberOfParameterMaps())]
        matrices = [_linear_matrix_rc(p) for p in maps]
        info = {
            "status": "registered" if accepted else ("elastix_failed" if failure else "identity_fallback"),
            "mode": self.mode,
            "metric": metric,
            "shrink": k,
            "similarity_before": float(before),
            "similarity_after": float(after),
            "matrix_rc": json.dumps(matrices[0].tolist()) if len(maps) == 1 and matrices[0] is not None else "",
            "transform": json.dumps([{k: list(v) for k, v in p.items()} for p in maps]),
            "time_s": time.perf_counter() - start,
        }
        names = [getattr(x, "meta", {}).get("filename_or_obj", "") for x in (fixed, moving)]
        info["fixed"], info["moving"] = str(names[0]), str(names[1])
        if not accepted:
            reason = (
                f"elastix failed ({failure}); are the frames blank or nearly so?"
                if failure
                else f"did not improve the similarity ({before:.4f} -> {after:.4f})"
            )
            warnings.warn(
                f"RegisterElastix ({self.mode}, {metric}): registering {names[1] or 'moving'} onto "
                f"{names[0] or 'fixed'} {reason}; the unregistered image is kept (identity). Check that the frames "
                "show the same eye, or try another mode/metric.",
                stacklevel=2,
            )
        result = registered if accepted else unregistered
        return self._wrap(result, moving, fixed, info, as_meta=True)

    def apply_transform(self, img: NdarrayOrTensor, registered: MetaTensor, nearest: bool = False) -> NdarrayOrTensor:
        """Resample another image with the transform recorded in a registered image's metadata.

        The same transform, onto the same grid, as ``registered`` (an output of this transform, e.g. a mask of the
        moving frame resampled like the frame): identity resampling when its status is not ``"registered"``.

        Args:
            img: ``(C, h, w)`` image on the moving image's grid.
            registered: the MetaTensor this transform returned for the moving image.
            nearest: nearest-neighbour interpolation (masks) instead of cubic B-spline (clipped to ``img``'s range).

        Returns:
            ``(C, H, W)`` float32 of ``img``'s type and device, on ``registered``'s grid (a MetaTensor gets its
            affine and the record in ``meta["registration"]``).
        """
        info = getattr(registered, "meta", {}).get(REGISTRATION_KEY)
        if info is None:
            raise ValueError(
                f"RegisterElastix.apply_transform: `registered` has no meta[{REGISTRATION_KEY!r}]; pass the "
                "MetaTensor that RegisterElastix returned for the moving image."
            )
        arr = convert_to_numpy(img, dtype=np.float32)
        maps = json.loads(info["transform"])
        if info["status"] != "registered" or not maps:
            out = _on_grid(arr, tuple(registered.shape[1:]), _fill(arr))
        else:
            itk = _itk()
            transform = itk.ParameterObject.New()
            for pmap in maps:
                transform.AddParameterMap({k: tuple(v) for k, v in pmap.items()})
            threads_before = itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()
            itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(self.threads)
            try:
                out = self._transformix(arr, transform, nearest, _fill(arr))
            finally:
                itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads_before)
        return self._wrap(out, img, registered, info)

    @staticmethod
    def _wrap(
        arr: np.ndarray, src: NdarrayOrTensor, fixed: NdarrayOrTensor, info: Mapping, as_meta: bool = False
    ) -> NdarrayOrTensor:
        """``arr`` as the type and device of ``src`` (a MetaTensor when ``as_meta``), with ``fixed``'s affine and the
        record ``info`` when it is a MetaTensor."""
        out, *_ = convert_to_dst_type(
            arr, dst=src, dtype=torch.float32 if isinstance(src, torch.Tensor) else np.float32
        )
        if as_meta and not isinstance(out, MetaTensor):
            out = MetaTensor(torch.as_tensor(out, device=getattr(src, "device", None)))
        if isinstance(out, MetaTensor):
            if isinstance(fixed, MetaTensor):
                out.affine = fixed.affine.clone()  # resampled onto the fixed image's grid
            out.meta[REGISTRATION_KEY] = dict(info)
            out.meta["spatial_shape"] = np.asarray(arr.shape[1:])
        return out


class RegisterElastixd(MapTransform):
    """Dictionary version of :class:`RegisterElastix`.

    Examples::

        RegisterElastixd(fixed_key="early", moving_key="late", mode="affine")          # late FA onto early FA
        RegisterElastixd(fixed_key="early", moving_key="slo", mode="affine", metric="mi")  # SLO onto FA

    Args:
        fixed_key: key of the reference image.
        moving_key: key of the image registered onto it (replaced by the resampled image, a MetaTensor whose
            ``meta["registration"]`` records the transform, see :class:`RegisterElastix`).
        other_keys: keys transformed with the same transform (replaced; :meth:`RegisterElastix.apply_transform`),
            e.g. the moving frame's mask.
        nearest_keys: keys among ``other_keys`` resampled with nearest neighbour (masks; default: the ``fov`` key).
        fixed_mask_key, moving_mask_key: optional masks restricting the metric (else computed with
            :class:`FieldOfView`).
        record_key: when given, the registration record (``meta["registration"]`` of the moving key: status,
            elastix transform parameters, matrix, similarities) is also stored under this key, as a dict.
        allow_missing_keys: when the fixed or moving key is absent, do nothing.
        cache_dir: folder of a :class:`~monai_lpuwf.data.registration_cache.RegistrationCache`: results are
            stored there, keyed by a hash of the input images and of every setting, and read back instead of
            calling elastix when the same images are registered again with the same settings (e.g. the next
            training run; :func:`~monai_lpuwf.data.register_datalist` fills it in parallel). ``None``: no cache.
        kwargs: passed to :class:`RegisterElastix` (``mode``, ``metric``, ``settings``, ``resolutions``, ...).
    """

    backend = RegisterElastix.backend

    def __init__(
        self,
        fixed_key: str = UWFKeys.EARLY.value,
        moving_key: str = UWFKeys.LATE.value,
        other_keys: Sequence[str] = (),
        nearest_keys: Sequence[str] = (UWFKeys.FOV.value,),
        fixed_mask_key: str | None = None,
        moving_mask_key: str | None = None,
        allow_missing_keys: bool = False,
        cache_dir: PathLike | None = None,
        record_key: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__([fixed_key, moving_key, *ensure_tuple(other_keys)], allow_missing_keys)
        self.fixed_key, self.moving_key = fixed_key, moving_key
        self.other_keys, self.nearest_keys = tuple(ensure_tuple(other_keys)), set(ensure_tuple(nearest_keys))
        self.fixed_mask_key, self.moving_mask_key = fixed_mask_key, moving_mask_key
        self.record_key = record_key
        self.register = RegisterElastix(**kwargs)
        self.cache = None
        if cache_dir is not None:
            self.cache = RegistrationCache(cache_dir)

    def cache_settings(self, others: Sequence[str]) -> dict[str, Any]:
        """What the cache key hashes besides the images: every :class:`RegisterElastix` setting but ``threads``,
        and which of the other keys are resampled with nearest neighbour."""
        settings = {k: v for k, v in vars(self.register).items() if k != "threads"}
        return {**settings, "nearest": [k in self.nearest_keys for k in others]}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        missing = [k for k in (self.fixed_key, self.moving_key) if k not in d]
        if missing:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"RegisterElastixd: key(s) {missing} missing from the data (keys: {list(d)}).")
        others = [k for k in self.other_keys if k in d or not self.allow_missing_keys]
        fixed_mask = d.get(self.fixed_mask_key) if self.fixed_mask_key else None
        moving_mask = d.get(self.moving_mask_key) if self.moving_mask_key else None
        inputs = [d[self.moving_key], *(d[k] for k in others)]
        key = cached = None
        if self.cache is not None:
            key = self.cache.key([d[self.fixed_key], *inputs, fixed_mask, moving_mask], self.cache_settings(others))
            cached = self.cache.get(key)
        if cached is not None:  # registered before with the same images and settings: no elastix (nor ITK)
            arrays, info = cached
            fixed = d[self.fixed_key]
            moved = RegisterElastix._wrap(arrays[0], inputs[0], fixed, info, as_meta=True)
            moved_others = [RegisterElastix._wrap(a, src, fixed, info) for a, src in zip(arrays[1:], inputs[1:])]
        else:
            moved = self.register(d[self.moving_key], d[self.fixed_key], fixed_mask, moving_mask)
            moved_others = [self.register.apply_transform(d[k], moved, k in self.nearest_keys) for k in others]
            if self.cache is not None:
                self.cache.put(key, [moved, *moved_others], moved.meta[REGISTRATION_KEY])
        d[self.moving_key] = moved
        d.update(zip(others, moved_others))
        if self.record_key is not None:
            d[self.record_key] = dict(moved.meta[REGISTRATION_KEY])
        return d


RegisterElastixD = RegisterElastixDict = RegisterElastixd
