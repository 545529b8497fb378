"""Bad input to the training configs stops the run with a message naming the key or file (and the fix)."""

from __future__ import annotations

import json

import pytest

from monai_lpuwf.engines import StageOrderError

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")


@pytest.fixture
def fresh(tmp_path, bundle):
    return bundle.new_bundle_root(tmp_path / "bundle")


def test_stage_4_without_stage_3_weights(fresh, bundle):
    error = bundle.raised_error(StageOrderError, bundle.run_stage, fresh, "late")
    message = str(error)
    assert str(fresh / "models" / "model_diffusion.pt") in message and "train_diffusion.json (stage 3)" in message
    assert "Run the stages in order" in message
    assert not (fresh / "models" / "model.pt").exists()


def test_stage_4_on_weights_without_a_scale_factor(fresh, bundle, trained_bundle):
    """Stage-2 weights given to stage 4: the latent scale factor (computed in stage 3) is missing."""
    weights = trained_bundle / "models" / "model_condition_encoder.pt"
    error = bundle.raised_error(StageOrderError, bundle.run_stage, fresh, "late", initial_weights=str(weights))
    assert str(weights) in str(error) and "scale factor" in str(error) and "stage 3" in str(error)


def test_checkpoint_of_another_architecture(fresh, bundle, trained_bundle):
    """The tiny run's weights loaded into the default small preset: the differing setting is named."""
    weights = trained_bundle / "models" / "model_condition_encoder.pt"
    error = bundle.raised_error(
        ValueError, bundle.run_stage, fresh, "diffusion", initial_weights=str(weights), network_overrides={}
    )
    message = str(error)
    assert str(weights) in message and "autoencoder.channels" in message and "network_overrides" in message


def test_unreadable_checkpoint(fresh, bundle):
    broken = fresh / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    error = bundle.raised_error(RuntimeError, bundle.run_stage, fresh, "diffusion", initial_weights=str(broken))
    assert f"cannot read the checkpoint '{broken}'" in str(error)


def test_empty_datalist(fresh, bundle):
    datalist = fresh / "datalist.json"
    datalist.write_text(json.dumps({"training": [], "validation": []}))
    error = bundle.raised_error(ValueError, bundle.run_stage, fresh, "autoencoder", datalist=str(datalist))
    assert str(datalist) in str(error) and "no complete training triplet" in str(error)


def test_missing_dataset_dir(fresh, bundle):
    missing = fresh / "no_such_folder"
    error = bundle.raised_error(FileNotFoundError, bundle.run_stage, fresh, "autoencoder", dataset_dir=str(missing))
    assert str(missing) in str(error) and "--dataset_dir" in str(error)


@pytest.mark.parametrize(
    "override, error_type, expected",
    [
        ({"lr": "@learnig_rate"}, ValueError, "'learnig_rate'"),  # a reference typo
        ({"trainable_modules": ["autoencodr"]}, KeyError, "'autoencodr' is not a sub-module"),  # a module name
        ({"preset": "smal"}, ValueError, "did you mean 'small'"),  # a preset name
        ({"train#trainer#max_epoch": 3}, TypeError, "'max_epoch'"),  # a component argument
    ],
)
def test_config_typos_name_the_key(fresh, bundle, override, error_type, expected):
    error = bundle.raised_error(error_type, bundle.run_stage, fresh, "autoencoder", **override)
    assert expected in str(error)


def test_config_file_typo_names_the_file(fresh, bundle):
    from monai.bundle import run

    missing = fresh / "configs" / "train_autoencodr.json"
    error = bundle.raised_error(
        FileNotFoundError, run, "training", config_file=[str(fresh / "configs" / "common.json"), str(missing)]
    )
    assert str(missing) in str(error)


def test_image_size_the_network_cannot_take_stops_stage_1(fresh, bundle):
    """48 is a multiple of the autoencoder's 4 but not of the whole model's 32: refused when stage 1 starts, naming
    the option, the divisor and the nearest valid sizes (before the check, stages 1 and 2 trained and stage 3
    stopped inside the U-Net with "Sizes of tensors must match")."""
    from monai_lpuwf.errors import SettingError

    error = bundle.raised_error(SettingError, bundle.run_stage, fresh, "autoencoder", image_size=[48, 48])
    assert str(error).startswith("--image_size [48, 48]: 48 is not a multiple of 32")
    assert "Use --image_size [32, 32] or [64, 64]" in str(error)
    assert not (fresh / "models" / "model_autoencoder.pt").exists()


def test_training_input_errors_end_the_command_in_one_line(fresh, bundle, tmp_path):
    """The training command line reports a bad datalist like generation does: ``error: <message>`` naming the file
    and the item, exit status 1, no traceback (``--debug True`` brings the traceback back)."""
    import subprocess

    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"training": ["1.png", {"slo": "1.png"}], "validation": []}))
    command = bundle.cli_command(fresh, "autoencoder", datalist=str(datalist))
    result = subprocess.run(command, capture_output=True, text=True, env=bundle.cli_env(), timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert (
        f"error: {datalist}: 1 item(s) of section 'training' are not objects of file paths: item 1 is a str (\"1.png\")"
        in result.stderr
    )
    assert "(add --debug True to the command for the full traceback)" in result.stderr
