"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT.parent / "shared" / "uwf-samples"


@pytest.fixture(scope="session")
def uwf_samples_dir() -> Path:
    """The real UWF triplets in ``../shared/uwf-samples`` (train/ and val/), or skip with the reason."""
    if not (SAMPLES_DIR / "train").is_dir():
        pytest.skip(f"real UWF samples not found at {SAMPLES_DIR} (they live beside the project root, in ../shared)")
    return SAMPLES_DIR.resolve()  # the loaders resolve paths (../shared may be a link)
