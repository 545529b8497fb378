"""Outputs stay inside ``--output_dir``, also through symbolic links.

Before: a symlinked ``--input_dir`` wrote the images into the link's target (rc 0, the output folder empty); a link
inside the input folder wrote its output next to the link's target; evaluation with a symlinked ``--dataset_dir``
wrote outside ``generated/`` (``datalist_from_folder`` resolved links, the output layout's root did not).
Oracle: the files on disk after the run, listed folder by folder.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from monai_lpuwf.data import generate_phantoms
from monai_lpuwf.generation import InferenceInputError, InferenceInputs

pytestmark = [
    pytest.mark.filterwarnings("ignore:parsing config_file"),
    pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this platform"),
]


def _load_helpers():
    spec = importlib.util.spec_from_file_location("_helpers", Path(__file__).with_name("test_inference_helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h = _load_helpers()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with h.one_thread():
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return h.write_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def test_symlinked_input_dir_and_a_link_inside_it_write_into_the_output_folder(bundle, tmp_path, checkpoint):
    data, elsewhere, out = tmp_path / "data", tmp_path / "elsewhere", tmp_path / "out"
    generate_phantoms(data / "sub", num=1, size=(64, 64), seed=0)
    generate_phantoms(elsewhere, num=1, size=(64, 64), seed=1)
    (data / "sub" / "7.png").symlink_to(elsewhere / "1.png")  # a link inside the input folder, pointing out of it
    link = tmp_path / "link_to_data"
    link.symlink_to(data, target_is_directory=True)
    before = {"data": files(data), "elsewhere": files(elsewhere)}
    h.run_bundle(bundle, tmp_path, ("inference.json",), checkpoint, input_dir=str(link), output_dir=str(out))
    assert files(out) == {"sub/1_late.png", "sub/7_late.png"}  # mirrored under the link's own names
    assert {"data": files(data), "elsewhere": files(elsewhere)} == before  # nothing written beside the inputs


def test_evaluation_of_a_symlinked_dataset_dir_writes_into_generated(bundle, tmp_path, checkpoint):
    data = tmp_path / "data"
    generate_phantoms(data, num=2, size=(64, 64), seed=0)
    link = tmp_path / "link_to_data"
    link.symlink_to(data, target_is_directory=True)
    before = files(data)
    report = tmp_path / "report"
    h.run_bundle(bundle, tmp_path, ("inference.json", "evaluate.json"), checkpoint, dataset_dir=str(link),
                 eval_dir=str(report), fid=False, seed_check_images=0, max_examples=1)  # fmt: skip
    assert {p for p in files(report) if p.startswith("generated/")} == {"generated/1_late.png", "generated/2_late.png"}
    assert files(data) == before


def test_an_output_that_would_leave_the_output_folder_is_refused(tmp_path):
    """An item outside the folder its outputs mirror (``data_root_dir``), or an output sub-folder that is a link
    to another place: refused before generating, naming the output, the folder and the fix."""
    generate_phantoms(tmp_path / "in", num=1, size=(64, 64), seed=0)
    generate_phantoms(tmp_path / "other", num=1, size=(64, 64), seed=1)
    items = [{"slo": str(tmp_path / "in" / "1.png")}, {"slo": str(tmp_path / "other" / "1.png")}]
    inputs = InferenceInputs(items, data_root_dir=tmp_path / "in")
    with pytest.raises(InferenceInputError) as info:
        inputs.check_outputs(tmp_path / "out", ["late"], ".png")
    assert str(info.value).startswith("output file ") and f"outside the output folder {tmp_path / 'out'}" in str(
        info.value
    )
    (tmp_path / "out2").mkdir()
    nested = InferenceInputs([{"slo": str(tmp_path / "in" / "1.png")}], data_root_dir=tmp_path)
    layout = nested.output_paths(tmp_path / "out2", "late", ".png")
    assert layout == [tmp_path / "out2" / "in" / "1_late.png"]  # inside: accepted
    (tmp_path / "out2" / "in").symlink_to(tmp_path / "other", target_is_directory=True)
    with pytest.raises(InferenceInputError, match="outside the output folder"):
        nested.check_outputs(tmp_path / "out2", ["late"], ".png")
