"""Datalist hygiene: repeated triplets never weigh twice nor straddle training and validation, and entries that are
skipped are listed.

Before: duplicate rows of a plain datalist were split into training and validation (the same files on both
sides), 10,000 duplicates were accepted without a word, and folders named like images or looping links were skipped
silently. Oracle: the sets of real files on each side of the split.
"""

from __future__ import annotations

import csv
import json
import os
import warnings

import numpy as np
import pytest

from monai_lpuwf.bundle_support import bundle_datalists
from monai_lpuwf.data import (
    DataSourceError,
    datalist_from_file,
    datalist_from_folder,
    generate_phantoms,
    split_datalist,
    triplet_identity,
)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(root, num=6, size=(32, 32), seed=0)
    return root


def _rows(n: int) -> list[dict]:
    return [{"slo": f"{i}.png", "early": f"{i}.1.png", "late": f"{i}.2.png"} for i in range(1, n + 1)]


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["slo", "early", "late"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _real(items):
    return {triplet_identity(item) for item in items}


def test_duplicate_rows_are_dropped_with_a_warning_naming_them(phantoms):
    os.symlink(phantoms / "2.png", phantoms / "link_to_2.png")  # the same file under another name
    rows = _rows(3) + [_rows(1)[0], {"slo": "./3.png", "early": "3.1.png", "late": "3.2.png"}]
    rows.append({"slo": "link_to_2.png", "early": "2.1.png", "late": "2.2.png"})
    path = _write_csv(phantoms / "list.csv", rows)
    with pytest.warns(UserWarning) as record:
        items = datalist_from_file(path)
    message = str(record[0].message)
    assert message.startswith(f"{path}: 3 duplicate item(s) (the same slo/early/late files as an earlier item")
    assert "row 4 = row 1, row 5 = row 3, row 6 = row 2; 3 distinct triplet(s) left" in message
    assert [os.path.basename(i["slo"]) for i in items] == ["1.png", "2.png", "3.png"]
    with pytest.raises(DataSourceError, match="3 duplicate item"):
        datalist_from_file(path, on_duplicate="raise")
    assert len(datalist_from_file(path, on_duplicate="keep")) == 6


def test_ten_thousand_duplicates_are_not_accepted_silently(phantoms):
    path = phantoms / "many.json"
    path.write_text(json.dumps(_rows(1) * 10_000 + _rows(2)[1:]))
    with pytest.warns(UserWarning, match=r"9999 duplicate item\(s\) .* row 2 = row 1, .* 2 distinct triplet\(s\) left"):
        items = datalist_from_file(path)
    assert len(items) == 2


def test_a_plain_datalist_with_duplicates_is_never_split_across_training_and_validation(phantoms, tmp_path):
    path = _write_csv(tmp_path / "list.csv", [{k: str(phantoms / v) for k, v in r.items()} for r in _rows(6) * 5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lists = bundle_datalists(datalist=str(path), val_fraction=0.25, seed=0)
    assert len(lists["training"]) + len(lists["validation"]) == 6
    assert not _real(lists["training"]) & _real(lists["validation"])
    kept = datalist_from_file(path, on_duplicate="keep")  # oversampling on purpose: every copy on one side
    for seed in range(20):
        train, val = split_datalist(kept, val_fraction=0.3, seed=seed)
        assert not _real(train) & _real(val), seed
        assert len(_real(val)) == 2 and len(train) + len(val) == 30


def test_a_split_without_duplicates_is_unchanged():
    """The split of a list without repeats is the one of the seeded permutation (as before the grouping)."""
    items = [{"slo": f"/d/{i}.png", "early": f"/d/{i}.1.png", "late": f"/d/{i}.2.png"} for i in range(10)]
    train, val = split_datalist(items, val_fraction=0.3, seed=3)
    expected = set(np.random.default_rng(3).permutation(10)[:3].tolist())
    assert [items.index(v) for v in val] == sorted(expected) and len(train) == 7


def test_sections_that_share_a_triplet_are_refused(phantoms, tmp_path):
    rows = [{k: str(phantoms / v) for k, v in r.items()} for r in _rows(3)]
    path = tmp_path / "sections.json"
    path.write_text(json.dumps({"training": rows[:2], "validation": rows[1:]}))
    with pytest.raises(DataSourceError) as info:
        bundle_datalists(datalist=str(path))
    assert str(info.value).startswith(f"1 triplet(s) of datalist '{path}' are in both training and validation (e.g.")


def test_skipped_entries_are_listed(phantoms, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("1.png", "1.1.png", "1.2.png"):
        (root / name).symlink_to(phantoms / name)
    (root / "5.png").mkdir()  # a folder named like an image
    (root / "6.png").symlink_to(root / "6.png")  # a link to itself: a loop
    (root / "7.1.png").symlink_to(tmp_path / "nowhere.png")  # a broken link
    (root / "notes.txt").write_text("not an image: not listed")
    with pytest.warns(UserWarning) as record:
        items = datalist_from_folder(root)
    message = str(record[0].message)
    assert message == (
        f"{root}: skipped 3 entries named like images that are not readable files: 5.png (a folder), "
        "6.png (a symbolic link that loops or points nowhere), 7.1.png (a symbolic link that loops or points nowhere)."
    )
    assert [os.path.basename(i["slo"]) for i in items] == ["1.png"]
