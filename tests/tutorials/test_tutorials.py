"""Every tutorial in tutorials/ runs as a script (smoke-test sizes) and writes the figures it promises.

Each runs in a subprocess with ``LPUWF_TUTORIAL_QUICK=1`` and its own output folder; a figure must be a PNG that
opens, of a real size, and not one flat colour.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "uwf-samples"
TIMEOUT = 600

FIGURES = {
    "01_quick_start.py": [
        "1_phantom_triplet.png",
        "2_registration_checkerboard.png",
        "3_training_losses.png",
        "4_generated.png",
        "5_scores.png",
    ],
    "02_transforms_in_a_monai_pipeline.py": ["1_batch_from_compose.png", "2_inference_padding_inverted.png"],
    "03_bring_your_own_data.py": ["1_triplet.png", "3_registration_summary.png"],
}


def run_tutorial(name: str, out: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "LPUWF_TUTORIAL_QUICK": "1", "LPUWF_TUTORIAL_OUT": str(out), "MPLBACKEND": "Agg",
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **env}  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(TUTORIALS / name)], cwd=out, env=full_env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def assert_figure(path: Path) -> None:
    assert path.is_file(), f"missing figure {path.name}"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    with Image.open(path) as img:
        assert min(img.size) >= 100, f"{path.name}: {img.size}"
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.std() > 1.0, f"{path.name} is blank"


def test_every_tutorial_is_tested():
    assert sorted(p.name for p in TUTORIALS.glob("[0-9]*.py")) == sorted(FIGURES)


@pytest.mark.slow
def test_quick_start(tmp_path):
    run_tutorial("01_quick_start.py", tmp_path)
    for name in FIGURES["01_quick_start.py"]:
        assert_figure(tmp_path / name)
    # the report written by the bundle's evaluate.json, and the model trained by its four stages
    assert (tmp_path / "report" / "summary.json").is_file()
    assert (tmp_path / "bundle" / "models" / "model.pt").is_file()


def test_transforms_in_a_monai_pipeline(tmp_path):
    result = run_tutorial("02_transforms_in_a_monai_pipeline.py", tmp_path)
    for name in FIGURES["02_transforms_in_a_monai_pipeline.py"]:
        assert_figure(tmp_path / name)
    assert "native (3, 150, 180) -> padded (3, 160, 192) -> inverted (1, 150, 180)" in result.stdout


@pytest.mark.slow
def test_bring_your_own_data(tmp_path):
    """Real samples where ../shared/uwf-samples exists (one triplet in quick mode), phantoms in BMP otherwise."""
    result = run_tutorial("03_bring_your_own_data.py", tmp_path)
    for name in FIGURES["03_bring_your_own_data.py"]:
        assert_figure(tmp_path / name)
    qc = sorted(tmp_path.glob("2_registration_qc_*.png"))
    assert len(qc) == 1, qc
    assert_figure(qc[0])
    expected_source = "the real samples" if (SAMPLES / "train").is_dir() else "phantoms"
    assert f"({expected_source})" in result.stdout
    assert (tmp_path / "datalist.json").is_file() and (tmp_path / "my_triplets.csv").is_file()


@pytest.mark.slow
def test_bring_your_own_data_from_phantoms(tmp_path):
    """The phantom path of tutorial 03 (what a fresh clone without ../shared runs), forced with LPUWF_DATA_DIR."""
    from monai_lpuwf.data import generate_phantoms

    data = tmp_path / "my_data"
    generate_phantoms(data / "train", num=2, size=(120, 150), seed=0, ext="bmp", fa_as_rgb=True)
    generate_phantoms(data / "val", num=1, size=(120, 150), seed=1, ext="bmp", fa_as_rgb=True, misregistration=True)
    out = tmp_path / "out"
    out.mkdir()
    result = run_tutorial("03_bring_your_own_data.py", out, LPUWF_DATA_DIR=str(data))
    assert "(your folder)" in result.stdout
    assert_figure(out / "2_registration_qc_val_1.png")
