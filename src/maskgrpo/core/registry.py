"""Implementations chosen by name: built-in lazy import strings plus entry-point plugins.

One small mechanism for every registry of the project (tasks, rewards; docs/design.md, "Style"): names map to
``"module:attr"`` strings imported on first use; third-party packages add names through an
entry-point group; built-in names win; an unknown name fails listing the valid ones.
"""

from __future__ import annotations

import importlib
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
