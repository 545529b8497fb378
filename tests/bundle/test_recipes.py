"""The CPU recipes as overlays: ``configs/recipes/cpu.json`` (``bundle/scripts/quickstart.sh``) and
``configs/recipes/real.json`` (``bundle/scripts/real_cpu.sh``) give every stage the settings the scripts passed.

The scripts list the stage commands, each with the recipe last in its ``--config_file`` list; before the recipes
moved into JSON, the scripts passed every setting on the command line. Each command of each dry run (the default
schedule, the residual method, every environment variable the scripts read, extra arguments) is read here as
``python -m monai.bundle run`` reads it: fire parses the command line into :func:`monai.bundle.scripts.run`'s
arguments, then ``ConfigWorkflow`` reads the config list and the metadata and applies the remaining arguments as
overrides. Every setting is compared with the command the script ran before (the literals below, from the scripts'
dry runs at commit 509e4c4): the settings that command passed must resolve to its values, and the other settings
the recipe defines must resolve as they did without it (the stage configs' values). So a recipe value changed, a
stage missing from a recipe table, or an environment variable no longer applied fails here.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import fire
import pytest
from monai.bundle import ConfigParser

BUNDLE_DIR = Path(__file__).resolve().parents[2] / "bundle"
CONFIGS = BUNDLE_DIR / "configs"
RECIPES = {"quickstart.sh": "configs/recipes/cpu.json", "real_cpu.sh": "configs/recipes/real.json"}
ROOT, DATA = "<bundle_root>", "<real_data>"  # replaced by the dry run's folders

# the arguments of monai.bundle.scripts.run; everything else on the command line overrides a config id
RUN_ARGS = ["run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"]
# settings compared on every command (where the configs without the recipe define them), beside those the old
# command set and those the recipe defines
CHECKED = [
    "max_epochs", "val_interval", "lr", "lr_warmup_iterations", "train_batch_size", "lr_multipliers",
    "adversarial_warmup_epochs", "sampling_recommendation", "image_size", "register", "preset", "num_phantoms",
    "phantom_size", "dataset_dir", "log_interval", "seed", "model_path", "num_inference_steps", "conditioning_scale",
    "eval_split", "fid", "seed_check_images", "train_dir", "eval_dir", "d_lr", "kl_weight",
]  # fmt: skip

AE = ["common.json", "train_autoencoder.json"]
CE = ["common.json", "train_autoencoder.json", "train_condition_encoder.json"]
DIFF = ["common.json", "train_diffusion.json"]
LATE = ["common.json", "train_diffusion.json", "train_late.json"]
PRIOR = ["common.json", "train_prior.json"]
RESIDUAL = ["common.json", "train_residual.json"]
INFER = ["inference.json"]
SCORE = ["inference.json", "evaluate.json"]

# --- quickstart.sh before the recipe (its dry runs at 509e4c4), command by command: run id, configs, overrides;
# since then the prior and residual stages record flip averaging (and the residual its start, t = 350) in their
# model files (FLIP, FLIP_T)
FLIP = {"sampling_recommendation": {"flip_average": True}}
FLIP_T = {"sampling_recommendation": {"flip_average": True, "t_start": 350}}
Q64 = {"bundle_root": ROOT, "num_phantoms": 64, "phantom_size": [64, 64]}
Q32 = {"bundle_root": ROOT, "num_phantoms": 64, "phantom_size": [32, 32]}
QT64 = {**Q64, "preset": "small", "image_size": [64, 64], "log_interval": 50}
QT32 = {**Q32, "preset": "small", "image_size": [32, 32], "log_interval": 50}
QSCORE = {"eval_split": "validation", "fid": False, "seed_check_images": 16}
Q_RESIDUAL_MODEL = {"model_path": f"{ROOT}/models/model_residual.pt"}
QUICKSTART = [
    ("training", AE, {**QT64, "max_epochs": 15, "val_interval": 15, "lr": 5e-4}),
    ("training", CE, {**QT64, "max_epochs": 5, "val_interval": 5, "lr": 5e-4, "adversarial_warmup_epochs": 1}),
    ("training", DIFF, {**QT64, "max_epochs": 75, "val_interval": 25, "lr": 1e-3, "lr_warmup_iterations": 50,
                        "train_batch_size": 4, "lr_multipliers": {"controlnet": 3.0}}),
    ("training", LATE, {**QT64, "max_epochs": 25, "val_interval": 25, "lr": 5e-4, "train_batch_size": 4,
                        "lr_multipliers": {"controlnet": 3.0}, "sampling_recommendation": {"conditioning_scale": 2.0}}),
    (None, INFER, {**Q64, "num_inference_steps": 25, "conditioning_scale": 2.0}),
    (None, SCORE, {**Q64, "num_inference_steps": 25, "conditioning_scale": 2.0, **QSCORE}),
]  # fmt: skip
QUICKSTART_RESIDUAL = [
    ("training", PRIOR, {**FLIP, **QT64, "max_epochs": 250, "val_interval": 250}),
    ("training", RESIDUAL, {**FLIP_T, **QT64, "max_epochs": 25, "val_interval": 25}),
    (None, INFER, {**Q64, **Q_RESIDUAL_MODEL, "num_inference_steps": 10}),
    (None, SCORE, {**Q64, **QSCORE, **Q_RESIDUAL_MODEL, "num_inference_steps": 10}),
]
# QUICKSTART_SIZE=32 QUICKSTART_EPOCHS_1=2 _2=3 _3=4 _4=5 QUICKSTART_STEPS=7 QUICKSTART_CONDITIONING_SCALE=1.5
# QUICKSTART_CONTROLNET_LR_MULT=6.0, extra arguments --seed 1
QUICKSTART_ENV = [
    ("training", AE, {**QT32, "max_epochs": 2, "val_interval": 15, "lr": 5e-4, "seed": 1}),
    ("training", CE, {**QT32, "max_epochs": 3, "val_interval": 5, "lr": 5e-4, "adversarial_warmup_epochs": 1,
                      "seed": 1}),
    ("training", DIFF, {**QT32, "max_epochs": 4, "val_interval": 25, "lr": 1e-3, "lr_warmup_iterations": 50,
                        "train_batch_size": 4, "lr_multipliers": {"controlnet": 6.0}, "seed": 1}),
    ("training", LATE, {**QT32, "max_epochs": 5, "val_interval": 25, "lr": 5e-4, "train_batch_size": 4,
                        "lr_multipliers": {"controlnet": 6.0}, "sampling_recommendation": {"conditioning_scale": 1.5},
                        "seed": 1}),
    (None, INFER, {**Q32, "num_inference_steps": 7, "conditioning_scale": 1.5}),
    (None, SCORE, {**Q32, "num_inference_steps": 7, "conditioning_scale": 1.5, **QSCORE}),
]  # fmt: skip
# QUICKSTART_METHOD=residual QUICKSTART_SIZE=32 QUICKSTART_EPOCHS_PRIOR=9 QUICKSTART_EPOCHS_RESIDUAL=8
# QUICKSTART_STEPS=3
QUICKSTART_RESIDUAL_ENV = [
    ("training", PRIOR, {**FLIP, **QT32, "max_epochs": 9, "val_interval": 250}),
    ("training", RESIDUAL, {**FLIP_T, **QT32, "max_epochs": 8, "val_interval": 25}),
    (None, INFER, {**Q32, **Q_RESIDUAL_MODEL, "num_inference_steps": 3}),
    (None, SCORE, {**Q32, **QSCORE, **Q_RESIDUAL_MODEL, "num_inference_steps": 3}),
]
# extra arguments --seed 3 --max_epochs 2 --phantom_size [48,48] (training stages only, after the recipe's values)
QX = {"seed": 3, "max_epochs": 2, "phantom_size": [48, 48]}
QUICKSTART_EXTRA = [
    ("training", AE, {**QT64, "val_interval": 15, "lr": 5e-4, **QX}),
    ("training", CE, {**QT64, "val_interval": 5, "lr": 5e-4, "adversarial_warmup_epochs": 1, **QX}),
    ("training", DIFF, {**QT64, "val_interval": 25, "lr": 1e-3, "lr_warmup_iterations": 50, "train_batch_size": 4,
                        "lr_multipliers": {"controlnet": 3.0}, **QX}),
    ("training", LATE, {**QT64, "val_interval": 25, "lr": 5e-4, "train_batch_size": 4,
                        "lr_multipliers": {"controlnet": 3.0}, "sampling_recommendation": {"conditioning_scale": 2.0},
                        **QX}),
    (None, INFER, {**Q64, "num_inference_steps": 25, "conditioning_scale": 2.0}),
    (None, SCORE, {**Q64, "num_inference_steps": 25, "conditioning_scale": 2.0, **QSCORE}),
]  # fmt: skip

# --- real_cpu.sh before the recipe (its dry runs at 509e4c4)
RT = {"bundle_root": ROOT, "dataset_dir": DATA, "register": ["late", "slo"], "preset": "small",
      "image_size": [128, 128], "log_interval": 50}  # fmt: skip
RE = {"bundle_root": ROOT, "dataset_dir": f"{DATA}/val", "train_dir": f"{DATA}/train", "fid": False,
      "num_inference_steps": 25}  # fmt: skip
R_PRIOR_SCORE = {**RE, "model_path": f"{ROOT}/models/model_prior.pt", "eval_dir": f"{ROOT}/eval/report_prior"}
R_RESIDUAL_SCORE = {**RE, "model_path": f"{ROOT}/models/model_residual.pt", "num_inference_steps": 10}
REAL = [
    ("training", AE, {**RT, "max_epochs": 300, "val_interval": 300, "lr": 5e-4}),
    ("training", CE, {**RT, "max_epochs": 150, "val_interval": 150, "lr": 5e-4, "adversarial_warmup_epochs": 10}),
    ("training", DIFF, {**RT, "max_epochs": 2000, "val_interval": 2000, "lr": 1e-3, "lr_warmup_iterations": 50,
                        "train_batch_size": 4}),
    ("training", LATE, {**RT, "max_epochs": 600, "val_interval": 600, "lr": 5e-4, "train_batch_size": 4}),
    (None, SCORE, RE),
]  # fmt: skip
REAL_RESIDUAL = [
    ("training", PRIOR, {**FLIP, **RT, "max_epochs": 800, "val_interval": 800, "train_batch_size": 8}),
    ("training", RESIDUAL, {**FLIP_T, **RT, "max_epochs": 600, "val_interval": 600, "train_batch_size": 4}),
    (None, SCORE, R_PRIOR_SCORE),
    (None, SCORE, R_RESIDUAL_SCORE),
]
# REAL_EPOCHS_1=11 _2=12 _3=13 _4=14 REAL_BATCH=16 REAL_OVERLAY=configs/gpu.json REAL_CPU_CONTROLNET_LR_MULT=3,
# extra arguments --seed 2 (the overlay after the stage configs: "+gpu")
REAL_ENV = [
    ("training", AE + ["+gpu"], {**RT, "max_epochs": 11, "val_interval": 11, "lr": 5e-4, "seed": 2}),
    ("training", CE + ["+gpu"], {**RT, "max_epochs": 12, "val_interval": 12, "lr": 5e-4,
                                 "adversarial_warmup_epochs": 10, "seed": 2}),
    ("training", DIFF + ["+gpu"], {**RT, "max_epochs": 13, "val_interval": 13, "lr": 1e-3, "lr_warmup_iterations": 50,
                                   "train_batch_size": 16, "lr_multipliers": {"controlnet": 3}, "seed": 2}),
    ("training", LATE + ["+gpu"], {**RT, "max_epochs": 14, "val_interval": 14, "lr": 5e-4, "train_batch_size": 16,
                                   "lr_multipliers": {"controlnet": 3}, "seed": 2}),
    (None, SCORE, RE),
]  # fmt: skip
# REAL_METHOD=residual REAL_EPOCHS_PRIOR=21 REAL_EPOCHS_RESIDUAL=22 REAL_BATCH=16 REAL_OVERLAY=configs/gpu.json
REAL_RESIDUAL_ENV = [
    ("training", PRIOR + ["+gpu"], {**RT, "max_epochs": 21, "val_interval": 21, "train_batch_size": 16}),
    ("training", RESIDUAL + ["+gpu"], {**RT, "max_epochs": 22, "val_interval": 22, "train_batch_size": 16}),
    (None, SCORE, R_PRIOR_SCORE),
    (None, SCORE, R_RESIDUAL_SCORE),
]
# extra arguments --max_epochs 3 (the validation interval stays the recipe's)
REAL_EXTRA = [
    ("training", AE, {**RT, "val_interval": 300, "lr": 5e-4, "max_epochs": 3}),
    ("training", CE, {**RT, "val_interval": 150, "lr": 5e-4, "adversarial_warmup_epochs": 10, "max_epochs": 3}),
    ("training", DIFF, {**RT, "val_interval": 2000, "lr": 1e-3, "lr_warmup_iterations": 50, "train_batch_size": 4,
                        "max_epochs": 3}),
    ("training", LATE, {**RT, "val_interval": 600, "lr": 5e-4, "train_batch_size": 4, "max_epochs": 3}),
    (None, SCORE, RE),
]  # fmt: skip

SCENARIOS = {
    "quickstart": ("quickstart.sh", {}, [], QUICKSTART_RESIDUAL),  # the residual method is the default
    "quickstart-residual": ("quickstart.sh", {"QUICKSTART_METHOD": "residual"}, [], QUICKSTART_RESIDUAL),
    "quickstart-latent": ("quickstart.sh", {"QUICKSTART_METHOD": "latent"}, [], QUICKSTART),
    "quickstart-env": (
        "quickstart.sh",
        {"QUICKSTART_METHOD": "latent", "QUICKSTART_SIZE": "32", "QUICKSTART_EPOCHS_1": "2", "QUICKSTART_EPOCHS_2": "3",
         "QUICKSTART_EPOCHS_3": "4",
         "QUICKSTART_EPOCHS_4": "5", "QUICKSTART_STEPS": "7", "QUICKSTART_CONDITIONING_SCALE": "1.5",
         "QUICKSTART_CONTROLNET_LR_MULT": "6.0"},
        ["--seed", "1"],
        QUICKSTART_ENV,
    ),
    "quickstart-residual-env": (
        "quickstart.sh",
        {"QUICKSTART_METHOD": "residual", "QUICKSTART_SIZE": "32", "QUICKSTART_EPOCHS_PRIOR": "9",
         "QUICKSTART_EPOCHS_RESIDUAL": "8", "QUICKSTART_STEPS": "3"},
        [],
        QUICKSTART_RESIDUAL_ENV,
    ),
    "quickstart-extra": (
        "quickstart.sh", {"QUICKSTART_METHOD": "latent"}, ["--seed", "3", "--max_epochs", "2", "--phantom_size",
                                                            "[48,48]"], QUICKSTART_EXTRA
    ),
    "real": ("real_cpu.sh", {}, [], REAL),
    "real-residual": ("real_cpu.sh", {"REAL_METHOD": "residual"}, [], REAL_RESIDUAL),
    "real-env": (
        "real_cpu.sh",
        {"REAL_EPOCHS_1": "11", "REAL_EPOCHS_2": "12", "REAL_EPOCHS_3": "13", "REAL_EPOCHS_4": "14",
         "REAL_BATCH": "16", "REAL_OVERLAY": "configs/gpu.json", "REAL_CPU_CONTROLNET_LR_MULT": "3"},
        ["--seed", "2"],
        REAL_ENV,
    ),
    "real-residual-env": (
        "real_cpu.sh",
        {"REAL_METHOD": "residual", "REAL_EPOCHS_PRIOR": "21", "REAL_EPOCHS_RESIDUAL": "22", "REAL_BATCH": "16",
         "REAL_OVERLAY": "configs/gpu.json"},
        [],
        REAL_RESIDUAL_ENV,
    ),
    "real-extra": ("real_cpu.sh", {}, ["--max_epochs", "3"], REAL_EXTRA),
}  # fmt: skip
ENV_VARS = ("QUICKSTART_", "REAL_", "BUNDLE_ROOT")  # cleared before each dry run


def _dry_run(tmp_path: Path, script: str, env: dict[str, str], args: list[str]) -> tuple[list[list[str]], dict]:
    """The commands the script prints in its dry run, and the placeholders' values."""
    root, data = tmp_path / "root", tmp_path / "data"
    for folder in (root, data / "train", data / "val"):
        folder.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_VARS)}
    dry = {"QUICKSTART_DRY_RUN": "1", "REAL_CPU_DRY_RUN": "1", "BUNDLE_ROOT": str(root), "REAL_DATA": str(data)}
    done = subprocess.run(
        ["bash", str(BUNDLE_DIR / "scripts" / script), *args],
        env={**clean, **dry, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]
    return commands, {ROOT: str(root), DATA: str(data)}  # the scripts print the folders as given (cd; pwd)


def _fire(argv: list[str]) -> dict[str, Any]:
    """``run``'s arguments as ``python -m monai.bundle run ...`` passes them (fire, as monai.bundle.__main__)."""
    assert argv[1:4] == ["-m", "monai.bundle", "run"], argv
    calls = []

    def run(run_id=None, init_id=None, final_id=None, meta_file=None, config_file=None, logging_file=None,
            tracking=None, args_file=None, **override):  # fmt: skip
        calls.append({**{k: v for k, v in locals().items() if k in RUN_ARGS}, "override": override})

    fire.Fire({"run": run}, command=argv[3:])
    return calls[0]


def test_the_command_line_reader_has_monai_run_signature():
    from monai.bundle.scripts import run

    params = list(inspect.signature(run).parameters)
    assert params == [*RUN_ARGS, "override"]


def _parser(files: list[str], meta_file: str, overrides: dict[str, Any]) -> ConfigParser:
    """The config a ``ConfigWorkflow`` builds: the config list, the metadata, then the overrides."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_DIR / f) for f in files])
    parser.read_meta(str(BUNDLE_DIR / meta_file))
    parser.update(pairs=overrides)
    return parser


def _value(parser: ConfigParser, key: str) -> Any:
    try:
        return parser.get_parsed_content(key)
    except Exception as error:  # noqa: BLE001 - compared as such: both sides must fail alike
        return ("error", type(error).__name__)


def _fill(value: Any, places: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, path in places.items():
            value = value.replace(placeholder, path)
    return value


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_script_commands_resolve_to_the_settings_the_scripts_passed(tmp_path, scenario):
    script, env, args, expected = SCENARIOS[scenario]
    recipe = RECIPES[script]
    recipe_keys = set(json.loads((BUNDLE_DIR / recipe).read_text())) - {"_description"}  # a comment, not a setting
    commands, places = _dry_run(tmp_path, script, env, args)
    assert len(commands) == len(expected), [c[:6] for c in commands]
    for number, (command, (run_id, files, old)) in enumerate(zip(commands, expected), 1):
        where = f"{scenario}, command {number}"
        call = _fire(command)
        old = {key: _fill(value, places) for key, value in old.items()}
        base = [f"configs/{f}" if not f.startswith("+") else f"configs/{f[1:]}.json" for f in files]
        listed = call["config_file"] if isinstance(call["config_file"], list) else [call["config_file"]]
        assert call["run_id"] == run_id, where
        assert listed == base + [recipe], f"{where}: the recipe goes last in the config list"
        assert (call["meta_file"], call["logging_file"]) == ("configs/metadata.json", "configs/logging.conf"), where
        before = _parser(base, call["meta_file"], old)
        after = _parser(listed, call["meta_file"], call["override"])
        for key, value in old.items():  # what the old command set, as literals
            assert _value(after, key) == value, f"{where}: {key}"
        for key in sorted((set(CHECKED) | recipe_keys | set(call["override"])) - set(old)):
            if key in before:  # the rest resolves as it did (a key new with the recipe is its own table)
                assert _value(after, key) == _value(before, key), f"{where}: {key}"


@pytest.mark.parametrize("recipe", sorted(RECIPES.values()) + ["configs/recipes/paper.json"])
def test_recipes_set_only_keys_the_bundle_configs_define(recipe):
    """A misspelt key in a recipe would be a new, unused id: every key is one of the bundle's settings, or the
    recipe's own tables (``<name>_recipe``, ``<name>_generation``) and the method that selects a generation entry."""
    defined = set()
    for path in [CONFIGS / "common.json", CONFIGS / "inference.json", CONFIGS / "evaluate.json"]:
        defined |= set(json.loads(path.read_text()))
    for path in CONFIGS.glob("train_*.json"):
        defined |= set(json.loads(path.read_text()))
    keys = set(json.loads((BUNDLE_DIR / recipe).read_text())) - {"_description", "method"}
    own = {k for k in keys if k.endswith(("_recipe", "_generation"))}
    assert not keys - own - defined, f"{recipe}: keys no bundle config defines: {sorted(keys - own - defined)}"
