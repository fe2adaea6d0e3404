"""Remote code as a pinned, explicit exception: the sha256 of every ``*.py`` file a checkpoint
folder holds, and the check that refuses to run a file that is not exactly the pinned one.

``model.trust_remote_code`` is ``false`` (the default: LLaDA and MMaDA load natively,
models/llada.py) or a map ``{relative path: sha256}`` of the code files, as ``maskgrpo import``
prints them when it commits the checkpoint. Before every load through transformers'
``trust_remote_code`` the folder's ``*.py`` files are hashed again: one that is not pinned, or
whose hash differs, is refused with its name (a file swapped in the bucket never runs). A bare
``true`` pins nothing and is refused.

The errors name the setting the way the caller asked for it: the document field
``model.trust_remote_code`` by default; the commands that take the pins as a flag (``maskgrpo
merge``, ``export``) reword them with ``RemoteCodeError.for_flag``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

__all__ = ["CodePinError", "RemoteCodeError", "code_digests", "remote_code_allowed"]


FIELD = ("set model.trust_remote_code to", "model.trust_remote_code")
FLAG = ("pass --trust-remote-code with", "--trust-remote-code")


class RemoteCodeError(ValueError):
    """A refusal that names the trust setting: ``template`` has ``{set}`` (the instruction) and
    ``{setting}`` (its name); ``str()`` names the document field, ``for_flag()`` the CLI flag."""

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self._worded(FIELD))

    def _worded(self, words: tuple[str, str]) -> str:
        return self.template.replace("{set}", words[0]).replace("{setting}", words[1])

    def for_flag(self) -> str:
        return self._worded(FLAG)


class CodePinError(RemoteCodeError):
    """A checkpoint's code file is not the pinned one (or nothing was pinned)."""


def code_digests(folder: str | Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every ``*.py`` file under ``folder``, sorted."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.py")) if p.is_file()}


def remote_code_allowed(folder: str | Path, trust_remote_code: bool | Mapping[str, str] | None) -> bool:
    """Whether transformers may run ``folder``'s code: False when not asked or when the folder
    holds no code; True when every ``*.py`` file there is pinned with its exact sha256; else
    ``CodePinError`` naming the first file that is not."""
    if not trust_remote_code:
        return False
    if trust_remote_code is True or not isinstance(trust_remote_code, Mapping):
        raise CodePinError(f"{folder}: {{setting}} must pin the code files as "
                           "{file: sha256} (printed by `maskgrpo import`); true alone would run any code")
    found = code_digests(folder)
    for name, digest in found.items():
        pinned = trust_remote_code.get(name)
        if pinned is None:
            raise CodePinError(f"{Path(folder) / name}: code file not pinned in {{setting}}; refusing to run it")
        if pinned.lower() != digest:
            raise CodePinError(f"{Path(folder) / name}: sha256 {digest} differs from the pinned {pinned}; "
                               "refusing to run it (the file was changed after import)")
    return bool(found)
