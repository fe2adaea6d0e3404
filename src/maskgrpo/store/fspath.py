"""Local paths that must stay inside a folder: the one symlink rule of local.py and dircache.py."""

from __future__ import annotations

import os
import stat


def escape_of(real_root: str, rel: str) -> str | None:
    """Where ``rel`` leads when a symlink takes it out of ``real_root``, else None.

    ``real_root`` is an already resolved folder (``os.path.realpath``); ``rel`` a '/'-separated
    relative path whose segments the caller has checked (none empty, '.' or '..').  The answer
    is that of ``os.path.realpath(real_root/rel)`` staying inside ``real_root``, at the cost of
    one ``lstat`` per segment that exists when none is a symlink (realpath walks every segment of
    the whole path in Python, root included): a missing segment ends the walk, since nothing
    below it can be a link, and the first link met hands the path to realpath."""
    path = real_root.rstrip("/")
    for seg in rel.split("/"):
        path = f"{path}/{seg}"
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:  # unreadable folder: let realpath decide, as before
            break
        if stat.S_ISLNK(mode):
            break
    else:
        return None
    real = os.path.realpath(os.path.join(real_root, rel))
    inside = real == real_root or real.startswith(real_root.rstrip("/") + "/")
    return None if inside else real
