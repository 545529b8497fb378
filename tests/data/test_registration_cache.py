"""Registration cache: a second run reads the registered images instead of calling elastix, with equal results;
any change of images or settings registers anew; ``register_datalist`` fills the cache in worker processes.

Phantom triplets at 96 x 112 with test-sized elastix settings (one thread); the first elastix call of a process
also pays ITK's module loading (tens of seconds on 2 cores).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from monai_lpuwf.data import generate_phantoms, save_uwf_image
from monai_lpuwf.data.registration_cache import RegistrationCache, register_datalist
from monai_lpuwf.transforms import LoadUWFImage, RegisterElastix, uwf_train_transforms

FAST = {"resolutions": 3, "iterations": 150, "spatial_samples": 2048, "threads": 1}


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    recs = generate_phantoms(tmp_path_factory.mktemp("phantoms"), num=3, size=(96, 112), misregistration=2.0)
    return [{k: r[k] for k in ("slo", "early", "late")} for r in recs]


@pytest.fixture
def elastix_calls(monkeypatch):
    """Counts the calls of :class:`RegisterElastix` (i.e. of elastix) in this process."""
    calls = []
    original = RegisterElastix.__call__

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RegisterElastix, "__call__", counted)
    return calls


def _pipeline(cache_dir=None, **kwargs):
    register_kwargs = {**FAST, **kwargs, **({"cache_dir": cache_dir} if cache_dir is not None else {})}
    return uwf_train_transforms(
        64, register=True, register_method="elastix", augment=False, register_kwargs=register_kwargs
    )


def _assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    ra, rb = (dict(x["late"].meta["registration"]) for x in (a, b))
    assert ra.pop("time_s") >= 0 and rb.pop("time_s") >= 0  # how long elastix took: differs from run to run
    assert ra == rb


def test_second_run_reads_the_cache_with_equal_results(items, tmp_path, elastix_calls):
    cache_dir = tmp_path / "registration"
    first = [_pipeline(cache_dir)(item) for item in items]
    assert len(elastix_calls) == 3 and len(RegistrationCache(cache_dir)) == 3
    assert all(r["late"].meta["registration"]["status"] == "registered" for r in first)

    rerun = _pipeline(cache_dir)  # a new training run: new transform objects, same folder
    second = [rerun(item) for item in items]
    assert len(elastix_calls) == 3, "the second run called elastix"
    cache = rerun.transforms[1].cache
    assert (cache.hits, cache.misses) == (3, 0)
    for a, b in zip(first, second):
        _assert_equal(a, b)
    uncached = _pipeline()(items[0])  # and the cache changes nothing
    _assert_equal(first[0], uncached)


def test_changed_images_or_settings_register_again(items, tmp_path, elastix_calls):
    cache_dir = tmp_path / "registration"
    _pipeline(cache_dir)(items[0])
    _pipeline(cache_dir, threads=2)(items[0])  # thread count does not change the result: a hit
    assert len(elastix_calls) == 1
    _pipeline(cache_dir, iterations=149)(items[0])
    assert len(elastix_calls) == 2
    late = LoadUWFImage("fa")(items[0]["late"]).numpy()
    late[0, 10, 10] = -late[0, 10, 10]  # one pixel
    altered = {**items[0], "late": str(save_uwf_image(late, tmp_path / "altered.2.png"))}
    _pipeline(cache_dir)(altered)
    assert len(elastix_calls) == 3 and len(RegistrationCache(cache_dir)) == 3


def test_register_datalist_fills_the_cache_in_worker_processes(items, tmp_path, elastix_calls):
    reference = [_pipeline()(item) for item in items]  # in this process (also loads ITK before the workers fork)
    cache_dir = tmp_path / "registration"
    pipeline = _pipeline(cache_dir)
    assert register_datalist(items, pipeline, num_workers=2, progress=False) == items
    assert len(RegistrationCache(cache_dir)) == 3
    calls = len(elastix_calls)
    for item, ref in zip(items, reference):
        _assert_equal(pipeline(item), ref)
    assert len(elastix_calls) == calls, "the pipeline registered again after register_datalist"
    # nothing to do without registration or without a cache folder
    assert register_datalist(items, uwf_train_transforms(64, augment=False), num_workers=2) == items
    assert register_datalist(items, _pipeline(), num_workers=2) == items
    assert len(elastix_calls) == calls


def test_register_datalist_names_the_failing_item(items, tmp_path):
    broken = [dict(items[0]), {**items[1], "late": str(tmp_path / "missing.2.png")}]
    with pytest.raises(RuntimeError, match=r"item 1 .*missing\.2\.png"):
        register_datalist(broken, _pipeline(tmp_path / "registration"), num_workers=0, progress=False)


@pytest.mark.filterwarnings("ignore:RegisterElastix")  # the default phantoms are aligned: identity fallbacks
def test_bundle_training_with_register_reads_the_cache_on_the_second_run(tmp_path, elastix_calls):
    """``--register True`` in the bundle: the first run registers (into ``<bundle_root>/work/registration``), the
    next run's datasets come out equal without calling elastix (random augmentation aside)."""
    from monai.bundle import ConfigParser

    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "bundle" / "configs", tmp_path / "configs")
    overrides = {"bundle_root": str(tmp_path), "register": True, "register_workers": 0, "num_phantoms": 4}
    overrides["register_method"] = "elastix"  # counted by the fixture; the phantoms need no vessel registration
    overrides.update({"phantom_size": [64, 64], "image_size": [64, 64], "val_fraction": 0.25})

    def datasets() -> list:
        parser = ConfigParser()
        parser.read_config([str(tmp_path / "configs" / name) for name in ("common.json", "train_autoencoder.json")])
        parser.update(overrides)
        return [parser.get_parsed_content(f"{part}#dataset")[:] for part in ("train", "validate")]

    first = datasets()
    assert len(elastix_calls) == 4 and len(RegistrationCache(tmp_path / "work" / "registration")) == 4
    second = datasets()
    assert len(elastix_calls) == 4, "the second run called elastix"
    assert len(first[0]) == 3 and len(first[1]) == 1
    for a, b in zip(first[1], second[1]):  # validation: no augmentation, the items themselves are comparable
        assert "registration" in a["late"].meta
        _assert_equal(a, b)
