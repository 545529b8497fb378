"""AutoencoderKL whose decoder is conditioned on gated SLO features (the LPUWF-LDM decoder)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import AutoencoderKL
from monai.networks.nets.autoencoderkl import AEKLResBlock
from monai.utils import ensure_tuple_rep

from .condition_encoder import GatedConditionEncoder

__all__ = ["ConditionalAutoencoderKL"]

Condition = torch.Tensor | Sequence[torch.Tensor] | None


class ConditionalAutoencoderKL(AutoencoderKL):
    """:class:`monai.networks.nets.AutoencoderKL` with a :class:`GatedConditionEncoder` feeding its decoder.

    The decoder adds the gated feature map of the condition image (the SLO) of matching resolution after the
    first residual block of each decoder level, as in LPUWF-LDM (Fang et al., arXiv 2409.00726). The encoder,
    the latent space and every parameter of the base class are unchanged: with ``cond=None`` the outputs are
    those of :class:`~monai.networks.nets.AutoencoderKL` with the same weights, and the state dict holds the
    base-class keys plus ``condition_encoder.*``. Stage 1 trains it as a plain AutoencoderKL on FA; stage 2
    freezes everything but ``condition_encoder`` and trains with the SLO; generation decodes with the SLO too
    (the authors' released sampler forgets to; :class:`monai_lpuwf.inferers.LPUWFSampler` does not).

    Args:
        spatial_dims, in_channels, out_channels, num_res_blocks, channels, attention_levels, latent_channels,
        norm_num_groups, norm_eps, with_encoder_nonlocal_attn, with_decoder_nonlocal_attn, use_checkpoint,
        use_convtranspose, include_fc, use_combined_linear, use_flash_attention: as
            :class:`monai.networks.nets.AutoencoderKL`.
        condition_in_channels: channels of the condition image (3 for the RGB SLO); ``None`` = no condition
            encoder (a plain AutoencoderKL).

    Example::

        ae = ConditionalAutoencoderKL(2, 1, 1, channels=(32, 64, 64), attention_levels=(False,) * 3,
                                      latent_channels=4, num_res_blocks=1, norm_num_groups=16)
        recon, z_mu, z_sigma = ae(fa, cond=slo)        # fa (B,1,H,W), slo (B,3,H,W)
        image = ae.decode_stage_2_outputs(z, cond=slo)  # z (B,4,H/4,W/4)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        num_res_blocks: Sequence[int] | int = (2, 2, 2, 2),
        channels: Sequence[int] = (32, 64, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True, True),
        latent_channels: int = 3,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        with_encoder_nonlocal_attn: bool = True,
        with_decoder_nonlocal_attn: bool = True,
        use_checkpoint: bool = False,
        use_convtranspose: bool = False,
        include_fc: bool = True,
        use_combined_linear: bool = False,
        use_flash_attention: bool = False,
        condition_in_channels: int | None = 3,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            num_res_blocks=num_res_blocks,
            channels=channels,
            attention_levels=attention_levels,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            with_encoder_nonlocal_attn=with_encoder_nonlocal_attn,
            with_decoder_nonlocal_attn=with_decoder_nonlocal_attn,
            use_checkpoint=use_checkpoint,
            use_convtranspose=use_convtranspose,
            include_fc=include_fc,
            use_combined_linear=use_combined_linear,
            use_flash_attention=use_flash_attention,
        )
        self.spatial_dims = spatial_dims
        self.channels = tuple(channels)
        self.condition_encoder: GatedConditionEncoder | None = None
        if condition_in_channels is not None:
            self.condition_encoder = GatedConditionEncoder(spatial_dims, condition_in_channels, channels)
        self._injection_blocks = self._find_injection_blocks(
            ensure_tuple_rep(num_res_blocks, len(channels)), attention_levels, with_decoder_nonlocal_attn
        )

    @property
    def downsample_factor(self) -> int:
        """Ratio between image and latent spatial sizes, ``2 ** (len(channels) - 1)``."""
        return 2 ** (len(self.channels) - 1)

    def _find_injection_blocks(
        self, num_res_blocks: Sequence[int], attention_levels: Sequence[bool], with_nonlocal_attn: bool
    ) -> tuple[int, ...]:
        """Indices in ``decoder.blocks`` of the first residual block of each decoder level (coarsest first)."""
        index = 1 + (3 if with_nonlocal_attn else 0)  # initial conv, then [res, attention, res] middle block
        levels = len(num_res_blocks)
        found = []
        for level, (n_res, attn) in enumerate(zip(reversed(num_res_blocks), reversed(attention_levels))):
            if n_res < 1:
                raise ValueError("ConditionalAutoencoderKL needs at least one residual block per decoder level.")
            found.append(index)
            index += n_res * (2 if attn else 1) + (0 if level == levels - 1 else 1)
        blocks = self.decoder.blocks
        if not all(isinstance(blocks[i], AEKLResBlock) for i in found):  # layout of monai's Decoder changed
            raise RuntimeError("unexpected monai AutoencoderKL decoder layout; cannot place the SLO features.")
        return tuple(found)

    def encode_condition(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """Gated features of the condition image, finest first (see :class:`GatedConditionEncoder`)."""
        if self.condition_encoder is None:
            raise ValueError(
                "this ConditionalAutoencoderKL was built with condition_in_channels=None and takes no condition; "
                "pass cond=None or build it with condition_in_channels=3."
            )
        return self.condition_encoder(cond)

    def _decoder_forward(self, z: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        by_block = dict(zip(self._injection_blocks, reversed(list(features))))
        h = z
        for index, block in enumerate(self.decoder.blocks):
            h = block(h)
            if index in by_block:
                feat = by_block[index]
                if feat.shape[1:] != h.shape[1:]:
                    raise ValueError(
                        f"SLO feature map of shape {tuple(feat.shape)} does not match the decoder level of shape "
                        f"{tuple(h.shape)}: the condition image must have the spatial size of the decoded image "
                        f"(latent size x {self.downsample_factor})."
                    )
                h = h + feat
        return h

    def decode(self, z: torch.Tensor, cond: Condition = None) -> torch.Tensor:
        """Decode latents, adding the gated features of ``cond`` when given.

        Args:
            z: latents (B, latent_channels, *latent_spatial).
            cond: the condition image (B, condition_in_channels, *latent_spatial * downsample_factor), or its
                precomputed features (:meth:`encode_condition`), or ``None`` for the plain AutoencoderKL decoder.

        Returns:
            image (B, out_channels, *latent_spatial * downsample_factor).
        """
        if cond is None:
            return super().decode(z)
        features = self.encode_condition(cond) if isinstance(cond, torch.Tensor) else list(cond)
        if len(features) != len(self._injection_blocks):
            raise ValueError(f"expected {len(self._injection_blocks)} condition feature maps, got {len(features)}.")
        z = self.post_quant_conv(z)
        if self.use_checkpoint:
            return torch.utils.checkpoint.checkpoint(self._decoder_forward, z, features, use_reentrant=False)
        return self._decoder_forward(z, features)

    def reconstruct(self, x: torch.Tensor, cond: Condition = None) -> torch.Tensor:
        """Encode ``x`` to the latent mean and decode it (with ``cond`` features when given)."""
        z_mu, _ = self.encode(x)
        return self.decode(z_mu, cond)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, cond: Condition = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            x: image (B, in_channels, *spatial).
            cond: condition image (B, condition_in_channels, *spatial) or ``None``.

        Returns:
            ``(reconstruction, z_mu, z_sigma)`` as :class:`~monai.networks.nets.AutoencoderKL`.
        """
        z_mu, z_sigma = self.encode(x)
        z = self.sampling(z_mu, z_sigma)
        return self.decode(z, cond), z_mu, z_sigma

    def decode_stage_2_outputs(self, z: torch.Tensor, cond: Condition = None) -> torch.Tensor:  # type: ignore[override]
        """Image from (unscaled) latents, with the ``cond`` features when given."""
        return self.decode(z, cond)
