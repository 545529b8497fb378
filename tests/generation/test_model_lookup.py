"""``find_generation_model``: which model file a front end generates with when given a folder."""

from __future__ import annotations

import pytest

from monai_lpuwf.generation import GENERATION_MODEL_FILES, find_generation_model


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def test_the_order_is_the_main_jobs_method_then_the_latent_model_then_the_prior():
    assert GENERATION_MODEL_FILES == ("model_residual.pt", "model.pt", "model_prior.pt")


def test_a_file_is_taken_as_it_is(tmp_path):
    path = _touch(tmp_path / "any_name.pt")
    assert find_generation_model(path) == path


@pytest.mark.parametrize(
    "present, expected",
    [
        (["models/model_prior.pt", "models/model_residual.pt", "models/model.pt"], "models/model_residual.pt"),
        (["models/model_prior.pt", "models/model.pt"], "models/model.pt"),
        (["models/model_prior.pt", "models/model_autoencoder.pt"], "models/model_prior.pt"),
        (["model.pt"], "model.pt"),  # a folder holding the file
        (["lpuwf/model.pt"], "lpuwf/model.pt"),  # MONAI Deploy's models/<name>/ layout
    ],
)
def test_a_folder_gives_its_first_generation_model(tmp_path, present, expected):
    for name in present:
        _touch(tmp_path / name)
    assert find_generation_model(tmp_path) == tmp_path / expected


def test_a_folder_without_one_and_a_missing_path_are_named(tmp_path):
    _touch(tmp_path / "models" / "model_autoencoder.pt")  # a stage file: not a generation model
    with pytest.raises(FileNotFoundError, match="a folder without a model file") as err:
        find_generation_model(tmp_path)
    assert str(tmp_path) in str(err.value) and "model_residual.pt (train_residual.json)" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_generation_model(tmp_path / "missing")
