"""Sampler study: time per image and agreement with DDPM-1000 for MONAI's schedulers, to choose the default.

For one trained model file and a few SLO images (phantoms by default), every sampler setting (scheduler x steps x
``clip_sample``) generates from the same seeded initial latents and is scored against DDPM-1000 and the real late
phase: :func:`monai_lpuwf.metrics.compare_samplers` (the method, the reference and the agreement ceiling are in
:mod:`monai_lpuwf.metrics.sampler_comparison`). The images are resized to ``--image_size``; below 176 pixels MS-SSIM
uses the scales that fit (:func:`monai_lpuwf.metrics.ms_ssim_weights_for`; 4 at 128 x 128, ``ms_ssim_scales`` in
the CSV).

``clip_sample=True`` (MONAI's DDPM/DDIM default, kept by the authors) clips the predicted clean latents to
[-1, 1] at each step; scaled latents have a standard deviation near 1, so the clipping changes them.

Run (writes ``sampler_study.csv`` and ``sampler_study.png`` into ``--output_dir``)::

    python benchmarks/sampler_study.py --checkpoint bundle/models/model.pt --image_size 128 128 --num_images 4
    python benchmarks/sampler_study.py --checkpoint bundle/models/model.pt --dataset_dir ../shared/uwf-samples
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from monai_lpuwf.metrics import compare_samplers, parse_sampler_specs, plot_sampler_comparison, write_scores_csv


def load_images(
    dataset_dir: str | os.PathLike | None,
    num_images: int,
    image_size: Sequence[int],
    seed: int = 0,
    sharpen: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """SLO (and late-phase, where every item has one) images resized to ``image_size`` in [-1, 1].

    ``dataset_dir=None`` renders ``num_images`` phantoms (:func:`monai_lpuwf.data.generate_phantoms`) into a
    temporary folder; otherwise the first ``num_images`` items of :func:`monai_lpuwf.data.datalist_from_folder`.
    The SLO is unsharp-masked like in training (``sharpen``); images are resized as for validation.
    """
    from monai.transforms import Compose, EnsureTyped, Resized

    from monai_lpuwf.data import datalist_from_folder, generate_phantoms
    from monai_lpuwf.transforms import LoadUWFImaged, UnsharpMaskd

    with tempfile.TemporaryDirectory() as tmp:
        if dataset_dir is None:
            records = generate_phantoms(tmp, num=num_images, size=tuple(image_size), seed=seed + 1000)
            items = [{"slo": r["slo"], "late": r["late"]} for r in records]
        else:
            items = datalist_from_folder(dataset_dir, require_late=False, require_early=False)[:num_images]
            if not items:
                raise FileNotFoundError(f"no SLO images (N.bmp / N.png ...) found in '{dataset_dir}'.")
        keys = ["slo"] + (["late"] if all("late" in i for i in items) else [])
        xforms = [LoadUWFImaged(keys=keys)]
        if sharpen:
            xforms.append(UnsharpMaskd(keys="slo"))
        xforms += [
            Resized(keys=keys, spatial_size=tuple(image_size), mode="bilinear", anti_aliasing=True),
            EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
        ]
        pipeline = Compose(xforms)
        loaded = [pipeline({k: item[k] for k in keys}) for item in items]
    slo = torch.stack([d["slo"] for d in loaded])
    late = torch.stack([d["late"] for d in loaded]) if "late" in keys else None
    return slo, late, [Path(item["slo"]).name for item in items]


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="bundle model file (models/model.pt)")
    parser.add_argument("--dataset_dir", default=None, help="folder of N.bmp/N.2.bmp images (default: phantoms)")
    parser.add_argument("--num_images", type=int, default=4)
    parser.add_argument("--image_size", type=int, nargs=2, default=[128, 128])
    parser.add_argument("--samplers", nargs="+", default=None, help="e.g. ddim:10,25,50,100 pndm:10,25 (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_sharpen", action="store_true", help="do not unsharp-mask the SLO")
    parser.add_argument("--output_dir", default="sampler_study")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    from monai_lpuwf.networks import ModelFile

    model = ModelFile.load(args.checkpoint, map_location=args.device).build().to(args.device).eval()
    divisor = model.size_divisor
    if any(s % divisor for s in args.image_size):
        raise ValueError(f"--image_size {args.image_size} must be multiples of the model's size divisor {divisor}.")
    slo, late, names = load_images(args.dataset_dir, args.num_images, args.image_size, args.seed, not args.no_sharpen)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(names)} images at {args.image_size[0]}x{args.image_size[1]} on {args.device} "
        f"(torch threads {torch.get_num_threads()}), checkpoint {args.checkpoint}"
    )
    rows = compare_samplers(model, slo.to(args.device), late, parse_sampler_specs(args.samplers), seed=args.seed)
    csv_path = write_scores_csv(rows, out / "sampler_study.csv")
    png_path = plot_sampler_comparison(
        rows,
        out / "sampler_study.png",
        title=f"{len(names)} images {args.image_size[0]}x{args.image_size[1]}, {args.device}",
    )
    print(f"wrote {csv_path} and {png_path}")
    return rows


if __name__ == "__main__":
    main()
