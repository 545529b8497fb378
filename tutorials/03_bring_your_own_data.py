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
# # Bring your own data: naming, datalists and registration QC
#
# LPUWF-LDM trains on triplets of one eye: a UWF-SLO photograph, an early-phase and a late-phase UWF-FA frame.
# This notebook shows the two ways to hand them to the project (a folder in the authors' naming, or a datalist
# file), checks that they load as expected, and registers the frames with elastix, with the quality-control
# figures to look at before training: late FA onto early FA (what the CTRD loss needs) and SLO onto early FA.
#
# Data: the folder in `$LPUWF_DATA_DIR`; else the project's real samples in `../shared/uwf-samples` when present;
# else synthetic phantoms written in the same layout. Figures go to `$LPUWF_TUTORIAL_OUT` (default
# `tutorial_outputs/03_own_data`); `LPUWF_TUTORIAL_QUICK=1` checks a single triplet (what CI runs).

# %%
import csv
import os
import sys
import warnings
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # a script: write files, open no window
import matplotlib.pyplot as plt
import numpy as np
from scipy.ndimage import gaussian_filter

from monai_lpuwf.data import datalist_from_file, datalist_from_folder, generate_phantoms, write_datalist
from monai_lpuwf.threads import set_default_threads
from monai_lpuwf.transforms import FieldOfView, LoadUWFImaged, RegisterElastixd

set_default_threads()  # the project's CPU thread default (OMP_NUM_THREADS overrides it)
QUICK = os.environ.get("LPUWF_TUTORIAL_QUICK", "0") == "1"
OUT = Path(os.environ.get("LPUWF_TUTORIAL_OUT", "tutorial_outputs/03_own_data")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
HERE = Path(globals().get("__file__", Path.cwd() / "tutorials" / "03_bring_your_own_data.py")).resolve().parent
SAMPLES = HERE.parent.parent / "shared" / "uwf-samples"

if os.environ.get("LPUWF_DATA_DIR"):
    DATA, SOURCE = Path(os.environ["LPUWF_DATA_DIR"]), "your folder"
elif (SAMPLES / "train").is_dir():
    DATA, SOURCE = SAMPLES, "the real samples"
else:  # phantoms in the authors' layout and format: train/ and val/, 24-bit BMPs, FA stored as grey RGB
    DATA, SOURCE = OUT / "phantom_data", "phantoms"
    generate_phantoms(DATA / "train", num=3, size=(340, 426), seed=0, misregistration=True, ext="bmp",
                      fa_as_rgb=True, overwrite=True)  # fmt: skip
    generate_phantoms(DATA / "val", num=2, size=(340, 426), seed=1, misregistration=True, ext="bmp",
                      fa_as_rgb=True, overwrite=True)  # fmt: skip
print(f"data: {DATA} ({SOURCE})")


def save(fig, name):
    path = OUT / name
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print("figure:", path)


def unit(img):
    """(C, H, W) in [-1, 1] -> (H, W) or (H, W, 3) in [0, 1] for display."""
    arr = (np.asarray(img, dtype=np.float32) + 1) / 2
    return np.moveaxis(arr, 0, -1) if arr.shape[0] == 3 else arr[0]


# %% [markdown]
# ## 1. The authors' naming: a folder of triplets
#
# | file | content |
# | --- | --- |
# | `N.bmp` (or `.png`, `.tif`, `.dcm`, `.nii.gz`, ...) | UWF-SLO, pseudo-colour RGB |
# | `N.1.bmp` | early-phase UWF-FA |
# | `N.2.bmp` | late-phase UWF-FA |
#
# `N` is any name; sub-folders `train/` and `val/` (as in the authors' `data/` folder) become the bundle's
# training and validation splits. `datalist_from_folder` finds the triplets and says which files are missing.

# %%
items = datalist_from_folder(DATA)
splits = {}
for item in items:
    splits.setdefault(Path(item["slo"]).parent.name, []).append(Path(item["slo"]).name)
print(dict(splits))

# %% [markdown]
# ## 2. Or a datalist file
#
# Data that does not follow the naming is described in a CSV (columns `slo`, `early`, `late`) or a decathlon-style
# JSON (`{"training": [...], "validation": [...]}`, what `monai.data.load_decathlon_datalist` reads). Paths
# relative to the list's folder keep the list valid when data and list move together.

# %%
csv_file = OUT / "my_triplets.csv"
with open(csv_file, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["slo", "early", "late"])
    writer.writeheader()
    writer.writerows(items)
from_csv = datalist_from_file(csv_file)

train = [i for i in items if Path(i["slo"]).parent.name == "train"] or items[:-1]
val = [i for i in items if Path(i["slo"]).parent.name != "train"] or items[-1:]
json_file = write_datalist(OUT / "datalist.json", training=train, validation=val)
from_json = datalist_from_file(json_file, section="validation")
print(f"{len(from_csv)} triplets from the CSV; {len(from_json)} validation triplets from {json_file.name}")
assert from_csv == items and from_json == val

# %% [markdown]
# ## 3. Load one triplet and check it
#
# `LoadUWFImaged` reads every format rows-first as `(C, H, W)` in [-1, 1] (the SLO with 3 channels, the FA frames
# with 1; an FA stored as grey RGB is collapsed, a truly coloured one is refused), and records the value range and
# bit depth it used. Frames of different sizes are an error unless registration resamples them (below).

# %%
KEYS = ("slo", "early", "late")
checked = val[:1] if QUICK else val
load = LoadUWFImaged(keys=KEYS, spatial_mismatch="ignore")
triplets = [load(item) for item in checked]
first = triplets[0]
for key in KEYS:
    meta = first[key].meta
    print(f"{key:5s} {tuple(first[key].shape)} bit depth {meta['bit_depth']} range {meta['value_range']}")

fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
for ax, key in zip(axes, KEYS):
    ax.imshow(unit(first[key]), cmap="gray")
    ax.set_title(f"{key} {tuple(first[key].shape)}", fontsize=9)
fov = FieldOfView(modality="fa")(first["early"])
axes[3].imshow(unit(first["early"]), cmap="gray")
axes[3].contour(np.asarray(fov[0]), levels=[0.5], colors="yellow", linewidths=1)
axes[3].set_title("early FA + field of view", fontsize=9)
for ax in axes:
    ax.axis("off")
save(fig, "1_triplet.png")

# %% [markdown]
# ## 4. Registration and its QC figures
#
# The frames of a session are close but not aligned (eye movement between the phases; the SLO's field of view
# differs from the FA's). `RegisterElastixd` registers with elastix (affine here; `"affine+bspline"` adds a
# non-rigid refinement): late FA onto early FA with normalised correlation, SLO onto early FA with mutual
# information on its green channel. A registration that does not improve the similarity is rejected (the frame is
# kept unregistered, with a warning and `status = "identity_fallback"`): look at those triplets first.
#
# What to look at: in the checkerboards, vessels must continue across tile borders after registration; in the SLO
# overlay (red: vessels of the early FA, green: vessels of the SLO), aligned vessels turn yellow.

# %%
SPEED = {"resolutions": 3, "iterations": 100} if QUICK else {}  # a quicker, coarser optimisation for CI
register_late = RegisterElastixd(fixed_key="early", moving_key="late", mode="affine", **SPEED)
register_slo = RegisterElastixd(fixed_key="early", moving_key="slo", mode="affine", **SPEED)


def checkerboard(a, b, tiles=8):
    h, w = a.shape
    rows, cols = np.indices((h, w))
    return np.where(((rows * tiles // h) + (cols * tiles // w)) % 2 == 0, a, b)


def on_grid(img, shape):
    """Crop/pad an (H, W[, 3]) array onto another frame's grid (the unregistered frame, for 'before' views)."""
    out = np.zeros(shape + img.shape[2:], dtype=img.dtype)
    h, w = min(shape[0], img.shape[0]), min(shape[1], img.shape[1])
    out[:h, :w] = img[:h, :w]
    return out


def vessels(img, sign):
    """Fine structure of a grey frame (frame minus its blur), vessels positive: sign +1 for FA, -1 for the SLO."""
    sigma = max(2.0, img.shape[1] / 150)
    detail = sign * (img - gaussian_filter(img, sigma))
    return np.clip(detail / max(float(np.percentile(detail, 99)), 1e-6), 0, 1)


def overlay(fa, slo_rgb):
    """Red: vessels of the early FA (bright there); green: vessels of the SLO's green channel (dark there)."""
    return np.stack([vessels(fa, 1), vessels(slo_rgb[..., 1], -1), np.zeros_like(fa)], axis=-1)


qc_rows = []
for triplet, item in zip(triplets, checked):
    name = f"{Path(item['slo']).parent.name}/{Path(item['slo']).name}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        done = register_slo(register_late(dict(triplet)))
    for w in caught:
        if str(w.message).startswith("RegisterElastix"):
            print("warning:", w.message)
    late_info, slo_info = done["late"].meta["registration"], done["slo"].meta["registration"]
    qc_rows.append((name, late_info, slo_info))
    early = unit(done["early"])
    shape = early.shape
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    axes[0, 0].imshow(checkerboard(early, on_grid(unit(triplet["late"]), shape)), cmap="gray")
    axes[0, 0].set_title(f"early | late before (NCC {late_info['similarity_before']:.3f})", fontsize=9)
    axes[0, 1].imshow(checkerboard(early, unit(done["late"])), cmap="gray")
    axes[0, 1].set_title(f"after: {late_info['status']} (NCC {late_info['similarity_after']:.3f})", fontsize=9)
    axes[1, 0].imshow(overlay(early, on_grid(unit(triplet["slo"]), shape)))
    axes[1, 0].set_title(f"vessels: early FA red, SLO green; before (NMI {slo_info['similarity_before']:.3f})",
                         fontsize=9)  # fmt: skip
    axes[1, 1].imshow(overlay(early, unit(done["slo"])))
    axes[1, 1].set_title(f"after: {slo_info['status']} (NMI {slo_info['similarity_after']:.3f})", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"registration QC: {name}", fontsize=11)
    save(fig, f"2_registration_qc_{name.replace('/', '_').rsplit('.', 1)[0]}.png")

# %% [markdown]
# The similarity before and after, for every checked triplet (a bar that does not rise was rejected):

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
x = np.arange(len(qc_rows))
for ax, index, label in zip(axes, (1, 2), ("late onto early (NCC)", "SLO onto early (NMI)")):
    ax.bar(x - 0.2, [r[index]["similarity_before"] for r in qc_rows], 0.4, label="before", color="C7")
    ax.bar(x + 0.2, [r[index]["similarity_after"] for r in qc_rows], 0.4, label="after", color="C0")
    ax.set_xticks(x, [r[0] for r in qc_rows], rotation=30, fontsize=8)
    ax.set_title(label, fontsize=9)
axes[0].legend(fontsize=8)
save(fig, "3_registration_summary.png")
for name, late_info, slo_info in qc_rows:
    print(f"{name}: late {late_info['status']} {late_info['time_s']:.1f} s, SLO {slo_info['status']} "
          f"{slo_info['time_s']:.1f} s")  # fmt: skip

# %% [markdown]
# ## 5. Train on it
#
# The bundle takes the folder or the datalist on its command line; `--register true` registers the late FA onto
# the early FA for every training triplet, as above (once: the datasets cache it). From the project root:

# %%
stage = "\"['bundle/configs/common.json','bundle/configs/train_autoencoder.json']\""
print(f"python -m monai.bundle run training --config_file {stage} --meta_file bundle/configs/metadata.json "
      f"--bundle_root bundle --dataset_dir {DATA} --register true")  # fmt: skip
print(f"python -m monai.bundle run training --config_file {stage} --meta_file bundle/configs/metadata.json "
      f"--bundle_root bundle --datalist {json_file} --register true")  # fmt: skip
