"""``bundle/configs/inference.json`` through ``monai.bundle`` on phantoms and real frames with a tiny checkpoint.

Oracle for the written images: :class:`monai_lpuwf.inferers.LPUWFSampler` called directly on the same SLO
(loaded and padded by the data layer's preset), cropped back by explicit index arithmetic and rounded to 8 bits.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import fire.parser
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from monai_lpuwf.data import generate_phantoms
from monai_lpuwf.generation import InferenceInputError
from monai_lpuwf.inferers import LPUWFSampler
from monai_lpuwf.transforms import LoadUWFImage, uwf_inference_transforms

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")


def _load_helpers():
    spec = importlib.util.spec_from_file_location("_helpers", Path(__file__).with_name("test_inference_helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h = _load_helpers()
STEPS, tiny_model, bundle_error = h.STEPS, h.tiny_model, h.bundle_error


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with h.one_thread():
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return h.write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """SLO folder with sub-folders: a/ two 70 x 90 (H x W) frames, b/ one 512 x 640 frame (+ their FA files)."""
    root = tmp_path_factory.mktemp("frames")
    generate_phantoms(root / "a", num=2, size=(70, 90), seed=0)
    generate_phantoms(root / "b", num=1, size=(512, 640), seed=1)
    return root


def run_inference(bundle, tmp_path: Path, checkpoint: Path, **overrides) -> Path:
    """``monai.bundle.run`` of inference.json (output in ``tmp_path/out`` by default); returns the output folder."""
    overrides.setdefault("output_dir", str(tmp_path / "out"))
    h.run_bundle(bundle, tmp_path, ("inference.json",), checkpoint, **overrides)
    return Path(overrides["output_dir"])


def expected_late(slo_paths: list[str], model: torch.nn.Module, num_samples: int = 1) -> list[dict[str, np.ndarray]]:
    """Direct sampler output for a batch of same-size SLO files, cropped to native size and rounded to uint8."""
    pre = uwf_inference_transforms(divisor=model.size_divisor, sharpen=True)
    slo = torch.stack([pre({"slo": p})["slo"].as_tensor() for p in slo_paths])
    out = LPUWFSampler("ddim", num_inference_steps=STEPS, num_samples=num_samples, seed=0)(slo, model)
    h, w = np.asarray(Image.open(slo_paths[0])).shape[:2]
    top, left = (slo.shape[2] - h) // 2, (slo.shape[3] - w) // 2

    def to_uint8(x: torch.Tensor, low: float) -> np.ndarray:
        x = x[:, 0, top : top + h, left : left + w].clamp(low, 1)
        return np.round((x.numpy() - low) / (1 - low) * 255).astype(np.uint8)

    pred = to_uint8(out["pred"], -1.0)
    std = to_uint8(out["pred_std"], 0.0) if num_samples > 1 else [None] * len(slo_paths)
    return [{"pred": p, "std": s} for p, s in zip(pred, std)]


def assert_same_image(written: Path, expected: np.ndarray) -> None:
    arr = np.asarray(Image.open(written))
    assert arr.shape == expected.shape, (written, arr.shape, expected.shape)
    diff = np.abs(arr.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (written, diff.max(), (diff > 0).mean())


def test_native_size_orientation_and_values_in_size_grouped_batches(bundle, tmp_path, checkpoint, frames):
    """Two frame sizes (70 x 90 and 640 x 512) in sub-folders, batches of 2, 2 samples with a std map: each
    output has its input's size and sub-folder and equals the sampler's own output for that batch."""
    out = run_inference(bundle, tmp_path, checkpoint, input_dir=str(frames), batch_size=2, num_samples=2)
    model = tiny_model()
    batches = [[str(frames / "a" / "1.png"), str(frames / "a" / "2.png")], [str(frames / "b" / "1.png")]]
    for paths in batches:
        for path, exp in zip(paths, expected_late(paths, model, num_samples=2)):
            rel = Path(path).relative_to(frames).with_suffix("")
            assert_same_image(out / f"{rel}_late.png", exp["pred"])
            assert_same_image(out / f"{rel}_late_std.png", exp["std"])
            assert Image.open(out / f"{rel}_late.png").mode == "L"
    assert Image.open(out / "b" / "1_late.png").size == (640, 512)  # PIL size is (W, H)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a/1_late.png", "a/1_late_std.png", "a/2_late.png", "a/2_late_std.png", "b/1_late.png", "b/1_late_std.png",
    ]  # fmt: skip


@pytest.mark.parametrize("ext, dtype", [(".tif", "uint16"), (".nii.gz", "float32")])
def test_tiff_and_nifti_outputs_read_back_in_the_input_orientation(bundle, tmp_path, checkpoint, frames, ext, dtype):
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(frames / "a" / "1.png", single / "1.png")
    out = run_inference(bundle, tmp_path, checkpoint, input_dir=str(single), output_ext=ext, output_dtype=dtype)
    loaded = LoadUWFImage("fa")(out / f"1_late{ext}")
    assert tuple(loaded.shape) == (1, 70, 90)
    model = tiny_model()
    pre = uwf_inference_transforms(divisor=model.size_divisor, sharpen=True)
    slo = pre({"slo": str(single / "1.png")})["slo"][None]
    pred = LPUWFSampler("ddim", num_inference_steps=STEPS, seed=0)(slo, model)
    expected = pred["pred"][0, :, 13:83, 3:93]  # 70 x 90 padded to 96 x 96: 13 rows and 3 columns before
    tolerance = 1.5 / 65535 * 2 if dtype == "uint16" else 1e-5
    assert torch.allclose(loaded.as_tensor(), expected, atol=tolerance)


def _bad_folder(root: Path, frames: Path) -> Path:
    """One good SLO, a grey SLO, a 40 x 30 SLO and a file that is not an image."""
    root.mkdir()
    shutil.copy(frames / "a" / "1.png", root / "good.png")
    shutil.copy(frames / "a" / "2.png", root / "good2.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8)).save(root / "grey.png")
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "small.png")
    (root / "broken.png").write_bytes(b"this is not a PNG file")
    return root


def test_bad_files_in_a_batch_are_reported_and_the_others_written(bundle, tmp_path, checkpoint, frames):
    folder = _bad_folder(tmp_path / "in", frames)
    err = bundle_error(InferenceInputError, run_inference, bundle, tmp_path, checkpoint, input_dir=str(folder),
                       batch_size=4)  # fmt: skip
    message = str(err)
    assert "3 of 5 input item(s) could not be used" in message
    assert f"{folder / 'grey.png'}: SLO image has 1 channel(s), expected 3" in message
    assert f"{folder / 'small.png'}: frame of 40 x 30 pixels (W x H) is smaller than the minimum of 64" in message
    assert f"{folder / 'broken.png'}: cannot be read" in message
    assert "The other 2 item(s) were generated" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good2_late.png", "good_late.png"]
    assert Image.open(tmp_path / "out" / "good_late.png").size == (90, 70)


def test_on_bad_input_raise_stops_before_generating(bundle, tmp_path, checkpoint, frames):
    folder = _bad_folder(tmp_path / "in", frames)
    err = bundle_error(InferenceInputError, run_inference, bundle, tmp_path, checkpoint, input_dir=str(folder),
                       on_bad_input="raise")  # fmt: skip
    assert "grey.png: SLO image has 1 channel" in str(err)
    assert not (tmp_path / "out").exists()


def test_grey_slo_accepted_when_asked(bundle, tmp_path, checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90), dtype=np.uint8)).save(folder / "grey.png")
    out = run_inference(bundle, tmp_path, checkpoint, input_dir=str(folder), load_kwargs={"slo_grey": "repeat"})
    assert Image.open(out / "grey_late.png").size == (90, 70)


def test_empty_folder_is_a_clear_error(bundle, tmp_path, checkpoint):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    empty = str(tmp_path / "empty")
    err = bundle_error(FileNotFoundError, run_inference, bundle, tmp_path, checkpoint, input_dir=empty)
    assert f"{tmp_path / 'empty'}: no image files" in str(err)


def test_checkpoint_of_another_preset_is_refused(bundle, tmp_path, checkpoint, frames):
    # the tiny checkpoint against the plain "small" preset (the "paper" preset gives the same error, slower to build)
    err = bundle_error(ValueError, run_inference, bundle, tmp_path, checkpoint, input_dir=str(frames / "a"),
                       preset="small")  # fmt: skip
    assert "made for another model architecture: autoencoder.channels: checkpoint [8, 8, 16] vs configured" in str(err)
    bare = tmp_path / "bare.pt"
    torch.save(tiny_model().state_dict(), bare)  # weights only: no architecture record
    err = bundle_error(ValueError, run_inference, bundle, tmp_path, bare, input_dir=str(frames / "a"))
    assert "holds no model config" in str(err) and "pass --preset NAME" in str(err)
    # the right preset + overrides accept a bare state dict
    out = run_inference(bundle, tmp_path, bare, input_dir=str(frames / "a"), preset="small",
                        network_overrides={**h.TINY, "scale_factor": 0.5},
                        output_dir=str(tmp_path / "bare_out"))  # fmt: skip
    assert_same_image(out / "1_late.png", expected_late([str(frames / "a" / "1.png")], tiny_model())[0]["pred"])


def test_output_that_would_overwrite_an_input_is_refused(bundle, tmp_path, checkpoint, frames):
    folder = tmp_path / "in"
    shutil.copytree(frames / "a", folder)
    before = (folder / "1.png").read_bytes()
    err = bundle_error(FileExistsError, run_inference, bundle, tmp_path, checkpoint, input_dir=str(folder),
                       output_dir=str(folder), output_postfix="")  # fmt: skip
    assert f"would overwrite the input file {folder / '1.png'}" in str(err)
    assert (folder / "1.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (frames / "a").iterdir())


def _cli(root: Path, checkpoint: Path, *args: str, configs: tuple[str, ...] = ("inference.json",)) -> list[str]:
    files = [str(root / "configs" / c) for c in configs]
    return [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", files[0] if len(files) == 1 else repr(files),
        "--bundle_root", str(root), "--model_path", str(checkpoint), "--num_inference_steps", "1", *args,
    ]  # fmt: skip


def test_command_line_exit_status_one_line_per_bad_file_and_the_fix_that_works(bundle, tmp_path, checkpoint, frames):
    """``python -m monai.bundle run``: a bad file gives exit status 1 and one line naming it, its cause and the fix,
    no traceback (it ended in ~40 lines of ``RuntimeError: Failed to evaluate ConfigExpression``); the good frames are
    written; the fix as printed (the command-line form of the loader argument) then works."""
    root = bundle.new_bundle_root(tmp_path / "bundle")
    folder = _bad_folder(tmp_path / "in", frames)
    (folder / "small.png").unlink()
    (folder / "broken.png").unlink()
    out = tmp_path / "out"
    cmd = _cli(root, checkpoint, "--input_dir", str(folder), "--output_dir", str(out), "--sampler", "ddim",
               "--seed", "3")  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=bundle.cli_env(), timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Failed to evaluate" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[start:] == [
        "error: 1 of 3 input item(s) could not be used:",
        f"  {folder / 'grey.png'}: SLO image has 1 channel(s), expected 3 (Optos pseudo-colour RGB). Load the colour "
        "export, or pass slo_grey='repeat' to use a grey SLO as 3 equal channels (command line: --load_kwargs "
        "\"{'slo_grey':'repeat'}\").",
        "The other 2 item(s) were generated. Fix or remove the files above and run again for them.",
        "(add --debug True to the command for the full traceback)",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["good2_late.png", "good_late.png"]
    # the fix as printed (without the shell quotes), parsed as the command line parses it (python-fire), works
    fix = fire.parser.DefaultParseValue(re.search(r'--load_kwargs "(.*?)"', lines[start + 1]).group(1))
    assert fix == {"slo_grey": "repeat"}
    run_inference(bundle, tmp_path, checkpoint, input_dir=str(folder), output_dir=str(out), load_kwargs=fix)
    assert Image.open(out / "grey_late.png").size == (90, 70)


def test_evaluation_command_bad_input_is_one_line_and_exit_status_1(bundle, tmp_path, checkpoint):
    root = bundle.new_bundle_root(tmp_path / "bundle")
    data = tmp_path / "data"
    generate_phantoms(data, num=1, size=(70, 90), seed=0)
    (data / "1.2.png").write_bytes(b"not a PNG")  # the late phase
    cmd = _cli(root, checkpoint, "--dataset_dir", str(data), "--eval_dir", str(tmp_path / "report"),
               configs=("inference.json", "evaluate.json"))  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=bundle.cli_env(), timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    tail = result.stderr[result.stderr.index("error: ") :]
    assert f"{data / '1.2.png'}: cannot be read by PILReader" in tail and "re-export it" in tail


def _float_folder(root: Path, frames: Path) -> Path:
    """good.png, a [0, 1] float32 NIfTI SLO, the same with a NaN patch, a 0..255 float TIFF, then a BMP."""
    root.mkdir()
    shutil.copy(frames / "a" / "1.png", root / "a_good.png")
    rgb = np.asarray(Image.open(frames / "a" / "2.png")).astype(np.float32)
    unit = rgb / 255.0
    nib.save(nib.Nifti1Image(np.swapaxes(unit, 0, 1).copy(), np.eye(4)), root / "b_float.nii.gz")
    holed = unit.copy()
    holed[10:20, 10:20] = np.nan
    nib.save(nib.Nifti1Image(np.swapaxes(holed, 0, 1).copy(), np.eye(4)), root / "c_nan.nii.gz")
    tifffile.imwrite(root / "d_unscaled.tif", rgb)
    Image.fromarray(rgb.astype(np.uint8)).save(root / "e_last.bmp")
    return root


def test_float_nan_and_unscaled_inputs_are_named_and_the_others_generated(bundle, tmp_path, checkpoint, frames):
    """A float32 NIfTI in [0, 1] is generated for (it crashed the run: ``default_collate ... NoneType``); the NaN and
    the unscaled float files are named with the fix; the BMP after them is still generated; the float file gives
    the same output as the 8-bit PNG of the same picture."""
    folder = _float_folder(tmp_path / "in", frames)
    err = bundle_error(InferenceInputError, run_inference, bundle, tmp_path, checkpoint, input_dir=str(folder),
                       batch_size=4)  # fmt: skip
    message = str(err)
    assert "2 of 5 input item(s) could not be used" in message
    assert f"{folder / 'c_nan.nii.gz'}: 100 of 6300 pixels are not finite (NaN)" in message
    assert "--load_kwargs \"{'nonfinite':'black'}\"" in message
    assert f"{folder / 'd_unscaled.tif'}: floating point intensities in [" in message
    assert "--load_kwargs \"{'value_range':(0,255)}\"" in message
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a_good_late.png", "b_float_late.png", "e_last_late.png"]
    as_float = np.asarray(Image.open(out / "b_float_late.png")).astype(int)  # the BMP's picture / 255 as float
    assert np.abs(as_float - np.asarray(Image.open(out / "e_last_late.png"))).max() <= 1
    # repaired / scaled when asked: every file generated
    run_inference(bundle, tmp_path, checkpoint, input_dir=str(folder), output_dir=str(tmp_path / "all"),
                  load_kwargs={"nonfinite": "black", "value_range": "minmax"})  # fmt: skip
    assert len(list((tmp_path / "all").iterdir())) == 5


@pytest.mark.parametrize("inside", [False, True])
def test_earlier_outputs_in_the_output_folder_are_not_inputs(bundle, tmp_path, checkpoint, frames, inside):
    """``output_dir == input_dir`` (or a folder inside it) run twice: the second run leaves the first run's outputs
    out (it took them for SLOs, then refused every output as overwriting an "input file") and rewrites the same."""
    folder = tmp_path / "in"
    shutil.copytree(frames / "a", folder)
    out = folder / "out" if inside else folder
    run_inference(bundle, tmp_path, checkpoint, input_dir=str(folder), output_dir=str(out), num_samples=2)
    first = {p.name: p.read_bytes() for p in out.glob("*_late*.png")}
    assert sorted(first) == ["1_late.png", "1_late_std.png", "2_late.png", "2_late_std.png"]
    run_inference(bundle, tmp_path, checkpoint, input_dir=str(folder), output_dir=str(out), num_samples=2)
    assert {p.name: p.read_bytes() for p in out.glob("*_late*.png")} == first
    assert sorted(p.name for p in folder.rglob("*.png")) == sorted(
        [p.name for p in (frames / "a").glob("*.png")] + list(first)
    )


@pytest.mark.realdata
def test_real_frame_at_native_size_from_a_datalist(bundle, tmp_path, checkpoint, uwf_samples_dir):
    """A real 853 x 682 frame of ../shared/uwf-samples given by a CSV datalist (SLO + FA columns)."""
    datalist = tmp_path / "list.csv"
    val = uwf_samples_dir / "val"
    datalist.write_text(f"slo,early,late\n{val / '7.bmp'},{val / '7.1.bmp'},{val / '7.2.bmp'}\n")
    out = run_inference(bundle, tmp_path, checkpoint, datalist=str(datalist), num_inference_steps=1)
    assert [p.name for p in out.iterdir()] == ["7_late.png"]
    generated = Image.open(out / "7_late.png")
    assert generated.size == Image.open(val / "7.bmp").size == (853, 682)
    assert generated.mode == "L" and np.asarray(generated).std() > 0
