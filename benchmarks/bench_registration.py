"""Registration of the real UWF triplets: landmark error and vessel correlation before / after, status and time.

For each triplet of ``../shared/uwf-samples`` (train/1-4, val/7, 8, 10) it registers the SLO onto the early FA
(cross-modal) and the late FA onto the early FA (mono-modal) with :class:`~monai_lpuwf.transforms.RegisterUWF` and
prints, per pair: the median landmark error at native 853 x 682 before and after (the hand landmarks of
``tests/data/uwf_landmarks.json``: a fixed-frame landmark ``p`` is sent to ``M p`` by the fixed -> moving matrix
and compared with the same landmark in the moving frame), the vessel correlation before and after, the status and
the wall time. ``--montage DIR`` writes one overlay per pair (early FA vessels green, registered moving frame's
vessels magenta; white where they agree) and a contact sheet ``DIR/registration_montage.png``.

Run from the project root::

    OMP_NUM_THREADS=1 python benchmarks/bench_registration.py --montage /tmp/registration
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from monai_lpuwf.transforms import LoadUWFImage, RegisterUWF, vessel_band, vessel_grey

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "uwf-samples"
LANDMARKS = ROOT / "tests" / "data" / "uwf_landmarks.json"
TRIPLETS = ("train/1", "train/2", "train/3", "train/4", "val/7", "val/8", "val/10")


def landmark_errors(points: dict, fixed: str, moving: str, matrix_rc: np.ndarray) -> np.ndarray:
    """Distances (px) between the moving-frame landmarks and the fixed-frame ones sent through ``matrix_rc``
    (fixed -> moving, ``(row, col)``); landmarks missing (null) in either frame are skipped."""
    errs = []
    for name, p in points[fixed].items():
        q = points[moving].get(name)
        if p is None or q is None:
            continue
        r, c, _ = matrix_rc @ np.array([p[1], p[0], 1.0])
        errs.append(np.hypot(r - q[1], c - q[0]))
    return np.asarray(errs)


def overlay(fixed: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """RGB uint8: vessel band of the fixed frame in green, of the registered moving frame in magenta."""

    def norm(band):
        b = np.maximum(band, 0)
        return np.clip(b / (np.percentile(b, 99.5) + 1e-6), 0, 1)

    f, m = norm(vessel_band(fixed)), norm(vessel_band(moved))
    return (np.stack([m, f, m], -1) * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    parser.add_argument("--montage", type=Path, default=None, help="folder for the overlay images")
    parser.add_argument("--triplets", nargs="*", default=list(TRIPLETS))
    args = parser.parse_args()
    marks = json.loads(LANDMARKS.read_text())["triplets"]
    load_slo, load_fa = LoadUWFImage("slo"), LoadUWFImage("fa")
    register = RegisterUWF(warn=False)
    rows, tiles = [], []
    print(
        f"{'pair':22s} {'landmarks':>9s} {'before px':>9s} {'after px':>8s} {'vc before':>9s} {'vc after':>8s} "
        f"{'status':>10s} {'time s':>6s}"
    )
    for name in args.triplets:
        base = args.samples / name
        slo = load_slo(f"{base}.bmp")
        early, late = load_fa(f"{base}.1.bmp"), load_fa(f"{base}.2.bmp")
        for label, moving, key in (("slo->early", slo, "slo"), ("late->early", late, "late")):
            start = time.perf_counter()
            out = register(moving, early)
            seconds = time.perf_counter() - start
            info = out.meta["registration"]
            matrix = np.asarray(json.loads(info["matrix_rc"]))
            before = landmark_errors(marks[name], "early", key, np.eye(3))
            after = landmark_errors(marks[name], "early", key, matrix)
            row = {
                "pair": f"{name} {label}",
                "landmarks": len(after),
                "landmark_px_before": float(np.median(before)) if len(before) else float("nan"),
                "landmark_px_after": float(np.median(after)) if len(after) else float("nan"),
                "vc_before": info["vessel_correlation_before"],
                "vc_after": info["vessel_correlation_after"],
                "status": info["status"],
                "time_s": seconds,
            }
            rows.append(row)
            print(
                f"{row['pair']:22s} {row['landmarks']:9d} {row['landmark_px_before']:9.1f} "
                f"{row['landmark_px_after']:8.1f} {row['vc_before']:9.3f} {row['vc_after']:8.3f} "
                f"{row['status']:>10s} {seconds:6.1f}",
                flush=True,
            )
            if args.montage is not None:
                tile = overlay(vessel_grey(early.numpy()), vessel_grey(out.numpy()))
                tile = cv2.resize(tile, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
                text = f"{row['pair']} {row['status']} vc {row['vc_after']:.2f} lm {row['landmark_px_after']:.1f}px"
                cv2.putText(tile, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
                tiles.append(tile)
    for kind in ("slo->early", "late->early"):
        sel = [r for r in rows if r["pair"].endswith(kind)]
        ok = [r for r in sel if r["status"] == "registered"]
        print(
            f"{kind}: median landmark error {np.nanmedian([r['landmark_px_before'] for r in sel]):.1f} -> "
            f"{np.nanmedian([r['landmark_px_after'] for r in sel]):.1f} px; median vessel correlation "
            f"{np.median([r['vc_before'] for r in sel]):.3f} -> {np.median([r['vc_after'] for r in sel]):.3f}; "
            f"{len(ok)}/{len(sel)} registered; max time {max(r['time_s'] for r in sel):.1f} s"
        )
    if args.montage is not None:
        args.montage.mkdir(parents=True, exist_ok=True)
        while len(tiles) % 2:
            tiles.append(np.zeros_like(tiles[0]))
        sheet = np.vstack([np.hstack(tiles[i : i + 2]) for i in range(0, len(tiles), 2)])
        cv2.imwrite(str(args.montage / "registration_montage.png"), sheet[..., ::-1])
        (args.montage / "registration.json").write_text(json.dumps(rows, indent=1))
        print(f"montage: {args.montage / 'registration_montage.png'}")


if __name__ == "__main__":
    main()
