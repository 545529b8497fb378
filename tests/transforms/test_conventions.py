"""MONAI conventions on every transform the package exports: a declared ``backend`` (the dictionary twin's equal to
its array transform's) and the ``...D`` / ``...Dict`` aliases of every dictionary transform, exported too."""

from __future__ import annotations

import inspect

import pytest
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

import monai_lpuwf.transforms as T

TRANSFORMS = sorted(
    name for name in T.__all__ if inspect.isclass(getattr(T, name)) and issubclass(getattr(T, name), Transform)
)
DICTIONARY = sorted(name for name in TRANSFORMS if issubclass(getattr(T, name), MapTransform) and name.endswith("d"))


def test_every_exported_transform_is_listed():
    assert {"UnsharpMask", "FieldOfView", "CrossTemporalDifference", "RegisterElastix", "LoadUWFImage"} <= set(
        TRANSFORMS
    )
    assert {"UnsharpMaskd", "CheckTrainingScaled", "RegisterElastixd"} <= set(DICTIONARY)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_backend_is_declared(name):
    cls = getattr(T, name)
    declared = [c for c in cls.__mro__ if "backend" in vars(c)]
    assert declared and declared[0] not in (Transform, MapTransform), f"{name} does not declare `backend`"
    assert cls.backend and set(cls.backend) <= set(TransformBackends), cls.backend


@pytest.mark.parametrize("name", DICTIONARY)
def test_dictionary_aliases_and_backend(name):
    base = name[:-1]
    for alias in (base + "D", base + "Dict"):
        assert alias in T.__all__, f"{alias} not exported from monai_lpuwf.transforms"
        assert getattr(T, alias) is getattr(T, name)
    if base in TRANSFORMS:  # the array twin
        assert getattr(T, name).backend == getattr(T, base).backend
