"""The paper's components, all eight combinations: gated SLO encoder (GCE) x CTRD loss x low-frequency noise.

The paper (arXiv 2409.00726, Table 3) removes each component alone; this runs the full 2^3 design on phantoms
with several seeds, beside the trivial predictors and a plain supervised translator (MONAI ``BasicUNet``,
SLO -> late phase, L1 loss) trained on the same data for the same CPU time as one diffusion arm.

Per seed: stage 3 (early phase, Gaussian noise) is trained once; stage 4 (late phase) is trained four times, with and
without the CTRD term (``alpha`` 0.25 vs 0) and with and without the low-frequency enhanced noise (offset noise 0.1 vs
Gaussian); each stage-4 model is sampled once and its latents decoded twice, with the gated SLO features and
without them (``cond=None``: the stage-1 decoder, which is what the paper's "w/o GCE" arm is). The recipe
otherwise is the one the bundle's quick start uses (``recipe_study.BASE`` overridden by ``--recipe``).

    OMP_NUM_THREADS=1 python benchmarks/ablation.py --work /tmp/ablation --seeds 0 1 2
    python benchmarks/ablation.py --work /tmp/ablation --table      # mean +/- sd table (markdown) + figure

Scores (mean over the held-out phantoms, then mean +/- sd over seeds): PSNR of the whole frame, of the field
of view and of the lesion region (top 10 % of |early - late| in the field of view), SSIM (MS-SSIM needs frames
of at least 161 pixels; it is reported when ``--size`` allows), and the log-spectral error against the real late
phase in the low, mid and high thirds of the frequency range.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe_study as rs
from monai.networks.nets import BasicUNet
from monai.utils import set_determinism

from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.losses import CTRDLoss
from monai_lpuwf.metrics import (
    band_log_spectral_distance,
    mean_intensity,
    radial_power_spectrum,
    score_with_baselines,
)
from monai_lpuwf.networks import ModelFile, build_model

COMBOS = [(g, c, n) for g in (0, 1) for c in (0, 1) for n in (0, 1)]


def arm_name(gce: int, ctrd: int, lf: int) -> str:
    return f"GCE{'+' if gce else '-'} CTRD{'+' if ctrd else '-'} LF{'+' if lf else '-'}"


def scores_of(pred: torch.Tensor, batch: dict, train_mean: float) -> dict:
    s = score_with_baselines(
        pred, batch["late"], constant_value=train_mean, early=batch["early"], fov=batch["fov"], diff_map=batch["ctrd"]
    )
    out = {}
    for name, cols in s.items():
        out[name] = {k: float(v.nanmean()) for k, v in cols.items() if k.split("_")[0] in ("psnr", "ssim", "ms")}
    return out


def spectrum_bands(pred: torch.Tensor, late: torch.Tensor) -> dict:
    freqs, p = radial_power_spectrum(pred)
    _, r = radial_power_spectrum(late)
    return band_log_spectral_distance(p, r, freqs)


def run_seed(work: Path, seed: int, size: int, train: list, val: list, ae_path: Path, recipe: dict) -> None:
    out_dir = work / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = {**rs.BASE, **recipe, "noise_offset": 0.0}
    set_determinism(seed)
    model = build_model("small", schedule={"prediction_type": cfg["prediction_type"]})
    model.load_state_dict(ModelFile.load(ae_path).weights)
    train_loader = rs.make_loader(train, size, augment=True, batch=cfg["batch"], shuffle=True)
    val_loader = rs.make_loader(val, size, augment=False, batch=len(val), shuffle=False)
    model.scale_factor.fill_(rs.compute_scale_factor(model.autoencoder, train_loader, "early", num_batches=8))
    batch = next(iter(val_loader))
    train_mean = mean_intensity(b["late"] for b in rs.make_loader(train, size, False, 16, False))
    t0 = time.time()
    rs.train_stage(model, train_loader, cfg, "early", cfg["iters3"], cfg["lr3"], torch.nn.MSELoss())
    t3 = time.time() - t0
    stage3 = {k: v.clone() for k, v in model.state_dict().items()}
    for ctrd in (0, 1):
        for lf in (0, 1):
            done = [out_dir / f"{arm_name(g, ctrd, lf)}__{seed}.json" for g in (0, 1)]
            if all(p.is_file() for p in done):
                continue
            model.load_state_dict(stage3)
            set_determinism(seed + 1)
            arm_cfg = {**cfg, "noise_offset": rs.BASE["noise_offset"] if lf else 0.0}
            t1 = time.time()
            loss = CTRDLoss(alpha=cfg["ctrd_alpha"] if ctrd else 0.0)
            rs.train_stage(model, train_loader, arm_cfg, "late", cfg["iters4"], cfg["lr4"], loss)
            t4 = time.time() - t1
            for gce in (0, 1):
                sampler = LPUWFSampler("ddim", num_inference_steps=cfg["steps"], seed=seed)
                if not gce:  # decode without the gated SLO features: the stage-1 FA decoder
                    encoder, model.autoencoder.condition_encoder = model.autoencoder.condition_encoder, None
                try:
                    pred = sampler(batch["slo"], model)["pred"]
                finally:
                    if not gce:
                        model.autoencoder.condition_encoder = encoder
                result = {
                    "arm": arm_name(gce, ctrd, lf),
                    "seed": seed,
                    "train_s": t3 + t4,
                    "scores": scores_of(pred, batch, train_mean),
                    "spectrum": spectrum_bands(pred, batch["late"]),
                    "spectrum_baselines": {
                        "early": spectrum_bands(batch["early"], batch["late"]),
                        "constant": spectrum_bands(torch.full_like(pred, train_mean) + 1e-3 * torch.randn_like(pred),
                                                   batch["late"]),
                    },
                }  # fmt: skip
                (out_dir / f"{result['arm']}__{seed}.json").write_text(json.dumps(result, indent=1))
                torch.save({"pred": pred}, out_dir / f"{result['arm']}__{seed}.pt")
                print(json.dumps({k: result[k] for k in ("arm", "seed", "train_s")}), flush=True)
    budget = t3 + t4  # the competitor gets the CPU time of one diffusion arm
    if not (out_dir / f"BasicUNet__{seed}.json").is_file():
        run_competitor(work, seed, train_loader, batch, train_mean, budget)


def train_competitor(
    seed: int, train_loader, budget_s: float, device: str = "cpu", max_iters: int | None = None
) -> tuple[torch.nn.Module, int, float]:
    """MONAI BasicUNet, SLO -> late phase, L1, Adam 1e-3, trained for ``budget_s`` seconds (a plain loop: what a
    user writes first), or for ``max_iters`` iterations when given. Returns the network (eval mode), its iterations
    and its training seconds."""
    set_determinism(seed)
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=1, features=(16, 16, 32, 64, 128, 16)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0, iters = time.time(), 0

    def done() -> bool:
        return iters >= max_iters if max_iters is not None else time.time() - t0 >= budget_s

    while not done():
        for b in train_loader:
            loss = (net(b["slo"].to(device)) - b["late"].to(device)).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            iters += 1
            if done():
                break
    if device != "cpu":
        torch.cuda.synchronize()
    return net.eval(), iters, time.time() - t0


def run_competitor(work: Path, seed: int, train_loader, batch: dict, train_mean: float, budget_s: float) -> None:
    """MONAI BasicUNet, SLO -> late phase, L1, Adam 1e-3, trained for ``budget_s`` seconds."""
    net, iters, secs = train_competitor(seed, train_loader, budget_s)
    with torch.no_grad():
        pred = net(batch["slo"]).clamp(-1, 1)
    result = {
        "arm": "BasicUNet",
        "seed": seed,
        "train_s": secs,
        "iterations": iters,
        "scores": scores_of(pred, batch, train_mean),
        "spectrum": spectrum_bands(pred, batch["late"]),
    }
    (work / "results" / f"BasicUNet__{seed}.json").write_text(json.dumps(result, indent=1))
    torch.save({"pred": pred}, work / "results" / f"BasicUNet__{seed}.pt")


COLUMNS = [
    ("PSNR", ("scores", "model", "psnr")),
    ("PSNR fov", ("scores", "model", "psnr_fov")),
    ("PSNR lesion", ("scores", "model", "psnr_lesion")),
    ("SSIM", ("scores", "model", "ssim")),
    ("MS-SSIM", ("scores", "model", "ms_ssim")),
    ("spec low", ("spectrum", "low")),
    ("spec mid", ("spectrum", "mid")),
    ("spec high", ("spectrum", "high")),
]


def _get(r: dict, path: tuple) -> float:
    for key in path:
        r = r[key]
    return float(r)


def table(work: Path) -> str:
    rows: dict[str, list] = {}
    for f in sorted((work / "results").glob("*.json")):
        r = json.loads(f.read_text())
        rows.setdefault(r["arm"], []).append(r)
    order = [arm_name(*c) for c in COMBOS] + ["BasicUNet"]
    lines = ["| arm | seeds | " + " | ".join(c for c, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for arm in [a for a in order if a in rows]:
        cells = []
        for _, path in COLUMNS:
            v = np.array([_get(r, path) for r in rows[arm]], float)
            cells.append(
                "n/a" if np.isnan(v).all() else f"{np.nanmean(v):.2f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0:.2f}"
            )
        lines.append(f"| {arm} | {len(rows[arm])} | " + " | ".join(cells) + " |")
    ref = next((rs_[0] for a, rs_ in rows.items() if a != "BasicUNet"), None)
    if ref:
        for name in ("constant", "early"):
            s = ref["scores"][name]
            spec = ref["spectrum_baselines"][name]
            cells = [s.get("psnr"), s.get("psnr_fov"), s.get("psnr_lesion"), s.get("ssim"), s.get("ms_ssim")]
            cells += [spec["low"], spec["mid"], spec["high"]]
            lines.append(
                f"| *{name} predictor* | | "
                + " | ".join("n/a" if c is None or np.isnan(c) else f"{c:.2f}" for c in cells)
                + " |"
            )
    return "\n".join(lines)


def figure(work: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[str, list] = {}
    for f in sorted((work / "results").glob("*.json")):
        r = json.loads(f.read_text())
        rows.setdefault(r["arm"], []).append(r)
    arms = [arm_name(*c) for c in COMBOS if arm_name(*c) in rows] + (["BasicUNet"] if "BasicUNet" in rows else [])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (label, keys) in zip(axes, COLUMNS[:3]):
        vals = [[_get(r, keys) for r in rows[a]] for a in arms]
        ax.errorbar(range(len(arms)), [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], fmt="o",
                    color="#2a5fa0", capsize=3)  # fmt: skip
        for i, v in enumerate(vals):  # the seeds themselves
            ax.plot([i] * len(v), v, ".", color="#9ab", zorder=0)
        ref = next(iter(rows[arms[0]]))["scores"]
        for name, style in (("constant", ":"), ("early", "--")):
            ax.axhline(_get(ref, (name, keys[-1])), ls=style, color="k", label=f"{name} predictor")
        ax.set_xticks(range(len(arms)), arms, rotation=60, ha="right", fontsize=7)
        ax.set_title(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lpuwf_ablation"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--num_train", type=int, default=48)
    parser.add_argument("--num_val", type=int, default=16)
    parser.add_argument("--recipe", default="{}", help="JSON overrides of recipe_study.BASE, e.g. '{\"iters3\": 600}'")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.table:
        print(table(args.work))
        if args.figure:
            figure(args.work, args.figure)
        return
    train, val = rs.prepare_data(args.work, args.size, args.num_train, args.num_val)
    ae = rs.train_autoencoder(args.work, args.size)
    for seed in args.seeds:
        run_seed(args.work, seed, args.size, train, val, ae, json.loads(args.recipe))
    print(table(args.work))


if __name__ == "__main__":
    main()
