"""``bundle/configs/metadata.json`` has the model-zoo fields, checked offline.

``python -m monai.bundle verify_metadata`` downloads its JSON schema, so it cannot run here; this test checks
the fields that schema (and the model-zoo CI) require, and that they agree with the code and the environment.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import torch
from packaging.version import Version

from monai_lpuwf.networks import PRESETS, build_model

METADATA = Path(__file__).resolve().parents[2] / "bundle" / "configs" / "metadata.json"
REQUIRED = (
    "schema",
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "data_source",
    "data_type",
    "intended_use",
    "references",
    "network_data_format",
)
TENSOR_FIELDS = (
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads(METADATA.read_text())


def test_required_fields_are_present_and_filled(meta):
    missing = [key for key in REQUIRED if not meta.get(key)]
    assert not missing, f"metadata.json lacks {missing}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]) and meta["version"] in meta["changelog"]
    assert meta["schema"].startswith("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/")
    assert "not to be used clinically" in meta["intended_use"]


def test_versions_parse_and_required_packages_are_installed(meta):
    for key in ("monai_version", "pytorch_version", "numpy_version"):
        Version(meta[key])
    assert Version(meta["monai_version"]) >= Version("1.6.1")
    assert meta["required_packages_version"]["monai-lpuwf"] == version("monai-lpuwf")
    for name, pinned in meta["required_packages_version"].items():
        Version(pinned)
        try:
            version(name)
        except PackageNotFoundError:
            pytest.fail(f"required_packages_version lists {name!r}, which is not installed (not needed, or misspelt)")


def test_network_data_format_matches_the_model(meta):
    fmt = meta["network_data_format"]
    assert set(fmt) >= {"inputs", "outputs"}
    (name_in, slo), (name_out, fa) = next(iter(fmt["inputs"].items())), next(iter(fmt["outputs"].items()))
    assert name_in == "image" and name_out == "pred"
    for entry, where in ((slo, "inputs.image"), (fa, "outputs.pred")):
        missing = [k for k in TENSOR_FIELDS if k not in entry]
        assert not missing, f"network_data_format.{where} lacks {missing}"
        assert len(entry["channel_def"]) == entry["num_channels"], where
        assert entry["value_range"] == [-1, 1], where
    assert "modality" in slo
    for preset in PRESETS:
        config = PRESETS[preset]
        assert slo["num_channels"] == config["condition_channels"] and fa["num_channels"] == config["image_channels"]
        with torch.device("meta"):  # architecture only, no weights allocated
            divisor = build_model(preset).size_divisor
        assert slo["spatial_shape"] == fa["spatial_shape"] == [f"{divisor}*n", f"{divisor}*n"], preset
