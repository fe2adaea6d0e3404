"""The specs package (src/maskgrpo/specs/): ``from maskgrpo.specs import X`` works for every name the
project imports from it, and every public name its modules define is re-exported there."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import maskgrpo.specs as specs

ROOT = Path(__file__).resolve().parents[2]


def _names_imported_from_specs() -> dict[str, str]:
    """name -> the first file that does ``from maskgrpo.specs import name`` (or ``specs.name``
    after ``importorskip("maskgrpo.specs")``), over src/, tests/, bench/ and scripts/."""
    found: dict[str, str] = {}
    for folder in ("src", "tests", "bench", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.ImportFrom) and node.module == "maskgrpo.specs":
                    for alias in node.names:
                        found.setdefault(alias.name, str(path.relative_to(ROOT)))
                elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "specs"
                      and path.parts[-2:] != ("specs", Path(__file__).name)):
                    found.setdefault(node.attr, str(path.relative_to(ROOT)))
    return found


def test_every_name_the_project_imports_from_specs_is_there():
    names = _names_imported_from_specs()
    assert {"RunSpec", "load_run_spec", "spec_hash", "RolloutSpec", "TextSamplerSpec"} <= set(names)  # the walk sees them
    missing = sorted(f"{name} (imported by {where})" for name, where in names.items() if not hasattr(specs, name))
    assert missing == []


def test_every_public_name_of_a_spec_module_is_re_exported():
    unexported = []
    for info in pkgutil.iter_modules(specs.__path__, "maskgrpo.specs."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if not name.startswith("_") and getattr(value, "__module__", None) == info.name:
                if name not in specs.__all__ or getattr(specs, name) is not value:
                    unexported.append(f"{info.name}.{name}")
    assert unexported == []
    assert sorted(set(specs.__all__)) == sorted(specs.__all__) and all(hasattr(specs, n) for n in specs.__all__)
