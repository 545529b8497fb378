"""Issue 12 (6): one source of the sampling defaults, ``monai_lpuwf.inferers.INFERENCE_DEFAULTS``, read by the
library, the bundle, MONAI Label and MONAI Deploy; validation during training takes its steps from a named key.
Issue 21: the apps leave every setting to :class:`monai_lpuwf.generation.Generator` (the model file's recommendation,
then these defaults)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from monai_lpuwf.inferers import INFERENCE_DEFAULTS, LPUWFInferer, LPUWFSampler

ROOT = Path(__file__).resolve().parents[2]
SAMPLER_ARGS = tuple(INFERENCE_DEFAULTS)


def _init_signature(path: Path, cls: str) -> tuple[list[str], str | None]:
    """``(parameter names, name of the ** parameter)`` of ``cls.__init__`` in ``path`` (the apps need MONAI Label /
    the Deploy SDK to import, which the default test run does not install)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = [a.arg for a in init.args.posonlyargs + init.args.args + init.args.kwonlyargs]
    return names, init.args.kwarg.arg if init.args.kwarg else None


def test_the_library_uses_the_defaults():
    assert dict(INFERENCE_DEFAULTS) == {
        "scheduler": "ddim", "num_inference_steps": 25, "eta": 0.0, "clip_sample": False, "num_samples": 1, "seed": 0,
        "conditioning_scale": 1.0, "t_start": None, "flip_average": False,
    }  # fmt: skip
    for sampler in (LPUWFSampler(), LPUWFInferer().sampler):
        assert {k: getattr(sampler, k) for k in INFERENCE_DEFAULTS} == dict(INFERENCE_DEFAULTS)
    with pytest.raises(TypeError):
        INFERENCE_DEFAULTS["num_inference_steps"] = 10  # read-only


def test_the_bundle_reads_the_defaults():
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundle" / "configs" / "inference.json"))
    parser["model_path"] = "unused.pt"
    sampler = parser.get_parsed_content("inferer", instantiate=True).sampler
    assert {k: getattr(sampler, k) for k in INFERENCE_DEFAULTS} == dict(INFERENCE_DEFAULTS)
    assert sampler.progress is True  # per-step progress in the bundle's generation and evaluation
    train = json.loads((ROOT / "bundle" / "configs" / "train_diffusion.json").read_text())
    assert train["validate#inferer"]["num_inference_steps"] == "@val_inference_steps"  # named, shorter on purpose
    assert isinstance(train["val_inference_steps"], int)


def test_monai_label_and_deploy_leave_the_settings_to_the_generator():
    """Neither app names or defaults a sampling setting: they take them by keyword (``**``), so a setting not given
    is the model file's recommendation, else INFERENCE_DEFAULTS, and a new setting needs no change to the apps."""
    for path, cls in [("monailabel/generation_task.py", "LateFAGenerationTask"),
                      ("deploy/generate_operator.py", "LPUWFGenerateOperator")]:  # fmt: skip
        names, kwarg = _init_signature(ROOT / "apps" / path, cls)
        assert not set(names) & set(SAMPLER_ARGS), f"{cls} lists sampling settings: {set(names) & set(SAMPLER_ARGS)}"
        assert kwarg is not None, f"{cls} takes no keyword settings"
    # the Deploy app passes its YAML's `generate` section to the operator: it must not set other defaults
    text = (ROOT / "apps" / "deploy" / "lpuwf_deploy.yaml").read_text()
    for key in SAMPLER_ARGS:
        assert not re.search(rf"^\s*{key}\s*:", text, re.M), f"lpuwf_deploy.yaml sets {key}"
