"""``bundle/configs/recipes/paper.json`` against the authors' code, setting by setting, as the bundle resolves it.

Every row of the tables names the file of Tinysqua/LPUWF-LDM the value comes from. The values are read through
:class:`monai.bundle.ConfigParser` from the same config lists the README's commands use, so an overlay key that
a stage config overrides, or a reference that does not reach the object it should, fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import (
    CenterSpatialCropd,
    RandFlipd,
    Resized,
    SpatialPadd,
)

from monai_lpuwf.engines import ScaleFactorHandler
from monai_lpuwf.networks.presets import PRESETS, RESIDUAL_PRESETS, build_model, build_residual_model
from monai_lpuwf.transforms import CrossTemporalDifferenced, RandRotateCropd, UnsharpMaskd

CONFIGS = Path(__file__).resolve().parents[2] / "bundle" / "configs"

AUG = "utils/Condition_aug_dataloader.py"
VAE_CFG = "config/vae/config_monaivae_zheer.py"
STAGE1 = "my_vqvae/vae_zheer.py"
STAGE2 = "my_vqvae/train_cvae.py"
DIFF_CFG = "config/diffusion/config_zheer_controlnet.py"
STAGE3 = "diffusion/LPUWF_LDM.py"
STAGE4 = "stable_diffusion/zheer_late_controlnet.py"

STAGES = {
    "autoencoder": ["common.json", "train_autoencoder.json"],
    "condition_encoder": ["common.json", "train_autoencoder.json", "train_condition_encoder.json"],
    "diffusion": ["common.json", "train_diffusion.json"],
    "late": ["common.json", "train_diffusion.json", "train_late.json"],
    "inference": ["inference.json"],
    "evaluate": ["inference.json", "evaluate.json"],
}

# (config id, stages, the authors' value, source file)
AUTHORS = [
    ("preset", ["autoencoder", "condition_encoder", "diffusion", "late", "inference"], "paper", DIFF_CFG),
    ("image_size", ["autoencoder", "condition_encoder", "diffusion", "late"], [512, 512], f"{VAE_CFG}, {DIFF_CFG}"),
    ("crop_scale", ["autoencoder", "diffusion", "late"], None, f"{AUG} (RandomCrop of the native frame)"),
    ("val_resize", ["autoencoder", "diffusion"], True, f"{AUG} (validation: Resize of the whole frame)"),
    ("rotate_deg", ["autoencoder", "late"], 5.0, f"{AUG} (RandomRotation(5))"),
    ("flip_prob", ["autoencoder", "late"], 0.5, f"{AUG} (RandomVerticalFlip, RandomHorizontalFlip)"),
    ("register", ["autoencoder", "late"], False, AUG),
    ("sharpen", ["autoencoder", "condition_encoder", "diffusion", "late", "inference", "evaluate"], False, AUG),
    ("train_batch_size", ["autoencoder", "condition_encoder", "diffusion", "late"], 1, f"{VAE_CFG}, {DIFF_CFG}"),
    ("val_batch_size", ["autoencoder", "diffusion"], 2, f"{VAE_CFG}, {DIFF_CFG} (eval_bc)"),
    ("accumulation_steps", ["autoencoder", "diffusion"], 1, VAE_CFG),
    ("lr_warmup_iterations", ["autoencoder", "diffusion"], 0, f"{STAGE1}, {STAGE3} (plain Adam)"),
    # stage 1: FA autoencoder
    ("lr", ["autoencoder"], 1e-4, STAGE1),
    ("d_lr", ["autoencoder"], 5e-4, STAGE1),
    ("kl_weight", ["autoencoder"], 1e-6, STAGE1),
    ("adversarial_weight", ["autoencoder"], 0.01, STAGE1),
    ("perceptual_weight", ["autoencoder"], 0.001, STAGE1),
    ("perceptual_network", ["autoencoder"], "alexnet", f"{STAGE1} (PerceptualLoss network_type='alex')"),
    ("adversarial_warmup_epochs", ["autoencoder"], 0, STAGE1),
    ("discriminator_def#channels", ["autoencoder"], 64, f"{STAGE1} (PatchDiscriminator num_channels=64)"),
    ("discriminator_def#num_layers_d", ["autoencoder"], 3, STAGE1),
    ("max_epochs", ["autoencoder"], 2000, f"{VAE_CFG} (stage 1's own config_vae_zheer.py is not published)"),
    ("val_interval", ["autoencoder"], 80, VAE_CFG),
    # stage 2: gated SLO encoder
    ("lr", ["condition_encoder"], 1e-4, STAGE2),
    ("d_lr", ["condition_encoder"], 1e-4, STAGE2),
    ("kl_weight", ["condition_encoder"], 0.0, f"{STAGE2} (no KL term)"),
    ("adversarial_weight", ["condition_encoder"], 0.01, STAGE2),
    ("perceptual_weight", ["condition_encoder"], 0.001, STAGE2),
    ("perceptual_network", ["condition_encoder"], "vgg16", f"{STAGE2} (PerceptualLoss network_type='vgg')"),
    ("adversarial_warmup_epochs", ["condition_encoder"], 100, f"{VAE_CFG} (autoencoder_warm_up_n_epochs)"),
    ("discriminator_def#channels", ["condition_encoder"], 64, f"{STAGE2} (PatchDiscriminator num_channels=64)"),
    ("max_epochs", ["condition_encoder"], 2000, VAE_CFG),
    ("val_interval", ["condition_encoder"], 80, VAE_CFG),
    ("fa_keys", ["autoencoder", "condition_encoder"], ["early", "late"], f"{STAGE2} (batch[random.randint(1, 2)])"),
    # stages 3 and 4: latent diffusion
    ("lr", ["diffusion", "late"], 2.5e-5, f"{STAGE3}, {STAGE4}"),
    ("max_epochs", ["diffusion", "late"], 1000, DIFF_CFG),
    ("val_interval", ["diffusion", "late"], 100, DIFF_CFG),
    ("noise_mode", ["diffusion", "late"], "offset", f"{STAGE3} (randn + 0.1 * randn(B, C, 1, 1))"),
    ("noise_offset_scale", ["diffusion", "late"], 0.1, STAGE3),
    ("scale_factor_batches", ["diffusion"], 0, f"{DIFF_CFG} (scaling_factor = 0.18215, not computed)"),
    ("require_scale_factor", ["late"], False, f"{STAGE4} (the same fixed 0.18215)"),
    ("ctrd_alpha", ["late"], 0.25, f"{DIFF_CFG} (diff_loss_coefficient)"),
    ("ctrd_interp_mode", ["late"], "nearest", f"{STAGE4} (F.interpolate default mode)"),
    ("ctrd_options#normalize", ["late"], "none", f"{STAGE4} (torch.abs(early_ffa - late_ffa))"),
    ("ctrd_options#restrict_to_fov", ["late"], False, f"{STAGE4} (whole crop)"),
    ("ctrd_options#smooth_sigma", ["late"], 0.0, STAGE4),
    ("ctrd_options#match_mean", ["late"], False, STAGE4),
    ("val_sampler", ["diffusion", "late"], "ddpm", f"{STAGE3} (scheduler.step over all timesteps)"),
    ("val_inference_steps", ["diffusion", "late"], 1000, STAGE3),
    ("weight_key", ["late"], "ctrd", STAGE4),
    ("mask_key", ["late"], None, f"{STAGE4} (no mask)"),
    # sampling
    ("sampler", ["inference", "evaluate"], "ddpm", f"{STAGE3} (DDPMScheduler(num_train_timesteps=1000))"),
    ("num_inference_steps", ["inference", "evaluate"], 1000, STAGE3),
    ("clip_sample", ["inference", "evaluate"], True, f"{STAGE3} (monai-generative DDPMScheduler default)"),
]

# the paper preset (the architecture recipes/paper.json selects): (key path, value, source)
ARCHITECTURE = [
    ("autoencoder.channels", (128, 256, 512), f"{DIFF_CFG} (up_and_down)"),
    ("autoencoder.num_res_blocks", 2, f"{DIFF_CFG} (num_res_layers)"),
    ("autoencoder.latent_channels", 4, STAGE3),
    ("autoencoder.attention_levels", (False, False, False), STAGE3),
    ("unet.channels", (128, 256, 512, 1024), f"{DIFF_CFG} (sd_num_channels)"),
    ("unet.attention_levels", (False, False, True, True), DIFF_CFG),
    ("unet.num_res_blocks", 2, STAGE3),
    ("controlnet.conditioning_embedding_num_channels", (32, 96, 256), DIFF_CFG),
    ("scale_factor", 0.18215, f"{DIFF_CFG} (scaling_factor)"),
    ("schedule.num_train_timesteps", 1000, STAGE3),
    ("schedule.schedule", "linear_beta", f"{STAGE3} (monai-generative DDPMScheduler default)"),
    ("schedule.beta_start", 1e-4, STAGE3),
    ("schedule.beta_end", 0.02, STAGE3),
]


def _parser(stage: str, tmp_path: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in STAGES[stage]] + [str(CONFIGS / "recipes" / "paper.json")])
    parser["bundle_root"] = str(tmp_path)
    parser.parse()
    return parser


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize(
    "config_id,stage,expected,source",
    [(cid, stage, value, src) for cid, stages, value, src in AUTHORS for stage in stages],
    ids=lambda v: v if isinstance(v, str) and "/" not in v else None,
)
def test_paper_overlay_matches_the_authors(tmp_path, config_id, stage, expected, source):
    value = _parser(stage, tmp_path).get_parsed_content(config_id)
    if config_id == "clip_sample":
        from monai.utils import str2bool

        value = str2bool(value)
    assert _same(value, expected), f"{config_id} in stage {stage}: {value!r}, the authors' {expected!r} ({source})"


@pytest.mark.parametrize("path,expected,source", ARCHITECTURE, ids=[row[0] for row in ARCHITECTURE])
def test_paper_architecture_matches_the_authors(path, expected, source):
    value = PRESETS["paper"]
    for part in path.split("."):
        value = value[part]
    assert _same(value, expected), f"paper preset {path}: {value!r}, the authors' {expected!r} ({source})"


def test_paper_training_pipeline_is_the_authors(tmp_path):
    """The resolved transforms: native 512 crops, rotation 5 deg, two flips, no sharpening, raw whole-frame map;
    validation on the whole frame resized to 512 x 512 (Condition_aug_dataloader.py, zheer_late_controlnet.py)."""
    parser = _parser("late", tmp_path)
    train = parser.get_parsed_content("train#preprocessing").transforms
    kinds = [type(t) for t in train]
    assert Resized not in kinds and UnsharpMaskd not in kinds
    crop = next(t for t in train if isinstance(t, RandRotateCropd))  # the authors' rotation, then a 512 crop
    assert crop.cropper.roi_size == (512, 512)
    assert crop.cropper.rotate_range == pytest.approx(math.radians(5))
    flips = [t for t in train if isinstance(t, RandFlipd)]
    assert sorted(f.flipper.spatial_axis for f in flips) == [0, 1] and all(f.prob == 0.5 for f in flips)
    ctrd = next(t for t in train if isinstance(t, CrossTemporalDifferenced)).ctrd
    assert (ctrd.normalize, ctrd.restrict_to_fov, ctrd.smooth_sigma, ctrd.match_mean) == ("none", False, 0.0, False)
    val = parser.get_parsed_content("validate#preprocessing").transforms
    resize = next(t for t in val if isinstance(t, Resized))
    assert tuple(resize.resizer.spatial_size) == (512, 512)
    assert not any(isinstance(t, (CenterSpatialCropd, SpatialPadd, UnsharpMaskd)) for t in val)
    loss = parser.get_parsed_content("diffusion_loss")
    assert (loss.alpha, loss.interp_mode) == (0.25, "nearest")
    noise = parser.get_parsed_content("noise")
    assert (noise.mode, noise.scale) == ("offset", 0.1)


def test_our_defaults_differ_where_the_docs_say(tmp_path):
    """Without the overlay: the deviations listed in docs/README.md ('Where this bundle differs ...')."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in STAGES["condition_encoder"]])
    parser.parse()
    assert parser.get_parsed_content("crop_scale") is None  # native crops: the same as the authors
    assert parser.get_parsed_content("perceptual_weight") == 0.0
    assert parser.get_parsed_content("discriminator_channels") == 32
    assert parser.get_parsed_content("adversarial_warmup_epochs") == 2
    assert parser.get_parsed_content("sharpen") is True
    assert parser.get_parsed_content("ctrd_options") == {
        "normalize": "percentile",
        "percentile": 99.0,
        "smooth_sigma": 0.0,
        "match_mean": False,
        "restrict_to_fov": True,
    }


class _Engine(SimpleNamespace):
    def __init__(self):
        super().__init__(state=SimpleNamespace(iteration=0, device="cpu"), logger=SimpleNamespace(info=print))


def test_scale_factor_kept_with_zero_batches():
    """``scale_factor_batches 0`` (recipes/paper.json): stage 3 keeps the preset's factor instead of computing one."""
    model = build_model("small", scale_factor=0.18215)

    def no_data():
        raise AssertionError("the data must not be read")
        yield  # pragma: no cover

    ScaleFactorHandler(model, no_data(), num_batches=0)(_Engine())
    assert float(model.scale_factor) == pytest.approx(0.18215)
    batches = [{"early": torch.rand(2, 1, 32, 32) * 2 - 1} for _ in range(2)]
    ScaleFactorHandler(model, batches, num_batches=None)(_Engine())  # the default computes it from data
    assert float(model.scale_factor) != pytest.approx(0.18215)


# one entry per section of each architecture, with a value other than the preset's
SECTION_ENTRIES = {
    "autoencoder": ("num_res_blocks", 2),
    "unet": ("num_res_blocks", 2),
    "controlnet": ("conditioning_embedding_num_channels", [8, 16, 16]),
    "schedule": ("prediction_type", "v_prediction"),
}
RESIDUAL_SECTION_ENTRIES = {
    "prior": ("features", [8, 16, 32, 64, 128, 16]),
    "denoiser": ("num_res_blocks", 2),
    "schedule": ("prediction_type", "epsilon"),
}


@pytest.mark.parametrize("section", sorted(k for k, v in PRESETS["small"].items() if isinstance(v, dict)))
def test_one_entry_of_a_preset_is_overridden_by_config_id(section):
    """``--network_overrides#<section>#<key> value`` changes one entry of the named preset (PRESETS, the one source):
    common.json holds an empty dict for every section of the architecture, so MONAI's id syntax reaches it."""
    key, value = SECTION_ENTRIES[section]
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in STAGES["autoencoder"]])
    parser.update({"preset": "small", f"network_overrides#{section}#{key}": value})
    expected = build_model("small", **{section: {key: value}}).config
    assert parser.get_parsed_content("network_def").config == expected != build_model("small").config


@pytest.mark.parametrize("section", sorted(k for k, v in RESIDUAL_PRESETS["small"].items() if isinstance(v, dict)))
def test_one_entry_of_the_residual_preset_is_overridden_by_config_id(section):
    """The same for the residual method (train_residual.json): ``--residual_overrides#denoiser#num_res_blocks 2``."""
    key, value = RESIDUAL_SECTION_ENTRIES[section]
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in ("common.json", "train_residual.json")])
    parser[f"residual_overrides#{section}#{key}"] = value
    expected = build_residual_model("small", **{section: {key: value}}).config
    assert parser.get_parsed_content("network_def").config == expected != build_residual_model("small").config


def test_spelled_out_preset_overlay(tmp_path):
    """A whole architecture given as a dict (an overlay ``{"preset": {...}}``, written from PRESETS) builds the same
    network as ``--preset small``, and its entries are overridden like any config key (``--preset#unet#...``)."""
    overlay = tmp_path / "architecture.json"
    overlay.write_text(json.dumps({"preset": PRESETS["small"]}))
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in STAGES["autoencoder"]] + [str(overlay)])
    assert parser.get_parsed_content("network_def").config == build_model("small").config
    parser["preset#unet#num_res_blocks"] = 2
    parser.parse()
    assert parser.get_parsed_content("network_def").config == build_model("small", unet={"num_res_blocks": 2}).config


def test_inference_takes_the_same_entry_overrides():
    """inference.json (``--preset`` for a bare state dict) accepts the stage configs' ``--network_overrides#...``."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({f"network_overrides#{s}#{k}": v for s, (k, v) in SECTION_ENTRIES.items()})
    overrides = parser.get_parsed_content("network_overrides")
    assert overrides == {s: {k: v} for s, (k, v) in SECTION_ENTRIES.items()}
