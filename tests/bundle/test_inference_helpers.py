"""Helpers shared by the inference and evaluation bundle tests (no tests here).

``--import-mode=importlib`` puts no test folder on ``sys.path``, so ``test_inference.py`` and
``test_evaluate.py`` load this file with ``importlib.util.spec_from_file_location``.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from monai_lpuwf.networks.tiny import TINY_OVERRIDES, build_tiny_model

STEPS = 2
# no mid-block self-attention: on a whole 853 x 682 frame it would attend over 38k latent pixels
NO_MID_ATTENTION = {"autoencoder": {"with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}}
# the same network as bundle ``network_overrides``
TINY = {**TINY_OVERRIDES, "autoencoder": {**TINY_OVERRIDES["autoencoder"], **NO_MID_ATTENTION["autoencoder"]}}


@contextmanager
def one_thread():
    """Run with one intra-op thread, then restore: these tiny networks gain nothing from a second thread, and on
    a loaded 2-core machine two threads per process made the runs several times slower (measured: 0.14 s vs
    6.8 s for the same 96 x 96 sampling)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_model() -> torch.nn.Module:
    """The shared tiny model (:func:`monai_lpuwf.networks.tiny.build_tiny_model`) without mid-block attention and
    with non-zero ControlNet / SLO-encoder weights (so the SLO matters)."""
    return build_tiny_model(
        0, weight_seed=1, randomize=("autoencoder.condition_encoder", "controlnet"), **NO_MID_ATTENTION
    )


def write_checkpoint(path: Path) -> Path:
    """A bundle ``model.pt`` of :func:`tiny_model` (``{"model": state_dict, "config": model.config}``, as
    ``train_late.json`` writes it)."""
    model = tiny_model()
    torch.save({"model": model.state_dict(), "config": model.config}, path)
    return path


def run_bundle(bundle, tmp_path: Path, configs: tuple[str, ...], checkpoint: Path, **overrides) -> None:
    """``monai.bundle.run`` of ``configs`` (names in ``bundle/configs``) in a bundle root under ``tmp_path``
    (a copy of the configs, made once per test), with ``num_inference_steps=STEPS`` unless overridden."""
    from monai.bundle import run

    root = tmp_path / "bundle"
    if not root.exists():
        bundle.new_bundle_root(root)
    overrides.setdefault("num_inference_steps", STEPS)
    overrides.setdefault("num_threads", torch.get_num_threads())  # keep the caller's count (one_thread())
    files = [str(root / "configs" / name) for name in configs]
    run(config_file=files if len(files) > 1 else files[0], bundle_root=str(root), model_path=str(checkpoint),
        **overrides)  # fmt: skip


def bundle_error(exc_type: type[BaseException], call, *args, **kwargs) -> BaseException:
    """Run ``call`` and return the ``exc_type`` error in the raised chain (``monai.bundle`` wraps the errors of
    config expressions in ``RuntimeError("Failed to evaluate ...")``)."""
    try:
        call(*args, **kwargs)
    except Exception as raised:  # noqa: BLE001 - the chain is inspected below
        chain, err = [], raised
        while err is not None:
            chain.append(err)
            err = err.__cause__
        found = [e for e in chain if isinstance(e, exc_type)]
        assert found, f"no {exc_type.__name__} in the raised chain: {[type(e).__name__ for e in chain]}"
        return found[0]
    pytest.fail(f"{exc_type.__name__} not raised")
