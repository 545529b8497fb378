"""Which diffusion recipe makes the small LPUWF-LDM follow its SLO at CPU scale? Arms side by side, several seeds.

Every arm starts from the same stage-1/2 autoencoder (trained once by the bundle's own commands into
``<work>/bundle``), then trains stage 3 (early phase, MSE) and stage 4 (late phase, CTRD loss) in-process with the
library's :class:`~monai_lpuwf.engines.LatentDiffusionTrainer` on the same phantoms and transforms as the bundle,
generates the held-out phantoms with :class:`~monai_lpuwf.inferers.LPUWFSampler` and scores them beside the
constant-image and early-phase predictors (:func:`monai_lpuwf.metrics.score_with_baselines`), plus the
conditioning gap (denoiser error with the true SLO vs the other items' SLOs) and the input sensitivity of the
outputs (cross-input and cross-seed correlation, :mod:`monai_lpuwf.metrics.sensitivity`).

    OMP_NUM_THREADS=1 python benchmarks/recipe_study.py --work /tmp/recipe --arms eps,v,sample --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/recipe_study.py --work /tmp/recipe --table   # print the collected table

An arm is a named set of overrides (see ``ARMS``); each (arm, seed) result is a JSON file in ``<work>/results`` so
runs can be split over processes and resumed. ``--table`` prints mean +/- sd per arm.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai.data import CacheDataset, DataLoader  # noqa: E402
from monai.networks.schedulers import DDPMScheduler  # noqa: E402
from monai.utils import set_determinism  # noqa: E402

from monai_lpuwf.data import datalist_from_folder, generate_phantoms  # noqa: E402
from monai_lpuwf.engines import LatentDiffusionPrepareBatch, LatentDiffusionTrainer, set_trainable, trainable_parameters  # noqa: E402
from monai_lpuwf.engines.scale_factor import compute_scale_factor  # noqa: E402
from monai_lpuwf.inferers import LPUWFSampler  # noqa: E402
from monai_lpuwf.losses import CTRDLoss  # noqa: E402
from monai_lpuwf.metrics import mean_intensity, score_with_baselines  # noqa: E402
from monai_lpuwf.metrics.sensitivity import conditioning_gap, input_sensitivity  # noqa: E402
from monai_lpuwf.networks import ModelFile, build_model  # noqa: E402
from monai_lpuwf.noise import LowFrequencyEnhancedNoise  # noqa: E402
from monai_lpuwf.transforms import uwf_train_transforms  # noqa: E402

# the bundle's quick-start schedule (bundle/configs/recipes/cpu.json) and the small preset's prediction type
BASE = {
    "prediction_type": "sample",
    "iters3": 900,
    "iters4": 300,
    "lr3": 1e-3,
    "lr4": 5e-4,
    "warmup": 50,
    "batch": 4,
    "noise_offset": 0.1,
    "ctrd_alpha": 0.25,
    "conditioning_scale": 1.0,
    "steps": 25,
    "zero_init": True,
    "controlnet_lr_mult": 1.0,
}
ARMS: dict[str, dict] = {
    "eps": {"prediction_type": "epsilon"},
    "v": {"prediction_type": "v_prediction"},
    "sample": {"prediction_type": "sample"},
    "v_lr3e-4": {"prediction_type": "v_prediction", "lr3": 3e-4, "lr4": 2e-4},
    "v_long": {"prediction_type": "v_prediction", "iters3": 1800, "iters4": 600},
    "eps_long": {"prediction_type": "epsilon", "iters3": 1800, "iters4": 600},
    "sample_long": {"prediction_type": "sample", "iters3": 1800, "iters4": 600},
    # the ControlNet's output convolutions at PyTorch's default init instead of zeros (the U-Net is not pretrained)
    "sample_nozero": {"prediction_type": "sample", "zero_init": False},
    # the ControlNet at k times the learning rate (the bundle's --lr_multipliers "{'controlnet': k}")
    "sample_cnlr3": {"prediction_type": "sample", "controlnet_lr_mult": 3.0},
    "sample_cnlr6": {"prediction_type": "sample", "controlnet_lr_mult": 6.0},
    "sample_cnlr12": {"prediction_type": "sample", "controlnet_lr_mult": 12.0},
}


def prepare_data(work: Path, size: int, num_train: int, num_val: int) -> tuple[list, list]:
    data = work / f"phantoms_{size}"
    if not (data / "val").is_dir():
        generate_phantoms(data / "train", num=num_train, size=(size, size), seed=0)
        generate_phantoms(data / "val", num=num_val, size=(size, size), seed=1, save_masks=True)
    return datalist_from_folder(data / "train"), datalist_from_folder(data / "val")


def train_autoencoder(work: Path, size: int) -> Path:
    """Stages 1 and 2 with the bundle's own commands (as bundle/scripts/quickstart.sh runs them)."""
    bundle_root = work / "bundle"
    final = bundle_root / "models" / "model_condition_encoder.pt"
    if final.is_file():
        return final
    common = [
        "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf",
        "--bundle_root", str(bundle_root), "--dataset_dir", str(work / f"phantoms_{size}"),
        "--preset", "small", "--image_size", f"[{size},{size}]", "--log_interval", "1000",
    ]  # fmt: skip
    stages = [
        (["configs/common.json", "configs/train_autoencoder.json"], ["--max_epochs", "20", "--val_interval", "20"]),
        (
            ["configs/common.json", "configs/train_autoencoder.json", "configs/train_condition_encoder.json"],
            ["--max_epochs", "5", "--val_interval", "5", "--adversarial_warmup_epochs", "1"],
        ),
    ]
    for configs, extra in stages:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(configs), "--lr", "5e-4"]
        subprocess.run(cmd + common + extra, cwd=ROOT / "bundle", check=True)
    return final


def vessel_mask(early: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
    """Vessel pixels of an early phase: the brightest 10 % of its white top-hat (image minus a 5x5 opening) in the
    field of view, i.e. thin bright structures rather than the disc or blobs."""
    early = torch.as_tensor(early)
    opened = torch.nn.functional.max_pool2d(-torch.nn.functional.max_pool2d(-early, 5, 1, 2), 5, 1, 2)
    fov = torch.as_tensor(fov)
    tophat = (early - opened) * fov
    thr = torch.quantile(tophat.flatten(1), 0.9, dim=1).view(-1, 1, 1, 1)
    return (tophat > thr) & (fov > 0)


def autoencoder_report(model, batch: dict) -> dict:
    """Reconstruction PSNR of the late and early phases (whole frame and vessel pixels), with and without the
    gated SLO features: do vessels survive the autoencoder at this image size?"""
    out = {}
    vessels = vessel_mask(batch["early"], batch["fov"])
    with torch.no_grad():
        for key in ("early", "late"):
            for cond_name, cond in (("", None), ("_gce", batch["slo"])):
                recon = model.autoencoder.reconstruct(batch[key], cond=cond).clamp(-1, 1)
                err = (recon - batch[key]) ** 2
                out[f"{key}{cond_name}_psnr"] = float(10 * torch.log10(4 / err.mean()))
                out[f"{key}{cond_name}_vessel_psnr"] = float(10 * torch.log10(4 / err[vessels].mean()))
    return out


def make_loader(items: list, size: int, augment: bool, batch: int, shuffle: bool, num_workers: int = 0) -> DataLoader:
    """The training transforms on cached phantoms; ``num_workers`` > 0: augmentation in persistent worker processes
    (on a GPU the augmentation, not the network, bounds the iteration rate)."""
    xform = uwf_train_transforms(spatial_size=size, with_late=True, augment=augment)
    ds = CacheDataset(items, xform, cache_rate=1.0, progress=False)
    return DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=num_workers,
                      persistent_workers=num_workers > 0)  # fmt: skip


def train_stage(model, loader, cfg: dict, fa_key: str, iters: int, lr: float, loss, device: str = "cpu") -> float:
    scheduler = DDPMScheduler(**model.schedule)
    set_trainable(model, ["unet", "controlnet"], [])
    lr_multipliers = {"controlnet": cfg["controlnet_lr_mult"]} if cfg["controlnet_lr_mult"] != 1.0 else None
    opt = torch.optim.Adam(trainable_parameters(model, lr_multipliers=lr_multipliers, lr=lr), lr=lr)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: min(1.0, (it + 1) / max(1, cfg["warmup"])))
    prepare = LatentDiffusionPrepareBatch(
        num_train_timesteps=scheduler.num_train_timesteps,
        encoder=model.encode_latents,
        image_key=fa_key,
        noise=LowFrequencyEnhancedNoise(scale=cfg["noise_offset"]) if cfg["noise_offset"] > 0 else None,
        weight_key="ctrd" if fa_key == "late" else None,
        prediction_type=cfg["prediction_type"],
        scheduler=scheduler,
    )
    trainer = LatentDiffusionTrainer(
        device=device,
        max_epochs=1,
        epoch_length=iters,
        train_data_loader=loader,  # Ignite restarts the loader when epoch_length outlasts it
        network=model,
        optimizer=opt,
        loss_function=loss,
        scheduler=scheduler,
        prepare_batch=prepare,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: warm.step())
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    trainer.run()
    return float(np.mean(losses[-50:]))


def run_arm(work: Path, arm: str, seed: int, size: int, train: list, val: list, ae_path: Path) -> dict:
    cfg = {**BASE, **ARMS[arm]}
    set_determinism(seed)
    torch.manual_seed(seed)
    schedule = {"prediction_type": cfg["prediction_type"]}
    model = build_model("small", schedule=schedule)
    model.load_state_dict(ModelFile.load(ae_path).weights)
    if not cfg["zero_init"]:  # ControlNet output convolutions at PyTorch's default init, not zeros
        cn = model.controlnet
        for m in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
            for conv in m.modules():
                if isinstance(conv, torch.nn.Conv2d):
                    conv.reset_parameters()
    train_loader = make_loader(train, size, augment=True, batch=cfg["batch"], shuffle=True)
    val_loader = make_loader(val, size, augment=False, batch=len(val), shuffle=False)
    model.scale_factor.fill_(compute_scale_factor(model.autoencoder, train_loader, "early", num_batches=8))
    t0 = time.time()
    loss3 = train_stage(model, train_loader, cfg, "early", cfg["iters3"], cfg["lr3"], torch.nn.MSELoss())
    t3 = time.time() - t0
    loss4 = train_stage(model, train_loader, cfg, "late", cfg["iters4"], cfg["lr4"], CTRDLoss(alpha=cfg["ctrd_alpha"]))
    t4 = time.time() - t0 - t3
    batch = next(iter(val_loader))
    ae_report = autoencoder_report(model, batch)
    train_mean = mean_intensity(b["late"] for b in make_loader(train, size, False, 16, False))
    model.eval()
    gap = conditioning_gap(model, model.encode_latents(batch["late"], sample=False), batch["slo"], seed=seed)
    preds = {}
    for s in (seed, seed + 100):
        sampler = LPUWFSampler(
            "ddim", num_inference_steps=cfg["steps"], seed=s, conditioning_scale=cfg["conditioning_scale"]
        )
        preds[s] = sampler(batch["slo"], model)["pred"]
    pred = preds[seed]
    scores = score_with_baselines(
        pred, batch["late"], constant_value=train_mean, early=batch["early"], fov=batch["fov"], diff_map=batch["ctrd"]
    )
    sens = input_sensitivity(pred, batch["late"], fov=batch["fov"], other_seed=preds[seed + 100])
    result = {
        "arm": arm,
        "seed": seed,
        "config": cfg,
        "train_s": {"stage3": t3, "stage4": t4},
        "final_loss": {"stage3": loss3, "stage4": loss4},
        "gap": gap,
        "autoencoder": ae_report,
        "sensitivity": sens,
        "scores": {
            pred_name: {k: float(v.mean()) for k, v in cols.items() if k.startswith(("psnr", "ms_ssim"))}
            for pred_name, cols in scores.items()
        },
    }
    out = work / "results" / f"{arm}__{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    torch.save(
        {
            "pred": pred,
            "slo": batch["slo"],
            "late": batch["late"],
            "early": batch["early"],
            "model": model.state_dict(),
            "config": model.config,
        },
        work / "results" / f"{arm}__{seed}.pt",
    )
    return result


def table(work: Path) -> str:
    rows: dict[str, list] = {}
    for f in sorted((work / "results").glob("*.json")):
        r = json.loads(f.read_text())
        rows.setdefault(r["arm"], []).append(r)
    cols = [
        ("psnr", lambda r: r["scores"]["model"]["psnr"]),
        ("psnr_fov", lambda r: r["scores"]["model"]["psnr_fov"]),
        ("psnr_lesion", lambda r: r["scores"]["model"]["psnr_lesion"]),
        ("ms_ssim", lambda r: r["scores"]["model"]["ms_ssim"]),
        ("gap@200", lambda r: r["gap"]["200"]["ratio"]),
        ("gap@600", lambda r: r["gap"]["600"]["ratio"]),
        ("cross_in", lambda r: r["sensitivity"]["cross_input_corr"]),
        ("seed_corr", lambda r: r["sensitivity"]["same_input_seed_corr"]),
        ("own-other", lambda r: r["sensitivity"]["own_minus_other_corr"]),
        ("train_s", lambda r: r["train_s"]["stage3"] + r["train_s"]["stage4"]),
    ]
    lines = ["| arm | n | " + " | ".join(c for c, _ in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for arm, rs in rows.items():
        cells = []
        for _, get in cols:
            vals = np.array([get(r) for r in rs], float)
            cells.append(f"{vals.mean():.3f} +/- {vals.std(ddof=1) if len(vals) > 1 else 0:.3f}")
        lines.append(f"| {arm} | {len(rs)} | " + " | ".join(cells) + " |")
    any_r = next(iter(rows.values()))[0] if rows else None
    if any_r:
        ref = any_r["sensitivity"]
        for name in ("constant", "early"):
            s = any_r["scores"].get(name)
            if s:
                lines.append(
                    f"| *{name} predictor* | - | {s['psnr']:.3f} | {s['psnr_fov']:.3f} | {s['psnr_lesion']:.3f} | "
                    f"{s['ms_ssim']:.3f} | | | | | | |"
                )
        lines.append(f"| *real late images* | - | | | | | | | {ref['real_cross_input_corr']:.3f} | | | |")
    return "\n".join(lines)


SWEEP = [
    {"steps": 25, "conditioning_scale": 1.0},
    {"steps": 10, "conditioning_scale": 1.0},
    {"steps": 50, "conditioning_scale": 1.0},
    {"steps": 25, "conditioning_scale": 1.5},
    {"steps": 25, "conditioning_scale": 2.0},
]


def sampler_sweep(work: Path, size: int, val: list) -> str:
    """Sampling settings on the trained checkpoints of the study (files saved with their weights)."""
    from monai_lpuwf.networks import LPUWFModel

    val_loader = make_loader(val, size, augment=False, batch=len(val), shuffle=False)
    batch = next(iter(val_loader))
    rows = []
    for f in sorted((work / "results").glob("*.pt")):
        saved = torch.load(f, map_location="cpu", weights_only=False)
        if "model" not in saved:
            continue
        model = LPUWFModel.from_config(saved["config"])
        model.load_state_dict(saved["model"])
        model.eval()
        for setting in SWEEP:
            preds = [
                LPUWFSampler("ddim", num_inference_steps=setting["steps"], seed=s,
                             conditioning_scale=setting["conditioning_scale"])(batch["slo"], model)["pred"]
                for s in (0, 100)
            ]  # fmt: skip
            sc = score_with_baselines(preds[0], batch["late"], early=batch["early"], fov=batch["fov"],
                                      diff_map=batch["ctrd"])["model"]  # fmt: skip
            sens = input_sensitivity(preds[0], batch["late"], other_seed=preds[1])
            rows.append((f.stem, setting, float(sc["psnr"].mean()), float(sc["psnr_fov"].mean()),
                         float(sc["psnr_lesion"].mean()), sens["cross_input_corr"],
                         sens["same_input_seed_corr"]))  # fmt: skip
    lines = ["| run | DDIM steps | conditioning scale | PSNR | PSNR fov | PSNR lesion | cross-input | seeds |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for stem, st, *vals in rows:
        lines.append(
            f"| {stem} | {st['steps']} | {st['conditioning_scale']} | " + " | ".join(f"{v:.3f}" for v in vals) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lpuwf_recipe"))
    parser.add_argument("--arms", default="eps,v")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num_train", type=int, default=48)
    parser.add_argument("--num_val", type=int, default=16)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="sampling settings on the saved checkpoints")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.table:
        print(table(args.work))
        return
    train, val = prepare_data(args.work, args.size, args.num_train, args.num_val)
    if args.sweep:
        print(sampler_sweep(args.work, args.size, val))
        return
    ae = train_autoencoder(args.work, args.size)
    for seed in args.seeds:
        for arm in args.arms.split(","):
            if (args.work / "results" / f"{arm}__{seed}.json").is_file():
                continue
            r = run_arm(args.work, arm, seed, args.size, train, val, ae)
            print(json.dumps({k: r[k] for k in ("arm", "seed", "train_s", "gap", "sensitivity", "scores")}), flush=True)
    print(table(args.work))


if __name__ == "__main__":
    main()
