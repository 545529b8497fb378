"""Pieces of a generation run used by the inference and evaluation configs: :mod:`monai_lpuwf.generation.inputs`,
:class:`~monai_lpuwf.data.SizeGroupedBatchSampler`, :mod:`monai_lpuwf.transforms.output`."""

from __future__ import annotations

import sys

import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_lpuwf import errors
from monai_lpuwf.data import SizeGroupedBatchSampler, UWFImageError, generate_phantoms, save_uwf_image
from monai_lpuwf.generation import InferenceInputError, InferenceInputs, brief_input_errors, input_error
from monai_lpuwf.transforms import LoadUWFImage, QuantizeIntensity, save_generated


def test_quantize_matches_the_data_layer_writer(tmp_path):
    """Rounded like save_uwf_image (8 and 16 bit): quantized values are exactly what a written file holds."""
    x = torch.linspace(-1.2, 1.2, 70 * 90).reshape(1, 70, 90)
    for bits in (8, 16):
        path = save_uwf_image(x, tmp_path / f"x{bits}.tif", bit_depth=bits)
        read = LoadUWFImage("fa")(path).as_tensor()
        assert torch.allclose(QuantizeIntensity(2**bits - 1)(x), read, atol=1e-6)
    assert torch.equal(QuantizeIntensity(None)(x), x.clamp(-1, 1))


def _marked_image() -> MetaTensor:
    """(1, 70, 90) gradient with a bright top-left corner: any flip or transpose changes it."""
    img = torch.linspace(-1, 0.5, 90).repeat(70, 1)[None]
    img[:, :10, :20] = 1.0
    return MetaTensor(img, affine=torch.eye(3, dtype=torch.float64), meta={"filename_or_obj": "/data/eye/1.bmp"})


FORMATS = [(".png", "uint8"), (".png", "uint16"), (".tif", "uint8"), (".nii.gz", "float32")]


@pytest.mark.parametrize("ext, dtype", FORMATS)
def test_save_generated_keeps_orientation_and_size(tmp_path, ext, dtype):
    img = _marked_image()
    data = save_generated("pred", tmp_path, "late", ext, dtype, data_root_dir="/data")({"pred": img})
    assert torch.equal(data["pred"], img) and set(data) == {"pred"}  # the prediction itself is left unchanged
    path = tmp_path / "eye" / f"1_late{ext}"  # the sub-folder under data_root_dir is kept
    loaded = LoadUWFImage("fa")(path).as_tensor()
    levels = {"uint8": 255, "uint16": 65535, "float32": None}[dtype]
    assert loaded.shape == img.shape
    assert torch.allclose(loaded, QuantizeIntensity(levels)(img.as_tensor()), atol=1e-5)
    if ext == ".png":
        assert Image.open(path).size == (90, 70)


def test_size_grouped_batches_never_mix_groups():
    sampler = SizeGroupedBatchSampler(["a", "b", "a", "a", "b"], batch_size=2)
    assert list(sampler) == [[0, 2], [3], [1, 4]] and len(sampler) == 3
    with pytest.raises(ValueError, match="batch_size"):
        SizeGroupedBatchSampler(["a"], 0)


def test_inputs_groups_failures_and_output_collisions(tmp_path):
    generate_phantoms(tmp_path / "in", num=1, size=(70, 90), seed=0)
    generate_phantoms(tmp_path / "other", num=1, size=(80, 96), seed=1)
    first, second = str(tmp_path / "in" / "1.png"), str(tmp_path / "other" / "1.png")
    inputs = InferenceInputs([{"slo": first}, {"slo": second, "late": str(tmp_path / "other" / "1.2.png")}],
                             optional_keys=("late",))  # fmt: skip
    assert inputs.groups == [(70, 90, ("slo",)), (80, 96, ("slo", "late"))]
    assert inputs.data_root_dir == str(tmp_path)
    outputs = inputs.check_outputs(tmp_path / "out", ["late", "late_std"], ".png")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in outputs] == [
        "in/1_late.png", "other/1_late.png", "in/1_late_std.png", "other/1_late_std.png",
    ]  # fmt: skip
    # the same name in one folder (1.png and 1.bmp) would give one output file for two inputs
    Image.open(first).save(tmp_path / "in" / "1.bmp")
    twins = InferenceInputs([{"slo": first}, {"slo": str(tmp_path / "in" / "1.bmp")}])
    with pytest.raises(FileExistsError, match="several inputs would be written to the same output"):
        twins.check_outputs(tmp_path / "out", "late", ".png")
    # an item whose late phase has another size than its SLO
    with pytest.raises(InferenceInputError, match="frames of one item differ in size"):
        InferenceInputs([{"slo": first, "late": str(tmp_path / "other" / "1.2.png")}], optional_keys=("late",))
    with pytest.raises(InferenceInputError, match="no late image given"):
        InferenceInputs([{"slo": first}], keys=("slo", "late"))


def test_earlier_outputs_in_the_output_folder_are_left_out(tmp_path):
    generate_phantoms(tmp_path / "in", num=1, size=(70, 90), seed=0)
    first = str(tmp_path / "in" / "1.png")
    out = tmp_path / "in" / "out"
    out.mkdir()
    for name in ("1_late.png", "1_late_std.png"):
        Image.open(first).save(out / name)
    Image.open(first).save(tmp_path / "in" / "eye_late.png")  # named like an output, but not in the output folder
    items = [{"slo": first}, {"slo": str(out / "1_late.png")}, {"slo": str(out / "1_late_std.png")},
             {"slo": str(tmp_path / "in" / "eye_late.png")}]  # fmt: skip
    naming = {"output_postfixes": ["late", "late_std"], "output_ext": ".png"}
    inputs = InferenceInputs(items, output_dir=out, **naming)
    assert [i["slo"] for i in inputs.items] == [first, str(tmp_path / "in" / "eye_late.png")]
    assert inputs.earlier_outputs == [str(out / "1_late.png"), str(out / "1_late_std.png")]
    assert len(InferenceInputs(items, output_dir=out, output_postfixes="", output_ext=".png").items) == 4
    with pytest.raises(InferenceInputError, match="holds only earlier outputs"):
        InferenceInputs(items[1:3], output_dir=out, **naming)


def test_bad_load_kwargs_are_an_input_error_naming_the_option(tmp_path):
    generate_phantoms(tmp_path, num=1, size=(70, 90), seed=0)
    items = [{"slo": str(tmp_path / "1.png")}]
    with pytest.raises(InferenceInputError, match=r"load_kwargs \{'slo_grey': 'yes'\} \(--load_kwargs\): .*yes"):
        InferenceInputs(items, load_kwargs={"slo_grey": "yes"})
    with pytest.raises(InferenceInputError, match=r"--load_kwargs.*unexpected keyword.*value_range, fa_colour"):
        InferenceInputs(items, load_kwargs={"grey": "repeat"})
    assert len(InferenceInputs(items, load_kwargs={"spatial_mismatch": "resize"}).items) == 1  # LoadUWFImaged's


def test_input_errors_end_the_command_in_one_message_without_traceback(monkeypatch, capsys):
    """The command-line hook: an input error anywhere in the chain (MONAI wraps it in ``RuntimeError``) prints
    ``error: <message>``; any other error goes to the previous hook (traceback); ``debug`` restores that hook."""
    calls = []
    previous = lambda *args: calls.append(args)  # noqa: E731
    # both restored after the test (an earlier in-process bundle run may have installed the hook)
    monkeypatch.setattr(sys, "excepthook", previous)
    monkeypatch.setattr(errors._brief_excepthook, "previous", sys.__excepthook__, raising=False)
    brief_input_errors(False)
    brief_input_errors("false")  # installed once
    assert sys.excepthook is not previous
    try:
        try:
            raise UWFImageError("/data/1.png: cannot be read (truncated); re-export it.")
        except UWFImageError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression") from err
    except RuntimeError as wrapped:
        sys.excepthook(type(wrapped), wrapped, wrapped.__traceback__)
    assert capsys.readouterr().err == (
        "error: /data/1.png: cannot be read (truncated); re-export it.\n"
        "(add --debug True to the command for the full traceback)\n"
    )
    assert not calls
    bug = KeyError("network")
    sys.excepthook(KeyError, bug, None)
    assert calls == [(KeyError, bug, None)] and capsys.readouterr().err == ""
    assert input_error(RuntimeError("x")) is None and isinstance(input_error(FileExistsError("y")), FileExistsError)
    brief_input_errors("True")  # --debug True
    assert sys.excepthook is previous


def test_data_source_errors_are_input_errors(tmp_path):
    """Two sources at once, or a source without a usable item, end the command in one line like a bad file."""
    from monai_lpuwf.bundle_support import inference_datalist
    from monai_lpuwf.data import DataSourceError

    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataSourceError, match="either --input_dir") as info:
        inference_datalist(input_dir=str(tmp_path), datalist=str(tmp_path / "list.json"))
    assert input_error(RuntimeError("Failed to evaluate")) is None
    wrapped = RuntimeError("Failed to evaluate ConfigExpression")
    wrapped.__cause__ = info.value
    assert input_error(wrapped) is info.value
