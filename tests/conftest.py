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


@pytest.fixture(scope="session", autouse=True)
def _default_torch_threads():
    """PyTorch's thread count as every entry point of the package sets it (``set_default_threads``:
    ``OMP_NUM_THREADS`` if set, else half the CPUs: 1 on a 2-core machine) instead of PyTorch's one per core.

    With one spinning OpenMP thread per core, a test process sharing a 2-core machine with any other job ran
    several times slower (the README's thread study: 1.4-4.7x for generation); the default run measured 27.7 min
    this way under a load average of about 7.5, with the 700-step overfit test alone past its 900 s timeout.
    Results do not depend on the count (no test compares bits across thread counts; subprocess runs inherit this
    process's count through ``OMP_NUM_THREADS``, see ``tests/bundle/conftest.py``).
    """
    import torch

    from monai_lpuwf.threads import set_default_threads

    before = torch.get_num_threads()
    set_default_threads()
    yield
    torch.set_num_threads(before)
