"""A model file is checked before generation: the training stage that wrote it, and why it cannot be read.

Generating with the file of stage 1, 2 or 3 (``models/model_autoencoder.pt`` ...) used to give an image from an
untrained U-Net with exit status 0; a truncated file, a pickle that ``torch.load(weights_only=True)`` refuses and
``--device cuda`` on a machine without CUDA all used to say the weights "do not match the architecture ... edited
or assembled by hand". Each now has its own message naming the file (or option) and the fix.
"""

from __future__ import annotations

import os

import pytest
import torch

from monai_lpuwf.engines import ModelFileError, StageRecord
from monai_lpuwf.errors import UserInputError
from monai_lpuwf.generation import Generator
from monai_lpuwf.networks.tiny import build_tiny_model

STAGE_NUMBERS = {"autoencoder": 1, "condition_encoder": 2, "diffusion": 3}


def load_generation_model(path, map_location="cpu", **kwargs):
    """The network generation builds from a model file (read by ``ModelFile.load`` in ``Generator.from_file``)."""
    return Generator.from_file(path, device=map_location, **kwargs).network


@pytest.mark.parametrize("stage", list(STAGE_NUMBERS))
def test_generation_refuses_the_model_file_of_an_earlier_stage(trained_bundle, bundle, stage):
    path = trained_bundle / "models" / bundle.STAGE_WEIGHTS[stage]
    with pytest.raises(ModelFileError) as info:
        load_generation_model(path)
    message = str(info.value)
    assert message.startswith(f"'{path}' holds the weights of stage {STAGE_NUMBERS[stage]} '{stage}'"), message
    assert "generation needs stage 4 'late' (train_late.json, which writes models/model.pt)" in message
    assert "--model_path" in message
    with pytest.raises(ModelFileError, match=f"stage {STAGE_NUMBERS[stage]} '{stage}'"):  # the same with --preset
        load_generation_model(path, preset="small", network_overrides=bundle.TINY_NETWORK)
    model = load_generation_model(trained_bundle / "models" / "model.pt")  # the final model still loads
    assert StageRecord.read(bundle.load_checkpoint(trained_bundle / "models" / "model.pt")) == "late"
    assert model.size_divisor == 32


def test_a_file_without_stage_record_and_an_untrained_unet_is_named_in_a_warning(tmp_path, recwarn):
    """Files written before the stage record (or by hand, as test stand-ins): a U-Net whose output layer is still
    all zeros (MONAI's initial value, kept through stages 1 and 2) loads with a warning naming the file; a
    trained-looking one loads without."""
    untrained = build_tiny_model(0, randomize=("autoencoder.condition_encoder",))
    path = tmp_path / "old_stage2.pt"
    torch.save({"model": untrained.state_dict(), "config": untrained.config}, path)
    with pytest.warns(UserWarning, match=r"has no stage record and holds an untrained denoiser \(the U-Net's output"):
        load_generation_model(path)
    trained = build_tiny_model(0)
    torch.save({"model": trained.state_dict(), "config": trained.config}, tmp_path / "old_final.pt")
    recwarn.clear()
    assert load_generation_model(tmp_path / "old_final.pt").size_divisor == 32
    assert not [w for w in recwarn if "stage record" in str(w.message)]


class _Unsafe:
    """Pickles as a call of ``os.getcwd`` (harmless): a global that ``weights_only`` loading must refuse."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture
def model_files(tmp_path):
    model = build_tiny_model(0)
    good = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "config": model.config}, good)
    data = good.read_bytes()
    files = {"good": good}
    for name, content in {"truncated": data[: len(data) // 2], "empty": b"", "text": b"model weights\n"}.items():
        files[name] = tmp_path / f"{name}.pt"
        files[name].write_bytes(content)
    files["unsafe"] = tmp_path / "unsafe.pt"
    torch.save({"model": model.state_dict(), "config": model.config, "extra": _Unsafe()}, files["unsafe"])
    return files


def test_unreadable_and_unsafe_model_files_have_distinct_messages(model_files):
    expected = {
        "truncated": "cannot read the checkpoint '{}': the file is truncated or damaged (",
        "empty": "cannot read the checkpoint '{}': the file is empty (0 bytes)",
        "text": "cannot read the checkpoint '{}': it is not a PyTorch file (",
        "unsafe": "refused to load '{}': it holds pickled Python objects beyond tensors and plain containers (",
    }
    messages = {}
    for name, start in expected.items():
        with pytest.raises(ModelFileError) as info:
            load_generation_model(model_files[name])
        messages[name] = str(info.value)
        assert messages[name].startswith(start.format(model_files[name])), messages[name]
        assert "edited or assembled by hand" not in messages[name] and "\n" not in messages[name]
        assert isinstance(info.value, UserInputError)  # one line on the command line, no traceback
    assert "getcwd" in messages["unsafe"]  # the refused global is named


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_a_cuda_device_without_cuda_is_named(model_files, device):
    with pytest.raises(ModelFileError) as info:
        load_generation_model(model_files["good"], map_location=device)
    message = str(info.value)
    assert message.startswith(f"--device {device}: CUDA is not available here (torch.cuda.is_available() is False")
    assert "run with --device cpu" in message


def test_a_device_that_is_not_a_device_name_is_named(model_files):
    with pytest.raises(ModelFileError, match=r"^--device gpu: not a device name"):
        load_generation_model(model_files["good"], map_location="gpu")
