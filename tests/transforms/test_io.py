"""LoadUWFImage(d) / save_uwf_image: orientation, bit depth, channels and bad input."""

from __future__ import annotations

import re
import warnings

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import LoadImage
from PIL import Image

from monai_lpuwf.data import UWFImageError, save_uwf_image
from monai_lpuwf.transforms import LoadUWFImage, LoadUWFImaged

H, W = 23, 37  # non-square, odd: any transpose or flip changes the shape or the pixels


def _ramp(channels: int = 1) -> np.ndarray:
    """(C, H, W) in [-1, 1]: distinct per row, column and channel, so orientation errors show."""
    rr, cc = np.mgrid[0:H, 0:W].astype(np.float32)
    base = (rr * W + cc) / (H * W - 1)
    return np.stack([base, 1 - base, np.roll(base, 5, axis=1)][:channels]) * 2 - 1


@pytest.mark.parametrize(
    "suffix,bit_depth,channels",
    [
        (".png", 8, 1),
        (".png", 8, 3),
        (".png", 16, 1),
        (".bmp", 8, 3),
        (".tif", 8, 1),
        (".tif", 16, 1),
        (".tif", 16, 3),
        (".nii.gz", 8, 1),
        (".nii", 16, 1),
        (".dcm", 8, 1),
        (".dcm", 12, 1),
        (".dcm", 8, 3),
    ],
)
def test_load_save_round_trip_keeps_pixels_and_orientation(tmp_path, suffix, bit_depth, channels):
    img = _ramp(channels)
    path = save_uwf_image(img, tmp_path / f"x{suffix}", bit_depth=bit_depth)
    loaded = LoadUWFImage("slo" if channels == 3 else "fa")(path)
    assert isinstance(loaded, MetaTensor) and loaded.dtype == torch.float32
    assert tuple(loaded.shape) == (channels, H, W)
    step = 2.0 / (2**bit_depth - 1)
    np.testing.assert_allclose(loaded.numpy(), img, atol=step / 2 + 1e-6)
    assert loaded.meta["bit_depth"] == bit_depth
    assert loaded.meta["filename_or_obj"] == str(path)
    # saving the loaded image again reproduces the stored integers exactly
    again = LoadUWFImage("slo" if channels == 3 else "fa")(save_uwf_image(loaded, tmp_path / f"y{suffix}", bit_depth))
    torch.testing.assert_close(again.as_tensor(), loaded.as_tensor(), atol=1e-6, rtol=0)


def test_orientation_matches_an_image_viewer_and_differs_from_monai_default(tmp_path):
    """Row 0 of the tensor is the top row of the picture (PIL's array), whereas MONAI's default PILReader transposes."""
    path = save_uwf_image(_ramp(1), tmp_path / "x.png")
    viewer = np.asarray(Image.open(path)).astype(np.float32) / 255 * 2 - 1  # (H, W) as any viewer shows it
    ours = LoadUWFImage("fa")(path)[0].numpy()
    np.testing.assert_allclose(ours, viewer, atol=1e-6)
    monai_default = LoadImage(image_only=True)(path).numpy()  # (W, H): x axis first
    assert monai_default.shape == (W, H)
    np.testing.assert_allclose(monai_default.T / 255 * 2 - 1, ours, atol=1e-6)


def test_nifti_axes_are_x_y_so_itk_snap_shows_the_same_picture(tmp_path):
    path = save_uwf_image(_ramp(1), tmp_path / "x.nii.gz")
    stored = np.asarray(nib.load(path).dataobj)
    assert stored.shape == (W, H)  # NIfTI array axes (x = column, y = row)
    np.testing.assert_array_equal(stored.T, np.round((_ramp(1)[0] + 1) / 2 * 255))


@pytest.mark.parametrize("kind,bits", [("png", 16), ("tif", 16), ("tif", 8), ("dcm", 12), ("nii", 16), ("png", 8)])
def test_intensity_scaled_from_the_real_bit_depth(tmp_path, kind, bits):
    """A stored value v maps to 2 v / (2**bits - 1) - 1: not v / 255 (clipped) and not v / max."""
    value = 1000 if bits > 8 else 100
    arr = np.zeros((H, W), np.uint16 if bits > 8 else np.uint8)
    arr[3:9, 4:11] = value
    path = tmp_path / f"x.{kind}"
    if kind == "png":
        Image.fromarray(arr).save(path)
    elif kind == "tif":
        tifffile.imwrite(path, arr)
    elif kind == "nii":
        nib.save(nib.Nifti1Image(arr.T.copy(), np.eye(4)), path)
    else:
        save_uwf_image(arr.astype(np.float32) / (2**bits - 1) * 2 - 1, path, bit_depth=bits)
    out = LoadUWFImage("fa")(path)
    assert out.meta["bit_depth"] == bits
    np.testing.assert_allclose(float(out[0, 5, 5]), 2 * value / (2**bits - 1) - 1, atol=1e-6)
    np.testing.assert_allclose(float(out[0, 0, 0]), -1.0)


def _write_float(path, arr: np.ndarray):
    """(H, W[, C]) float array as a float TIFF or a NIfTI ((x, y[, c]) axes)."""
    if path.suffix == ".tif":
        tifffile.imwrite(path, arr)
    else:
        nib.save(nib.Nifti1Image(np.swapaxes(arr, 0, 1).copy(), np.eye(4)), path)
    return path


@pytest.mark.parametrize("suffix", [".tif", ".nii.gz"])
def test_float_images_in_unit_range_are_taken_as_is_and_collate(tmp_path, suffix):
    """[0, 1] float32 files load as they are; their metadata collates into a batch (bit_depth was None:
    ``default_collate ... NoneType`` stopped the inference run)."""
    unit = ((_ramp(3) + 1) / 2).transpose(1, 2, 0).astype(np.float32)
    path = _write_float(tmp_path / f"f{suffix}", unit)
    out = LoadUWFImage("slo")(path)
    np.testing.assert_allclose(out.numpy(), _ramp(3), atol=1e-6)
    assert out.meta["bit_depth"] == 32 and out.meta["value_range"] == (0.0, 1.0)
    png = LoadUWFImage("slo")(save_uwf_image(_ramp(3), tmp_path / "p.png"))
    batch = list_data_collate([{"slo": out}, {"slo": png}])  # a float file and a PNG of one size share a batch
    assert tuple(batch["slo"].shape) == (2, 3, H, W)
    assert batch["slo"].meta["bit_depth"].tolist() == [32, 8]


def test_float_files_out_of_unit_range_need_a_value_range(tmp_path):
    unscaled = np.round((_ramp(3) + 1) / 2 * 255).transpose(1, 2, 0).astype(np.float32)  # 0..255 stored as float
    path = _write_float(tmp_path / "f255.tif", unscaled)
    cli = "--load_kwargs \"{'value_range':(0,255)}\""
    with pytest.raises(UWFImageError, match=r"f255\.tif: floating point intensities in \[0, 255\].*" + re.escape(cli)):
        LoadUWFImage("slo")(path)
    np.testing.assert_allclose(LoadUWFImage("slo", value_range=(0, 255))(path).numpy(), _ramp(3), atol=1 / 255 + 1e-6)
    own = LoadUWFImage("slo", value_range="minmax")(path)  # the file's own min..max
    assert own.meta["value_range"] == (0.0, 255.0) and float(own.min()) == -1.0 and float(own.max()) == 1.0
    with pytest.warns(UserWarning, match=r"f255\.tif: \d+\.\d+% of the values lie outside value_range=\(0\.0, 100"):
        clipped = LoadUWFImage("slo", value_range=(0, 100))(path)
    assert float(clipped.max()) == 1.0
    nifti = np.zeros((H, W), np.float32)
    nifti[2:5, 2:5] = 300.0
    nib.save(nib.Nifti1Image(nifti.T.copy(), np.eye(4)), tmp_path / "f.nii")
    with pytest.raises(UWFImageError, match=r"f\.nii.*value_range"):
        LoadUWFImage("fa")(tmp_path / "f.nii")
    np.testing.assert_allclose(float(LoadUWFImage("fa", value_range=(0, 600))(tmp_path / "f.nii")[0, 3, 3]), 0.0)
    with pytest.raises(ValueError, match="low < high"):
        LoadUWFImage("fa", value_range=(1, 1))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels_are_refused_naming_the_file_or_set_black_when_asked(tmp_path, bad):
    unit = ((_ramp(3) + 1) / 2).transpose(1, 2, 0).astype(np.float32)
    unit[2:5, 3:7, 1] = bad  # 12 pixels, one channel
    path = _write_float(tmp_path / "hole.nii.gz", unit)
    cli = re.escape("--load_kwargs \"{'nonfinite':'black'}\"")
    with pytest.raises(UWFImageError, match=rf"hole\.nii\.gz: 12 of {H * W} pixels are not finite.*{cli}"):
        LoadUWFImage("slo")(path)
    out = LoadUWFImage("slo", nonfinite="black")(path)
    assert torch.isfinite(out).all() and out.meta["value_range"] == (0.0, 1.0)
    assert torch.all(out[1, 2:5, 3:7] == -1.0)
    expected = _ramp(3)
    expected[1, 2:5, 3:7] = -1.0
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    _write_float(tmp_path / "void.tif", np.full((H, W), bad, np.float32))
    with pytest.raises(UWFImageError, match=r"void\.tif: .*no pixel has a value"):
        LoadUWFImage("fa", nonfinite="black")(tmp_path / "void.tif")


def test_non_numeric_pixel_types_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", (np.ones((H, W)) + 1j).astype(np.complex64))
    with pytest.raises(UWFImageError, match=r"c\.tif: pixel type complex64 is not an intensity image"):
        LoadUWFImage("fa")(tmp_path / "c.tif")


@pytest.mark.parametrize("suffix", [".png", ".tif", ".nii.gz"])
@pytest.mark.parametrize("width", [1, 100])
def test_one_row_pictures_keep_their_row_and_channels(tmp_path, suffix, width):
    """A 1 x W RGB picture is (3, 1, W) as SLO (it was read as a grey (1, W)-pixel picture: wrong reason) and
    grey-as-RGB 1 x W is (1, 1, W) as FA (it was (1, 1, 3)); NIfTI colour is stored as (x, y, 1 slice, c)."""

    def write(name, arr):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".png":
            Image.fromarray(arr).save(path)
        elif suffix == ".tif":
            tifffile.imwrite(path, arr)
        else:
            stored = np.swapaxes(arr, 0, 1)[:, :, None] if arr.ndim == 3 else arr.T
            nib.save(nib.Nifti1Image(stored.copy(), np.eye(4)), path)
        return path

    rgb = np.stack([np.arange(width), np.arange(width) + 60, np.arange(width) + 120], -1)[None].astype(np.uint8)
    slo = LoadUWFImage("slo")(write("rgb", rgb))
    assert tuple(slo.shape) == (3, 1, width)
    np.testing.assert_allclose(slo.numpy(), rgb.transpose(2, 0, 1) / 255 * 2 - 1, atol=1e-6)
    with pytest.raises(UWFImageError, match=r"rgb\..*FA image has 3 channels that differ"):
        LoadUWFImage("fa")(tmp_path / f"rgb{suffix}")
    if width > 1:  # a 1 x 1 grey picture is constant
        grey = np.repeat(rgb[..., :1], 3, axis=-1)
        fa = LoadUWFImage("fa")(write("grey_rgb", grey))
        assert tuple(fa.shape) == (1, 1, width)
        np.testing.assert_allclose(fa[0, 0].numpy(), rgb[0, :, 0] / 255 * 2 - 1, atol=1e-6)
        assert tuple(LoadUWFImage("fa")(write("grey", rgb[..., 0])).shape) == (1, 1, width)
        with pytest.raises(UWFImageError, match=r"grey\..*SLO image has 1 channel\(s\)"):
            LoadUWFImage("slo")(tmp_path / f"grey{suffix}")


def test_fa_stored_as_rgb_collapses_to_one_channel(tmp_path):
    grey = _ramp(1)
    path = save_uwf_image(np.repeat(grey, 3, axis=0), tmp_path / "fa.bmp")
    out = LoadUWFImage("fa")(path)
    assert tuple(out.shape) == (1, H, W) and out.meta["original_channels"] == 3
    np.testing.assert_allclose(out.numpy(), grey, atol=1 / 255 + 1e-6)


def test_coloured_fa_and_grey_slo_are_errors_with_the_fix(tmp_path):
    colour = save_uwf_image(_ramp(3), tmp_path / "colour.png")
    with pytest.raises(UWFImageError, match=r"colour\.png.*fa_colour="):
        LoadUWFImage("fa")(colour)
    green = LoadUWFImage("fa", fa_colour="green")(colour)
    np.testing.assert_allclose(green.numpy(), _ramp(3)[1:2], atol=1 / 255 + 1e-5)
    grey = save_uwf_image(_ramp(1), tmp_path / "grey.png")
    cli = re.escape("(command line: --load_kwargs \"{'slo_grey':'repeat'}\")")
    with pytest.raises(UWFImageError, match=r"grey\.png.*slo_grey='repeat'.*" + cli):
        LoadUWFImage("slo")(grey)
    assert tuple(LoadUWFImage("slo", slo_grey="repeat")(grey).shape) == (3, H, W)


def test_alpha_and_palette_images(tmp_path):
    rgb = np.round((_ramp(3) + 1) / 2 * 255).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(np.dstack([rgb, np.full((H, W), 255, np.uint8)])).save(tmp_path / "rgba.png")
    out = LoadUWFImage("slo")(tmp_path / "rgba.png")
    assert tuple(out.shape) == (3, H, W)
    np.testing.assert_allclose(out.numpy(), _ramp(3), atol=1 / 255 + 1e-5)
    grey = np.round((_ramp(1)[0] + 1) / 2 * 255).astype(np.uint8)
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")  # palette of greys, indices != values
    np.testing.assert_allclose(
        LoadUWFImage("fa")(tmp_path / "palette.png")[0].numpy(), _ramp(1)[0], atol=1 / 255 + 1e-5
    )


def test_truncated_corrupt_missing_and_constant_files_name_the_file(tmp_path):
    good = save_uwf_image(_ramp(1), tmp_path / "good.png")
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UWFImageError, match=r"truncated\.png.*(corrupt|truncated).*re-export"):
        LoadUWFImage("fa")(tmp_path / "truncated.png")
    (tmp_path / "text.bmp").write_text("not an image")
    with pytest.raises(UWFImageError, match=r"text\.bmp"):
        LoadUWFImage("fa")(tmp_path / "text.bmp")
    tif = save_uwf_image(_ramp(1), tmp_path / "t.tif", bit_depth=16)
    (tmp_path / "cut.tif").write_bytes(tif.read_bytes()[:300])
    with pytest.raises(UWFImageError, match=r"cut\.tif"):
        LoadUWFImage("fa")(tmp_path / "cut.tif")
    with pytest.raises(FileNotFoundError, match=r"absent\.png.*datalist"):
        LoadUWFImage("fa")(tmp_path / "absent.png")
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(UWFImageError, match=r"blank\.png.*constant.*Re-export"):
        LoadUWFImage("fa")(tmp_path / "blank.png")


def test_save_never_overwrites_unless_asked(tmp_path):
    path = save_uwf_image(_ramp(1), tmp_path / "x.png")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"x\.png.*overwrite=True"):
        save_uwf_image(-_ramp(1), path)
    assert path.read_bytes() == before
    save_uwf_image(-_ramp(1), path, overwrite=True)
    assert path.read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary files left behind
    with pytest.raises(ValueError, match="16-bit"):
        save_uwf_image(_ramp(3), tmp_path / "c.png", bit_depth=16)


def test_dictionary_loader_modalities_missing_keys_and_size_mismatch(tmp_path):
    slo = save_uwf_image(_ramp(3), tmp_path / "1.png")
    early = save_uwf_image(_ramp(1), tmp_path / "1.1.png")
    small = save_uwf_image(_ramp(1)[:, :20, :30], tmp_path / "1.2.png")
    out = LoadUWFImaged(["slo", "early", "late"], allow_missing_keys=True)({"slo": slo, "early": early})
    assert tuple(out["slo"].shape) == (3, H, W) and tuple(out["early"].shape) == (1, H, W) and "late" not in out
    with pytest.raises(UWFImageError, match=r"1\.1\.png.*1\.2\.png.*spatial_mismatch='resize'"):
        LoadUWFImaged(["slo", "early", "late"])({"slo": slo, "early": early, "late": small})
    resized = LoadUWFImaged(["slo", "early", "late"], spatial_mismatch="resize")(
        {"slo": slo, "early": early, "late": small}
    )
    assert tuple(resized["late"].shape) == (1, H, W) and resized["late"].meta["resized_from"] == (20, 30)
    with pytest.raises(KeyError, match=r"1\.png.*1\.1\.png.*\['late'\].*allow_missing_keys=True"):
        LoadUWFImaged(["slo", "early", "late"])({"slo": slo, "early": early})
    with pytest.raises(KeyError, match=r"\['late'\]"):
        LoadUWFImaged(["slo", "early", "late"])({"slo": slo, "early": early, "late": None})


@pytest.mark.realdata
def test_real_samples_load_as_documented(uwf_samples_dir):
    slo = LoadUWFImage("slo")(uwf_samples_dir / "train" / "1.bmp")
    early = LoadUWFImage("fa")(uwf_samples_dir / "train" / "1.1.bmp")
    assert tuple(slo.shape) == (3, 682, 853) and tuple(early.shape) == (1, 682, 853)
    assert early.meta["original_channels"] == 3 and early.meta["bit_depth"] == 8
    viewer = np.asarray(Image.open(uwf_samples_dir / "train" / "1.1.bmp"))[..., 0].astype(np.float32) / 255 * 2 - 1
    np.testing.assert_allclose(early[0].numpy(), viewer, atol=2 / 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray warnings from the readers on real data
        LoadUWFImage("fa")(uwf_samples_dir / "val" / "7.2.bmp")


def test_reading_from_threads_leaves_the_warning_filters_alone(tmp_path):
    """CacheDataset caches with a thread pool: reading files in parallel threads must not change the process's
    warning filters (interleaved ``warnings.catch_warnings`` blocks left a blanket "ignore" behind that hid the
    trainer's resume warning), and a DICOM photograph without patient orientation reads without a warning."""
    from multiprocessing.pool import ThreadPool

    from monai_lpuwf.data.image_io import read_uwf_array

    paths = []
    for i in range(3):
        for suffix in (".png", ".jpg", ".dcm"):
            paths.append(tmp_path / f"frame{i}{suffix}")
            save_uwf_image(np.full((1, 16, 16), i / 3, np.float32), paths[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        for _ in range(5):  # the leak happened in every such run before the fix; a few rounds make it certain
            with ThreadPool(4) as pool:
                pool.map(read_uwf_array, paths * 8)
            assert warnings.filters == before, "reading in threads changed the process's warning filters"
    assert not [w for w in caught if "ImageOrientationPatient" in str(w.message)]
