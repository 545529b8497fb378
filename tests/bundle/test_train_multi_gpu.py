"""``multi_gpu_train.json`` under ``torchrun``: two processes (``gloo`` on CPU), DDP and a distributed sampler."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:parsing config_file")]


def test_diffusion_stage_under_torchrun(tmp_path, bundle, trained_bundle):
    root = bundle.new_bundle_root(tmp_path / "ddp")
    command = bundle.cli_command(
        root,
        "diffusion",
        [root / "configs" / "multi_gpu_train.json"],
        max_epochs=2,
        val_interval=2,
        initial_weights=str(trained_bundle / "models" / "model_condition_encoder.pt"),
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    env = {**bundle.cli_env(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(torchrun + command[1:], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    state = torch.load(root / "models" / "diffusion" / "checkpoint_last.pt", weights_only=True)
    # 3 training phantoms over 2 ranks (padded to 2 each), batches of 2: one iteration per epoch and rank
    assert state["trainer"]["iteration"] == 2
    weights = torch.load(root / "models" / "model_diffusion.pt", weights_only=True)
    assert float(weights["model"]["scale_factor"]) != 1.0  # computed from both ranks' data
    assert (root / "models" / "diffusion" / "model_best.pt").is_file()
    log = done.stdout + done.stderr
    assert log.count("latent scale factor computed from the data") == 2, log[-3000:]  # one line per rank
