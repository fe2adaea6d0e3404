"""Reading a pipeline document: YAML with bounded alias expansion, ``--set`` overrides, validation
errors as one line per field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from maskgrpo.specs.pipeline import RunSpec


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """One line per error: ``<source>: <field.path>: <reason>``."""
    prefix = f"{source}: " if source else ""
    lines = []
    for e in err.errors():
        loc = [p for k, p in enumerate(e["loc"]) if not (k and e["loc"][k - 1] == "sampler" and p in ("text", "image"))]
        path = ".".join(str(p) for p in loc) or "(document)"  # (the sampler union's tag is not a field)
        lines.append(f"{prefix}{path}: {e['msg']}")
    return "\n".join(lines)


def set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one ``--set a.b.c=value`` override to a raw document (value parsed as YAML); an
    integer key indexes a list (``reward.functions.0.params.bonus=1.0``), ``-1`` the last item."""
    keys = dotted.split(".")
    if not all(keys):
        raise ValueError(f"--set {dotted}: empty key")
    node: Any = doc
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth]) or "the document"
        if isinstance(node, list):
            try:
                index = int(key)
                node[index]  # noqa: B018  (IndexError when out of range)
            except ValueError:
                raise ValueError(f"--set {dotted}: {where} is a list: {key!r} is no index") from None
            except IndexError:
                raise ValueError(f"--set {dotted}: {where} has {len(node)} item(s): no index {key}") from None
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                if node.get(key) is None:  # absent or null (model.lora: null): a new mapping
                    node[key] = {}
                node = node[key]
        else:
            raise ValueError(f"--set {dotted}: {where} is not a mapping or a list")


def _yaml_error_line(err: yaml.YAMLError) -> str:
    """One line for a YAML error: what went wrong and where (line, column)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


YAML_MAX_NODES = 100_000


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """``yaml.safe_load`` with alias expansion limited: a document whose aliases would expand to
    more than ``YAML_MAX_NODES`` nodes (a "billion laughs" bomb) is refused before it is built.
    ValueError naming ``source`` for that and for any YAML error (RecursionError included)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        sizes: dict[int, int] = {}

        def size(node: yaml.Node) -> int:  # expanded node count; shared (aliased) nodes memoised
            if id(node) not in sizes:
                sizes[id(node)] = YAML_MAX_NODES + 1  # a cycle counts as too big
                children = node.value if isinstance(node, yaml.SequenceNode) else (
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
                total = 1
                for child in children:
                    total += size(child)
                    if total > YAML_MAX_NODES:
                        break
                sizes[id(node)] = total
            return sizes[id(node)]

        if root is not None and size(root) > YAML_MAX_NODES:
            raise ValueError(f"{source}: YAML aliases expand to more than {YAML_MAX_NODES:,} nodes: refused")
        return None if root is None else loader.construct_document(root)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML: {_yaml_error_line(err)}") from None
    except RecursionError:
        raise ValueError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_run_spec(path: str | Path, overrides: list[str] | None = None) -> RunSpec:
    """Read, override and validate a pipeline document. Raises ValueError with field paths."""
    path = Path(path)
    try:
        doc = load_yaml(path.read_text(), str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such pipeline document") from None
    except OSError as err:  # a directory, unreadable, ...
        raise ValueError(f"{path}: cannot read the pipeline document ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) pipeline document") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a pipeline document is a mapping, got {type(doc).__name__}")
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected dotted.key=value")
        key, raw = item.split("=", 1)
        set_dotted(doc, key.strip(), load_yaml(raw, f"--set {key.strip()}"))
    try:
        return RunSpec.model_validate(doc)
    except ValidationError as err:
        raise ValueError(format_validation_error(err, str(path))) from None
