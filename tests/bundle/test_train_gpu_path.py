"""The GPU data path of the bundle (``configs/gpu.json``), run on the CPU: items cached on the run's device,
augmented after the cache, an epoch of ``iterations_per_epoch`` batches from a ``ThreadDataLoader`` (no worker
processes to restart), bfloat16 autocast."""

from __future__ import annotations

import math

import torch
from monai.bundle import ConfigParser
from monai.data import ThreadDataLoader

from monai_lpuwf.data import IterationSampler


def test_gpu_overlay_trains_a_stage_in_epochs_of_fixed_length(tmp_path, bundle):
    root = bundle.new_bundle_root(tmp_path / "gpu")
    gpu = root / "configs" / "gpu.json"
    # 7 phantoms (5 training, 2 validation), batches of 2: a plain epoch would be 3 batches; asked: 4
    settings = {"num_phantoms": 7, "iterations_per_epoch": 4, "max_epochs": 2, "val_interval": 2, "save_interval": 4}
    parser = ConfigParser()
    parser.read_config([*bundle.config_files(root, "diffusion", [gpu])])
    parser.update({"bundle_root": str(root), **bundle.TINY_RUN, **settings})
    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader, ThreadDataLoader) and loader.num_workers == 0
    assert isinstance(loader.sampler, IterationSampler) and len(loader) == 4
    assert parser.get_parsed_content("amp") is True and parser.get_parsed_content("amp_dtype") == "bfloat16"
    assert parser.get_parsed_content("data_device") == parser.get_parsed_content("device")

    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    try:
        bundle.run_stage(root, "autoencoder", [gpu], **settings)
        assert torch.backends.cudnn.benchmark  # --cudnn_benchmark True (gpu.json) survives the per-iteration seeding
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    losses = bundle.scalars(root, "autoencoder", "loss")
    assert len(losses) == 2 * 4 and all(math.isfinite(v) for v in losses)  # 2 epochs of 4 iterations
    state = bundle.load_checkpoint(root / "models" / "autoencoder" / "checkpoint_last.pt")
    assert state["trainer"]["iteration"] == 8 and state["trainer"]["epoch_length"] == 4
    assert (root / "models" / "model_autoencoder.pt").is_file()
