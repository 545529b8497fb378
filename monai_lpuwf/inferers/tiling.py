"""Overlapping latent tiles for whole frames: blending windows, tiled decoding and tiled denoising, memory estimates.

The autoencoder's non-local attention (at latent resolution) and the U-Net's attention levels cost time in the
square of the number of tokens, so a whole native frame processed at once costs time in the square of its pixel
count. Processing the frame in latent tiles of a fixed size makes the cost linear in the pixel count. Neighbouring
tiles overlap; each tile's output is weighted by a window that is 1 inside and falls smoothly (a raised cosine) to
near 0 over the overlap at the sides shared with another tile (not at the frame's border), and the weighted outputs
are normalised by the summed weights, so the result has no seams. The U-Net and the autoencoder were trained on
512 x 512 crops (128 x 128 latents), so tiles of that size are also what the networks know best.

When to tile (:func:`choose_tiling`, ``policy``): tiles cost time where a frame fits (the overlap is computed
twice, small kernels keep a GPU less busy: 13 % at 640 x 512 on an H200), so on an accelerator (``"auto"``) a
network processes the whole frame unless the memory estimate says it does not fit, or the frame exceeds
:data:`WHOLE_FRAME_TILES` tiles' area (there the attention's quadratic time dominates). On a CPU ``"auto"`` tiles
every frame larger than a tile, as measured in ``benchmarks/bench_large_frames.py`` (whole-frame decoding 3.2x
slower at 1280 x 1024).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from monai.utils import look_up_option, optional_import
from torch import nn

psutil, has_psutil = optional_import("psutil")

__all__ = [
    "tile_windows",
    "blend_window",
    "blend_tiles",
    "decode_tiled",
    "denoise_tiled",
    "estimate_generation_memory",
    "available_memory",
    "check_memory",
    "choose_tiling",
    "TILE_POLICIES",
    "WHOLE_FRAME_TILES",
]

#: ``"auto"``: ``"size"`` on a CPU, else whole frames while they fit (memory) up to :data:`WHOLE_FRAME_TILES`
#: tiles' area; ``"size"``: tile every frame larger than a tile; ``"memory"``: tile only when the whole frame does
#: not fit in memory.
TILE_POLICIES = ("auto", "size", "memory")
#: largest whole frame under ``"auto"`` on an accelerator, in tiles' areas (latent pixels / tile side squared)
WHOLE_FRAME_TILES = 4

Window = tuple[slice, ...]


def _spans(size: int, tile: int, overlap: int, multiple: int) -> list[slice]:
    """Fewest tiles of at most ``tile`` covering ``size`` with at least ~``overlap`` shared, evenly spread (equal
    lengths, a multiple of ``multiple``), so that a side a little longer than a tile costs little extra."""
    if size <= tile:
        return [slice(0, size)]
    count = math.ceil((size - overlap) / (tile - overlap))
    while True:
        length = min(tile, math.ceil((size + (count - 1) * overlap) / count / multiple) * multiple)
        starts = [round(i * (size - length) / (count - 1) / multiple) * multiple for i in range(count)]
        starts[-1] = size - length
        if all(b - a <= length - min(overlap, multiple) for a, b in itertools.pairwise(starts)):
            return [slice(b, b + length) for b in starts]
        count += 1


def tile_windows(spatial: Sequence[int], tile: int | None, overlap: int, multiple: int = 1) -> list[Window]:
    """Overlapping windows covering a latent grid.

    Args:
        spatial: latent spatial size, e.g. ``(H, W)``; each must be a multiple of ``multiple``.
        tile: largest tile side in latent pixels (rounded down to a multiple of ``multiple``); ``None``, or a tile
            at least as large as a side, gives one window along that side. Along a longer side the fewest tiles
            that fit are spread evenly (all of one length, at most ``tile``).
        overlap: latent pixels shared by neighbouring tiles (about; at least ``overlap`` rounded to ``multiple``).
        multiple: tile sides and starts are multiples of it (the U-Net's own downsampling factor).

    Returns:
        windows as tuples of slices over the spatial dims, row-major.
    """
    if tile is None:
        return [tuple(slice(0, s) for s in spatial)]
    tile = int(tile) // multiple * multiple
    if tile < 1:
        raise ValueError(f"tile size {tile} is smaller than the model's latent divisor {multiple}.")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile size {tile}), got {overlap}.")
    per_dim = [_spans(s, tile, overlap, multiple) for s in spatial]
    windows: list[Window] = [()]
    for slices in per_dim:
        windows = [w + (s,) for w in windows for s in slices]
    return windows


def _ramp(length: int, ramp: int, low: bool, high: bool) -> torch.Tensor:
    w = torch.ones(length, dtype=torch.float64)
    if ramp > 0:
        d = (torch.arange(min(ramp, length), dtype=torch.float64) + 0.5) / ramp
        r = torch.sin(d * math.pi / 2) ** 2
        if low:
            w[: r.numel()] = torch.minimum(w[: r.numel()], r)
        if high:
            w[length - r.numel() :] = torch.minimum(w[length - r.numel() :], r.flip(0))
    return w


def blend_window(window: Window, spatial: Sequence[int], overlap: int, scale: int = 1) -> torch.Tensor:
    """Weights of one tile's output: 1 inside, a raised cosine over ``overlap * scale`` pixels at inner sides.

    Args:
        window: the tile's latent window (from :func:`tile_windows`).
        spatial: the latent grid's spatial size.
        overlap: the tiles' overlap in latent pixels.
        scale: output pixels per latent pixel (the autoencoder's downsample factor for decoded images, 1 for latents).

    Returns:
        (*window size * scale) float64 weights, all > 0.
    """
    weights = None
    for sl, size in zip(window, spatial):
        w = _ramp((sl.stop - sl.start) * scale, overlap * scale, sl.start > 0, sl.stop < size)
        weights = w if weights is None else weights[..., None] * w
    return weights  # type: ignore[return-value]


def blend_tiles(
    fn: Callable[[Window], torch.Tensor],
    windows: Sequence[Window],
    spatial: Sequence[int],
    overlap: int,
    scale: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Run ``fn`` on each window and blend the outputs into one frame.

    Args:
        fn: ``fn(window) -> (B, C, *window size * scale)``.
        windows: latent windows (:func:`tile_windows`).
        spatial: latent grid size.
        overlap: overlap in latent pixels (width of the blending ramps).
        scale: output pixels per latent pixel.
        on_tile: called with ``(index, count)`` after each tile (progress).

    Returns:
        (B, C, *spatial * scale).
    """
    if len(windows) == 1 and all(s.start == 0 and s.stop == n for s, n in zip(windows[0], spatial)):
        out = fn(windows[0])
        if on_tile is not None:
            on_tile(1, 1)
        return out
    out = total = None
    for index, window in enumerate(windows):
        tile = fn(window)
        if out is None:  # accumulate in float32 at least (tiles may come in bfloat16/float16 under autocast)
            dtype = torch.promote_types(tile.dtype, torch.float32)
            out = tile.new_zeros(tile.shape[:2] + tuple(n * scale for n in spatial), dtype=dtype)
            total = tile.new_zeros(tuple(n * scale for n in spatial), dtype=dtype)
        weights = blend_window(window, spatial, overlap, scale).to(device=tile.device, dtype=out.dtype)
        region = tuple(slice(s.start * scale, s.stop * scale) for s in window)
        out[(slice(None), slice(None)) + region] += tile * weights
        total[region] += weights  # type: ignore[index]
        if on_tile is not None:
            on_tile(index + 1, len(windows))
    return out / total  # type: ignore[operator]


def decode_tiled(
    model: nn.Module,
    z_scaled: torch.Tensor,
    slo: torch.Tensor | None,
    tile: int | None,
    overlap: int,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``model.decode_latents(z_scaled, slo)`` in overlapping latent tiles (the SLO cropped to each tile).

    Each tile is decoded with the gated features of its own SLO crop (those differ from the whole frame's features
    only within the condition encoder's receptive field of the crop's border, which lies in the blended overlap).

    Args:
        model: an :class:`~monai_lpuwf.networks.LPUWFModel`.
        z_scaled: (B, latent_channels, *latent_spatial) scaled latents.
        slo: (B, condition_channels, *latent_spatial * downsample_factor) or ``None``.
        tile: tile side in latent pixels; ``None`` decodes the whole frame at once.
        overlap: overlap in latent pixels.
        on_tile: progress callback ``(index, count)``.

    Returns:
        (B, image_channels, *latent_spatial * downsample_factor).
    """
    factor = model.downsample_factor
    spatial = tuple(z_scaled.shape[2:])

    def fn(window: Window) -> torch.Tensor:
        image_window = (slice(None), slice(None)) + tuple(slice(s.start * factor, s.stop * factor) for s in window)
        return model.decode_latents(
            z_scaled[(slice(None), slice(None)) + window], None if slo is None else slo[image_window]
        )

    return blend_tiles(fn, tile_windows(spatial, tile, overlap), spatial, overlap, factor, on_tile)


def denoise_tiled(
    model: nn.Module,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    slo: torch.Tensor,
    tile: int | None,
    overlap: int,
    conditioning_scale: float = 1.0,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """``model.denoise`` in overlapping latent tiles (each with its full-resolution SLO crop), blended.

    Tile sides are multiples of the U-Net's own factor (``model.size_divisor // model.downsample_factor``).

    Args:
        model: an :class:`~monai_lpuwf.networks.LPUWFModel`.
        x_t: (B, latent_channels, *latent_spatial) noisy latents.
        timesteps: (B,) integer timesteps.
        slo: (B, condition_channels, *latent_spatial * downsample_factor).
        tile: tile side in latent pixels; ``None`` denoises the whole frame at once.
        overlap: overlap in latent pixels.
        conditioning_scale: multiplier of the ControlNet residuals.
        on_tile: progress callback ``(index, count)``.

    Returns:
        the model output (B, latent_channels, *latent_spatial).
    """
    factor = model.downsample_factor
    spatial = tuple(x_t.shape[2:])
    multiple = model.size_divisor // factor

    def fn(window: Window) -> torch.Tensor:
        image_window = (slice(None), slice(None)) + tuple(slice(s.start * factor, s.stop * factor) for s in window)
        x_tile = x_t[(slice(None), slice(None)) + window]
        return model.denoise(x_tile, timesteps, slo[image_window], conditioning_scale=conditioning_scale)

    return blend_tiles(fn, tile_windows(spatial, tile, overlap, multiple), spatial, overlap, 1, on_tile)


def _window_pixels(windows: Sequence[Window]) -> int:
    return max(math.prod(s.stop - s.start for s in w) for w in windows)


def estimate_generation_memory(
    model: nn.Module,
    batch: int,
    image_spatial: Sequence[int],
    decode_windows: Sequence[Window],
    denoise_windows: Sequence[Window],
    num_samples: int = 1,
    bytes_per_value: int = 4,
) -> int:
    """Rough peak memory (bytes) of generating a batch of frames, beyond the model's weights.

    Counts the largest tile of each network (activations of its widest levels, the skip connections of the U-Net
    and ControlNet, the ControlNet's full-resolution conditioning embedding, the decoder with its SLO features) and
    the whole-frame buffers (padded SLO, latents, blended outputs, the draws). An order-of-magnitude estimate,
    checked against measured peaks in ``benchmarks/bench_large_frames.py``.

    Args:
        model: an :class:`~monai_lpuwf.networks.LPUWFModel`.
        batch: images per call.
        image_spatial: padded image size.
        decode_windows, denoise_windows: the latent windows (:func:`tile_windows`).
        num_samples: draws per image (all kept until aggregated).
        bytes_per_value: 4 for float32.
    """
    factor = model.downsample_factor
    ae = model.autoencoder
    channels = list(ae.channels)
    levels = len(channels)
    # decoder: per level ~6 live maps of its width (input, norm, conv, residual, SLO feature, upsampled)
    dec_lat = _window_pixels(decode_windows)
    dec = max(6 * ch * dec_lat * 4 ** (levels - 1 - i) for i, ch in enumerate(channels))
    dec += 3 * dec_lat * factor**2  # the tile's SLO crop
    # U-Net + ControlNet: skip connections of every level are held, plus ~4 live maps of the widest level
    unet = model.unet
    den_lat = _window_pixels(denoise_windows)
    n_res = (
        unet.num_res_blocks
        if isinstance(unet.num_res_blocks, Sequence)
        else [unet.num_res_blocks] * len(unet.block_out_channels)
    )
    skips = sum((r + 1) * ch * den_lat / 4**i for i, (r, ch) in enumerate(zip(n_res, unet.block_out_channels)))
    live = max(4 * ch * den_lat / 4**i for i, ch in enumerate(unet.block_out_channels))
    embed = list(model.controlnet.controlnet_cond_embedding.blocks)
    embed_width = max((getattr(b, "out_channels", 0) for b in embed), default=0)
    embed_maps = 3 * embed_width * den_lat * factor**2  # the ControlNet's SLO embedding starts at full resolution
    den = 3 * skips + live + embed_maps  # UNet skips, ControlNet skips, ControlNet residuals
    frame = math.prod(image_spatial)
    buffers = frame * (3 + 2 + num_samples) + 4 * model.latent_channels * frame / factor**2
    return int(batch * bytes_per_value * (max(dec, den) + buffers))


def available_memory(device: torch.device | str) -> int | None:
    """Free memory (bytes) on ``device``: CUDA's free memory, else the system's available RAM (psutil or
    ``/proc/meminfo``); ``None`` when unknown."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    if has_psutil:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(needed: int, device: torch.device | str, what: str, advice: str, available: int | None = None) -> None:
    """Raise ``MemoryError`` naming ``what`` and ``advice`` when ``needed`` bytes exceed the available memory."""
    available = available_memory(device) if available is None else available
    if available is not None and needed > available:
        raise MemoryError(
            f"{what} needs about {_gib(needed)} of memory but only {_gib(available)} is available on {device}; {advice}"
        )


def choose_tiling(
    model: nn.Module,
    batch: int,
    image_spatial: Sequence[int],
    decode_tile: int | None,
    decode_overlap: int,
    denoise_tile: int | None,
    denoise_overlap: int,
    num_samples: int = 1,
    policy: str = "auto",
    device: torch.device | str = "cpu",
    memory_limit: int | None = None,
) -> dict[str, list[Window]]:
    """The decoder's and the denoiser's latent windows for a batch of padded frames (one window: no tiling).

    Args:
        model: an :class:`~monai_lpuwf.networks.LPUWFModel`.
        batch: images per call.
        image_spatial: padded image size (multiples of ``model.size_divisor``).
        decode_tile, decode_overlap, denoise_tile, denoise_overlap: tile sides and overlaps in latent pixels
            (``None``: never tile that network).
        num_samples: draws per image (for the memory estimate).
        policy: one of :data:`TILE_POLICIES`. Under ``"memory"`` (and ``"auto"`` off the CPU) each network runs on
            the whole frame when :func:`estimate_generation_memory` of that choice fits in ``memory_limit`` (else
            the device's free memory; unknown: fits): both whole first, then the decoder tiled, then the denoiser
            tiled, else both tiled. ``"auto"`` also tiles a network whose frame exceeds :data:`WHOLE_FRAME_TILES`
            times its tile's area.
        device: where the networks run (``"auto"``: CPU or accelerator; free memory).
        memory_limit: bytes the generation may use; ``None``: the device's free memory.

    Returns:
        ``{"decode": windows, "denoise": windows}``.
    """
    policy = look_up_option(policy, TILE_POLICIES)
    factor = model.downsample_factor
    latent = [int(s) // factor for s in image_spatial]
    multiple = model.size_divisor // factor
    tiled = {
        "decode": tile_windows(latent, decode_tile, decode_overlap),
        "denoise": tile_windows(latent, denoise_tile, denoise_overlap, multiple),
    }
    on_cpu = torch.device(device).type == "cpu"
    if policy == "size" or (policy == "auto" and on_cpu):
        return tiled
    cap = WHOLE_FRAME_TILES if policy == "auto" else None
    pixels = math.prod(latent)
    may_be_whole = {
        name: cap is None or tile is None or pixels <= cap * int(tile) ** 2
        for name, tile in (("decode", decode_tile), ("denoise", denoise_tile))
    }
    whole = [tuple(slice(0, s) for s in latent)]
    budget = available_memory(device) if memory_limit is None else int(memory_limit)
    for dec_whole, den_whole in ((True, True), (False, True), (True, False)):
        if (dec_whole and not may_be_whole["decode"]) or (den_whole and not may_be_whole["denoise"]):
            continue
        choice = {
            "decode": whole if dec_whole else tiled["decode"],
            "denoise": whole if den_whole else tiled["denoise"],
        }
        needed = estimate_generation_memory(
            model, batch, image_spatial, choice["decode"], choice["denoise"], num_samples
        )
        if budget is None or needed <= budget:
            return choice
    return tiled
