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
# # The UWF transforms inside an existing MONAI pipeline
#
# Every piece of monai-lpuwf's data handling is a MONAI dictionary transform (`...d`, with `keys` and
# `allow_missing_keys`), working on `MetaTensor`s, so it composes with MONAI's own transforms, datasets and data
# loaders. This notebook builds a training pipeline by hand in a plain `monai.transforms.Compose`, caches it
# with `CacheDataset`, batches it with `DataLoader`, shows the ready-made equivalent
# (`uwf_train_transforms`), and the invertible inference preprocessing (`uwf_inference_transforms` + `Invertd`).
#
# Figures go to `$LPUWF_TUTORIAL_OUT` (default `tutorial_outputs/02_transforms`); `LPUWF_TUTORIAL_QUICK=1` makes
# everything small (what CI runs).

# %%
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # a script: write files, open no window
import matplotlib.pyplot as plt
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, EnsureTyped, Invertd, RandFlipd, Resized
from monai.utils import first, set_determinism

from monai_lpuwf.data import datalist_from_folder, generate_phantoms
from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.threads import set_default_threads
from monai_lpuwf.transforms import (
    CrossTemporalDifferenced,
    FieldOfViewd,
    LoadUWFImaged,
    RandRotateCropd,
    UnsharpMaskd,
    uwf_inference_transforms,
    uwf_train_transforms,
)

QUICK = os.environ.get("LPUWF_TUTORIAL_QUICK", "0") == "1"
OUT = Path(os.environ.get("LPUWF_TUTORIAL_OUT", "tutorial_outputs/02_transforms")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
set_determinism(seed=0)
set_default_threads()  # the project's CPU thread default (OMP_NUM_THREADS overrides it)


def save(fig, name):
    path = OUT / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print("figure:", path)


def show(ax, img, title, vmin=-1.0, vmax=1.0):
    """Show a (C, H, W) tensor: 3 channels as RGB, 1 channel in grey, mapped from [vmin, vmax]."""
    arr = np.asarray(img, dtype=np.float32)
    arr = np.moveaxis(arr, 0, -1) if arr.shape[0] == 3 else arr[0]
    ax.imshow(np.clip((arr - vmin) / (vmax - vmin), 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


# %% [markdown]
# ## Data and a datalist
#
# A folder of triplets in the authors' naming (`N.png` SLO, `N.1.png` early FA, `N.2.png` late FA) becomes a
# MONAI-style datalist of dictionaries with `datalist_from_folder`. The keys are the project's vocabulary,
# `monai_lpuwf.keys.UWFKeys`.

# %%
DATA = OUT / "data"
generate_phantoms(DATA, num=4 if QUICK else 8, size=(150, 180), seed=0, overwrite=True)
datalist = datalist_from_folder(DATA)
print(len(datalist), "items; keys:", sorted(datalist[0]), "; vocabulary:", [k.value for k in UWFKeys])

# %% [markdown]
# ## A hand-written pipeline in a plain `Compose`
#
# Loading (rows-first `(C, H, W)` in [-1, 1], SLO with 3 channels, FA with 1), SLO sharpening, MONAI's resize,
# the field of view of the FA frames, the cross-temporal difference (CTRD) map that weights the training loss,
# then MONAI's random augmentations, applied identically to all keys of an item.

# %%
SIZE = (96, 96) if QUICK else (128, 128)
IMAGES = ["slo", "early", "late"]
ALL = IMAGES + ["fov", "ctrd"]
pipeline = Compose(
    [
        LoadUWFImaged(keys=IMAGES),
        UnsharpMaskd(keys="slo", radius=2.0, amount=1.0),
        Resized(keys=IMAGES, spatial_size=[int(s * 1.125) for s in SIZE], mode="bilinear", anti_aliasing=True),
        FieldOfViewd(keys=["early", "late"], mask_key="fov"),
        CrossTemporalDifferenced("early", "late", "ctrd", fov_key="fov"),
        # everything above is deterministic: CacheDataset stores its result; the random part runs every epoch
        # rotation +/-5 deg and a random crop, resampling only the crop (what RandRotated + RandSpatialCropd give)
        RandRotateCropd(keys=ALL, roi_size=SIZE, rotate_range=np.deg2rad(5),
                        mode=["bilinear"] * 3 + ["nearest", "bilinear"], padding_mode=["border"] * 3 + ["zeros"] * 2),
        RandFlipd(keys=ALL, prob=0.5, spatial_axis=1),
        EnsureTyped(keys=ALL, dtype=torch.float32),
    ]
)  # fmt: skip
dataset = CacheDataset(datalist, transform=pipeline, cache_rate=1.0, num_workers=0, progress=False)
loader = DataLoader(dataset, batch_size=2, shuffle=True, num_workers=0)
batch = first(loader)
for key in ALL:
    print(f"{key:6s} {tuple(batch[key].shape)}  [{float(batch[key].min()):+.2f}, {float(batch[key].max()):+.2f}]")

fig, axes = plt.subplots(2, 5, figsize=(13, 5.5))
for row, i in zip(axes, range(2)):
    for ax, key in zip(row, ALL):
        lo, hi = (0.0, 1.0) if key in ("fov", "ctrd") else (-1.0, 1.0)
        show(ax, batch[key][i], f"{key} {tuple(batch[key][i].shape)}", lo, hi)
save(fig, "1_batch_from_compose.png")

# %% [markdown]
# The loaded tensors keep their MONAI metadata (source file, value range, bit depth) and the list of applied
# operations, so MONAI can invert the spatial ones:

# %%
item = dataset[0]
print({k: item["slo"].meta[k] for k in ("filename_or_obj", "value_range", "bit_depth", "modality")})
print([op["class"] for op in item["slo"].applied_operations])

# %% [markdown]
# ## The same, ready-made
#
# `uwf_train_transforms` is this pipeline packaged (with optional elastix registration of the late FA onto the
# early FA, `register=True`); the bundle's training configs use it. It returns a plain `Compose`, so it drops into
# any MONAI dataset.

# %%
preset = uwf_train_transforms(spatial_size=SIZE, register=False)
print([type(t).__name__ for t in preset.transforms])
preset_batch = first(DataLoader(CacheDataset(datalist, transform=preset, progress=False), batch_size=2))
print({k: tuple(v.shape) for k, v in preset_batch.items() if isinstance(v, torch.Tensor)})

# %% [markdown]
# ## Inference preprocessing and `Invertd`
#
# Generation works on whole native frames of any size: `uwf_inference_transforms` pads the SLO to a multiple of
# the network's size divisor, and `monai.transforms.Invertd` crops the network's output back to the SLO's size.
# Here the "network output" is a stand-in (the SLO's green channel), to show the shapes and the alignment.

# %%
pre = uwf_inference_transforms(divisor=32)
sample = pre({"slo": datalist[0]["slo"]})
padded = sample["slo"]
sample["pred"] = padded[1:2].clone()  # any (1, H', W') output on the padded grid
restored = Invertd(keys="pred", transform=pre, orig_keys="slo")(sample)["pred"]
native = LoadUWFImaged(keys="slo")({"slo": datalist[0]["slo"]})["slo"]
print("native", tuple(native.shape), "-> padded", tuple(padded.shape), "-> inverted", tuple(restored.shape))
assert restored.shape[1:] == native.shape[1:]

fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
show(axes[0], native, f"native SLO {tuple(native.shape[1:])}")
show(axes[1], padded, f"padded to /32 {tuple(padded.shape[1:])}")
show(axes[2], restored, f"output inverted {tuple(restored.shape[1:])}")
save(fig, "2_inference_padding_inverted.png")
