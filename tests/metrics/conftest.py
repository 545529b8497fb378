"""Fixtures of the metric tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread per test module, restored afterwards: the Inception/SSIM tests run on small batches
    that gain little from a second thread, and on a loaded 2-core machine two threads made them several times
    slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
