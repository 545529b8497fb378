""":class:`monai_lpuwf.networks.ModelFile`: the one reader and writer of model files.

Oracles: the file the bundle's training writes (``AtomicCheckpointSaver`` with the ``model_dict`` of
``bundle/configs/common.json``: the network and its record objects), files written the old ways (before the stage
record; a bare state dict) and the messages the loaders gave before ``ModelFile`` (names the file and the fix).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from monai_lpuwf.engines import AtomicCheckpointSaver, ModelConfigRecord, StageOrderError, load_stage_weights
from monai_lpuwf.generation import Generator, SamplingRecord
from monai_lpuwf.metrics.baselines import TrainingIntensityRecord
from monai_lpuwf.networks import MODEL_FILE_KEYS, ModelFile, ModelFileError, StageRecord, build_model, model_from_config
from monai_lpuwf.networks.tiny import TINY_OVERRIDES, build_tiny_model
from monai_lpuwf.transforms import TrainingScaleRecord

COMMON_JSON = Path(__file__).resolve().parents[2] / "bundle" / "configs" / "common.json"
DATA_STATS = {"late_mean": -0.25, "num_images": 3}
TRAINING_SCALE = {"frame_size": [64.0, 64.0], "pixel_scale": [1.0, 1.0], "crop_size": [64, 64], "crop_scale": None,
                  "slo_mean": [0.1, -0.2, -0.5], "slo_mean_spread": 0.0, "num_images": 3}  # fmt: skip
SAMPLING = {"conditioning_scale": 2.0, "num_inference_steps": 3}


def _restored(record, state):
    record.load_state_dict(state)  # a record as a resumed run has it (nothing recomputed from images)
    return record


def _bundle_model_dict(network: torch.nn.Module) -> dict:
    """``model_dict`` of ``bundle/configs/common.json``: the network and the record objects training saves."""
    return {
        "model": network,
        "config": ModelConfigRecord(network),
        "stage": StageRecord("late"),
        "data_stats": _restored(TrainingIntensityRecord([]), DATA_STATS),
        "training_scale": _restored(TrainingScaleRecord([], (64, 64)), TRAINING_SCALE),
        "sampling": SamplingRecord(**SAMPLING),
    }


def _written_by_training(folder: Path, network: torch.nn.Module) -> Path:
    """The final model file as the bundle's ``AtomicCheckpointSaver`` writes it at the end of a run."""
    saver = AtomicCheckpointSaver(str(folder), _bundle_model_dict(network), save_final=True,
                                  final_filename="model.pt")  # fmt: skip
    engine = Engine(lambda engine, batch: None)
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    return folder / "model.pt"


def _assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _assert_same_checkpoint(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if key == "model":
            assert list(a[key]) == list(b[key])
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), name
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def network():
    return build_tiny_model(0)


@pytest.fixture
def trained_file(tmp_path, network):
    return _written_by_training(tmp_path / "training", network)


def test_the_bundle_writes_the_entries_of_a_model_file():
    """``model_dict`` in common.json lists exactly ModelFile's entries, in the same order."""
    model_dict = json.loads(COMMON_JSON.read_text())["model_dict"]
    assert tuple(model_dict) == MODEL_FILE_KEYS


def test_load_reads_what_training_wrote_and_save_writes_it_back_the_same(tmp_path, network, trained_file):
    oracle = torch.load(trained_file, map_location="cpu", weights_only=True)
    loaded = ModelFile.load(trained_file)
    assert loaded.path == trained_file and loaded.stage == "late" and loaded.config == oracle["config"]
    assert loaded.data_stats == DATA_STATS and loaded.training_scale == TRAINING_SCALE and loaded.sampling == SAMPLING
    assert loaded.training_mean() == -0.25 and loaded.scale_factor == TINY_OVERRIDES["scale_factor"]
    assert loaded.extra == {}
    _assert_same_checkpoint(loaded.to_checkpoint(), oracle)
    # written again by ModelFile.save, and made from the live network with the same records: the same file content
    _assert_same_checkpoint(torch.load(loaded.save(tmp_path / "again.pt"), weights_only=True), oracle)
    fresh = ModelFile.from_network(network, stage="late", data_stats=DATA_STATS, training_scale=TRAINING_SCALE,
                                   sampling=SAMPLING)  # fmt: skip
    _assert_same_checkpoint(torch.load(fresh.save(tmp_path / "fresh.pt"), weights_only=True), oracle)
    assert "weights=" in repr(fresh) and "stage=late" in repr(fresh)


def test_build_gives_the_network_with_its_weights(trained_file, network):
    oracle = torch.load(trained_file, map_location="cpu", weights_only=True)
    model = model_from_config(oracle["config"])  # the loader before ModelFile: config, then the weights
    model.load_state_dict(oracle["model"])
    built = ModelFile.load(trained_file).build()
    assert type(built) is type(model) and built.config == model.config
    _assert_same_weights(built.state_dict(), model.state_dict())
    slo = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x_t = torch.randn(1, model.latent_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        timesteps = torch.tensor([10])
        assert torch.equal(built.eval()(x_t, timesteps, slo), model.eval()(x_t, timesteps, slo))


def test_the_generator_gives_the_same_pixels_from_a_path_or_a_model_file(trained_file, tmp_path):
    from monai_lpuwf.data import generate_phantoms

    slo = generate_phantoms(tmp_path / "slo", num=1, size=(40, 50), seed=0)[0]["slo"]
    from_path = Generator.from_file(trained_file, device="cpu", seed=3)
    from_file = Generator.from_file(ModelFile.load(trained_file), device="cpu", seed=3)
    assert from_path.settings == from_file.settings and from_path.settings["conditioning_scale"] == 2.0
    with pytest.warns(UserWarning, match="far from the model's training data"):  # the file's training scale is used
        pred = from_path(slo)
    with pytest.warns(UserWarning, match="far from the model's training data"):
        assert torch.equal(pred, from_file(slo))


def test_files_written_the_old_way_still_load(tmp_path, network):
    """Before the stage record and the other entries: ``{"model", "config"}``; a bare state dict (monai-generative
    converted weights, weights saved by hand); a training checkpoint with its optimiser state."""
    torch.save({"model": network.state_dict(), "config": network.config}, tmp_path / "old.pt")
    old = ModelFile.load(tmp_path / "old.pt", stages=("late",))
    assert old.stage is None and old.data_stats is None and old.training_scale is None and old.sampling is None
    assert old.training_mean() is None and list(old.to_checkpoint()) == ["model", "config"]
    _assert_same_weights(old.build().state_dict(), network.state_dict())

    torch.save(network.state_dict(), tmp_path / "bare.pt")
    bare = ModelFile.load(tmp_path / "bare.pt")
    assert bare.config is None and bare.scale_factor == TINY_OVERRIDES["scale_factor"]
    with pytest.raises(ValueError, match=r"'.*bare\.pt' holds no model config .*ModelFile\.build\(preset"):
        bare.build()
    rebuilt = bare.build("small", TINY_OVERRIDES)
    _assert_same_weights(rebuilt.state_dict(), network.state_dict())

    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    torch.save({"model": network.state_dict(), "config": network.config, "optimizer": optimizer.state_dict()},
               tmp_path / "checkpoint_last.pt")  # fmt: skip
    checkpoint = ModelFile.load(tmp_path / "checkpoint_last.pt")
    assert list(checkpoint.extra) == ["optimizer"] and list(checkpoint.to_checkpoint())[-1] == "optimizer"


def test_stage_weights_go_through_model_file(tmp_path, network, trained_file):
    target = build_model("small", **TINY_OVERRIDES)
    assert load_stage_weights(target, trained_file, stage="late") is target
    _assert_same_weights(target.state_dict(), network.state_dict())
    with pytest.raises(StageOrderError, match=r"needs the weights written by .*Run the stages in order"):
        load_stage_weights(target, tmp_path / "none.pt", stage="late")
    fresh = build_model("small", **{**TINY_OVERRIDES, "scale_factor": 0.5})
    ModelFile.from_network(fresh).save(tmp_path / "no_scale.pt")
    with pytest.raises(StageOrderError, match="carry no latent scale factor"):
        load_stage_weights(build_model("small", **TINY_OVERRIDES), tmp_path / "no_scale.pt", require_scale_factor=True)


class _Unsafe:
    def __reduce__(self):
        return (os.getcwd, ())


def test_each_error_names_the_file_and_the_fix(tmp_path, network, trained_file):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match=f"model file '{missing}' does not exist; train the bundle first"):
        ModelFile.load(missing)
    with pytest.raises(FileNotFoundError, match="or pass --model_path"):
        ModelFile.load(missing, purpose="generation")
    data = trained_file.read_bytes()
    files = {"truncated": data[: len(data) // 2], "empty": b"", "text": b"model weights\n"}
    expected = {
        "truncated": "the file is truncated or damaged (",
        "empty": "the file is empty (0 bytes)",
        "text": "it is not a PyTorch file (",
    }
    for name, content in files.items():
        (tmp_path / f"{name}.pt").write_bytes(content)
        with pytest.raises(ModelFileError) as info:
            ModelFile.load(tmp_path / f"{name}.pt")
        message = str(info.value)
        assert message.startswith(f"cannot read the checkpoint '{tmp_path / name}.pt': {expected[name]}"), message
        assert "Copy the file again, or re-run the stage that writes it." in message
    torch.save({"model": network.state_dict(), "extra": _Unsafe()}, tmp_path / "unsafe.pt")
    with pytest.raises(ModelFileError, match=r"^refused to load '.*unsafe\.pt': .*getcwd.*re-save the weights"):
        ModelFile.load(tmp_path / "unsafe.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ModelFileError, match=r"'.*tensor\.pt' holds a Tensor, not a model file"):
        ModelFile.load(tmp_path / "tensor.pt")
    # another stage's file
    ModelFile.from_network(network, stage="autoencoder").save(tmp_path / "stage1.pt")
    with pytest.raises(ModelFileError) as info:
        ModelFile.load(tmp_path / "stage1.pt", stages=("late", "prior"), purpose="generation")
    assert str(info.value) == (
        f"'{tmp_path / 'stage1.pt'}' holds the weights of stage 1 'autoencoder' (train_autoencoder.json, which writes "
        "models/model_autoencoder.pt); generation needs stage 4 'late' (train_late.json, which writes "
        "models/model.pt): pass the model file of stage 4 'late' (train_late.json, which writes models/model.pt) "
        "(--model_path)."
    )
    with pytest.raises(ModelFileError, match=r"^--device gpu: not a device name"):
        ModelFile.load(trained_file, map_location="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelFileError, match=r"^--device cuda: CUDA is not available here.*run with --device cpu"):
            ModelFile.load(trained_file, map_location="cuda")
    # weights that do not match the architecture stored beside them (a file edited by hand)
    edited = ModelFile.load(trained_file)
    edited.weights = {k: v for k, v in edited.weights.items() if not k.startswith("unet.out.")}
    edited.save(tmp_path / "edited.pt")
    with pytest.raises(ModelFileError, match=r"the weights in '.*edited\.pt' do not match the architecture stored in"):
        ModelFile.load(tmp_path / "edited.pt").build()
    # another architecture than the configured one
    with pytest.raises(ValueError, match=r"'.*model\.pt' was made for another model architecture: autoencoder\.ch"):
        ModelFile.load(trained_file).build("small")
    bare = ModelFile(weights=edited.weights, path=tmp_path / "bare.pt")
    with pytest.raises(RuntimeError, match=r"the checkpoint '.*bare\.pt' does not match the configured model.*unet\."):
        bare.load_into(build_model("small", **TINY_OVERRIDES))


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, network, trained_file, monkeypatch):
    before = trained_file.read_bytes()
    names = sorted(p.name for p in trained_file.parent.iterdir())
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:  # half a file on disk, then the writer dies (disk full, kill ...)
            handle.truncate(len(before) // 2)
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        ModelFile.from_network(build_tiny_model(1), stage="late").save(trained_file)
    assert trained_file.read_bytes() == before
    assert sorted(p.name for p in trained_file.parent.iterdir()) == names  # no temporary file left behind
    monkeypatch.undo()
    assert ModelFile.load(trained_file).stage == "late"
