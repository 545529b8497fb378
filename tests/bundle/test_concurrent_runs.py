"""Two runs into one output folder: the second is refused before generating, and no image is ever half-written.

Before: both runs reported success while one run's images silently replaced the other's, and MONAI's writer wrote
the final file directly (a reader, or a run killed mid-write, saw half an image). The holder of the folder is a
real second process (``subprocess``), and the failing write a real writer interrupted halfway.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_lpuwf.data import generate_phantoms
from monai_lpuwf.generation import OutputFolderInUseError, OutputFolderLock
from monai_lpuwf.generation.lock import LOCK_NAME
from monai_lpuwf.transforms import save_generated

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")

HOLD = (
    "import sys; from monai_lpuwf.generation.lock import OutputFolderLock; "
    "lock = OutputFolderLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()"
)


def _load_helpers():
    spec = importlib.util.spec_from_file_location("_helpers", Path(__file__).with_name("test_inference_helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


h = _load_helpers()


def hold(folder: Path) -> subprocess.Popen:
    """Another process holding the folder's lock until its stdin closes."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])
    )
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_run_into_a_held_output_folder_is_refused_and_writes_nothing(bundle, tmp_path):
    generate_phantoms(tmp_path / "in", num=2, size=(64, 64), seed=0)
    out = tmp_path / "out"
    with h.one_thread():
        checkpoint = h.write_checkpoint(tmp_path / "model.pt")
        child = hold(out)
        try:
            error = h.bundle_error(OutputFolderInUseError, h.run_bundle, bundle, tmp_path, ("inference.json",),
                                   checkpoint, input_dir=str(tmp_path / "in"), output_dir=str(out))  # fmt: skip
            message = str(error)
            assert message.startswith(f"the output folder {out} (--output_dir) is in use by another run (process ")
            assert f"process {child.pid} on host " in message and "The first run keeps the folder" in message
            assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing generated
        finally:
            child.stdin.close()
            child.wait(timeout=60)
        h.run_bundle(bundle, tmp_path, ("inference.json",), checkpoint, input_dir=str(tmp_path / "in"),
                     output_dir=str(out))  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["1_late.png", "2_late.png"]  # and the lock file is gone


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    child = hold(tmp_path)
    with pytest.raises(OutputFolderInUseError, match=f"process {child.pid} "):
        OutputFolderLock(tmp_path).acquire()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    lock = OutputFolderLock(tmp_path).acquire()  # the operating system released the dead run's lock
    assert lock.held
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_run_of_this_process_that_did_not_release_does_not_block_the_next(tmp_path):
    first = OutputFolderLock(tmp_path).acquire()  # e.g. a run that raised before its release
    second = OutputFolderLock(tmp_path).acquire()
    assert second.held and not first.held
    second.release()


def test_an_image_whose_write_fails_halfway_leaves_no_file(tmp_path, monkeypatch):
    """The PNG encoder writes half the file, then fails (a full disk, a killed run): the output name must not
    exist, and no temporary file may remain."""
    real_save = Image.Image.save

    def half_save(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        data = Path(fp).read_bytes()
        Path(fp).write_bytes(data[: len(data) // 2])
        raise OSError("No space left on device")

    img = MetaTensor(torch.linspace(-1, 1, 64 * 72).reshape(1, 64, 72), meta={"filename_or_obj": "/in/1.png"})
    save = save_generated("pred", tmp_path, data_root_dir="/in")
    monkeypatch.setattr(Image.Image, "save", half_save)
    with pytest.raises(RuntimeError):
        save({"pred": img})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    save({"pred": img})
    written = np.asarray(Image.open(tmp_path / "1_late.png"))
    assert written.shape == (64, 72) and written[0, 0] == 0 and written[-1, -1] == 255
    assert [p.name for p in tmp_path.iterdir()] == ["1_late.png"]
