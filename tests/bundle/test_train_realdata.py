"""The authors' real sample triplets (../shared/uwf-samples) train as they are, through ``--dataset_dir``."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.realdata, pytest.mark.filterwarnings("ignore:parsing config_file")]


def test_real_triplets_train_stages_1_and_4(tmp_path, bundle, trained_bundle, uwf_samples_dir):
    """Stage 1 (early/late FA) and stage 4 (late FA, CTRD map, field of view) on the 853 x 682 BMP triplets:
    ``train/`` (4 triplets) is the training split and ``val/`` (3) the validation split. Real frames are registered
    by default (the SLO and the late FA onto the early FA; all four training pairs register: bundle/docs/README.md,
    "Registration: one geometry for real frames"), so train/1-4 train."""
    root = bundle.new_bundle_root(tmp_path / "real")
    settings = {"dataset_dir": str(uwf_samples_dir), "max_epochs": 1, "val_interval": 1}
    bundle.run_stage(root, "autoencoder", **settings)
    bundle.run_stage(root, "late", initial_weights=str(trained_bundle / "models" / "model_diffusion.pt"), **settings)
    for stage, weights in (("autoencoder", "model_autoencoder.pt"), ("late", "model.pt")):
        state = torch.load(root / "models" / stage / "checkpoint_last.pt", weights_only=True)
        assert state["trainer"]["iteration"] == 2, stage  # the 4 registered training triplets in batches of 2
        assert (root / "models" / weights).is_file()
        assert len(bundle.scalars(root, stage, "val_psnr")) == 1  # validated on val/
    assert not (root / "work" / "data").exists(), "phantoms were generated although a dataset was given"
