"""Per-module learning-rate multipliers (``lr_multipliers``): parameter groups and the bundle's optimiser.

Oracle: Adam's first step moves every parameter by ``lr * g / (|g| + eps)`` (bias-corrected moments of one
gradient), i.e. by its group's learning rate where ``|g| >> eps``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from torch import nn

from monai_lpuwf.engines import set_trainable, trainable_parameters

CONFIGS = Path(__file__).resolve().parents[2] / "bundle" / "configs"


def _toy() -> nn.Module:
    net = nn.Module()
    net.unet = nn.Linear(3, 3)
    net.controlnet = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    net.autoencoder = nn.Linear(3, 3)
    return set_trainable(net, ["unet", "controlnet"])


def test_no_multipliers_is_the_plain_parameter_list():
    net = _toy()
    params = trainable_parameters(net)
    assert [id(p) for p in params] == [id(p) for n, p in net.named_parameters() if not n.startswith("autoencoder")]


def test_groups_and_first_adam_step_follow_the_multipliers():
    net = _toy()
    groups = trainable_parameters(net, lr_multipliers={"controlnet": 6.0, "controlnet.1": 2.0}, lr=1e-2)
    by_id = {id(p): g.get("lr") for g in groups for p in g["params"]}
    assert len(by_id) == sum(len(g["params"]) for g in groups) == 6  # each trainable parameter once, frozen left out
    expected = {"unet": 1e-2, "controlnet.0": 6e-2, "controlnet.1": 2e-2}  # the longest matching name wins
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.Adam(groups, lr=1e-2)
    net.zero_grad()
    x = torch.randn(4, 3)
    (net.unet(x).sum() + net.controlnet(x).pow(2).sum()).backward()
    opt.step()
    for name, p in net.named_parameters():
        step = (p.detach() - before[name]).abs()
        if name.startswith("autoencoder"):
            assert torch.equal(step, torch.zeros_like(step))
            continue
        lr = next(v for k, v in expected.items() if name.startswith(k + "."))
        assert torch.allclose(step, torch.full_like(step, lr), rtol=1e-3), name


def test_bad_multipliers_say_what_is_wrong():
    net = _toy()
    with pytest.raises(KeyError, match=r"\['contrlnet'\].*controlnet"):
        trainable_parameters(net, lr_multipliers={"contrlnet": 3.0}, lr=1e-3)
    with pytest.raises(ValueError, match="base learning rate"):
        trainable_parameters(net, lr_multipliers={"controlnet": 3.0})


def test_bundle_optimizer_uses_lr_multipliers(tmp_path):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "common.json"), str(CONFIGS / "train_diffusion.json")])
    parser["bundle_root"] = str(tmp_path)
    parser["device"] = "$torch.device('cpu')"
    parser["lr"] = 1e-3
    parser["lr_multipliers"] = {"controlnet": 6.0}
    parser.parse()
    opt = parser.get_parsed_content("optimizer")
    network = parser.get_parsed_content("network")
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-3, 6e-3])
    cn = {id(p) for p in network.controlnet.parameters()}
    for group in opt.param_groups:
        assert all((id(p) in cn) == (group["lr"] == pytest.approx(6e-3)) for p in group["params"])
    parser["lr_multipliers"] = {}
    parser.parse()
    assert [g["lr"] for g in parser.get_parsed_content("optimizer").param_groups] == [1e-3]
