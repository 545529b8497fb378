"""Fixtures for the MONAI Label / MONAI Deploy app tests: a tiny model file in the bundle's format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
