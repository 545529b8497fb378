"""Fixtures for the MONAI Label / MONAI Deploy app tests: a tiny model file in the bundle's format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APPS_DIR = REPO_ROOT / "apps"


def load_app_module(path: Path, name: str):
    """Import a module of ``apps/`` (not a package) by file path."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_model_file(tmp_path_factory) -> Path:
    """An untrained tiny LPUWF model saved as the bundle saves ``models/model.pt`` (see apps/demo_model.py)."""
    demo = load_app_module(APPS_DIR / "demo_model.py", "lpuwf_demo_model")
    return demo.write_demo_model(tmp_path_factory.mktemp("model") / "model.pt")


def library_generation(model_file: Path, slo_file: Path, **sampler) -> dict[str, np.ndarray]:
    """The library's generation pipeline (as bundle/configs/inference.json), the oracle of the apps' outputs.

    ``uwf_inference_transforms`` (load, sharpen, pad to the model's divisor) -> ``LPUWFSampler`` -> ``Invertd``.

    Returns:
        ``{"pred": (H, W) FA, "pred_std": (H, W) std map or absent}`` as the 8-bit grey levels the apps write
        (FA: [-1, 1] -> 0..255; std: [0, 1] -> 0..255).
    """
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    from monai_lpuwf.inferers import LPUWFSampler
    from monai_lpuwf.networks import ModelFile
    from monai_lpuwf.transforms import uwf_inference_transforms

    model = ModelFile.load(model_file).build().eval()
    pre = uwf_inference_transforms(divisor=model.size_divisor, sharpen=True)
    item = pre({"slo": str(slo_file)})
    out = LPUWFSampler(**sampler)(item["slo"][None], model)
    # the sampler returns plain tensors: give the prediction the SLO's metadata and padding record (as the
    # bundle's LPUWFInferer does) so that Invertd crops it back
    item["pred"] = MetaTensor(out["pred"][0], meta=dict(item["slo"].meta),
                              applied_operations=list(item["slo"].applied_operations))  # fmt: skip
    height, width = item["pred"].shape[1:]  # padded
    item = Invertd(keys="pred", transform=pre, orig_keys="slo")(item)
    h, w = item["pred"].shape[1:]
    grey = {"pred": np.round((item["pred"][0].numpy().clip(-1, 1) + 1) / 2 * 255)}
    if out["pred_std"] is not None:
        top, left = (height - h) // 2, (width - w) // 2  # DivisiblePad's symmetric padding
        std = out["pred_std"][0, 0, top : top + h, left : left + w]
        grey["pred_std"] = np.round(std.clamp(0, 1).numpy() * 255)
    return grey


def assert_grey_matches(written: np.ndarray, expected: np.ndarray, name: str) -> None:
    """Same shape, and pixels within one grey level (float rounding at .5 may differ between processes)."""
    assert written.shape == expected.shape, f"{name}: written {written.shape} vs expected {expected.shape}"
    assert np.abs(written - expected).max() <= 1, f"{name}: pixels differ from the library pipeline"


@pytest.fixture(scope="session")
def generation_oracle():
    """``(library_generation, assert_grey_matches)`` for the app tests (conftest modules are not importable)."""
    return library_generation, assert_grey_matches
