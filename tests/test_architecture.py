"""Architecture rules as tests: exactly what docs/design.md "Layering" states.

1. Importing ``maskgrpo.core`` (every module in it) in a fresh interpreter loads nothing
   third-party beyond what ``import torch`` alone loads, and nothing of the project outside core.
2. Static check over ``src/maskgrpo/**/*.py`` (``ast``: ``import``/``from`` statements, also
   inside functions, constant ``importlib.import_module``/``__import__`` arguments and lazy
   registry strings ``"package.module:attr"``): each top-level package imports only the project
   packages ``ALLOWED`` names for it (the lateral edges are in ``LATERAL``, each with its reason,
   and each must still be used); kfp only under ``runners/kfp``, prefect only under
   ``runners/local``, s3fs/boto3/botocore/aiobotocore only under ``store``.
3. The module graph of real imports (lazy registry strings excluded) has no cycle, no stage
   module (sft, rollout, score, update, evaluate) imports another, and no module of the specs
   package imports the package itself (its ``__init__`` only re-exports the modules).
4. Every document a source file cites (``docs/<page>.md``, with ``§N`` sections) exists.
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
# The layering: package -> the project packages it may import (besides itself); "maskgrpo" is the
# package root (its __version__). The cli, at the top, may import anything.
LAYERS = {
    "core": set(),
    "artifacts": set(),
    "maskgrpo": set(),
    "store": {"core"},
    "models": {"core", "artifacts"},
    "tasks": {"core"},
    "rewards": {"core"},
    "specs": set(),
    "plan": {"specs"},
    "preflight": {"specs", "models", "store", "tasks"},
    "threads": set(),
    "modalities": {"core", "artifacts", "models", "tasks"},
    "stages": {"core", "artifacts", "models", "tasks", "rewards", "store", "specs", "plan", "modalities", "threads"},
    "runners": {"artifacts", "store", "specs", "plan", "stages"},
}
# Lateral edges, allowed here and only here, each with its reason.
LATERAL = {
    ("store", "maskgrpo"): "the package version is recorded in every manifest",
    ("models", "store"): "a model source may be a store URI: models/loading.py local_source/import_checkpoint",
    ("tasks", "store"): "dataset files may be store URIs: tasks/files.py local_copy",
    ("rewards", "models"): "the CLIP reward's model source goes through models/loading.py (store URIs)",
    ("rewards", "tasks"): "the toy GenEval detector reads the grids and metadata of tasks/geneval.py",
    ("specs", "rewards"): "reward params are checked against the reward's signature at validation",
    ("specs", "tasks"): "task names and params are checked against the task's constructor at validation",
    ("specs", "store"): "the run-id grammar is the store's (store/layout.py RUN_ID_PATTERN)",
    ("specs", "models"): "image.layout 'mmada' ids are checked by building the layout (models/layout.py) at validation",
}
ENTRY_POINTS = {"cli", "__main__"}  # the command line (and python -m maskgrpo) may import every package
ALLOWED = {pkg: deps | {b for a, b in LATERAL if a == pkg} for pkg, deps in LAYERS.items()}
STAGE_MODULES = {f"maskgrpo.stages.{k}" for k in ("sft", "rollout", "score", "update", "evaluate")}
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


def _imports(path: Path, lazy: bool = True) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import-like reference in ``path`` (``lazy``: with
    the lazy registry strings)."""
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
        elif lazy and isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = LAZY.match(node.value)
            if match:
                found.append((node.lineno, match.group(1)))
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _package(module: str) -> str:
    """'maskgrpo.stages.sft' -> 'stages'; the root -> 'maskgrpo'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "maskgrpo"


def _edges() -> list[tuple[str, int, str, str]]:
    """(file, line, importer package, imported package) for every cross-package project import."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        importer = _module_name(path)
        for line, name in _imports(path):
            if name.split(".")[0] == "maskgrpo" and _package(name) != _package(importer):
                found.append((str(path.relative_to(SRC.parent)), line, _package(importer), _package(name)))
    return found


def _violations() -> list[str]:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        importer = _module_name(path)
        where = path.relative_to(SRC.parent)
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in CONFINED and not _within(importer, CONFINED[top]):
                problems.append(f"{where}:{line}: imports {name} (allowed only under {CONFINED[top]})")
    for where, line, a, b in _edges():
        if a not in ENTRY_POINTS and b not in ALLOWED.get(a, set()):
            problems.append(f"{where}:{line}: {a} imports maskgrpo.{b} ({a} may import: {sorted(ALLOWED.get(a, ())) or 'nothing'})")
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


def test_every_declared_lateral_edge_is_used():
    used = {(a, b) for _, _, a, b in _edges()}
    assert sorted(set(LATERAL) - used) == [], "declared lateral edges no import uses: drop them from LATERAL"
    assert set(ALLOWED) | ENTRY_POINTS >= {_package(_module_name(p)) for p in SRC.rglob("*.py")}, "a package has no row"


def _module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (real imports only; a name that is not a module
    is its package: ``from maskgrpo.tasks import Example`` -> maskgrpo.tasks). An edge to one's
    own ancestor package is left out: Python initialises the ancestors first anyway, and the
    package's registry reaching back into it (rewards/combine.py) is not a cycle between modules."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in _imports(path, lazy=False):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and imported.startswith("maskgrpo") and not _within(name, imported):
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_and_no_stage_imports_another():
    graph = _module_graph()
    assert "maskgrpo.stages.policy" in graph["maskgrpo.stages.sft"]  # the walk sees real edges
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder finds one
    crossing = sorted(f"{a} -> {b}" for a in STAGE_MODULES for b in graph[a] & STAGE_MODULES)
    assert crossing == [], "stage modules import each other"


def test_spec_modules_import_their_siblings_not_the_package():
    # maskgrpo.specs/__init__ only re-exports; a module inside it that imported the package would
    # run on a half-initialised package (an edge the cycle check leaves out: to one's own ancestor).
    modules = sorted(p for p in (SRC / "specs").glob("*.py") if p.name != "__init__.py")
    assert "maskgrpo.specs.model" in {name for _, name in _imports(SRC / "specs" / "pipeline.py")}  # sees siblings
    offenders = [f"{p.name}:{line}" for p in modules for line, name in _imports(p, lazy=False) if name == "maskgrpo.specs"]
    assert offenders == [], f"spec modules importing maskgrpo.specs itself: {offenders}"


DOC_CITE = re.compile(r"docs/([\w-]+\.md)(?:[^\n§]{0,40}?§(\d+(?:\.\d+)?))?")


def test_every_cited_document_exists():
    root = SRC.parents[1]
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for old in ("ALGORITHM.md", "DESIGN.md", "STYLE.md", "TOOLCHAIN.md"):
            if old in text:
                missing.append(f"{path.relative_to(root)}: cites {old}, which is not in the repository (use docs/)")
        for match in DOC_CITE.finditer(text):
            page = root / "docs" / match.group(1)
            if not page.is_file():
                missing.append(f"{path.relative_to(root)}: cites docs/{match.group(1)}, absent")
            elif match.group(2):
                number = match.group(2)
                heading = re.compile(rf"^#+ {re.escape(number)}[. ]", re.M)
                if not heading.search(page.read_text()):
                    missing.append(f"{path.relative_to(root)}: cites docs/{match.group(1)} §{number}, no such section")
    assert missing == [], "\n".join(missing)
    assert (root / "docs" / "algorithm.md").is_file() and (root / "docs" / "design.md").is_file()


def test_pyproject_license_is_an_spdx_string_with_its_files():
    """PEP 639: `license = "<SPDX>"` plus `license-files` (a `{text = ...}` table makes setuptools
    print a deprecation box on every install); every licence file named exists."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    files = [p for pattern in project["license-files"] for p in root.glob(pattern)]
    assert root / "LICENSE" in files and len(files) == len(project["license-files"])
    assert "Apache License" in (root / "LICENSE").read_text()
