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
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
