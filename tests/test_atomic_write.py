import os
import stat

import pytest

from monai_lpuwf.atomic_write import atomic_path, default_file_mode


def test_replaces_with_default_permissions(tmp_path):
    target = tmp_path / "sub" / "out.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.endswith(".nii.gz") and os.path.dirname(tmp) == str(target.parent)
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == default_file_mode()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.nii.gz"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.fixture
def umask_027():
    """Run with umask 027 (files 0o640); the previous umask is restored afterwards."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def _forbid_umask_calls(monkeypatch):
    """``os.umask`` changes the process-wide umask: setting it, even briefly, races with other threads creating files
    (the MONAI Label server's request threads)."""

    def umask(mask):
        raise AssertionError(f"os.umask({mask:#o}) called: the umask must be read without being changed")

    monkeypatch.setattr(os, "umask", umask)


def test_default_file_mode_reads_the_umask_without_setting_it(umask_027, monkeypatch):
    _forbid_umask_calls(monkeypatch)
    assert default_file_mode() == 0o640


def test_default_file_mode_without_proc(umask_027, monkeypatch):
    """Without /proc/self/status (macOS, a container without /proc): a probe file's mode gives the umask."""
    from monai_lpuwf import atomic_write

    monkeypatch.setattr(atomic_write, "_PROC_STATUS", "/nonexistent/status")
    _forbid_umask_calls(monkeypatch)
    assert default_file_mode() == 0o640
    assert atomic_write.current_umask() == 0o027


def test_files_created_while_threads_ask_for_the_mode_keep_the_umask(umask_027, tmp_path):
    """Files created while other threads ask for the default mode all get the umask's permissions (setting the umask
    to 0 to read it let some of them be created 0o666)."""
    import threading

    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            default_file_mode()

    threads = [threading.Thread(target=ask) for _ in range(1)]
    for t in threads:
        t.start()
    try:
        modes = []
        for i in range(300):
            path = tmp_path / f"f{i}"
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o666))
            modes.append(stat.S_IMODE(path.stat().st_mode))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(modes) == {0o640}, f"{sum(m != 0o640 for m in modes)} of {len(modes)} files got other permissions"
