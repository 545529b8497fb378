"""One CPU thread default for every entry point (``monai_lpuwf.threads``), overridable by option or environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_lpuwf.threads import THREADS_ENV, default_num_threads, set_default_threads

REPO = Path(__file__).resolve().parents[1]


def test_default_keeps_half_the_cpus_and_one_thread_on_two_cores(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert [default_num_threads(cpus=c) for c in (1, 2, 3, 4, 16, 64)] == [1, 1, 1, 2, 8, 8]


def test_option_then_environment_override_the_default(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_num_threads(cpus=2) == 3
    assert default_num_threads(5, cpus=2) == 5 and default_num_threads("auto", cpus=2) == 3
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(ValueError, match=THREADS_ENV):
        default_num_threads(cpus=2)
    with pytest.raises(ValueError, match="num_threads=-1"):
        default_num_threads(-1)


def test_set_default_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_default_threads(2) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv(THREADS_ENV, "1")
        assert set_default_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_every_entry_point_applies_the_default():
    for name in ("common.json", "inference.json", "evaluate.json"):
        config = json.loads((REPO / "bundle" / "configs" / name).read_text())
        assert "$monai_lpuwf.threads.set_default_threads(@num_threads)" in config["initialize"], name
        assert "num_threads" in config or name == "evaluate.json", name  # evaluate.json composes on inference.json
    tutorials = [str(p) for p in (REPO / "tutorials").glob("*.py")]
    for path in ("apps/monailabel/main.py", "apps/deploy/generate_operator.py", *tutorials):
        text = (REPO / path).read_text()
        assert "set_default_threads(" in text and "torch.set_num_threads" not in text, path
