"""The bundle configs wire components rather than compute: handler lists picked by name, short expressions.

Handler lists are composed from named groups in ``common.json`` (``train#core_handlers``, ``train#report_handlers``,
``validate#core_handlers``, ``validate#report_handlers``); ``multi_gpu_train.json`` picks the groups by id, so
reordering or extending a group cannot silently hand a rank the wrong handlers (it sliced the lists by position
before: ``@train#base_handlers[:-3]``). The handler lists are checked here by the types they hold, from the parsed
configs without building any component.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "bundle" / "configs"
MAX_EXPRESSION = 120  # characters of a "$" expression; longer logic goes into a named function of the package

# the handler types of the training stages, in firing order (common.json)
TRAIN_CORE = [
    "DeterministicSeedHandler",
    "LrScheduleHandler",
    "ValidationHandler",
    "AtomicCheckpointSaver",  # the resumable state (checkpoint_last.pt)
    "AtomicCheckpointSaver",  # the stage's weights file
    "RunLogHandler",
]
TRAIN_REPORT = ["StatsHandler", "TensorBoardStatsHandler", "TrainingProgressBar"]
VALIDATE_CORE = ["AtomicCheckpointSaver"]  # model_best.pt and the best-metric tracking
VALIDATE_REPORT = ["RunLogHandler", "StatsHandler", "TensorBoardStatsHandler", "ImageGridHandler"]
DIFFUSION_STAGE = ["ScaleFactorHandler"]  # train_diffusion.json's stage_handlers


def _expressions(node: Any):
    if isinstance(node, dict):
        for value in node.values():
            yield from _expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from _expressions(value)
    elif isinstance(node, str) and node.startswith("$"):
        yield node


def _as_targets(node: Any) -> Any:
    """The config with every component (a dict with ``_target_``) replaced by its class name: the handler lists
    then resolve to lists of names, without building networks, datasets or engines."""
    if isinstance(node, dict):
        if "_target_" in node:
            return str(node["_target_"]).rpartition(".")[2]
        return {key: _as_targets(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_as_targets(value) for value in node]
    return node


def _handler_types(files: list[str], ids: list[str], **overrides: Any) -> dict[str, list[str]]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in files])
    wanted = {i: parser.get(i) for i in ids}  # read before the engines holding them become names
    parser.set(_as_targets(parser.get()))
    for key, value in {**overrides, **{f"probe_{n}": wanted[i] for n, i in enumerate(ids)}}.items():
        parser[key] = value
    return {i: parser.get_parsed_content(f"probe_{n}") for n, i in enumerate(ids)}


CONFIG_FILES = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.json"))
HANDLER_SUBSCRIPT = re.compile(r"@[\w#]*handlers[\w#]*\s*\[")  # @train#base_handlers[:-3], @validate#handlers[-1]


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_no_handler_list_is_indexed_or_sliced(name):
    config = json.loads((CONFIGS / name).read_text())
    subscripted = [e for e in _expressions(config) if HANDLER_SUBSCRIPT.search(e)]
    assert not subscripted, f"{name}: pick handlers by id (named groups of common.json), not by position: {subscripted}"


def test_the_slicing_check_catches_the_old_multi_gpu_config():
    assert HANDLER_SUBSCRIPT.search("$@train#base_handlers if @is_main_rank else @train#base_handlers[:-3]")
    assert HANDLER_SUBSCRIPT.search("$@validate#handlers if @is_main_rank else @validate#handlers[-1:]")
    assert not HANDLER_SUBSCRIPT.search("$dict(list(@validate#metrics.items())[:1])")


def test_single_process_handlers():
    ids = ["train#handlers", "validate#evaluator#val_handlers"]
    types = _handler_types(["common.json", "train_diffusion.json"], ids)
    assert types["train#handlers"] == DIFFUSION_STAGE + TRAIN_CORE + TRAIN_REPORT
    assert types["validate#evaluator#val_handlers"] == ["ConditioningGapHandler"] + VALIDATE_REPORT + VALIDATE_CORE
    resumed = _handler_types(["common.json", "train_diffusion.json"], ids[:1], resume=True)
    assert resumed["train#handlers"] == ["ResumeCheckpointLoader"] + DIFFUSION_STAGE + TRAIN_CORE + TRAIN_REPORT


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("main_rank", [True, False])
def test_multi_gpu_handlers_by_rank(main_rank, resume):
    """The main rank runs every handler; the others run the same minus the reporting ones (console, TensorBoard,
    progress bar, validation grid and log), and keep everything that carries the run's state. (The validation's
    stage handlers, train_diffusion.json's conditioning gap, are not run under multi_gpu_train.json, as before.)"""
    files = ["common.json", "train_diffusion.json", "multi_gpu_train.json"]
    ids = ["train#handlers", "validate#evaluator#val_handlers"]
    types = _handler_types(files, ids, is_main_rank=main_rank, resume=resume)
    loader = ["ResumeCheckpointLoader"] if resume else []
    if main_rank:
        assert types["train#handlers"] == loader + DIFFUSION_STAGE + TRAIN_CORE + TRAIN_REPORT
        assert types["validate#evaluator#val_handlers"] == VALIDATE_REPORT + VALIDATE_CORE
    else:
        assert types["train#handlers"] == loader + DIFFUSION_STAGE + TRAIN_CORE
        assert types["validate#evaluator#val_handlers"] == VALIDATE_CORE
    assert types["train#handlers"].count("AtomicCheckpointSaver") == 2  # every rank: Ignite saves on rank 0 only


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_expressions_are_short(name):
    config = json.loads((CONFIGS / name).read_text())
    long = [e for e in _expressions(config) if len(e) > MAX_EXPRESSION]
    assert not long, (
        f"{name}: {len(long)} '$' expression(s) over {MAX_EXPRESSION} characters: move the logic into a named, "
        f"documented function of the package (or a '_target_' component): {[e[:80] + '...' for e in long]}"
    )


def _parsed(files: list[str], key: str, **overrides: Any) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in files])
    for name, value in overrides.items():
        parser[name] = value
    return parser.get_parsed_content(key)


def test_perceptual_loss_component(tmp_path):
    """train_autoencoder.json's perceptual term: None at weight 0 (the default), else the loss on the device."""
    from monai_lpuwf.losses.perceptual import OfflinePerceptualLoss, build_feature_network

    files = ["common.json", "train_autoencoder.json"]
    assert _parsed(files, "perceptual_loss", perceptual_weights_path=str(tmp_path / "missing.pth")) is None
    path = tmp_path / "alexnet.pth"
    torch = pytest.importorskip("torch")
    torch.save({f"features.{k}": v for k, v in build_feature_network("alexnet").state_dict().items()}, path)
    loss = _parsed(files, "perceptual_loss", perceptual_weight=0.001, perceptual_weights_path=str(path), device="cpu")
    assert isinstance(loss, OfflinePerceptualLoss) and loss.network == "alexnet"


def test_seed_check_sampler_component(tmp_path):
    """evaluate.json's seed-check sampler: None without seed-check images, else the generator's own sampling settings
    (the model file's recommendations and the command line's, one place) with the seed offset."""
    from monai_lpuwf.inferers import LPUWFSampler
    from monai_lpuwf.networks import ModelFile, build_residual_model

    model_path = tmp_path / "model_residual.pt"
    recommended = {"t_start": 350, "flip_average": True, "num_inference_steps": 10}
    ModelFile.from_network(build_residual_model(), stage="residual", sampling=recommended).save(model_path)
    files = ["inference.json", "evaluate.json"]
    key = "seed_check#sampler"
    common = {"model_path": str(model_path), "device": "cpu"}
    assert _parsed(files, key, seed_check_images=0, **common) is None
    sampler = _parsed(files, key, seed=5, eta="0.5", clip_sample="false", **common)
    assert isinstance(sampler, LPUWFSampler)
    assert (sampler.seed, sampler.eta, sampler.clip_sample) == (1005, 0.5, False)
    # the model file's recommendations reach the second draw as they reach the first
    assert (sampler.t_start, sampler.flip_average, sampler.num_inference_steps) == (350, True, 10)
    inferer = _parsed(files, "inferer", seed=5, **common)
    assert (inferer.sampler.t_start, inferer.sampler.flip_average, inferer.sampler.seed) == (350, True, 5)


def test_the_residual_is_trained_against_the_base_it_is_recommended_to_be_sampled_from():
    """train_residual.json: the residual of the flip-averaged prior when the model file will recommend flip
    averaging (scale, training batches and validation alike), of the plain prior otherwise."""
    from monai.bundle import ConfigParser

    files = ["common.json", "train_residual.json"]
    assert _parsed(files, "residual_flip_average") is True
    assert _parsed(files, "residual_flip_average", sampling_recommendation={}) is False
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in files])
    users = [parser["train#trainer#prepare_batch#flip_average"], parser["stage_handlers#0#flip_average"],
             parser["validate#inferer#flip_average"]]  # fmt: skip
    assert users == ["@residual_flip_average"] * 3


@pytest.mark.parametrize(
    "files",
    [["common.json", "train_prior.json"], ["common.json", "train_autoencoder.json"],
     ["common.json", "train_diffusion.json"], ["common.json", "train_residual.json"]],
    ids=["prior", "autoencoder", "diffusion", "residual"],
)  # fmt: skip
def test_training_steps_take_plain_tensors_validation_keeps_metadata(files):
    """Every stage's training step drops the MetaTensor bookkeeping (a cost on every network operation); its
    validation keeps the metadata (file names, applied transforms) for the image grid and the writers."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in files])
    train = parser["train#trainer#prepare_batch"]
    target = train["_target_"]
    if target.endswith("KeyedPrepareBatch"):
        assert train.get("keep_meta") is False, f"{files[-1]}: the training KeyedPrepareBatch keeps MetaTensors"
    else:  # the stage prepare batches: plain tensors always
        assert target.rsplit(".", 1)[-1] in {"AutoencoderPrepareBatch", "LatentDiffusionPrepareBatch",
                                             "ResidualDiffusionPrepareBatch"}, target  # fmt: skip
    assert parser["validate#prepare_batch"].get("keep_meta", True) is True
