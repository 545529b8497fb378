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


def _init_defaults(path: Path, cls: str) -> dict:
    """The default values of ``cls.__init__``'s sampler arguments in ``path``, evaluated with INFERENCE_DEFAULTS
    (the apps need MONAI Label / the Deploy SDK to import, which the default test run does not install)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    positional = init.args.args[len(init.args.args) - len(init.args.defaults) :]
    args = positional + init.args.kwonlyargs
    defaults = init.args.defaults + init.args.kw_defaults  # kw_defaults: None where a keyword has no default
    namespace = {"INFERENCE_DEFAULTS": INFERENCE_DEFAULTS}
    return {a.arg: eval(compile(ast.Expression(d), str(path), "eval"), namespace) for a, d in zip(args, defaults)
            if a.arg in SAMPLER_ARGS}  # fmt: skip


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
    expected = dict.fromkeys(SAMPLER_ARGS)  # None: the model file's recommendation, else INFERENCE_DEFAULTS
    assert _init_defaults(ROOT / "apps" / "monailabel" / "generation_task.py", "LateFAGenerationTask") == expected
    assert _init_defaults(ROOT / "apps" / "deploy" / "generate_operator.py", "LPUWFGenerateOperator") == expected
    # the Deploy app passes its YAML's `generate` section to the operator: it must not set other defaults
    text = (ROOT / "apps" / "deploy" / "lpuwf_deploy.yaml").read_text()
    for key in SAMPLER_ARGS:
        assert not re.search(rf"^\s*{key}\s*:", text, re.M), f"lpuwf_deploy.yaml sets {key}"
