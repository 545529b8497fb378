"""Synthetic UWF triplets (the embedded default data for demos, the bundle and tests).

Each phantom is an eye drawn from a seeded random generator:

- an irregular elliptical retinal field of view on a black background;
- an optic disc, a macula (dark avascular zone) and a branching vessel tree growing from the disc;
- a pseudo-colour SLO (Optos-like: red and green channels, near-constant blue), with bright eyelids outside the
  retina and dark eyelashes occluding its lower part;
- an early-phase FA with bright vessels and disc, and a flat dark burnt-in annotation box bottom right;
- a late-phase FA where vessels fade (to about a quarter of their early contrast, as on real late frames) and
  chosen lesion regions leak (bright, spread out), giving the lesion mask;
  each leaking region also leaves a faint mark on the SLO (darker green, slightly brighter red: oedema/exudate
  over a leaking lesion, as on a real Optos picture), so the leakage is predictable from the SLO, as a model that
  generates the late phase from the SLO alone must assume;
- optionally a known misregistration (rotation + shift) of the late FA and of the SLO relative to the early FA.

Files are written in the authors' naming convention (``N.png`` SLO, ``N.1.png`` early, ``N.2.png`` late), so
:func:`~monai_lpuwf.data.datalist_from_folder` and :class:`~monai_lpuwf.transforms.LoadUWFImaged` read them as
they read real data. Generation of a 256 x 256 triplet takes a few tens of milliseconds (numpy + scipy only).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.config import PathLike
from scipy import ndimage as ndi

from monai_lpuwf.data.image_io import save_uwf_image
from monai_lpuwf.keys import UWFKeys

__all__ = ["render_phantom", "generate_phantoms", "PHANTOM_MARKER"]

PHANTOM_MARKER = ".lpuwf_phantoms.json"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-12)


def _grow_tree(rng: np.random.Generator, start: np.ndarray, shape: tuple[int, int], inside, scale: float) -> list:
    """Random-walk branching vessels: list of (row, col, radius) centreline points."""
    points = []
    stack = []
    n_trunks = int(rng.integers(4, 7))
    base = rng.uniform(0, 2 * math.pi)
    for k in range(n_trunks):
        angle = base + 2 * math.pi * k / n_trunks + rng.normal(0, 0.25)
        stack.append((start.copy(), angle, 2.2 * scale * rng.uniform(0.8, 1.1), 0))
    step = 0.7  # pixels: dense enough that the rendered tubes are continuous
    budget = int(6000 * scale)
    while stack and len(points) < budget:
        pos, angle, radius, depth = stack.pop()
        for _ in range(int(300 * scale / step)):
            angle += rng.normal(0, 0.08)
            pos = pos + step * np.array([math.sin(angle), math.cos(angle)])
            r, c = round(float(pos[0])), round(float(pos[1]))
            if radius < 0.45 or not (0 <= r < shape[0] and 0 <= c < shape[1]) or not inside[r, c]:
                break
            points.append((r, c, radius))
            radius *= 0.997
            if depth < 6 and rng.random() < 0.015:
                side = rng.choice((-1.0, 1.0))
                stack.append((pos.copy(), angle + side * rng.uniform(0.4, 0.9), radius * 0.72, depth + 1))
                radius *= 0.9
    return points


def _render_lines(points: list, shape: tuple[int, int]) -> np.ndarray:
    """Soft tubes of the given radii around centreline points, in [0, 1]."""
    if not points:
        return np.zeros(shape, np.float32)
    radius_map = np.zeros(shape, np.float32)
    pts = np.asarray(points)
    rows, cols = pts[:, 0].astype(int), pts[:, 1].astype(int)
    np.maximum.at(radius_map, (rows, cols), pts[:, 2].astype(np.float32))
    dist, (ir, ic) = ndi.distance_transform_edt(radius_map == 0, return_indices=True)
    radius = radius_map[ir, ic]
    return np.exp(-0.5 * (dist / (0.7 * radius + 0.3)) ** 2).astype(np.float32) * (dist < 3 * radius + 2)


def _gauss(rr: np.ndarray, cc: np.ndarray, centre: Sequence[float], sigma: float) -> np.ndarray:
    return np.exp(-((rr - centre[0]) ** 2 + (cc - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _warp(img: np.ndarray, angle_deg: float, shift: Sequence[float], order: int = 1) -> np.ndarray:
    """Rotate by ``angle_deg`` about the centre then shift by ``(d_row, d_col)``; channels on axis 0."""
    h, w = img.shape[-2:]
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    inv = rot.T  # output pixel o samples input at inv @ (o - centre - shift) + centre
    offset = centre - inv @ (centre + np.asarray(shift, float))
    return np.stack([ndi.affine_transform(ch, inv, offset, order=order, mode="constant", cval=0.0) for ch in img])


def render_phantom(
    size: Sequence[int] = (256, 256),
    seed: int | Sequence[int] = 0,
    num_lesions: tuple[int, int] = (2, 5),
    misregistration: bool | float = False,
    noise: float = 0.012,
) -> dict:
    """Draw one synthetic triplet in memory.

    Args:
        size: ``(H, W)``.
        seed: seed (or seed sequence) of :func:`numpy.random.default_rng`.
        num_lesions: inclusive range of the number of leaking lesions.
        misregistration: ``False``, ``True`` (rotation up to 3 degrees and shift up to 3 % of the size), or a
            float scaling those maxima. Applied to the late FA and to the SLO; the early FA is the reference.
        noise: standard deviation of the independent pixel noise added to every image (intensities in [0, 1]).

    Returns:
        dict with ``"slo"`` ``(3, H, W)``, ``"early"``, ``"late"`` ``(1, H, W)`` float32 in ``[0, 1]``;
        ``"lesion"`` bool ``(H, W)`` (early-FA frame); ``"fov"`` bool ``(H, W)``; ``"misregistration"`` ``None`` or
        ``{"late": {"angle_deg", "shift"}, "slo": {...}}``: the rotation about the image centre, then shift
        ``(rows, cols)`` in pixels, that maps the early-FA frame onto the moved image.
    """
    h, w = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    scale = min(h, w) / 256.0
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float32)
    centre = np.array([(h - 1) / 2, (w - 1) / 2])

    # irregular elliptical field of view
    theta = np.arctan2(rr - centre[0], cc - centre[1])
    wobble = 1.0 + sum(rng.uniform(-0.03, 0.03) * np.cos(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    ell = np.sqrt(((rr - centre[0]) / (0.45 * h)) ** 2 + ((cc - centre[1]) / (0.47 * w)) ** 2) / wobble
    fov = ell < 1.0
    vignette = np.clip(1.0 - 0.45 * ell**2, 0.0, 1.0).astype(np.float32)

    # anatomy: disc on one side, macula towards the centre, vessels from the disc
    side = rng.choice((-1.0, 1.0))
    disc = centre + np.array([rng.normal(0, 0.03 * h), side * rng.uniform(0.08, 0.14) * w])
    macula = disc + np.array([rng.normal(0, 0.02 * h), -side * rng.uniform(0.12, 0.16) * w])
    disc_r = 0.035 * min(h, w)
    disc_blob = _gauss(rr, cc, disc, disc_r)
    faz = _gauss(rr, cc, macula, 1.6 * disc_r)
    vessels = _render_lines(_grow_tree(rng, disc, (h, w), fov, scale), (h, w))
    texture = _smooth_noise(rng, (h, w), 6 * scale)
    fine = _smooth_noise(rng, (h, w), 1.5 * scale)

    # leaking lesions: a pinpoint in early phase that spreads into a bright patch in late phase
    leak = np.zeros((h, w), np.float32)
    pinpoints = np.zeros((h, w), np.float32)
    lesion = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(num_lesions[0], num_lesions[1] + 1))):
        for _attempt in range(50):
            pos = centre + rng.uniform(-1, 1, 2) * np.array([0.3 * h, 0.33 * w])
            if np.hypot(*(pos - disc)) > 3 * disc_r and fov[int(pos[0]), int(pos[1])]:
                break
        radius = rng.uniform(0.03, 0.06) * min(h, w)
        blob = np.exp(
            -((rr - pos[0]) ** 2 / (2 * radius**2) + (cc - pos[1]) ** 2 / (2 * (radius * rng.uniform(0.7, 1.4)) ** 2))
        )
        irregular = 1.0 + 0.35 * _smooth_noise(rng, (h, w), 2 * scale)
        patch = np.clip(blob * irregular, 0, None).astype(np.float32)
        leak = np.maximum(leak, patch)
        lesion |= patch > 0.35
        pinpoints = np.maximum(pinpoints, _gauss(rr, cc, pos, 0.25 * radius))
    lesion &= fov

    early = (0.22 + 0.05 * texture + 0.02 * fine) * vignette + 0.55 * vessels + 0.45 * disc_blob - 0.12 * faz
    early = early + 0.25 * pinpoints
    late = (0.18 + 0.05 * texture + 0.02 * fine) * vignette + 0.15 * vessels + 0.35 * disc_blob - 0.08 * faz
    late = late + 0.85 * leak
    early, late = early * fov, late * fov

    # pseudo-colour SLO: red (choroid) + green (retina), blue near-constant; eyelids outside, eyelashes inside
    eyelid = (~fov) & (ell < 1.0 + 0.25 * (1 + 0.5 * np.cos(2 * theta)) ** 2)
    red = (0.45 + 0.08 * texture + 0.04 * fine) * vignette - 0.25 * vessels + 0.45 * disc_blob - 0.1 * faz
    green = (0.38 + 0.06 * _smooth_noise(rng, (h, w), 4 * scale) + 0.03 * fine) * vignette - 0.3 * vessels
    green = green + 0.45 * disc_blob
    # the SLO mark of each leaking region (weaker and tighter than the late-phase leak)
    mark = np.clip(leak, 0.0, 1.0) ** 1.5
    red = red + 0.06 * mark
    green = green - 0.12 * mark
    lash_points = []
    for _ in range(int(rng.integers(3, 7))):
        pos = np.array([h - 1.0, rng.uniform(0.2, 0.8) * w])
        angle = -math.pi / 2 + rng.normal(0, 0.35)
        for _step in range(int(rng.uniform(0.15, 0.35) * h / 0.7)):
            angle += rng.normal(0, 0.03)
            pos = pos + 0.7 * np.array([math.sin(angle), math.cos(angle)])
            if 0 <= pos[0] < h and 0 <= pos[1] < w:
                lash_points.append((int(pos[0]), int(pos[1]), 1.6 * scale))
    lashes = _render_lines(lash_points, (h, w))
    red = np.where(fov, red, 0.0) + np.where(eyelid, 0.75 + 0.05 * texture, 0.0)
    green = np.where(fov, green, 0.0) + np.where(eyelid, 0.85 + 0.05 * texture, 0.0)
    occlusion = 1.0 - 0.75 * lashes
    slo = np.stack([red * occlusion, green * occlusion * (1.0 + 0.1 * lashes), np.full((h, w), 4 / 255)])

    # burnt-in annotation box of the FA frames (flat, dark, bottom right)
    box = (slice(int(0.9 * h), int(0.975 * h)), slice(int(0.745 * w), int(0.955 * w)))
    early_img, late_img = early[None].astype(np.float32), late[None].astype(np.float32)
    early_img = early_img + noise * rng.standard_normal(early_img.shape)
    late_img = late_img + noise * rng.standard_normal(late_img.shape)
    slo = slo + noise * rng.standard_normal(slo.shape) * np.array([1, 1, 0])[:, None, None]

    moves = None
    if misregistration:
        amount = 1.0 if misregistration is True else float(misregistration)
        moves = {}
        for key in (UWFKeys.LATE.value, UWFKeys.SLO.value):
            angle = float(rng.uniform(-3, 3) * amount)
            shift = (rng.uniform(-0.03, 0.03, 2) * np.array([h, w]) * amount).tolist()
            moves[key] = {"angle_deg": angle, "shift": shift}
        late_img = _warp(late_img, **moves[UWFKeys.LATE.value])
        slo = _warp(slo, **moves[UWFKeys.SLO.value])
    for img in (early_img, late_img):
        img[0][box] = 0.085 + 0.01 * np.linspace(0, 1, box[1].stop - box[1].start)[None, :]
    return {
        UWFKeys.SLO.value: np.clip(slo, 0, 1).astype(np.float32),
        UWFKeys.EARLY.value: np.clip(early_img, 0, 1).astype(np.float32),
        UWFKeys.LATE.value: np.clip(late_img, 0, 1).astype(np.float32),
        "lesion": lesion,
        UWFKeys.FOV.value: fov,
        "misregistration": moves,
    }


def _check_writable(out_dir: Path, names: list[str], overwrite: bool) -> None:
    """Refuse to overwrite files this generator did not write (never overwrite user data)."""
    marker = out_dir / PHANTOM_MARKER
    ours = set(json.loads(marker.read_text()).get("files", [])) if marker.is_file() else set()
    clash = [n for n in names if (out_dir / n).exists() and n not in ours]
    if clash and not overwrite:
        raise FileExistsError(
            f"{out_dir}: {len(clash)} file(s) not written by generate_phantoms already exist (e.g. {clash[0]}); "
            "use an empty folder, or pass overwrite=True."
        )


def generate_phantoms(
    out_dir: PathLike,
    num: int = 8,
    size: Sequence[int] = (256, 256),
    seed: int = 0,
    misregistration: bool | float = False,
    ext: str = "png",
    fa_as_rgb: bool = False,
    num_lesions: tuple[int, int] = (2, 5),
    overwrite: bool = False,
    save_masks: bool = False,
) -> list[dict]:
    """Write ``num`` synthetic triplets as ``N.ext`` (SLO), ``N.1.ext`` (early FA), ``N.2.ext`` (late FA).

    Phantom ``i`` depends only on ``(seed, i)``, so the first phantoms are the same whatever ``num`` is. Re-running
    into the same folder rewrites the generator's own files (recorded in ``.lpuwf_phantoms.json``) but never
    foreign files unless ``overwrite=True``.

    Args:
        out_dir: output folder (created).
        num: number of triplets, named ``1..num``.
        size: ``(H, W)``.
        seed: base seed.
        misregistration: see :func:`render_phantom`.
        ext: image suffix without dot (``png`` default; any suffix :func:`~monai_lpuwf.data.save_uwf_image`
            writes).
        fa_as_rgb: store FA frames as 3 equal channels, like the authors' BMPs.
        num_lesions: inclusive range of lesions per eye.
        overwrite: allow replacing files the generator did not write.
        save_masks: also write ``N.lesion.npy`` (a suffix the datalist discovery ignores).

    Returns:
        one record per triplet: ``{"slo", "early", "late"}`` absolute paths, ``"id"`` (``N``), ``"lesion"``
        (numpy bool ``(H, W)`` in the early-FA frame), ``"fov"`` (numpy bool ``(H, W)``) and
        ``"misregistration"`` (see :func:`render_phantom`). Drop the array entries before using a record as a
        datalist item (:func:`~monai_lpuwf.data.write_datalist` drops them).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ext.lstrip(".")
    names = []
    for i in range(1, num + 1):
        names += [f"{i}.{ext}", f"{i}.1.{ext}", f"{i}.2.{ext}"] + ([f"{i}.lesion.npy"] if save_masks else [])
    _check_writable(out, names, overwrite)
    marker = out / PHANTOM_MARKER
    previous = set(json.loads(marker.read_text()).get("files", [])) if marker.is_file() else set()
    marker.write_text(
        json.dumps({"generator": "monai_lpuwf.data.generate_phantoms", "files": sorted(previous | set(names))})
    )
    records = []
    for i in range(1, num + 1):
        ph = render_phantom(size, seed=(seed, i), num_lesions=num_lesions, misregistration=misregistration)
        rec = {"id": str(i)}
        for key, suffix in ((UWFKeys.SLO.value, ""), (UWFKeys.EARLY.value, ".1"), (UWFKeys.LATE.value, ".2")):
            img = ph[key]
            if key != UWFKeys.SLO.value and fa_as_rgb:
                img = np.repeat(img, 3, axis=0)
            path = out / f"{i}{suffix}.{ext}"
            save_uwf_image(img * 2.0 - 1.0, path, overwrite=True)
            rec[key] = str(path.resolve())
        if save_masks:
            np.save(out / f"{i}.lesion.npy", ph["lesion"])
        rec.update(lesion=ph["lesion"], fov=ph[UWFKeys.FOV.value], misregistration=ph["misregistration"])
        records.append(rec)
    return records
