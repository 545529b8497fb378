"""The supervised prior, diffusion on its residual, the small latent recipe and the BasicUNet competitor, side by side.

On the main job's phantoms (``bundle/scripts/quickstart.sh``: 64 phantoms of 64 x 64, data seed 0, 48 training and
16 held out), per seed:

- ``prior``: :class:`~monai_lpuwf.networks.SupervisedPrior` (MONAI BasicUNet) trained through the library's
  :class:`~monai_lpuwf.engines.SupervisedTranslationTrainer` (L1, Adam, cosine decay) - the fast mode;
- ``prior_band``: the same prior trained with :class:`~monai_lpuwf.losses.VesselBandL1Loss` (L1 plus
  ``band_arm_weight`` x L1 on the DoG vessel band);
- ``residual``: :class:`~monai_lpuwf.networks.ResidualDiffusionModel` on that prior, its pixel-space denoiser
  trained through :class:`~monai_lpuwf.engines.LatentDiffusionTrainer` with
  :class:`~monai_lpuwf.engines.ResidualDiffusionPrepareBatch`; sampled with 1, 4 and 16 draws averaged
  (``residual_n1`` ...) as the main job samples it (``t_start`` 350 from the flip-averaged prior, :data:`RECIPE`),
  and a step-count sweep on one draw; ``prior_flip``: the prior averaged over the four flips of the SLO;
- ``small``: the main job's latent recipe (stages 1-2 with the bundle's own commands, stages 3-4 in-process as
  ``recipe_study.py`` does: sample prediction, ControlNet x3, 900 + 300 iterations, control strength 2);
- ``BasicUNet``: the ablation's competitor (``ablation.train_competitor``: a plain L1 loop, Adam 1e-3, batches of
  ``competitor_batch``) trained for the wall time the prior and the residual model took together (on the device the
  study runs on); ``BasicUNet_iters``: the same for the prior's iterations (iteration-matched).

``--recipe`` overrides :data:`RECIPE` (JSON), e.g. ``'{"prior_iters": 1500}'``; arms with ``--arms`` (comma list).

Scores on the 16 held-out phantoms (mean over frames, then mean +/- sd over seeds): PSNR (whole, field of view,
lesion), SSIM, MS-SSIM (n/a below 161 pixels), log-spectral error bands, vessel-band correlation with the real late
frame and detail (DoG 0.7 - 2.5 px, field of view: :mod:`monai_lpuwf.metrics.structure`), and for the generative
arms the correlation of two sampling seeds and the cross-input correlation.

    OMP_NUM_THREADS=1 nice python benchmarks/prior_study.py --work /tmp/prior_study --seeds 0
    python benchmarks/prior_study.py --work /tmp/prior_study --device cuda --seeds 0 1 2
    python benchmarks/prior_study.py --work /tmp/prior_study --table     # markdown table (+ --figure PNG montage)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablation
import recipe_study as rs
from monai.networks.schedulers import DDPMScheduler
from monai.utils import set_determinism

from monai_lpuwf.bundle_support import bundle_datalists
from monai_lpuwf.engines import (
    KeyedPrepareBatch,
    LatentDiffusionTrainer,
    ResidualDiffusionPrepareBatch,
    SupervisedTranslationTrainer,
    compute_residual_scale,
    set_trainable,
)
from monai_lpuwf.engines.scale_factor import compute_scale_factor
from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.losses import CTRDLoss, VesselBandL1Loss
from monai_lpuwf.metrics import detail_ratio, mean_intensity, vessel_band_correlation
from monai_lpuwf.metrics.sensitivity import input_sensitivity
from monai_lpuwf.networks import ModelFile, build_model, build_prior, build_residual_model

ROOT = Path(__file__).resolve().parents[1]
#: the main job's schedule for the prior and the residual model (bundle/configs/recipes/cpu.json)
RECIPE = {
    "prior_iters": 1500,
    "prior_batch": 8,
    "prior_lr": 2e-3,
    "prior_band_weight": 0.0,
    "band_arm_weight": 1.0,
    "residual_iters": 300,
    "residual_batch": 4,
    "residual_lr": 1e-3,
    "residual_warmup": 50,
    "steps": 10,
    "t_start": 350,
    "flip_average": True,
    "competitor_batch": 8,
    "competitor_iters": None,
}
SMALL = {**rs.BASE, "controlnet_lr_mult": 3.0, "conditioning_scale": 2.0}


#: DataLoader worker processes of the training loaders (``--workers``)
WORKERS = {"n": 0}


def train_loader(train: list, size: int, batch: int):
    """The main job's augmented training loader (``recipe_study.make_loader``), with ``--workers`` processes."""
    return rs.make_loader(train, size, augment=True, batch=batch, shuffle=True, num_workers=WORKERS["n"])


def main_job_data(work: Path, size: int) -> tuple[list, list]:
    lists = bundle_datalists(work_dir=work / "bundle", num_phantoms=64, phantom_size=(size, size), seed=0)
    return lists["training"], lists["validation"]


def cosine(total: int, warmup: int = 0):
    """Linear warm-up then cosine decay to zero over ``total`` iterations (a ``LambdaLR`` factor)."""
    return lambda it: min(1.0, (it + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(it, total) / total))


def train_prior(train: list, size: int, seed: int, cfg: dict, device: str):
    set_determinism(seed)
    loss = VesselBandL1Loss(band_weight=cfg["prior_band_weight"])
    prior = build_prior().to(device)
    loader = train_loader(train, size, cfg["prior_batch"])
    opt = torch.optim.Adam(prior.parameters(), lr=cfg["prior_lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(cfg["prior_iters"]))
    trainer = SupervisedTranslationTrainer(
        device=device, max_epochs=1, epoch_length=cfg["prior_iters"], train_data_loader=loader, network=prior,
        optimizer=opt, loss_function=loss, prepare_batch=KeyedPrepareBatch("slo", "late", keep_meta=False),
    )  # fmt: skip
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sched.step())
    t0 = time.time()
    trainer.run()
    return prior.eval(), time.time() - t0


def train_residual(prior, train: list, size: int, seed: int, cfg: dict, device: str):
    set_determinism(seed + 1)
    model = build_residual_model().to(device)
    model.prior.load_state_dict(prior.state_dict())
    loader = train_loader(train, size, cfg["residual_batch"])
    t0 = time.time()
    flip = bool(cfg["flip_average"])  # the residual of the base the model is sampled from, as the bundle trains it
    model.residual_scale.fill_(compute_residual_scale(model, loader, device=device, num_batches=8, flip_average=flip))
    set_trainable(model, ["denoiser"])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg["residual_lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(cfg["residual_iters"], cfg["residual_warmup"]))
    scheduler = DDPMScheduler(**model.schedule)
    prepare = ResidualDiffusionPrepareBatch(
        scheduler.num_train_timesteps,
        model,
        prediction_type=model.schedule["prediction_type"],
        scheduler=scheduler,
        flip_average=flip,
    )
    trainer = LatentDiffusionTrainer(
        device=device, max_epochs=1, epoch_length=cfg["residual_iters"], train_data_loader=loader, network=model,
        optimizer=opt, loss_function=torch.nn.MSELoss(), scheduler=scheduler, prepare_batch=prepare,
    )  # fmt: skip
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sched.step())
    trainer.run()
    return model.eval(), time.time() - t0


def train_small(work: Path, train: list, size: int, seed: int, device: str):
    """The main job's latent recipe: stages 1-2 by the bundle's commands (once), 3-4 in-process."""
    bundle_root = work / "bundle"
    ae = bundle_root / "models" / "model_condition_encoder.pt"
    if not ae.is_file():
        common = ["--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf",
                  "--bundle_root", str(bundle_root), "--num_phantoms", "64", "--phantom_size", f"[{size},{size}]",
                  "--preset", "small", "--image_size", f"[{size},{size}]", "--log_interval", "1000"]  # fmt: skip
        stages = [
            (["configs/common.json", "configs/train_autoencoder.json"], ["--max_epochs", "15", "--val_interval", "15"]),
            (["configs/common.json", "configs/train_autoencoder.json", "configs/train_condition_encoder.json"],
             ["--max_epochs", "5", "--val_interval", "5", "--adversarial_warmup_epochs", "1"]),
        ]  # fmt: skip
        for configs, extra in stages:
            cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(configs)]
            subprocess.run(cmd + ["--lr", "5e-4"] + common + extra, cwd=ROOT / "bundle", check=True)
    set_determinism(seed)
    model = build_model("small").to(device)
    model.load_state_dict(ModelFile.load(ae, map_location=device).weights)
    loader = train_loader(train, size, SMALL["batch"])
    model.scale_factor.fill_(compute_scale_factor(model.autoencoder, loader, "early", device, num_batches=8))
    t0 = time.time()
    mse = torch.nn.MSELoss()
    rs.train_stage(model, loader, SMALL, "early", SMALL["iters3"], SMALL["lr3"], mse, device)
    rs.train_stage(model, loader, SMALL, "late", SMALL["iters4"], SMALL["lr4"], CTRDLoss(alpha=0.25), device)
    return model.eval(), time.time() - t0


def score(pred: torch.Tensor, batch: dict, train_mean: float, other_seed: torch.Tensor | None = None) -> dict:
    pred = pred.float().cpu()  # the batch is scored on the CPU, whatever device the arm ran on
    other_seed = None if other_seed is None else other_seed.float().cpu()
    fov = batch["fov"]
    out = {
        "scores": ablation.scores_of(pred, batch, train_mean),
        "spectrum": ablation.spectrum_bands(pred, batch["late"]),
        "vessel_corr": float(vessel_band_correlation(pred, batch["late"], fov).mean()),
        "detail": float(detail_ratio(pred, batch["late"], fov).mean()),
        "sensitivity": input_sensitivity(pred, batch["late"], other_seed=other_seed),
    }
    return out


def save(work: Path, arm: str, seed: int, result: dict, pred: torch.Tensor) -> None:
    out = work / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{arm}__{seed}.json").write_text(json.dumps({"arm": arm, "seed": seed, **result}, indent=1))
    pred = pred.float().cpu()
    torch.save({"pred": pred.as_tensor() if hasattr(pred, "as_tensor") else pred}, out / f"{arm}__{seed}.pt")
    print(json.dumps({"arm": arm, "seed": seed, "psnr": result["scores"]["model"]["psnr"],
                      "vessel_corr": result["vessel_corr"], "detail": result["detail"],
                      "train_s": result.get("train_s")}), flush=True)  # fmt: skip


def run_seed(work: Path, seed: int, size: int, arms: list[str], cfg: dict, device: str, sweep: bool,
             seeds: tuple[int, ...] = (0,)) -> None:  # fmt: skip
    train, val = main_job_data(work, size)
    batch = next(iter(rs.make_loader(val, size, augment=False, batch=len(val), shuffle=False)))
    train_mean = mean_intensity(b["late"] for b in rs.make_loader(train, size, False, 16, False))
    slo = batch["slo"].to(device)
    (work / "results").mkdir(parents=True, exist_ok=True)
    torch.save({k: batch[k] for k in ("slo", "late", "early", "fov")}, work / "results" / "batch.pt")
    budget = 0.0
    time_matched = "BasicUNet" in arms and cfg["competitor_iters"] is None  # it needs the method's training time
    if {"prior", "residual"} & set(arms) or time_matched:
        prior, t_prior = train_prior(train, size, seed, cfg, device)
        budget += t_prior
        pred = LPUWFSampler(num_samples=1)(slo, prior)["pred"]
        save(work, "prior", seed, {**score(pred, batch, train_mean, other_seed=pred), "train_s": t_prior}, pred)
        pred = LPUWFSampler(flip_average=True)(slo, prior)["pred"]  # the four flips of the SLO averaged
        save(work, "prior_flip", seed, {**score(pred, batch, train_mean, other_seed=pred), "train_s": t_prior}, pred)
    if "residual" in arms:
        model, t_res = train_residual(prior, train, size, seed, cfg, device)
        budget += t_res
        sampler = {"num_inference_steps": cfg["steps"], "t_start": cfg["t_start"],
                   "flip_average": cfg["flip_average"]}  # fmt: skip
        for n in (1, 4, 16):
            preds = [LPUWFSampler(num_samples=n, seed=s, **sampler)(slo, model)["pred"] for s in (seed, seed + 1000)]
            res = score(preds[0], batch, train_mean, other_seed=preds[1])
            save(work, f"residual_n{n}", seed, {**res, "train_s": t_prior + t_res}, preds[0])

    def competitor(arm: str, seconds: float, iterations: int | None) -> None:
        loader = train_loader(train, size, cfg["competitor_batch"])
        net, iters, secs = ablation.train_competitor(seed, loader, seconds, device, iterations)
        with torch.no_grad():
            pred = net(slo).clamp(-1, 1)
        save(work, arm, seed, {**score(pred, batch, train_mean, other_seed=pred), "train_s": secs,
                               "iterations": iters}, pred)  # fmt: skip

    # the done-when comparisons first, the extra arms after (a run cut short keeps what matters most)
    if "BasicUNet" in arms:  # the method's training time, or competitor_iters
        competitor("BasicUNet", budget, cfg["competitor_iters"])
    if "prior_band" in arms:  # the same prior trained with the vessel-band term (VesselBandL1Loss)
        band, t_band = train_prior(train, size, seed, {**cfg, "prior_band_weight": cfg["band_arm_weight"]}, device)
        pred = LPUWFSampler(num_samples=1)(slo, band)["pred"]
        save(work, "prior_band", seed, {**score(pred, batch, train_mean, other_seed=pred), "train_s": t_band}, pred)
    if "BasicUNet_iters" in arms:  # the prior's iterations
        competitor("BasicUNet_iters", 0.0, cfg["prior_iters"])
    if "residual" in arms and sweep and seed == min(seeds):
        for steps in (1, 2, 4, 8, 16, 25):
            for t_start in (None, 500, 200):
                p = LPUWFSampler(num_inference_steps=steps, seed=seed, t_start=t_start)(slo, model)["pred"]
                tag = f"residual_steps{steps}" + ("" if t_start is None else f"_t{t_start}")
                save(work, tag, seed, {**score(p, batch, train_mean), "train_s": t_prior + t_res}, p)
    if "small" in arms:
        model, t_small = train_small(work, train, size, seed, device)
        sampler = {"num_inference_steps": 25, "conditioning_scale": SMALL["conditioning_scale"]}
        preds = [LPUWFSampler(seed=s, **sampler)(slo, model)["pred"] for s in (seed, seed + 1000)]
        save(work, "small", seed, {**score(preds[0], batch, train_mean, other_seed=preds[1]), "train_s": t_small},
             preds[0])  # fmt: skip


ORDER = [
    "prior",
    "prior_flip",
    "prior_band",
    "residual_n1",
    "residual_n4",
    "residual_n16",
    "small",
    "BasicUNet",
    "BasicUNet_iters",
]
COLUMNS = [
    ("PSNR", ("scores", "model", "psnr")),
    ("PSNR fov", ("scores", "model", "psnr_fov")),
    ("PSNR lesion", ("scores", "model", "psnr_lesion")),
    ("SSIM", ("scores", "model", "ssim")),
    ("MS-SSIM", ("scores", "model", "ms_ssim")),
    ("spec low", ("spectrum", "low")),
    ("spec mid", ("spectrum", "mid")),
    ("spec high", ("spectrum", "high")),
    ("vessel corr", ("vessel_corr",)),
    ("detail", ("detail",)),
    ("2 seeds", ("sensitivity", "same_input_seed_corr")),
    ("cross-input", ("sensitivity", "cross_input_corr")),
    ("train s", ("train_s",)),
]


def _get(r: dict, path: tuple) -> float:
    for key in path:
        if not isinstance(r, dict) or key not in r or r[key] is None:
            return float("nan")
        r = r[key]
    return float(r)


def table(work: Path) -> str:
    rows: dict[str, list] = {}
    for f in sorted((work / "results").glob("*__*.json")):
        r = json.loads(f.read_text())
        rows.setdefault(r["arm"], []).append(r)
    arms = [a for a in ORDER if a in rows] + sorted(a for a in rows if a not in ORDER)
    lines = ["| arm | seeds | " + " | ".join(c for c, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for arm in arms:
        cells = []
        for name, path in COLUMNS:
            v = np.array([_get(r, path) for r in rows[arm]], float)
            if np.isnan(v).all():
                cells.append("n/a")
            else:
                digits = 0 if name == "train s" else 2
                sd = np.nanstd(v, ddof=1) if np.isfinite(v).sum() > 1 else 0.0
                cells.append(f"{np.nanmean(v):.{digits}f} ± {sd:.{digits}f}")
        lines.append(f"| {arm} | {len(rows[arm])} | " + " | ".join(cells) + " |")
    any_r = rows[arms[0]][0] if arms else None
    if any_r:
        for name in ("constant", "early"):
            s = any_r["scores"].get(name, {})
            cells = [s.get("psnr"), s.get("psnr_fov"), s.get("psnr_lesion"), s.get("ssim"), s.get("ms_ssim")]
            lines.append(f"| *{name} predictor* | | " + " | ".join(
                "n/a" if c is None or np.isnan(c) else f"{c:.2f}" for c in cells) + " |" + " |" * 8)  # fmt: skip
    return "\n".join(lines)


def montage(work: Path, path: Path, seed: int = 0, frames: int = 6) -> None:
    """SLO | each arm | real late, for the first ``frames`` held-out phantoms of one seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = torch.load(work / "results" / "batch.pt", weights_only=False)
    arms = [a for a in ORDER if (work / "results" / f"{a}__{seed}.pt").is_file()]
    cols = ["SLO"] + arms + ["real late"]
    fig, axes = plt.subplots(frames, len(cols), figsize=(1.6 * len(cols), 1.6 * frames))
    preds = [torch.load(work / "results" / f"{a}__{seed}.pt", weights_only=False)["pred"] for a in arms]  # own files
    for i in range(frames):
        images = [batch["slo"][i].permute(1, 2, 0) * 0.5 + 0.5]
        images += [p[i, 0] * 0.5 + 0.5 for p in preds]
        images += [batch["late"][i, 0] * 0.5 + 0.5]
        for j, im in enumerate(images):
            axes[i, j].imshow(im.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(cols[j], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lpuwf_prior_study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--arms", default="prior,residual,BasicUNet,small")
    parser.add_argument("--recipe", default="{}", help="JSON overrides of RECIPE, e.g. '{\"prior_iters\": 600}'")
    parser.add_argument("--sweep", action="store_true", help="also the residual model's step / t_start sweep")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the training loaders")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--figure", type=Path, default=None, help="with --table: write a montage of seed 0")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.table:
        print(table(args.work))
        if args.figure:
            montage(args.work, args.figure)
        return
    cfg = {**RECIPE, **json.loads(args.recipe)}
    WORKERS["n"] = args.workers
    (args.work / "results").mkdir(parents=True, exist_ok=True)
    (args.work / "results" / "recipe.json").write_text(json.dumps({"recipe": cfg, "device": args.device}))
    for seed in args.seeds:
        run_seed(args.work, seed, args.size, args.arms.split(","), cfg, args.device, args.sweep, tuple(args.seeds))
    print(table(args.work))


if __name__ == "__main__":
    main()
