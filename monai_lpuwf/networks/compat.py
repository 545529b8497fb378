"""Load monai-generative 0.2.3 checkpoints (the authors' LPUWF-LDM weights) into the MONAI core networks.

monai-generative's attention blocks (``AttentionBlock`` of its AutoencoderKL and DiffusionModelUNet) define a
``proj_attn`` linear layer but never apply it, while MONAI core's ``SpatialAttentionBlock`` applies
``attn.out_proj`` when built with ``include_fc=True`` (the default). MONAI's own ``load_old_state_dict``
copies ``proj_attn`` into ``out_proj`` (outputs then differ, by up to 1.5 in our measurements) or fails with
``KeyError`` (ControlNet). The conversion here reproduces monai-generative's computation for either
construction: with ``include_fc=False`` the unused ``proj_attn`` is dropped; with ``include_fc=True``
``out_proj`` is set to the identity. Cross-attention (``to_out.0``, which monai-generative does apply) maps to
``out_proj``; such a network must be built with ``include_fc=True`` and a clear error says so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from monai.networks.nets import AutoencoderKL, ControlNet, DiffusionModelUNet
from torch import nn

from .autoencoder import ConditionalAutoencoderKL
from .condition_encoder import GatedConditionEncoder
from .model import LPUWFModel

__all__ = ["convert_monai_generative_state_dict", "load_monai_generative_state_dict"]

StateDictLike = Mapping[str, torch.Tensor] | str | os.PathLike

_CONDITION_PREFIX = "condition_encoder."
_LPUWF_PARTS = ("autoencoder", "condition_encoder", "unet", "controlnet")


def _as_state_dict(source: StateDictLike, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a mapping or a ``torch.save`` file; a leading ``module.`` (DDP/accelerate) is removed."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{what} checkpoint '{source}' does not exist.")
        source = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(source, Mapping):
        raise TypeError(f"{what}: expected a state dict (mapping of tensors) or a path, got {type(source).__name__}.")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in source.items()}


def _old_key_for(key: str) -> str | None:
    """monai-generative name of a MONAI core parameter, or ``None`` when it has no counterpart."""
    if ".attn.to_" in key:  # self-attention q/k/v live one level deeper in MONAI core
        return key.replace(".attn.to_", ".to_")
    if ".out_proj." in key and ".attn." not in key:  # cross-attention output projection (transformer blocks)
        return key.replace(".out_proj.", ".to_out.0.")
    if "postconv" in key:  # upsampling convolution renamed in MONAI core
        return key.replace("postconv", "conv", 1)
    return None


def convert_monai_generative_state_dict(
    state_dict: Mapping[str, torch.Tensor], target: nn.Module, ignore_prefixes: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Rename and complete a monai-generative 0.2.3 state dict for a MONAI core ``target`` network.

    Args:
        state_dict: monai-generative weights (AutoencoderKL, DiffusionModelUNet or ControlNet).
        target: the MONAI core network with the same architecture (any ``include_fc``).
        ignore_prefixes: target keys left out of the result (e.g. ``condition_encoder.``).

    Returns:
        a state dict with the target's keys that reproduces monai-generative's outputs.

    Raises:
        KeyError: a target parameter has no source, or source parameters that monai-generative uses are left.
    """
    old = dict(state_dict)
    new: dict[str, torch.Tensor] = {}
    missing = []
    for key, ref in target.state_dict().items():
        if key.startswith(ignore_prefixes):
            continue
        if key in old:
            new[key] = old.pop(key)
        elif ".attn.out_proj." in key:  # monai-generative never applies proj_attn: identity projection
            eye = torch.eye(*ref.shape) if key.endswith("weight") else torch.zeros_like(ref)
            new[key] = eye.to(dtype=ref.dtype)
        elif (old_key := _old_key_for(key)) is not None and old_key in old:
            new[key] = old.pop(old_key)
        else:
            missing.append(key)
    leftover = [k for k in old if ".proj_attn." not in k]  # proj_attn is dead weight in monai-generative
    if missing or leftover:
        hint = ""
        if any(".to_out.0." in k for k in leftover):
            hint = " Its cross-attention output projections need the target built with include_fc=True."
        raise KeyError(
            f"the monai-generative state dict does not match {type(target).__name__}: target keys without a source "
            f"{missing[:6]}{'...' if len(missing) > 6 else ''}, unused source keys {leftover[:6]}"
            f"{'...' if len(leftover) > 6 else ''}. Build the network with the checkpoint's architecture.{hint}"
        )
    return new


def _load_condition_encoder(encoder: GatedConditionEncoder, source: StateDictLike) -> None:
    sd = _as_state_dict(source, "condition encoder")
    sd = {k[len(_CONDITION_PREFIX) :] if k.startswith(_CONDITION_PREFIX) else k: v for k, v in sd.items()}
    # the authors' MaskConditionEncoder also holds `adjust_chs` convolutions that its forward never uses
    sd = {k: v for k, v in sd.items() if not k.startswith("adjust_chs.")}
    encoder.load_state_dict(sd, strict=True)


def load_monai_generative_state_dict(
    target: nn.Module,
    state_dict: StateDictLike | Mapping[str, StateDictLike],
    condition_encoder_state_dict: StateDictLike | None = None,
    scale_factor: float | None = None,
) -> nn.Module:
    """Load monai-generative 0.2.3 weights (e.g. the authors' LPUWF-LDM checkpoints) into our networks.

    The result computes what the monai-generative network computes with those weights, whichever
    ``include_fc`` the target was built with (see the module docstring).

    Args:
        target: one of

            - :class:`~monai.networks.nets.AutoencoderKL` or :class:`ConditionalAutoencoderKL` (``state_dict`` =
              the authors' ``vae.pth``, plain or conditional decoder: same keys),
            - :class:`~monai.networks.nets.DiffusionModelUNet` (``model.pth``), :class:`~monai.networks.nets.ControlNet`
              (``controlnet.pth``), :class:`GatedConditionEncoder` (their ``MaskConditionEncoder`` weights),
            - :class:`LPUWFModel`: ``state_dict`` is then a mapping with any of the keys ``"autoencoder"``,
              ``"condition_encoder"``, ``"unet"``, ``"controlnet"``, each a state dict or a file path.
        state_dict: the weights, or a path to a ``torch.save`` file of them.
        condition_encoder_state_dict: for a :class:`ConditionalAutoencoderKL`, the ``MaskConditionEncoder``
            weights (``layers.*``, ``gated_cnns.*``, ``adjust_chs.*``), optional.
        scale_factor: for an :class:`LPUWFModel`, the latent scale factor the weights were trained with
            (the authors: 0.18215); ``None`` keeps the model's.

    Returns:
        ``target``, with the weights loaded (strictly: every parameter is set).

    Example::

        model = build_model("paper")
        load_monai_generative_state_dict(
            model, {"autoencoder": "vae.pth", "unet": "model.pth", "controlnet": "controlnet.pth"}, scale_factor=0.18215
        )
    """
    if isinstance(target, LPUWFModel):
        if not isinstance(state_dict, Mapping) or not set(state_dict) <= set(_LPUWF_PARTS):
            raise ValueError(f"for an LPUWFModel pass a mapping with some of the keys {_LPUWF_PARTS}.")
        if "autoencoder" in state_dict:
            load_monai_generative_state_dict(target.autoencoder, state_dict["autoencoder"])
        if "condition_encoder" in state_dict:
            load_monai_generative_state_dict(target.autoencoder.condition_encoder, state_dict["condition_encoder"])
        for part in ("unet", "controlnet"):
            if part in state_dict:
                load_monai_generative_state_dict(getattr(target, part), state_dict[part])
        if scale_factor is not None:
            target.scale_factor.fill_(float(scale_factor))
        return target
    if isinstance(target, GatedConditionEncoder):
        _load_condition_encoder(target, state_dict)  # type: ignore[arg-type]
        return target
    if not isinstance(target, (AutoencoderKL, DiffusionModelUNet, ControlNet)):
        raise TypeError(
            f"cannot load monai-generative weights into {type(target).__name__}; expected AutoencoderKL, "
            "ConditionalAutoencoderKL, DiffusionModelUNet, ControlNet, GatedConditionEncoder or LPUWFModel."
        )
    sd = _as_state_dict(state_dict, type(target).__name__)  # type: ignore[arg-type]
    is_conditional = isinstance(target, ConditionalAutoencoderKL) and target.condition_encoder is not None
    converted = convert_monai_generative_state_dict(sd, target, (_CONDITION_PREFIX,) if is_conditional else ())
    if is_conditional:
        # the shared part strictly; the condition encoder keeps its weights unless given below
        incompatible = target.load_state_dict(converted, strict=False)
        if incompatible.unexpected_keys or any(not k.startswith(_CONDITION_PREFIX) for k in incompatible.missing_keys):
            raise KeyError(f"could not load the autoencoder weights: {incompatible}")
        if condition_encoder_state_dict is not None:
            _load_condition_encoder(target.condition_encoder, condition_encoder_state_dict)  # type: ignore[arg-type]
    else:
        target.load_state_dict(converted, strict=True)
    return target
