"""Implementations chosen by name: built-in lazy import strings plus entry-point plugins.

One small mechanism for every registry of the project (tasks, rewards; docs/design.md, "Style"): names map to
``"module:attr"`` strings imported on first use; third-party packages add names through an
entry-point group; built-in names win; an unknown name fails listing the valid ones.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any


class LazyRegistry:
    def __init__(self, kind: str, builtins: dict[str, str], entry_point_group: str | None = None):
        self.kind = kind
        self.builtins = builtins
        self.entry_point_group = entry_point_group

    def _plugins(self) -> dict[str, Any]:
        if self.entry_point_group is None:
            return {}
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=self.entry_point_group) if ep.name not in self.builtins}

    def names(self) -> list[str]:
        """Every registered name, built-in and plugins, sorted."""
        return sorted(set(self.builtins) | set(self._plugins()))

    def load(self, name: str) -> Any:
        """The object registered as ``name``; unknown -> ValueError listing the valid names."""
        if name in self.builtins:
            module, _, attr = self.builtins[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        plugins = self._plugins()
        if name in plugins:
            return plugins[name].load()
        raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")


def parameter_error(what: str, fn: Any, params: dict[str, Any], *, keyword_only: bool = False) -> str | None:
    """Why ``params`` do not fit ``fn``'s declared parameters (None when they do): one check for
    task parameters (every named argument) and reward parameters (``keyword_only``: a reward's
    positional and ``**columns`` arguments are data columns, never parameters, so a misspelt
    parameter is refused even by a reward that accepts any column). ``what`` names the object in
    the message, e.g. "reward 'sort_exact'". No signature to read: the call decides (None)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    named = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if keyword_only:
        named = [p for p in named if p.kind is p.KEYWORD_ONLY]
    declared = [p.name for p in named if p.name != "self"]
    missing = [p.name for p in named if p.default is p.empty and p.name not in params]
    if missing:
        return f"{what} needs parameter {missing[0]!r} (missing: {', '.join(missing)})"
    swallows = not keyword_only and any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = sorted(set(params) - set(declared)) if not swallows else []
    if unknown:
        return f"{what} has no parameter {unknown[0]!r} (unknown: {', '.join(unknown)}; valid: {', '.join(declared) or 'none'})"
    return None
