"""Architecture rules as tests (DESIGN.md "Layering"; STYLE.md 11).

1. Importing ``maskgrpo.core`` (every module in it) in a fresh interpreter loads nothing
   third-party beyond what ``import torch`` alone loads (measured in another fresh interpreter),
   and nothing of the project outside ``maskgrpo.core``.
2. Static check over ``src/maskgrpo/**/*.py`` (``ast``; ``import``/``from`` statements, constant
   ``importlib.import_module``/``__import__`` arguments and lazy registry strings
   ``"package.module:attr"``): kfp only under ``maskgrpo/runners/kfp``, prefect only under
   ``maskgrpo/runners/local``, s3fs/boto3/botocore/aiobotocore only under ``maskgrpo/store``;
   ``core`` imports nothing of the project outside ``core``; ``models``/``tasks``/``rewards``/
   ``store`` never import ``stages``/``runners``/``cli``/``plan``; ``stages`` never import
   ``runners``/``cli``; ``runners`` never import ``cli``.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "maskgrpo"

# third-party top-level package -> the only package prefix allowed to import it
CONFINED = {
    "kfp": "maskgrpo.runners.kfp",
    "prefect": "maskgrpo.runners.local",
    "s3fs": "maskgrpo.store",
    "boto3": "maskgrpo.store",
    "botocore": "maskgrpo.store",
    "aiobotocore": "maskgrpo.store",
}
# importer prefix -> project prefixes it must not import
FORBIDDEN_INTERNAL = {
    **{f"maskgrpo.{low}": ("maskgrpo.stages", "maskgrpo.runners", "maskgrpo.cli", "maskgrpo.plan")
       for low in ("models", "tasks", "rewards", "store")},
    "maskgrpo.stages": ("maskgrpo.runners", "maskgrpo.cli"),
    "maskgrpo.runners": ("maskgrpo.cli",),
}
LAZY = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*):[A-Za-z_][\w.]*$")


def _loaded_top_level(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; return its third-party top-level modules and the
    project modules it loaded."""
    probe = code + (
        "\nimport sys, json\n"
        "mods = [m for m in list(sys.modules) if m]\n"
        "tops = sorted({m.split('.')[0] for m in mods} - set(sys.stdlib_module_names) - {'__main__', '__mp_main__'})\n"
        "print(json.dumps({'tops': tops, 'project': sorted(m for m in mods if m.split('.')[0] == 'maskgrpo')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_loads_only_torch_and_the_standard_library():
    baseline = set(_loaded_top_level("import torch")["tops"])
    assert "torch" in baseline
    core = _loaded_top_level(
        "import importlib, pkgutil, maskgrpo.core\n"
        "for info in pkgutil.iter_modules(maskgrpo.core.__path__, 'maskgrpo.core.'):\n"
        "    importlib.import_module(info.name)\n"
    )
    extra = set(core["tops"]) - baseline - {"maskgrpo"}
    assert extra == set(), f"maskgrpo.core loads third-party modules beyond torch's own: {sorted(extra)}"
    outside = [m for m in core["project"] if m != "maskgrpo" and not m.startswith("maskgrpo.core")]
    assert outside == [], f"maskgrpo.core loads project modules outside core: {outside}"
    assert "maskgrpo.core.text_sampler" in core["project"]  # the probe really imported the modules


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str | None, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import-like reference in ``path``."""
    importer = _module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module, node.level, importer, is_package)
            found.append((node.lineno, base))
            if node.module is None:  # "from . import x": x may be a submodule
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = LAZY.match(node.value)
            if match:
                found.append((node.lineno, match.group(1)))
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations() -> list[str]:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        importer = _module_name(path)
        where = path.relative_to(SRC.parent)
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in CONFINED and not _within(importer, CONFINED[top]):
                problems.append(f"{where}:{line}: imports {name} (allowed only under {CONFINED[top]})")
            if _within(importer, "maskgrpo.core") and top == "maskgrpo" and not _within(name, "maskgrpo.core"):
                problems.append(f"{where}:{line}: core imports {name} (core imports nothing of the project)")
            for low, banned in FORBIDDEN_INTERNAL.items():
                if _within(importer, low):
                    problems += [f"{where}:{line}: {low} imports {name} (a higher layer)"
                                 for b in banned if _within(name, b)]
    return problems


def test_layering_and_confined_third_party_imports():
    problems = _violations()
    assert problems == [], "layering violations:\n" + "\n".join(problems)


def test_the_static_check_sees_the_known_imports():
    # Guard against a checker that silently finds nothing: core's relative imports resolve,
    # and the checker flags a forbidden import in a synthetic module.
    names = {name for _, name in _imports(SRC / "core" / "text_sampler.py")}
    assert "maskgrpo.core.sampling" in names and "torch" in names


@pytest.mark.parametrize("source, expected", [
    ("import kfp\n", "kfp"),
    ("from prefect import flow\n", "prefect"),
    ("import importlib\nimportlib.import_module('s3fs')\n", "s3fs"),
    ("X = {'a': 'maskgrpo.runners.local.flow:run'}\n", "maskgrpo.runners.local.flow"),
    ("from ..stages import rollout\n", "maskgrpo.stages"),
], ids=["import", "from-import", "import_module", "lazy-registry-string", "relative-import"])
def test_import_finder_on_synthetic_sources(tmp_path, monkeypatch, source, expected):
    fake_src = tmp_path / "maskgrpo"
    (fake_src / "tasks").mkdir(parents=True)
    target = fake_src / "tasks" / "bad.py"
    target.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake_src)
    assert expected in {name for _, name in _imports(target)}
    assert _violations(), "a tasks module importing this must be a violation"
