# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quick start: phantoms -> registration -> training -> generation -> evaluation
#
# LPUWF-LDM generates the late-phase ultra-wide-field fluorescein angiogram (UWF-FA) of an eye from its UWF
# scanning-laser ophthalmoscopy photograph (UWF-SLO). This notebook runs the whole path on synthetic phantoms, on
# a CPU, in a few minutes:
#
# 1. make a small data set of phantom triplets (SLO, early FA, late FA) in the authors' file naming;
# 2. load a triplet and register the late FA onto the early FA with elastix;
# 3. train the `small` preset briefly with the MONAI bundle's four training stages;
# 4. generate late-phase FA for the validation SLOs with the bundle's `inference.json`;
# 5. score them with the bundle's `evaluate.json` against trivial baselines.
#
# This shows the workflow, not the model's quality: ten epochs on a CPU (about 20 minutes of CPU time, 60
# iterations a stage) teach the autoencoder to reconstruct FA frames (validation PSNR about 20 dB on phantoms) but
# leave the diffusion model untrained, so the generated images are still noise and score below the trivial
# baselines. The paper trains the `paper` preset for days on a GPU (see `bundle/docs/README.md`).
# Run it as a script (`python tutorials/01_quick_start.py`) or open it as a notebook with jupytext. Figures go to
# `$LPUWF_TUTORIAL_OUT` (default `tutorial_outputs/01_quick_start`); `LPUWF_TUTORIAL_QUICK=1` shrinks everything
# to a smoke test (what CI runs).

# %%
import json
import os
import shutil
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # a script: write files, open no window
import matplotlib.pyplot as plt
import numpy as np
from monai.bundle import run as run_bundle
from monai.utils import set_determinism

from monai_lpuwf.data import generate_phantoms
from monai_lpuwf.threads import set_default_threads
from monai_lpuwf.transforms import LoadUWFImaged, RegisterElastixd

QUICK = os.environ.get("LPUWF_TUTORIAL_QUICK", "0") == "1"
OUT = Path(os.environ.get("LPUWF_TUTORIAL_OUT", "tutorial_outputs/01_quick_start")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
# the project's bundle folder: beside tutorials/ (LPUWF_BUNDLE_DIR points elsewhere)
HERE = Path(globals().get("__file__", Path.cwd() / "tutorials" / "01_quick_start.py")).resolve().parent
BUNDLE_SRC = Path(os.environ.get("LPUWF_BUNDLE_DIR", HERE.parent / "bundle"))
set_determinism(seed=0)
set_default_threads()  # the project's CPU thread default (half the CPUs, 1 on 2 cores; OMP_NUM_THREADS overrides)


def save(fig, name):
    path = OUT / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print("figure:", path)


def show(ax, img, title, cmap="gray"):
    """Show a (C, H, W) image in [-1, 1] (3 channels as RGB)."""
    arr = np.asarray(img, dtype=np.float32)
    arr = np.moveaxis(arr, 0, -1) if arr.shape[0] == 3 else arr[0]
    ax.imshow((arr + 1) / 2, cmap=cmap, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


# %% [markdown]
# ## 1. Phantom data in the authors' naming
#
# `generate_phantoms` draws synthetic eyes: an Optos-like pseudo-colour SLO, an early FA and a late FA with
# leaking lesions, saved as `N.png`, `N.1.png`, `N.2.png` (the naming of the authors' data). With
# `misregistration=True` the late FA and the SLO are slightly rotated and shifted, as real frames are.

# %%
SIZE = (192, 224)  # (H, W) of the phantoms; evaluation's MS-SSIM needs at least 176 pixels a side
DATA = OUT / "data"
if DATA.exists():
    shutil.rmtree(DATA)
generate_phantoms(DATA / "train", num=4 if QUICK else 12, size=SIZE, seed=0, misregistration=True)
generate_phantoms(DATA / "val", num=1 if QUICK else 4, size=SIZE, seed=1, misregistration=True)
print(sorted(p.name for p in (DATA / "train").iterdir())[:6], "...")

triplet = LoadUWFImaged(keys=("slo", "early", "late"))(
    {k: str(DATA / "train" / f"1{s}.png") for k, s in (("slo", ""), ("early", ".1"), ("late", ".2"))}
)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
for ax, key in zip(axes, ("slo", "early", "late")):
    show(ax, triplet[key], f"{key} {tuple(triplet[key].shape)}")
save(fig, "1_phantom_triplet.png")

# %% [markdown]
# ## 2. Registration: late FA onto early FA
#
# The CTRD loss weights the pixels where the late phase differs from the early phase, so the two must be aligned.
# `RegisterElastixd` runs elastix (affine, normalised correlation), resamples the moving image onto the fixed
# grid and records the similarity before and after in the metadata.

# %%
registered = RegisterElastixd(fixed_key="early", moving_key="late", mode="affine")(dict(triplet))
info = registered["late"].meta["registration"]
print(f"{info['status']}: NCC {info['similarity_before']:.3f} -> {info['similarity_after']:.3f}")


def checkerboard(a, b, tiles=8):
    """Alternate tiles of two (1, H, W) images: edges that jump at tile borders show misalignment."""
    h, w = a.shape[1:]
    rows, cols = np.indices((h, w))
    mask = ((rows * tiles // h) + (cols * tiles // w)) % 2 == 0
    return np.where(mask, np.asarray(a), np.asarray(b))


fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
show(axes[0], checkerboard(triplet["early"], triplet["late"]), "early | late, before")
show(axes[1], checkerboard(triplet["early"], registered["late"]), f"after ({info['status']})")
save(fig, "2_registration_checkerboard.png")

# %% [markdown]
# ## 3. Train the `small` preset with the bundle
#
# The bundle in `bundle/` trains in four stages, each a `monai.bundle` run of `common.json` plus the stage's
# config, each starting from the previous stage's weights:
#
# | stage | configs | trains |
# | --- | --- | --- |
# | 1 | `train_autoencoder.json` | the FA autoencoder (KL + adversarial + perceptual losses) |
# | 2 | `+ train_condition_encoder.json` | the gated SLO encoder feeding the decoder |
# | 3 | `train_diffusion.json` | the latent U-Net and the SLO ControlNet (early phase) |
# | 4 | `+ train_late.json` | fine-tuning on the late phase with the CTRD loss -> `models/model.pt` |
#
# On the command line each stage is
# `python -m monai.bundle run training --config_file "['configs/common.json','configs/train_autoencoder.json']"
# --meta_file configs/metadata.json --bundle_root . --dataset_dir <data>`; here `monai.bundle.run` does the same
# in this process. The bundle is copied so nothing is written into the project.

# %%
ROOT = OUT / "bundle"
if ROOT.exists():
    shutil.rmtree(ROOT)
shutil.copytree(BUNDLE_SRC / "configs", ROOT / "configs")
STAGES = {
    "autoencoder": ["train_autoencoder.json"],
    "condition_encoder": ["train_autoencoder.json", "train_condition_encoder.json"],
    "diffusion": ["train_diffusion.json"],
    "late": ["train_diffusion.json", "train_late.json"],
}
TRAINING = {
    "dataset_dir": str(DATA),
    "register": not QUICK,  # the late FA onto the early FA, as in step 2, once per item (cached)
    "image_size": [64, 64] if QUICK else [128, 128],
    "train_batch_size": 2,
    "max_epochs": 1 if QUICK else 10,
    "val_interval": 2 if QUICK else 5,  # validation every 5 epochs (never in the 1-epoch smoke test)
    "log_interval": 1,
    "val_inference_steps": 2 if QUICK else 10,
}
if QUICK:  # the preset's topology at toy widths
    TRAINING["network_overrides"] = {
        "autoencoder": {"channels": [8, 8, 8], "norm_num_groups": 4},
        "unet": {"channels": [8, 8, 16, 16], "norm_num_groups": 4, "num_head_channels": 4},
        "controlnet": {"conditioning_embedding_num_channels": [4, 8, 8]},
    }
for stage, configs in STAGES.items():
    print(f"--- stage {stage}")
    run_bundle(
        "training",
        config_file=[str(ROOT / "configs" / c) for c in ["common.json", *configs]],
        meta_file=str(ROOT / "configs" / "metadata.json"),
        bundle_root=str(ROOT),
        **TRAINING,
    )
print(sorted(p.name for p in (ROOT / "models").glob("*.pt")))

# %% [markdown]
# Every stage logs to TensorBoard under `bundle/eval/<stage>` (`tensorboard --logdir <out>/bundle/eval`): the
# training losses, and the last validation PSNR of the stage's reconstruction (stages 1-2) or generation (3-4):

# %%
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

fig, axes = plt.subplots(1, 4, figsize=(13, 2.8), layout="constrained")
for ax, stage in zip(axes, STAGES):
    events = EventAccumulator(str(ROOT / "eval" / stage))
    events.Reload()
    tags = events.Tags()["scalars"]
    loss = [e.value for e in events.Scalars("loss")] if "loss" in tags else []
    ax.plot(range(1, len(loss) + 1), loss, marker="o", ms=3)
    psnr = f", val PSNR {events.Scalars('val_psnr')[-1].value:.1f} dB" if "val_psnr" in tags else ""
    ax.set_title(f"stage {stage}{psnr}", fontsize=9)
    ax.set_xlabel("iteration")
axes[0].set_ylabel("loss")
save(fig, "3_training_losses.png")

# %% [markdown]
# ## 4. Generate the late phase of the validation SLOs
#
# `inference.json` loads `models/model.pt`, runs the latent diffusion sampler (DDIM) on each SLO at its native
# size and writes `<name>_late.png` beside nothing else: inputs are never overwritten.

# %%
GENERATED = OUT / "generated"
if GENERATED.exists():
    shutil.rmtree(GENERATED)
STEPS = 2 if QUICK else 25  # DDIM steps (the bundle default is 50)
run_bundle(
    config_file=str(ROOT / "configs" / "inference.json"),
    bundle_root=str(ROOT),
    input_dir=str(DATA / "val"),
    output_dir=str(GENERATED),
    num_inference_steps=STEPS,
)
outputs = sorted(GENERATED.rglob("*_late.png"))
print([p.name for p in outputs])

load_fa = LoadUWFImaged(keys=("slo", "late", "pred"), modality=("slo", "fa", "fa"))
fig, axes = plt.subplots(len(outputs), 3, figsize=(10, 3.2 * len(outputs)), squeeze=False)
for row, path in zip(axes, outputs):
    name = path.name[: -len("_late.png")]
    item = load_fa({"slo": str(DATA / "val" / f"{name}.png"), "late": str(DATA / "val" / f"{name}.2.png"),
                    "pred": str(path)})  # fmt: skip
    show(row[0], item["slo"], f"SLO {name}")
    show(row[1], item["pred"], "generated late FA")
    show(row[2], item["late"], "real late FA")
save(fig, "4_generated.png")

# %% [markdown]
# ## 5. Evaluate
#
# `evaluate.json` (composed with `inference.json`) generates the validation split again, scores it with PSNR,
# SSIM, MS-SSIM, MSE (whole frame and field of view) and lesion-region scores, and scores two trivial predictors
# beside the model: a constant image (the training set's mean late-FA intensity) and the early FA itself. A model
# is useful where it beats both. FID needs local Inception weights; it is switched off here (`fid=False`).

# %%
REPORT = OUT / "report"
if REPORT.exists():
    shutil.rmtree(REPORT)
run_bundle(
    config_file=[str(ROOT / "configs" / "inference.json"), str(ROOT / "configs" / "evaluate.json")],
    bundle_root=str(ROOT),
    dataset_dir=str(DATA),
    eval_dir=str(REPORT),
    num_inference_steps=STEPS,
    fid=False,
)
summary = json.loads((REPORT / "summary.json").read_text())
scores = summary["scores"]
for predictor, by_metric in scores.items():
    print(f"{predictor:9s} PSNR {by_metric['psnr']['mean']:6.2f} dB  SSIM {by_metric['ssim']['mean']:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for ax, metric in zip(axes, ("psnr", "ssim")):
    names = list(scores)
    ax.bar(names, [scores[p][metric]["mean"] for p in names], color=["C0", "C7", "C1"][: len(names)])
    ax.set_title(f"{metric} (validation mean)", fontsize=9)
save(fig, "5_scores.png")
print("the report's own figures:", sorted(p.name for p in REPORT.glob("*.png")))
