"""Triplet discovery from folders and files, reproducible splits, decathlon-style JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from monai_lpuwf.data import (
    IncompleteTripletError,
    datalist_from_file,
    datalist_from_folder,
    split_datalist,
    write_datalist,
)


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_folder_discovery_in_the_authors_naming(tmp_path):
    _touch(tmp_path / "train", "2.bmp", "2.1.bmp", "2.2.bmp", "10.bmp", "10.1.bmp", "10.2.bmp", "notes.txt")
    _touch(tmp_path / "val", "2.png", "2.1.png", "2.2.png", ".hidden.png")
    items = datalist_from_folder(tmp_path)
    names = [{k: str(Path(v).relative_to(tmp_path)) for k, v in item.items()} for item in items]
    assert names == [  # per folder, natural order (2 before 10), train/2 and val/2 distinct triplets
        {"slo": "train/2.bmp", "early": "train/2.1.bmp", "late": "train/2.2.bmp"},
        {"slo": "train/10.bmp", "early": "train/10.1.bmp", "late": "train/10.2.bmp"},
        {"slo": "val/2.png", "early": "val/2.1.png", "late": "val/2.2.png"},
    ]
    assert all(Path(v).is_absolute() for item in items for v in item.values())
    assert datalist_from_folder(tmp_path / "train", recursive=False) == items[:2]


def test_incomplete_triplets_are_reported_with_every_offending_name(tmp_path):
    _touch(
        tmp_path, "1.bmp", "1.1.bmp", "1.2.bmp", "3.bmp", "3.1.bmp", "5.1.bmp", "5.2.bmp", "6.bmp", "6.png", "6.1.bmp"
    )
    with pytest.raises(IncompleteTripletError) as err:
        datalist_from_folder(tmp_path)
    msg = str(err.value)
    assert "3 incomplete" in msg
    assert "3: missing late (3.2.ext)" in msg
    assert "5: missing slo (5.ext)" in msg
    assert "6: several files for one phase (slo: 6.bmp, 6.png)" in msg
    assert "require_late=False" in msg  # the fix
    with pytest.warns(UserWarning, match="3: missing late"):
        items = datalist_from_folder(tmp_path, on_incomplete="warn")
    assert [Path(i["slo"]).name for i in items] == ["1.bmp"]
    inference = datalist_from_folder(tmp_path, require_late=False, on_incomplete="skip")
    assert [sorted(i) for i in inference] == [["early", "late", "slo"], ["early", "slo"]]  # late only where present


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        datalist_from_folder(tmp_path / "nope")
    _touch(tmp_path, "readme.txt")
    with pytest.raises(FileNotFoundError, match=r"N\.1\.ext"):
        datalist_from_folder(tmp_path)


def test_csv_and_json_lists(tmp_path):
    _touch(tmp_path / "img", "a.png", "b.png", "c.png", "d.png")
    (tmp_path / "list.csv").write_text(
        "slo,early,late,eye\nimg/a.png,img/b.png,img/c.png,OD\nimg/d.png,img/b.png,,OS\n"
    )
    with pytest.raises(IncompleteTripletError, match=r"row 2 \(.*d\.png\): missing late"):
        datalist_from_file(tmp_path / "list.csv")
    items = datalist_from_file(tmp_path / "list.csv", require_late=False)
    assert items[0] == {
        "slo": str(tmp_path / "img/a.png"),
        "early": str(tmp_path / "img/b.png"),
        "late": str(tmp_path / "img/c.png"),
        "eye": "OD",
    }
    assert "late" not in items[1]
    (tmp_path / "list.json").write_text(json.dumps([{"slo": "img/a.png", "early": "img/b.png", "late": "img/zz.png"}]))
    with pytest.raises(FileNotFoundError, match=r"row 1 late: .*zz\.png"):
        datalist_from_file(tmp_path / "list.json")
    (tmp_path / "bad.csv").write_text("image,label\nx,y\n")
    with pytest.raises(ValueError, match="header row with columns slo, early, late"):
        datalist_from_file(tmp_path / "bad.csv")
    write_datalist(tmp_path / "d.json", items[:1])
    with pytest.raises(KeyError, match="no section 'test'"):
        datalist_from_file(tmp_path / "d.json", section="test", require_late=False)


def test_write_datalist_relative_paths_round_trip(tmp_path):
    _touch(tmp_path / "data", "1.png", "1.1.png", "1.2.png", "2.png", "2.1.png", "2.2.png")
    items = datalist_from_folder(tmp_path / "data")
    with_arrays = [dict(items[0], lesion=np.zeros(3))]  # arrays are dropped, not serialised
    path = write_datalist(tmp_path / "lists" / "d.json", with_arrays, items[1:], relative_to=tmp_path / "lists")
    content = json.loads(path.read_text())
    assert content["training"][0]["slo"] == "../data/1.png" and "lesion" not in content["training"][0]
    assert datalist_from_file(path) == items[:1]
    assert datalist_from_file(path, section="validation") == items[1:]
    monai_view = load_decathlon_datalist(path, is_segmentation=False, data_list_key="validation")
    assert Path(monai_view[0]["slo"]).resolve() == Path(items[1]["slo"])


def test_split_is_reproducible_and_partitions(tmp_path):
    items = [{"slo": f"{i}.png"} for i in range(20)]
    train, val = split_datalist(items, 0.25, seed=7)
    assert (train, val) == split_datalist(items, 0.25, seed=7)
    assert len(val) == 5 and len(train) == 15
    assert sorted(x["slo"] for x in train + val) == sorted(x["slo"] for x in items)
    assert [x["slo"] for x in train] == [x["slo"] for x in items if x not in val]  # original order kept
    assert split_datalist(items, 0.25, seed=8)[1] != val
    # fixed on every machine: a numpy default_rng permutation, not Python's hash order or the global RNG
    assert [x["slo"] for x in val] == [f"{i}.png" for i in sorted(np.random.default_rng(7).permutation(20)[:5])]
    assert [len(part) for part in split_datalist(items[:2], 0.1)] == [1, 1]  # a positive fraction gives >= 1 item
    assert split_datalist(items, 0.0) == (items, [])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_datalist(items, 1.0)


@pytest.mark.realdata
def test_real_sample_folder(uwf_samples_dir):
    items = datalist_from_folder(uwf_samples_dir)
    assert [str(Path(i["slo"]).relative_to(uwf_samples_dir)) for i in items] == [
        "train/1.bmp",
        "train/2.bmp",
        "train/3.bmp",
        "train/4.bmp",
        "val/7.bmp",
        "val/8.bmp",
        "val/10.bmp",
    ]
    assert all(Path(i["late"]).name == Path(i["slo"]).stem + ".2.bmp" for i in items)


@pytest.mark.parametrize(
    "content, expected",
    [
        (["a.png", {"slo": "a.png"}], "1 item(s) of the list are not objects of file paths: item 1 is a str"),
        ({"training": [{"slo": "a.png"}, 3, None]}, "2 item(s) of section 'training' are not objects of file paths"),
        ({"training": {"slo": "a.png"}}, "section 'training' is a JSON dict, not a list of items"),
        ("a.png", "holds a JSON str, not a list of items"),
    ],
)
def test_datalist_items_that_are_not_dicts_are_named(tmp_path, content, expected):
    from monai_lpuwf.data import DataSourceError

    path = tmp_path / "list.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataSourceError) as info:
        datalist_from_file(path, require_early=False, require_late=False)
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value), str(info.value)


def test_a_datalist_that_is_not_json_names_the_line(tmp_path):
    from monai_lpuwf.data import DataSourceError

    path = tmp_path / "list.json"
    path.write_text('[\n  {"slo": "a.png",}\n]')
    with pytest.raises(DataSourceError, match=r"list\.json: not valid JSON \(.* at line 2, column"):
        datalist_from_file(path)
