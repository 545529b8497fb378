"""Write an untrained, tiny LPUWF-LDM ``model.pt`` in the bundle's format, to try the apps without a trained model.

The file is what the bundle's last training stage writes (``{"model": state_dict, "config": LPUWFModel.config}``,
written and read back by :class:`monai_lpuwf.networks.ModelFile`), so the MONAI Label and MONAI Deploy apps load it
exactly as they load a trained model. Its output is noise shaped by the SLO, not an angiogram: it is for smoke tests
of the serving paths (and the apps' tests), never for results. Train the bundle for a real model
(bundle/docs/README.md).

Usage::

    python apps/demo_model.py <output model.pt>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from monai_lpuwf.networks import ModelFile
from monai_lpuwf.networks.tiny import TINY_OVERRIDES, build_tiny_model

__all__ = ["TINY_OVERRIDES", "build_demo_model", "write_demo_model"]


def build_demo_model(seed: int = 0) -> torch.nn.Module:
    """The tiny model (:func:`monai_lpuwf.networks.tiny.build_tiny_model`): the small preset's topology at toy widths,
    with random (instead of zero) initial weights in the layers that carry the SLO (gated SLO encoder, ControlNet,
    U-Net output), so that its output depends on the SLO (content and orientation) and on the sampling seed."""
    return build_tiny_model(seed)


def write_demo_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save :func:`build_demo_model` to ``path`` (:meth:`ModelFile.save <monai_lpuwf.networks.ModelFile.save>`:
    atomically; an existing file is an error, never overwritten)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; give another output path (this script never overwrites a file).")
    return ModelFile.from_network(build_demo_model(seed)).save(path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} <output model.pt>")
    print(write_demo_model(sys.argv[1]))
