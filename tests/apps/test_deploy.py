"""The MONAI Deploy application (apps/deploy) run as the SDK runs it, on folders of SLO images.

Runs in an environment with ``monai-deploy-app-sdk`` (``.ci/apps.sh`` builds ``.venv-deploy``); skipped elsewhere.
The written images are compared with the library's own generation pipeline (the bundle's inference transforms,
:class:`~monai_lpuwf.inferers.LPUWFSampler`, ``Invertd``) on the same model and seed: same size, same orientation,
same pixels up to the 8-bit rounding.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "monai.deploy.core",
    reason="monai-deploy-app-sdk is not installed in this environment (.ci/apps.sh runs these tests in .venv-deploy)",
)
yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the app's YAML files")

from PIL import Image  # noqa: E402

from monai_lpuwf.data import generate_phantoms  # noqa: E402

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "apps" / "deploy"
SAMPLER = {"scheduler": "ddim", "num_inference_steps": 2, "seed": 3}
TIMEOUT = 300


def write_config(path: Path, num_samples: int = 2, extension: str = ".png") -> Path:
    config = {
        "generate": {**SAMPLER, "num_samples": num_samples, "sharpen": True},
        "writer": {"extension": extension, "suffix": "_late", "bit_depth": 8},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_app(args: list[str], config: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python apps/deploy ARGS``: the app's own command line, as the SDK documents running an app locally."""
    full_env = {**os.environ, "LPUWF_DEPLOY_CONFIG": str(config), "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, str(DEPLOY_DIR), *args], env=full_env, capture_output=True, text=True, timeout=TIMEOUT
    )


def read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L", f"{path}: expected a grey image, got mode {img.mode}"
        return np.asarray(img, dtype=np.float64)


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory) -> Path:
    """Two non-square phantom triplets in a sub-folder (``val/1.png``, ``val/1.1.png``, ...; the authors' naming),
    of a size that is not a multiple of the model's size divisor."""
    root = tmp_path_factory.mktemp("deploy_in")
    generate_phantoms(root / "val", num=2, size=(90, 120), seed=5)
    return root


def test_folder_run_writes_fa_and_uncertainty_like_the_library(
    phantom_folder, demo_model_file, generation_oracle, tmp_path
):
    reference, assert_matches = generation_oracle
    config = write_config(tmp_path / "config.yaml", num_samples=2)
    out_dir = tmp_path / "out"
    before = sorted(p.name for p in phantom_folder.rglob("*"))
    result = run_app(["-i", str(phantom_folder), "-o", str(out_dir), "-m", str(demo_model_file)], config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in phantom_folder.rglob("*")) == before, "the app wrote into its input folder"
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.png"))
    assert written == ["val/1_late.png", "val/1_late_std.png", "val/2_late.png", "val/2_late_std.png"]

    sensitivity = []
    for n in (1, 2):
        slo_file = phantom_folder / "val" / f"{n}.png"
        expected = reference(demo_model_file, slo_file, **SAMPLER, num_samples=2)
        fa = read_grey(out_dir / "val" / f"{n}_late.png")
        assert fa.shape == (90, 120)  # (H, W) of the input SLO (padded to 96 x 128 for the model, cropped back)
        assert_matches(fa, expected["pred"], f"{n}_late.png")
        assert_matches(read_grey(out_dir / "val" / f"{n}_late_std.png"), expected["pred_std"], f"{n}_late_std.png")
        assert expected["pred_std"].max() > 0  # two different draws
        # the comparison would catch a flipped or transposed output: it is far from its mirror images
        sensitivity += [np.abs(fa - fa[::-1]).mean(), np.abs(fa - fa[:, ::-1]).mean()]
    assert min(sensitivity) > 5, sensitivity


def test_map_layout_from_environment_and_bad_input(demo_model_file, generation_oracle, tmp_path):
    """The packaged app's layout: paths from HOLOSCAN_* variables, the model in ``models/<name>/model.pt``.

    One unreadable input is reported (exit status 1) while the other image is still written.
    """
    models = tmp_path / "models" / "lpuwf"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(demo_model_file.read_bytes())
    inputs = tmp_path / "input"
    generate_phantoms(inputs, num=1, size=(70, 100), seed=7)
    (inputs / "2.png").write_bytes(b"not an image")
    config = write_config(tmp_path / "config.yaml", num_samples=1)
    env = {
        "HOLOSCAN_INPUT_PATH": str(inputs),
        "HOLOSCAN_OUTPUT_PATH": str(tmp_path / "output"),
        "HOLOSCAN_MODEL_PATH": str(tmp_path / "models"),
    }
    result = run_app([], config, env)
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    assert re.search(r"no output for .*2\.png: UWFImageError", log), log[-3000:]
    written = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert written == ["1_late.png"]  # no std map with one sample
    reference, assert_matches = generation_oracle
    expected = reference(demo_model_file, inputs / "1.png", **SAMPLER, num_samples=1)
    assert_matches(read_grey(tmp_path / "output" / "1_late.png"), expected["pred"], "1_late.png")


def test_refuses_output_inside_input_and_missing_model(phantom_folder, demo_model_file, tmp_path):
    config = write_config(tmp_path / "config.yaml")
    inside = run_app(["-i", str(phantom_folder), "-o", str(phantom_folder / "out"), "-m", str(demo_model_file)], config)
    assert inside.returncode != 0
    assert "must lie outside the input" in inside.stdout + inside.stderr
    # the SDK's argument parser creates the output folder; the app then stops before writing anything into it
    assert not any((phantom_folder / "out").rglob("*"))
    empty = tmp_path / "models"  # a folder without a model file (the SDK itself rejects a path that does not exist)
    empty.mkdir()
    missing = run_app(["-i", str(phantom_folder), "-o", str(tmp_path / "o"), "-m", str(empty)], config)
    assert missing.returncode != 0
    assert "no model to generate with at" in missing.stdout + missing.stderr


@pytest.mark.realdata
def test_real_sample_full_frame(uwf_samples_dir, demo_model_file, generation_oracle, tmp_path):
    """A real 853 x 682 SLO (24-bit BMP) in, a grey 853 x 682 FA out, same pixels as the library."""
    config = write_config(tmp_path / "config.yaml", num_samples=1)
    slo_file = uwf_samples_dir / "val" / "7.bmp"
    result = run_app(["-i", str(slo_file), "-o", str(tmp_path / "out"), "-m", str(demo_model_file)], config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fa = read_grey(tmp_path / "out" / "7_late.png")
    assert fa.shape == (682, 853)
    reference, assert_matches = generation_oracle
    assert_matches(fa, reference(demo_model_file, slo_file, **SAMPLER, num_samples=1)["pred"], "7_late.png")


def test_packaging_files():
    """What the MAP packager reads (app.yaml, requirements.txt, __main__.py), and pins that match this environment."""
    manifest = yaml.safe_load((DEPLOY_DIR / "app.yaml").read_text())
    application = manifest["application"]
    assert {"title", "version", "inputFormats", "outputFormats"} <= set(application)
    assert application["inputFormats"] == ["file"] and application["outputFormats"] == ["file"]
    assert {"cpu", "gpu", "memory", "gpuMemory"} <= set(manifest["resources"])
    assert (DEPLOY_DIR / "__main__.py").is_file()
    runtime = yaml.safe_load((DEPLOY_DIR / "lpuwf_deploy.yaml").read_text())
    assert set(runtime) == {"generate", "writer"}
    pins = {}
    for line in (DEPLOY_DIR / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: '{line}' is not pinned with =="
            pins[name] = version
    assert {"torch", "monai", "monai-deploy-app-sdk"} <= set(pins)
    for name, version in pins.items():
        installed = importlib.metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: requirements.txt pins {version}, installed {installed}"
    assert torch.__version__.split("+")[0] == pins["torch"]
