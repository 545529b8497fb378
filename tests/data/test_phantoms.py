"""Synthetic UWF triplets: files the loaders read, determinism, lesions, known misregistration, no overwrites."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from monai_lpuwf.data import PHANTOM_MARKER, datalist_from_folder, generate_phantoms, render_phantom
from monai_lpuwf.transforms import LoadUWFImaged


def test_written_files_follow_the_authors_naming_and_load_back(tmp_path):
    recs = generate_phantoms(tmp_path, num=3, size=(64, 80), save_masks=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [PHANTOM_MARKER] + [f"{i}{s}" for i in (1, 2, 3) for s in (".png", ".1.png", ".2.png", ".lesion.npy")]
    )
    items = datalist_from_folder(tmp_path)  # the .npy masks are not images: ignored by discovery
    assert items == [{k: r[k] for k in ("slo", "early", "late")} for r in recs]
    loaded = LoadUWFImaged(["slo", "early", "late"])(items[0])
    assert [tuple(loaded[k].shape) for k in ("slo", "early", "late")] == [(3, 64, 80), (1, 64, 80), (1, 64, 80)]
    ph = render_phantom((64, 80), seed=(0, 1))
    for key in ("slo", "early", "late"):  # the files hold the rendered images (8-bit quantised)
        np.testing.assert_allclose(loaded[key].numpy(), ph[key] * 2 - 1, atol=1 / 255 + 1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "1.lesion.npy"), recs[0]["lesion"])


def test_deterministic_and_independent_of_the_number_generated(tmp_path):
    a = render_phantom((48, 48), seed=(5, 2))
    b = render_phantom((48, 48), seed=(5, 2))
    for key in ("slo", "early", "late", "lesion", "fov"):
        np.testing.assert_array_equal(a[key], b[key])
    assert np.abs(render_phantom((48, 48), seed=(6, 2))["early"] - a["early"]).max() > 0.1
    few = generate_phantoms(tmp_path / "few", num=1, size=(48, 48), seed=5)
    many = generate_phantoms(tmp_path / "many", num=3, size=(48, 48), seed=5)
    assert (tmp_path / "few" / "1.1.png").read_bytes() == (tmp_path / "many" / "1.1.png").read_bytes()
    np.testing.assert_array_equal(few[0]["lesion"], many[0]["lesion"])


def test_content_lesions_leak_and_vessels_fade(tmp_path):
    ph = render_phantom((192, 224), seed=1)
    lesion, fov = ph["lesion"], ph["fov"]
    assert lesion.any() and not (lesion & ~fov).any()
    early, late, slo = ph["early"][0], ph["late"][0], ph["slo"]
    assert late[lesion].mean() > early[lesion].mean() + 0.2  # leakage brightens the late phase
    box = np.zeros_like(fov)
    box[int(0.9 * 192) : int(0.975 * 192), int(0.745 * 224) : int(0.955 * 224)] = True
    assert early[~fov & ~box].max() < 0.1  # black outside the retina (pixel noise only) ...
    assert np.ptp(early[box]) < 0.02 and 0.05 < early[box].mean() < 0.15  # ... but for a flat dark burnt-in box
    bright_vessels = (early > np.percentile(early[fov], 97)) & fov & ~ndi.binary_dilation(lesion, iterations=5)
    assert late[bright_vessels].mean() < early[bright_vessels].mean() - 0.1  # vessels fade in the late phase
    assert np.abs(slo[2] - 4 / 255).max() < 1e-6  # Optos pseudo-colour: blue near-constant
    assert slo[:2, ~fov].mean() > 0.3  # bright eyelids around the retina


def test_misregistration_is_recorded_exactly(tmp_path):
    """Undoing the recorded rotation + shift (formula from the docstring) gives back the aligned late phase."""
    size = (96, 112)
    aligned = render_phantom(size, seed=4)
    moved = render_phantom(size, seed=4, misregistration=True)
    move = moved["misregistration"]["late"]
    assert 0 < abs(move["angle_deg"]) <= 3 and max(abs(s) for s in move["shift"]) <= 0.03 * max(size)
    h, w = size
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    a = math.radians(move["angle_deg"])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    # early-frame point p lands at q = R (p - c) + c + shift in the moved image: sample the moved image there
    grid = np.stack(np.mgrid[0:h, 0:w]).reshape(2, -1).astype(float)
    q = rot @ (grid - centre[:, None]) + (centre + np.asarray(move["shift"]))[:, None]
    back = ndi.map_coordinates(moved["late"][0], q, order=1).reshape(h, w)
    inner = ndi.binary_erosion(aligned["fov"], iterations=6)
    inner[int(0.85 * h) :, int(0.7 * w) :] = False  # the burnt-in box is drawn after the move, unmoved
    assert np.abs(back - aligned["late"][0])[inner].mean() < 0.02
    naive = np.abs(moved["late"][0] - aligned["late"][0])[inner].mean()
    assert naive > 3 * np.abs(back - aligned["late"][0])[inner].mean()
    np.testing.assert_array_equal(moved["early"], aligned["early"])  # early is the reference frame


def test_never_overwrites_foreign_files(tmp_path):
    (tmp_path / "1.png").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match=r"not written by generate_phantoms.*1\.png.*empty folder"):
        generate_phantoms(tmp_path, num=1, size=(32, 32))
    assert (tmp_path / "1.png").read_bytes() == b"user data"
    assert not (tmp_path / "1.1.png").exists()
    out = tmp_path / "own"
    generate_phantoms(out, num=2, size=(32, 32))
    generate_phantoms(out, num=2, size=(32, 32), seed=1)  # its own files: rewritten
    assert json.loads((out / PHANTOM_MARKER).read_text())["files"] == sorted(
        f"{i}{s}.png" for i in (1, 2) for s in ("", ".1", ".2")
    )


@pytest.mark.parametrize("ext,fa_as_rgb", [("bmp", True), ("tif", False)])
def test_other_formats_and_rgb_stored_fa(tmp_path, ext, fa_as_rgb):
    recs = generate_phantoms(tmp_path, num=1, size=(40, 48), ext=ext, fa_as_rgb=fa_as_rgb)
    assert recs[0]["early"].endswith(f"1.1.{ext}")
    out = LoadUWFImaged(["slo", "early", "late"])(datalist_from_folder(tmp_path)[0])
    assert tuple(out["early"].shape) == (1, 40, 48)
    assert out["early"].meta["original_channels"] == (3 if fa_as_rgb else 1)
