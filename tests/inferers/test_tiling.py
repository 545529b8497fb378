"""Latent tiling for large frames: seam-free blending (exact on a known function), exact when one tile covers the
frame, small changes on a whole 853 x 682 frame, linear tile counts, and the memory check before a frame starts."""

from __future__ import annotations

import pytest
import torch

import monai_lpuwf.inferers.tiling as tiling
from monai_lpuwf.inferers import LPUWFSampler, decode_tiled, denoise_tiled, tile_windows
from monai_lpuwf.inferers.tiling import blend_tiles, blend_window

# stated in bundle/docs/README.md: change by tiling a whole 853 x 682 frame (216 x 176 latents) into tiles of at most
# 128 latent pixels, with a random model. Decoded image (overlap 16, the default), [-1, 1] scale, N(0, 1) latents:
# measured max 0.067, mean 0.0072; denoiser output (overlap 32, the default) relative to its standard deviation:
# measured max 0.19, mean 0.015.
DECODE_MAX, DECODE_MEAN = 0.1, 0.01
DENOISE_MAX, DENOISE_MEAN = 0.3, 0.02


def _rand(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_windows_cover_the_grid_with_the_overlap_and_multiple():
    windows = tile_windows((216, 176), 64, 16, multiple=8)
    covered = torch.zeros(216, 176)
    for w in windows:
        assert all(s.stop - s.start == 56 and s.start % 8 == 0 for s in w)  # even spread: 56 <= 64
        covered[w] += 1
    assert covered.min() >= 1
    rows = sorted({(w[0].start, w[0].stop) for w in windows})
    assert rows == [(0, 56), (40, 96), (80, 136), (120, 176), (160, 216)]  # 16 shared between neighbours
    # a side a little longer than a tile: two shorter tiles, not a full tile plus a mostly-overlapping one
    assert sorted({(w[0].start, w[0].stop) for w in tile_windows((160, 128), 128, 16)}) == [(0, 88), (72, 160)]
    assert tile_windows((40, 30), 64, 16) == [(slice(0, 40), slice(0, 30))]
    assert tile_windows((40, 30), None, 16) == [(slice(0, 40), slice(0, 30))]
    with pytest.raises(ValueError, match="overlap"):
        tile_windows((200, 200), 64, 64)


def test_tile_count_grows_linearly_with_pixels():
    counts = [len(tile_windows((s, s), 128, 16)) for s in (1024, 2048, 4096)]
    assert counts[1] / counts[0] == pytest.approx(4, rel=0.15) and counts[2] / counts[1] == pytest.approx(4, rel=0.1)


def test_blending_is_seam_free_and_exact_for_a_shift_invariant_function():
    """Tiles that agree on the overlap (here: crops of one image, upsampled x4) blend back to that image exactly,
    and every window is positive and continuous (no hard edge inside the frame)."""
    spatial = (50, 70)
    frame = torch.rand((2, 3) + tuple(4 * s for s in spatial), generator=torch.Generator().manual_seed(0))
    windows = tile_windows(spatial, 24, 8)
    assert len(windows) == 3 * 4 and len({w[0].stop - w[0].start for w in windows}) == 1
    seen = []
    out = blend_tiles(
        lambda w: frame[(slice(None), slice(None)) + tuple(slice(4 * s.start, 4 * s.stop) for s in w)],
        windows, spatial, 8, scale=4, on_tile=lambda i, n: seen.append((i, n)),
    )  # fmt: skip
    torch.testing.assert_close(out, frame)
    assert seen == [(i + 1, 12) for i in range(12)]
    weights = blend_window(windows[5], spatial, 8, 4)
    assert float(weights.min()) > 0 and float(weights.max()) == 1.0
    assert float(weights.diff(dim=0).abs().max()) < 0.1 and float(weights.diff(dim=1).abs().max()) < 0.1


def test_one_tile_covering_the_frame_is_the_untiled_computation(random_model):
    z = _rand((1, 4, 24, 40), 1)
    slo = _rand((1, 3, 96, 160), 2)
    with torch.no_grad():
        torch.testing.assert_close(decode_tiled(random_model, z, slo, 64, 16), random_model.decode_latents(z, slo))
        t = torch.full((1,), 500, dtype=torch.long)
        torch.testing.assert_close(denoise_tiled(random_model, z, t, slo, 64, 16), random_model.denoise(z, t, slo))


def test_tiling_changes_a_native_853_x_682_frame_by_less_than_the_stated_tolerance(random_model):
    """The whole native frame (padded to 864 x 704: 216 x 176 latents) in tiles of at most 128 latent pixels (the
    default decoder tile, and the training crop size; 2 x 2 tiles) vs at once: decoded image and one denoiser
    output (by default the denoiser tiles only above 256 latent pixels)."""
    z = torch.randn((1, 4, 176, 216), generator=torch.Generator().manual_seed(3))
    slo = _rand((1, 3, 704, 864), 4)
    t = torch.full((1,), 700, dtype=torch.long)
    with torch.no_grad():
        decoded = (decode_tiled(random_model, z, slo, 128, 16) - random_model.decode_latents(z, slo)).abs()
        eps = denoise_tiled(random_model, z, t, slo, 128, 32)
        eps_whole = random_model.denoise(z, t, slo)
    assert 0 < float(decoded.max()) < DECODE_MAX and float(decoded.mean()) < DECODE_MEAN
    relative = (eps - eps_whole).abs() / eps_whole.std()
    assert 0 < float(relative.max()) < DENOISE_MAX and float(relative.mean()) < DENOISE_MEAN


def test_sampler_tiles_large_frames_only(random_model):
    sampler = LPUWFSampler(num_inference_steps=1, decode_tile=32, decode_overlap=8, denoise_tile=32, denoise_overlap=8)
    windows = sampler.tiling(random_model, (128, 128))  # 32 x 32 latents: one tile
    assert len(windows["decode"]) == len(windows["denoise"]) == 1
    windows = sampler.tiling(random_model, (256, 192))  # 64 x 48 latents
    assert len(windows["decode"]) == 3 * 2 and len(windows["denoise"]) == 3 * 2
    slo = _rand((1, 3, 224, 160), 6)  # multiples of the divisor (32): the inference transforms pad to them
    tiled = sampler(slo, random_model)["pred"]
    whole = LPUWFSampler(num_inference_steps=1, decode_tile=None, denoise_tile=None)(slo, random_model)["pred"]
    assert tiled.shape == whole.shape == (1, 1, 224, 160)
    assert 0 < float((tiled - whole).abs().mean()) < 2 * DECODE_MEAN  # tiles of 32: 4x smaller than the default


def test_memory_check_stops_before_starting_with_a_clear_message(random_model, monkeypatch):
    sampler = LPUWFSampler(num_inference_steps=1)
    small, optos = (
        sampler.memory_estimate(random_model, 1, (682, 853)),
        sampler.memory_estimate(random_model, 1, (3200, 4000)),
    )
    assert 0 < small < optos < 30 * small  # tiled: ~ the whole-frame buffers, linear in pixels
    untiled = LPUWFSampler(num_inference_steps=1, decode_tile=None, denoise_tile=None)
    assert untiled.memory_estimate(random_model, 1, (3200, 4000)) > optos

    calls = []

    def denoise(*args, **kwargs):  # must not be reached
        calls.append(1)
        raise AssertionError

    needed = sampler.memory_estimate(random_model, 1, (224, 160))
    monkeypatch.setattr(tiling, "available_memory", lambda device: needed // 2)
    monkeypatch.setattr(random_model, "denoise", denoise)
    with pytest.raises(MemoryError, match=r"generating 1 image\(s\) of 224 x 160 .* needs about .* GiB .*decode_tile"):
        sampler(_rand((1, 3, 224, 160), 0), random_model)
    assert not calls
    monkeypatch.setattr(tiling, "available_memory", lambda device: None)  # unknown: no check, generation runs
    with pytest.raises(AssertionError):
        sampler(_rand((1, 3, 224, 160), 0), random_model)
    assert calls


def test_available_memory_reads_the_system():
    free = tiling.available_memory("cpu")
    assert free is None or free > 2**20


def test_tiles_of_a_collated_metatensor_batch(random_model):
    """The bundle's evaluator passes a collated MetaTensor (per-image metadata lists), which cannot be sliced
    spatially; the sampler tiles a plain tensor."""
    from monai.data import MetaTensor, list_data_collate

    items = [{"slo": MetaTensor(_rand((3, 224, 160), i), meta={"filename_or_obj": f"{i}.png"})} for i in (1, 2)]
    batch = list_data_collate(items)["slo"]
    sampler = LPUWFSampler(num_inference_steps=1, decode_tile=32, decode_overlap=8, denoise_tile=32, denoise_overlap=8)
    with pytest.raises(ValueError, match="Inconsistent batched metadata"):
        sampler._sample(batch, random_model, None)  # the MetaTensor itself: what the fix avoids
    out = sampler(batch, random_model)["pred"]
    torch.testing.assert_close(out, sampler(batch.as_tensor(), random_model)["pred"])


def _sizes(random_model, spatial, sampler):
    """(whole, tiled) memory estimates of one frame (the oracle of the tiling choice)."""
    tiled = tiling.tile_windows([s // random_model.downsample_factor for s in spatial], 32, 8)
    whole = tiling.tile_windows([s // random_model.downsample_factor for s in spatial], None, 8)
    est = tiling.estimate_generation_memory
    return est(random_model, 1, spatial, whole, whole), est(random_model, 1, spatial, tiled, tiled)


def test_tile_only_when_the_memory_estimate_says_so(random_model):
    """``tile_policy="memory"``: a frame whose whole-frame estimate fits is not tiled, one that does not fit is;
    between the two, only the decoder is tiled (the cheaper change first)."""
    kwargs = {"decode_tile": 32, "decode_overlap": 8, "denoise_tile": 32, "denoise_overlap": 8}
    spatial = (256, 192)  # 64 x 48 latents: 3 x 2 tiles of each network under the size rule
    whole, tiled = _sizes(random_model, spatial, None)
    assert tiled < whole
    fits = LPUWFSampler(num_inference_steps=1, tile_policy="memory", memory_limit=whole, **kwargs)
    assert {k: len(v) for k, v in fits.tiling(random_model, spatial).items()} == {"decode": 1, "denoise": 1}
    short = LPUWFSampler(num_inference_steps=1, tile_policy="memory", memory_limit=whole - 1, **kwargs)
    windows = short.tiling(random_model, spatial)
    assert len(windows["decode"]) == 6 and len(windows["denoise"]) in (1, 6)
    tight = LPUWFSampler(num_inference_steps=1, tile_policy="memory", memory_limit=tiled, **kwargs)
    assert {k: len(v) for k, v in tight.tiling(random_model, spatial).items()} == {"decode": 6, "denoise": 6}
    # the size rule (and "auto" on a CPU) tiles it whatever the memory
    for policy in ("size", "auto"):
        sampler = LPUWFSampler(num_inference_steps=1, tile_policy=policy, memory_limit=10 * whole, **kwargs)
        assert {k: len(v) for k, v in sampler.tiling(random_model, spatial).items()} == {"decode": 6, "denoise": 6}


def test_a_frame_that_fits_is_generated_whole(random_model):
    """Not tiled means the untiled computation: the same output as tiles switched off, to the last bit."""
    slo = _rand((1, 3, 224, 160), 7)
    kwargs = {"decode_tile": 32, "decode_overlap": 8, "denoise_tile": 32, "denoise_overlap": 8}
    fits = LPUWFSampler(num_inference_steps=2, tile_policy="memory", memory_limit=2**40, **kwargs)(slo, random_model)
    whole = LPUWFSampler(num_inference_steps=2, decode_tile=None, denoise_tile=None)(slo, random_model)
    tiled = LPUWFSampler(num_inference_steps=2, tile_policy="size", **kwargs)(slo, random_model)
    assert torch.equal(fits["pred"], whole["pred"])
    assert not torch.equal(tiled["pred"], whole["pred"])


def test_auto_policy_on_a_gpu_keeps_native_frames_whole_and_tiles_optos_frames(random_model):
    """On an accelerator (``device="cuda"``: only its type is read here) with the default tiles: 640 x 512 and
    853 x 682 frames run whole (the H200 run of issue 19: tiles cost 13 % at 640 x 512), a 3900 x 3072 frame is
    tiled (more than WHOLE_FRAME_TILES tiles' area), and a frame that fits no memory is tiled too."""
    choose = tiling.choose_tiling

    def counts(spatial, limit, policy="auto", device="cuda"):
        windows = choose(random_model, 1, spatial, 128, 16, 256, 32, 1, policy, device, limit)
        return len(windows["decode"]), len(windows["denoise"])

    big = 2**40
    assert counts((512, 640), big) == (1, 1)
    assert counts((704, 864), big) == (1, 1)
    assert counts((704, 864), big, device="cpu") == (4, 1)  # the CPU keeps the size rule (2 x 2 decoder tiles)
    optos = counts((3072, 3904), big)
    assert optos == counts((3072, 3904), big, policy="size") and min(optos) > 1
    assert counts((3072, 3904), big, policy="memory") == (1, 1)  # memory alone would run it whole
    assert counts((704, 864), 2**20) == (4, 1)  # 1 MiB free: nothing fits, the size rule's tiles
