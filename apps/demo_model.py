"""Write an untrained, tiny LPUWF-LDM ``model.pt`` in the bundle's format, to try the apps without a trained model.

The file is what the bundle's last training stage writes (``{"model": state_dict, "config": LPUWFModel.config}``,
read back by :func:`monai_lpuwf.engines.load_model`), so the MONAI Label and MONAI Deploy apps load it exactly as
they load a trained model. Its output is noise shaped by the SLO, not an angiogram: it is for smoke tests of the
serving paths (and the apps' tests), never for results. Train the bundle for a real model (bundle/docs/README.md).

Usage::

    python apps/demo_model.py <output model.pt>
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

from monai_lpuwf.networks import build_model

__all__ = ["TINY_OVERRIDES", "build_demo_model", "write_demo_model"]

# the small preset's topology (size divisor 32) at a fraction of its widths: a full 853 x 682 frame takes about a
# second per sampling step on one CPU core
TINY_OVERRIDES = {
    "autoencoder": {"channels": (8, 8, 16), "norm_num_groups": 4},
    "unet": {"channels": (8, 8, 16, 16), "norm_num_groups": 4, "num_head_channels": 8},
    "controlnet": {"conditioning_embedding_num_channels": (4, 8, 8)},
    "scale_factor": 0.5,
}


def build_demo_model(seed: int = 0) -> torch.nn.Module:
    """The tiny model, with random (instead of zero) initial weights in the layers that carry the SLO.

    The gated SLO encoder, the ControlNet and the U-Net's output layer start at zero in training, which would make
    an untrained model ignore its input (and, with the small preset's clean-latent prediction, its noise too); here
    they are random so that the output depends on the SLO (its content and orientation) and on the sampling seed.
    """
    torch.manual_seed(seed)
    model = build_model("small", **TINY_OVERRIDES).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in (model.autoencoder.condition_encoder, model.controlnet, model.unet):
            for p in module.parameters():
                if float(p.abs().max()) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model


def write_demo_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save :func:`build_demo_model` to ``path`` (atomically; an existing file is an error, never overwritten)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; give another output path (this script never overwrites a file).")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_demo_model(seed)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        torch.save({"model": model.state_dict(), "config": model.config}, tmp)
    os.replace(tmp.name, path)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} <output model.pt>")
    print(write_demo_model(sys.argv[1]))
