"""Issue 18: train_prior.json -> train_residual.json -> inference.json through ``monai.bundle`` on tiny phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from monai_lpuwf.networks import ModelFile, ResidualDiffusionModel, SupervisedPrior

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")
TINY_PRIOR = {"features": [4, 4, 8, 8, 8, 4]}
RUN = {"image_size": [64, 64], "phantom_size": [64, 64], "num_phantoms": 4, "train_batch_size": 2, "max_epochs": 2,
       "val_interval": 2, "log_interval": 1, "save_interval": 1}  # fmt: skip


def _train(root, configs, **overrides):
    from monai.bundle import run

    run("training", config_file=[str(root / "configs" / c) for c in ("common.json", *configs)],
        meta_file=str(root / "configs" / "metadata.json"), bundle_root=str(root),
        **{"num_threads": torch.get_num_threads(), **RUN, **overrides})  # fmt: skip


def test_prior_then_residual_then_generation(tmp_path, bundle):
    from monai.bundle import run

    root = bundle.new_bundle_root(tmp_path / "b")
    _train(root, ["train_prior.json"], prior_overrides=TINY_PRIOR, prior_band_weight=0.5)  # the band term runs
    prior_file = bundle.load_checkpoint(root / "models" / "model_prior.pt")
    assert prior_file["config"]["model_class"] == "prior" and "data_stats" in prior_file
    assert prior_file["sampling"] == {"flip_average": True}  # generation averages the prior over the SLO's flips
    prior = ModelFile.load(root / "models" / "model_prior.pt").build()
    assert isinstance(prior, SupervisedPrior)

    residual_overrides = {"prior": TINY_PRIOR, "denoiser": {"channels": [8, 8], "attention_levels": [False, False],
                                                            "norm_num_groups": 4}}  # fmt: skip
    _train(root, ["train_residual.json"], residual_overrides=residual_overrides, val_inference_steps=2)
    model = ModelFile.load(root / "models" / "model_residual.pt").build()
    assert isinstance(model, ResidualDiffusionModel)
    # the prior came through the residual stage unchanged (only the denoiser trains), and the scale was set
    for key, value in prior.state_dict().items():
        assert torch.equal(model.prior.state_dict()[key], value), key
    assert float(model.residual_scale) != 1.0
    assert ModelFile.load(root / "models" / "model_residual.pt").sampling == {"flip_average": True, "t_start": 350}

    outputs = {}
    for name, path, extra in (("prior", "model_prior.pt", {}), ("residual", "model_residual.pt",
                                                                 {"num_inference_steps": 2})):  # fmt: skip
        out = tmp_path / name
        run(config_file=str(root / "configs" / "inference.json"), bundle_root=str(root),
            model_path=str(root / "models" / path), output_dir=str(out), num_phantoms=4, phantom_size=[64, 64],
            num_threads=torch.get_num_threads(), **extra)  # fmt: skip
        files = sorted(out.glob("*_late.png"))
        assert len(files) == 1  # the held-out phantom
        outputs[name] = np.asarray(Image.open(files[0]), dtype=float)
        assert outputs[name].shape == (64, 64)
    # the residual method generates prior + residual: close to the prior's picture, not equal to it
    diff = np.abs(outputs["residual"] - outputs["prior"])
    assert 0 < diff.mean() < 64, diff.mean()

    # scoring the prior on the phantoms: no aligned rows (evaluate.json aligns only real data - a dataset folder or
    # datalist; the phantoms are generated in one geometry, and aligning them would only add interpolation)
    report = tmp_path / "report"
    run(config_file=[str(root / "configs" / c) for c in ("inference.json", "evaluate.json")], bundle_root=str(root),
        model_path=str(root / "models" / "model_prior.pt"), eval_dir=str(report), num_phantoms=4,
        phantom_size=[64, 64], eval_split="validation", fid=False, num_threads=torch.get_num_threads())  # fmt: skip
    rows = (report / "scores.csv").read_text().splitlines()
    predictors = {line.split(",")[1] for line in rows[1:]}
    assert predictors == {"model", "constant", "early"}, predictors
