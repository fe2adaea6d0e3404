"""A lint: no test asserts an upper bound on wall-clock time (issue 22).

A busy machine makes any ``assert elapsed < 5`` fail without a bug, so CI turns flaky and real
failures hide. A test checks what the bound meant instead (a forward count, a bound on work done,
an event order, a timeout that fired); timing belongs in bench/ (JSON, ratios in one run).

The check is static (``ast`` over ``tests/**/*.py``): inside each function, a name assigned from
an expression that reads a clock (``time.monotonic()``, ``time.perf_counter()``, ``time.time()``
and their ``_ns`` forms, or a name already tainted so) is a clock value; an ``assert`` whose
expression bounds a clock value from above (``wall < 5``, ``5 > elapsed``, ``time.monotonic() -
t0 <= 2``, ``time.monotonic() < deadline``) is refused. Lower bounds (``wall >= 1.0``: the
timeout did wait) stay allowed: load can only make them truer. Hang guards are timeouts
(``subprocess.run(timeout=...)``, ``queue.get(timeout=...)``), not assertions.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CLOCKS = {"monotonic", "perf_counter", "time", "monotonic_ns", "perf_counter_ns", "time_ns", "process_time"}


def _reads_clock(node: ast.AST, tainted: set[str]) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in tainted:
            return True
        if isinstance(sub, ast.Call):
            f = sub.func
            if isinstance(f, ast.Attribute) and f.attr in CLOCKS and isinstance(f.value, ast.Name) and f.value.id == "time":
                return True
            if isinstance(f, ast.Name) and f.id in {"monotonic", "perf_counter"}:
                return True
    return False


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


def timed_assertions(source: str, filename: str = "<test>") -> list[str]:
    """``file:line: <assert source>`` for every assertion bounding a clock value from above."""
    tree = ast.parse(source, filename)
    found = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
    for scope in scopes:
        body = list(ast.walk(scope))
        tainted: set[str] = set()
        changed = True
        while changed:  # fixed point: t1 = time.monotonic(); wall = t1 - t0; slow = wall * 2
            changed = False
            for node in body:
                value = getattr(node, "value", None)
                if value is not None and _targets(node) and _reads_clock(value, tainted):
                    new = set(_targets(node)) - tainted
                    if new:
                        tainted |= new
                        changed = True
        for node in body:
            if not isinstance(node, ast.Assert):
                continue
            for cmp in (n for n in ast.walk(node.test) if isinstance(n, ast.Compare)):
                operands = [cmp.left, *cmp.comparators]
                for i, op in enumerate(cmp.ops):
                    small, big = operands[i], operands[i + 1]
                    if isinstance(op, (ast.Gt, ast.GtE)):
                        small, big = big, small
                    elif not isinstance(op, (ast.Lt, ast.LtE)):
                        continue
                    if _reads_clock(small, tainted):
                        found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
                        break
                else:
                    continue
                break
    return sorted(set(found))


def test_no_test_asserts_an_upper_bound_on_wall_clock_time():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        offenders += timed_assertions(path.read_text(), str(path.relative_to(TESTS.parent)))
    assert offenders == [], "wall-clock upper bounds in tests (check the work done instead):\n" + "\n".join(offenders)


def test_the_lint_catches_each_form_and_spares_lower_bounds():
    bad = [
        "def t():\n    start = time.monotonic()\n    f()\n    assert time.monotonic() - start < 5\n",
        "def t():\n    t0 = time.perf_counter()\n    f()\n    elapsed = time.perf_counter() - t0\n    assert elapsed < 5, elapsed\n",
        "def t():\n    t0 = time.time()\n    f()\n    wall = time.time() - t0\n    assert ok and 1.0 <= wall < 2.0\n",
        "def t():\n    deadline = time.monotonic() + 3\n    assert time.monotonic() < deadline\n",
        "def t():\n    s = perf_counter()\n    assert 5 > perf_counter() - s\n",
        "def t():\n    a = time.monotonic()\n    b = time.monotonic() - a\n    c = b * 2\n    assert c <= 1\n",
    ]
    good = [
        "def t():\n    start = time.monotonic()\n    f()\n    assert time.monotonic() - start >= 1.0\n",
        "def t():\n    res = run(timeout=1)\n    assert res.timed_out and res.count < 5\n",
        "def t():\n    deadline = time.monotonic() + 3\n    while time.monotonic() < deadline:\n        pass\n",
    ]
    assert [len(timed_assertions(s)) for s in bad] == [1] * len(bad)
    assert [timed_assertions(s) for s in good] == [[]] * len(good)
