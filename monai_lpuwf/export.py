"""TorchScript (and optional ONNX) export of the two networks a deployment runs: the denoiser and the decoder.

Generation (:class:`monai_lpuwf.inferers.LPUWFSampler`) calls two networks; everything else (the scheduler
arithmetic, padding, seeding) is plain tensor code that a deployment re-implements or keeps in Python:

- :class:`DenoiserStep` ``(x_t, timesteps, slo) -> eps``: ControlNet on the full-resolution SLO + U-Net, called
  once per sampler step (:meth:`LPUWFModel.denoise`);
- :class:`ConditionalDecoder` ``(z_scaled, slo) -> image``: the gated SLO encoder + the conditional decoder,
  called once per sample (:meth:`LPUWFModel.decode_latents`, latent scale factor included).

:func:`export_torchscript` writes both with ``torch.jit.trace`` (``denoiser.ts``, ``decoder.ts``), with the
model config and the example sizes as extra files; :func:`load_torchscript` reads them back.
:func:`export_onnx` writes ``.onnx`` files where the ``onnx`` package is installed (it is not a dependency).

Why not ``python -m monai.bundle ckpt_export`` (checked with MONAI 1.6.1, torch 2.13):

- without ``--use_trace`` it calls ``torch.jit.script``, which fails on MONAI core's own networks used here,
  even plain ones without attention: ``DiffusionModelUNet``, ``ControlNet`` and ``AutoencoderKL`` all raise
  "cannot statically infer the expected size of a list" (so does our
  :class:`~monai_lpuwf.networks.GatedConditionEncoder`, which returns a list of feature maps);
- with ``--use_trace True --input_shape [...]`` it traces the network with *one* random tensor, and both
  networks take several inputs (``x_t, timesteps, slo`` and ``z, slo``), which it cannot pass
  (its ``converter_kwargs`` ``inputs`` are overwritten by the single ``input_shape`` tensor).

Both are confirmed by ``tests/test_export.py``. The traced graphs are not tied to the example inputs' image
size or batch size (checked there: traced at 64 x 64 with batch 1, run at 96 x 64 with batch 2, same outputs
as eager PyTorch); ``verify=True`` compares traced and eager outputs at the example size when exporting.
Command line::

    python -m monai_lpuwf.export --checkpoint bundle/models/model.pt --output_dir export --size 512 512

Example::

    paths = export_torchscript(model, "export", image_size=(512, 512))
    denoiser, decoder = load_torchscript("export")
    eps = denoiser(x_t, t, slo)      # x_t (1,4,128,128), t (1,) long, slo (1,3,512,512)
    fa = decoder(z, slo)             # z (1,4,128,128) scaled latents -> (1,1,512,512)
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import
from torch import nn

from monai_lpuwf.networks import LPUWFModel, ModelFile

onnx, has_onnx = optional_import("onnx")

__all__ = [
    "DenoiserStep",
    "ConditionalDecoder",
    "example_inputs",
    "export_torchscript",
    "load_torchscript",
    "export_onnx",
]

DENOISER_FILE = "denoiser"
DECODER_FILE = "decoder"


def _unwrap(model: nn.Module) -> LPUWFModel:
    model = getattr(model, "module", model)  # DDP / DataParallel
    if not isinstance(model, LPUWFModel):
        raise TypeError(
            "expected an LPUWFModel (monai_lpuwf.networks.build_model / ModelFile.load(path).build()), "
            f"got {type(model).__name__}."
        )
    return model


class DenoiserStep(nn.Module):
    """``(x_t, timesteps, slo) -> eps``: the per-step network of generation, ControlNet + U-Net.

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel` whose ``controlnet`` and ``unet`` are used (shared,
            not copied).
        conditioning_scale: multiplier of the ControlNet residuals (fixed in the export).
    """

    def __init__(self, model: nn.Module, conditioning_scale: float = 1.0) -> None:
        super().__init__()
        model = _unwrap(model)
        self.controlnet = model.controlnet
        self.unet = model.unet
        self.conditioning_scale = float(conditioning_scale)

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, slo: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x_t: noisy scaled latents (B, latent_channels, *latent_spatial).
            timesteps: (B,) integer timesteps.
            slo: (B, 3, *latent_spatial * downsample_factor), full resolution, in [-1, 1].

        Returns:
            the predicted noise, shaped like ``x_t``.
        """
        down, mid = self.controlnet(
            x=x_t, timesteps=timesteps, controlnet_cond=slo, conditioning_scale=self.conditioning_scale
        )
        return self.unet(
            x=x_t, timesteps=timesteps, down_block_additional_residuals=down, mid_block_additional_residual=mid
        )


class ConditionalDecoder(nn.Module):
    """``(z_scaled, slo) -> image``: the gated SLO encoder and the conditional FA decoder.

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel` whose ``autoencoder`` and ``scale_factor`` are used.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model = _unwrap(model)
        self.autoencoder = model.autoencoder
        self.register_buffer("scale_factor", model.scale_factor.detach().clone())

    def forward(self, z_scaled: torch.Tensor, slo: torch.Tensor) -> torch.Tensor:
        """
        Args:
            z_scaled: final latents of the sampler (B, latent_channels, *latent_spatial), scaled as in diffusion.
            slo: (B, 3, *latent_spatial * downsample_factor) in [-1, 1].

        Returns:
            late-phase FA (B, 1, *latent_spatial * downsample_factor), not clamped.
        """
        return self.autoencoder.decode_stage_2_outputs(z_scaled / self.scale_factor, cond=slo)


def example_inputs(
    model: nn.Module, image_size: Sequence[int], batch_size: int = 1, device: torch.device | str | None = None
) -> dict[str, tuple[torch.Tensor, ...]]:
    """Seeded example inputs of the two exported networks for an image size.

    Args:
        model: the :class:`~monai_lpuwf.networks.LPUWFModel`.
        image_size: spatial size of the (padded) SLO, each a multiple of ``model.size_divisor``.
        batch_size: batch size.
        device: device of the tensors (default: the model's).

    Returns:
        ``{"denoiser": (x_t, timesteps, slo), "decoder": (z_scaled, slo)}``.
    """
    model = _unwrap(model)
    size = tuple(int(s) for s in image_size)
    if len(size) != model.config["spatial_dims"] or any(s % model.size_divisor for s in size):
        raise ValueError(
            f"image_size {size} must have {model.config['spatial_dims']} entries, each a multiple of the model's size "
            f"divisor {model.size_divisor} (pad the SLO, e.g. 853 x 682 -> 864 x 704)."
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    latent = tuple(s // model.downsample_factor for s in size)
    slo = torch.rand((batch_size, model.config["condition_channels"]) + size, generator=g) * 2 - 1
    x_t = torch.randn((batch_size, model.latent_channels) + latent, generator=g)
    timesteps = torch.randint(0, model.schedule["num_train_timesteps"], (batch_size,), generator=g)
    z = torch.randn((batch_size, model.latent_channels) + latent, generator=g)
    return {
        "denoiser": (x_t.to(device), timesteps.to(device), slo.to(device)),
        "decoder": (z.to(device), slo.to(device)),
    }


def _trace(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks in Python: expected, see docstring
        return torch.jit.trace(module.eval(), inputs, check_trace=False)


def export_torchscript(
    model: nn.Module,
    output_dir: str | os.PathLike,
    image_size: Sequence[int] = (512, 512),
    batch_size: int = 1,
    conditioning_scale: float = 1.0,
    verify: bool = True,
    atol: float = 1e-5,
) -> dict[str, Path]:
    """Trace the denoiser and the decoder and save them as TorchScript files.

    Args:
        model: a trained :class:`~monai_lpuwf.networks.LPUWFModel` (eval mode is set on the traced copies' modules).
        output_dir: folder for ``denoiser.ts`` and ``decoder.ts`` (created; existing files of those names are
            replaced atomically, nothing else is touched).
        image_size: (padded) image size of the example inputs used for tracing and verification.
        batch_size: batch size of the example inputs.
        conditioning_scale: ControlNet residual multiplier baked into the denoiser.
        verify: run the traced and the eager networks on the example inputs and raise if they differ by more
            than ``atol``.
        atol: tolerance of ``verify``.

    Returns:
        ``{"denoiser": path, "decoder": path}``. Each file also holds ``config.json`` (the model config),
        ``inputs.json`` (names and shapes of its inputs) as TorchScript extra files.
    """
    lpuwf = _unwrap(model)
    was_training = lpuwf.training
    lpuwf.eval()
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(lpuwf, image_size, batch_size)
    modules = {DENOISER_FILE: DenoiserStep(lpuwf, conditioning_scale), DECODER_FILE: ConditionalDecoder(lpuwf)}
    names = {DENOISER_FILE: ["x_t", "timesteps", "slo"], DECODER_FILE: ["z_scaled", "slo"]}
    paths = {}
    try:
        for key, module in modules.items():
            traced = _trace(module, inputs[key])
            if verify:
                with torch.no_grad():
                    diff = float((traced(*inputs[key]) - module(*inputs[key])).abs().max())
                if not diff <= atol:
                    raise RuntimeError(f"the traced {key} differs from the eager network by {diff:.3g} > {atol}.")
            extra = {
                "config.json": json.dumps(lpuwf.config, default=list),
                "inputs.json": json.dumps({n: list(t.shape) for n, t in zip(names[key], inputs[key])}),
            }
            path = out_dir / f"{key}.ts"
            tmp = out_dir / f".{key}.ts.tmp"
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            os.replace(tmp, path)
            paths[key] = path
    finally:
        lpuwf.train(was_training)
    return paths


def load_torchscript(
    output_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    """Load ``(denoiser, decoder)`` written by :func:`export_torchscript` (no monai_lpuwf needed to run them)."""
    out_dir = Path(output_dir)
    loaded = []
    for key in (DENOISER_FILE, DECODER_FILE):
        path = out_dir / f"{key}.ts"
        if not path.is_file():
            raise FileNotFoundError(f"'{path}' does not exist; write it with monai_lpuwf.export.export_torchscript.")
        loaded.append(torch.jit.load(str(path), map_location=map_location).eval())
    return loaded[0], loaded[1]


def export_onnx(
    model: nn.Module,
    output_dir: str | os.PathLike,
    image_size: Sequence[int] = (512, 512),
    batch_size: int = 1,
    conditioning_scale: float = 1.0,
    opset_version: int = 17,
) -> dict[str, Path]:
    """Export the denoiser and the decoder as ONNX files (``denoiser.onnx``, ``decoder.onnx``).

    Needs the ``onnx`` package (not a dependency of monai-lpuwf: ``pip install onnx``); raises an
    ``OptionalImportError`` naming it otherwise. Same inputs as :func:`export_torchscript`; the ONNX graph has
    the example inputs' fixed sizes (no ``dynamic_axes``).
    """
    if not has_onnx:
        from monai.utils import OptionalImportError

        raise OptionalImportError("ONNX export needs the 'onnx' package: pip install onnx (or use export_torchscript).")
    lpuwf = _unwrap(model)
    was_training = lpuwf.training
    lpuwf.eval()
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(lpuwf, image_size, batch_size)
    modules = {DENOISER_FILE: DenoiserStep(lpuwf, conditioning_scale), DECODER_FILE: ConditionalDecoder(lpuwf)}
    names = {DENOISER_FILE: ["x_t", "timesteps", "slo"], DECODER_FILE: ["z_scaled", "slo"]}
    outputs = {DENOISER_FILE: ["eps"], DECODER_FILE: ["image"]}
    paths = {}
    try:
        for key, module in modules.items():
            path = out_dir / f"{key}.onnx"
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    inputs[key],
                    str(path),
                    input_names=names[key],
                    output_names=outputs[key],
                    opset_version=opset_version,
                    dynamo=False,
                )
            paths[key] = path
    finally:
        lpuwf.train(was_training)
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m monai_lpuwf.export --checkpoint bundle/models/model.pt --output_dir export --size 512 512``."""
    parser = argparse.ArgumentParser(description="Export the LPUWF denoiser and decoder (TorchScript, optional ONNX).")
    parser.add_argument("--checkpoint", required=True, help="bundle model file (models/model.pt: weights + config)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--size", type=int, nargs="+", default=[512, 512], help="example (padded) image size")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--onnx", action="store_true", help="also write ONNX files (needs the onnx package)")
    args = parser.parse_args(argv)
    model = ModelFile.load(args.checkpoint).build()
    paths: dict[str, Any] = {"torchscript": export_torchscript(model, args.output_dir, args.size, args.batch_size)}
    if args.onnx:
        paths["onnx"] = export_onnx(model, args.output_dir, args.size, args.batch_size)
    for kind, files in paths.items():
        for key, path in files.items():
            print(f"{kind} {key}: {path}")
    return paths


if __name__ == "__main__":
    main()
