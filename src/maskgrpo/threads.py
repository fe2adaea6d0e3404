"""How many threads torch's intra-op pool uses in a stage: chosen once, deliberately.

torch's default is one thread per physical core of the machine, whatever the process may use or
what else runs: on a loaded 2-core machine, runs with ``OMP_NUM_THREADS=1`` were about 10x
faster than with the default (issue 20, item 9). The rule, written here once:

1. ``--threads N`` of ``maskgrpo run`` (``MASKGRPO_THREADS`` in the environment, which the stage
   processes of ``python -m maskgrpo.stages.X`` and their children inherit);
2. else ``OMP_NUM_THREADS`` when it is set (the user's explicit choice);
3. else the cores this process may run on (``os.sched_getaffinity``, which honours taskset and
   container CPU sets; ``os.cpu_count`` where it does not exist), capped at ``MAX_DEFAULT``: the
   tiny models' matrices are too small to gain from more, and a big machine is usually shared.

The default does not look at the load: a run's numbers must not depend on what else was running.
"""

from __future__ import annotations

import os

__all__ = ["MAX_DEFAULT", "ENV", "default_threads", "apply_threads"]

MAX_DEFAULT = 8
ENV = "MASKGRPO_THREADS"


def _positive(name: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{name}: expected a positive number of threads, got {text!r}")
    return n


def default_threads() -> int:
    """The thread count when none is given (rules 1-3 of the module docstring)."""
    for name in (ENV, "OMP_NUM_THREADS"):
        if os.environ.get(name, "").strip():
            return _positive(name, os.environ[name].strip())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT))


def apply_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (None: ``default_threads()``) in this process, and
    export it (``MASKGRPO_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) for child processes.
    Returns the count."""
    import torch

    n = default_threads() if n is None else _positive("--threads", str(n))
    os.environ[ENV] = os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
