"""Every import inside ``monai_lpuwf`` points down the layers drawn in the package docstring.

The table is read from :mod:`monai_lpuwf`'s docstring (so the drawing and the check cannot drift apart); every
``import`` / ``from ... import`` of every module is checked, function-local and ``TYPE_CHECKING`` ones included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import monai_lpuwf

PACKAGE = "monai_lpuwf"
ROOT = Path(monai_lpuwf.__file__).parent
_ROW = re.compile(r"^ {4}(\d)  (\w+(?:, \w+)*) {2,}\S")


def layer_table(doc: str) -> dict[str, int]:
    """``{unit: layer}`` from the rows ``    <layer>  <unit>, <unit>  <description>`` of the package docstring."""
    table: dict[str, int] = {}
    for line in doc.splitlines():
        match = _ROW.match(line)
        if match:
            for unit in match.group(2).split(", "):
                assert unit not in table, f"unit {unit} appears twice in the layer table of monai_lpuwf/__init__.py"
                table[unit] = int(match.group(1))
    return table


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    """The unit (first component under the package) of a module name; ``None`` for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, first-party module)`` of every import in ``source`` (the text of ``module``), at any depth."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == PACKAGE:  # from monai_lpuwf import data / UWFKeys: a unit, or the root itself
                found += [(node.lineno, f"{PACKAGE}.{a.name}" if a.name in TABLE else PACKAGE) for a in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def layering_violations(source: str, module: str, table: dict[str, int], filename: str, is_package: bool = False):
    """Messages for the imports of ``module`` that point up or sideways (or at a unit missing from the table)."""
    own = _unit(module)
    if own is None:  # the package root re-exports from any layer
        return []
    if own not in table:
        return [f"{filename}: unit '{own}' is in no layer; add it to the table in monai_lpuwf/__init__.py"]
    messages = []
    for line, target in imported_modules(source, module, is_package):
        unit = _unit(target)
        if unit == own:
            continue
        if unit is None:
            messages.append(f"{filename}:{line}: {module} imports the package root {PACKAGE}; import the unit itself")
        elif unit not in table:
            messages.append(f"{filename}:{line}: {module} imports {target}, whose unit '{unit}' is in no layer")
        elif table[unit] >= table[own]:
            kind = "up" if table[unit] > table[own] else "sideways"
            messages.append(
                f"{filename}:{line}: {module} (layer {table[own]}, {own}) imports {target} (layer {table[unit]}, "
                f"{unit}): an import {kind}; move the code down a layer or the caller up"
            )
    return messages


TABLE = layer_table(monai_lpuwf.__doc__ or "")


def test_the_table_names_every_unit_of_the_package():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    units = packages | {p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py"}
    assert set(TABLE) == units, f"layer table {sorted(TABLE)} vs units on disk {sorted(units)}"
    assert set(TABLE.values()) == set(range(max(TABLE.values()) + 1))


def test_no_import_points_up_or_sideways():
    messages = []
    for path in sorted(ROOT.rglob("*.py")):
        messages += layering_violations(
            path.read_text(), module_name(path), TABLE, str(path.relative_to(ROOT.parent)), path.name == "__init__.py"
        )
    assert not messages, "\n".join(messages)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("monai_lpuwf.losses.perceptual", "from monai_lpuwf.weights import resolve_weights_path\n", []),
        (
            "monai_lpuwf.losses.perceptual",
            "import os\nfrom monai_lpuwf.metrics.weights import x\n",
            ["x.py:2: monai_lpuwf.losses.perceptual (layer 1, losses) imports monai_lpuwf.metrics.weights (layer 3"],
        ),
        ("monai_lpuwf.losses.perceptual", "def f():\n    from ..metrics import y\n", ["x.py:2: ", "an import up"]),
        (
            "monai_lpuwf.losses.ctrd",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import monai_lpuwf.networks\n",
            ["x.py:3: ", "(layer 1, networks): an import sideways"],
        ),
        ("monai_lpuwf.data.phantoms", "from monai_lpuwf import UWFKeys\n", ["x.py:1: ", "the package root"]),
        ("monai_lpuwf.data.phantoms", "from monai_lpuwf import transforms\n", ["x.py:1: ", "an import up"]),
        (
            "monai_lpuwf.data.phantoms",
            "from .image_io import save_uwf_image\nfrom monai_lpuwf.keys import UWFKeys\n",
            [],
        ),
        ("monai_lpuwf.generation.model", "from monai_lpuwf.networks import ModelFile\n", []),
        ("monai_lpuwf.engines.trainers", "from monai_lpuwf.bundle_support import bundle_datalists\n", ["an import up"]),
    ],
)
def test_the_checker_finds_a_deliberate_violation(module, source, expected):
    messages = layering_violations(source, module, TABLE, "x.py")
    if not expected:
        assert messages == []
    else:
        assert len(messages) == 1 and all(part in messages[0] for part in expected), messages


def test_a_unit_missing_from_the_table_is_reported():
    messages = layering_violations("import os\n", "monai_lpuwf.newthing", TABLE, "monai_lpuwf/newthing.py")
    assert messages == [
        "monai_lpuwf/newthing.py: unit 'newthing' is in no layer; add it to the table in monai_lpuwf/__init__.py"
    ]
