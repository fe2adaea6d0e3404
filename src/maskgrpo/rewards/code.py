"""Code reward: 2 x the pass rate of a problem's test asserts, run in the sandbox, + 0.5 format.

Implements docs/algorithm.md section 6, "Code" (the MaskGRPO/d1 MBPP reward):

1. Code = the body of the LAST ```python fence of the completion (an unclosed last fence counts
   up to the end of the text: a generation cut at the length limit still runs); the whole
   completion when there is no fence.
2. Format reward 0.5 when the completion has a closed ```python fence whose body parses
   (``ast.parse``); 0 otherwise. Code too deep for the parser (RecursionError) does not parse.
3. Correctness 2 x (passed / len(test_list)), decided OUTSIDE the completion's interpreter:
   each assert is split (``split_assert``) into the sub-expressions that call the completion's
   names (the *leaves*: ``f(1)`` in ``assert f(1) == 3``) and the rest (``_leaf0 == 3``). The
   completion's sandbox (`rewards.sandbox`) runs the code, ``test_setup_code`` and then only the
   leaves, each under its own 5 s limit, and prints their values in a strict data encoding (exact
   ``int``/``float``/``str``/``bool``/``None``/``bytes``/``complex`` and lists, tuples, sets,
   dicts of them; anything else, e.g. an object whose ``__eq__`` is always True, is an error). A
   second sandbox WITHOUT the completion's code (the checker: ``test_setup_code``, the standard
   library) decodes those values and evaluates the rest of each assert. The completion never sees
   the expected values, so whatever it prints, rewinds, patches (``os.write``, ``builtins.exec``,
   frames) or rewrites at exit only changes its own answers. Deviation from the reference (which
   runs code + asserts in one process and checks the exit status) on purpose.
   Limits: a leaf must return data (a test that passes a completion's function object to a
   builtin, ``map(f, xs)``, fails); a test that is not a single ``assert`` runs whole in the
   completion's process (its verdict is then forgeable; MBPP has none).
4. Where: in this process's sandbox only when every required layer is in force and, unless the
   sandbox runs as a private uid, this process holds no credentials (`sandbox.secret_env_names`);
   otherwise through a ``maskgrpo serve-sandbox`` service (``params.sandbox_url`` or
   ``MASKGRPO_SANDBOX_URL``), or `SandboxUnavailable` (fails closed; ``params.insecure: true``
   or ``MASKGRPO_SANDBOX_INSECURE=1`` runs anyway).

Completions are parallelised with a small thread pool (2 workers: the machine has 2 cores).

>>> fence = "```python\\ndef add(a, b):\\n    return a + b\\n```"
>>> code_reward(["Add two numbers."], [fence],
...             test_list=[["assert add(1, 2) == 3", "assert add(2, 2) == 5"]])
[1.5]

(One of two asserts passes: 2 x 1/2 = 1.0, plus 0.5 for a fence that parses.)
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from maskgrpo.rewards.sandbox import (SandboxResult, SandboxUnavailable, check_sandbox,
                                      run_in_sandbox, secret_env_names)

__all__ = ["code_reward", "extract_code", "format_ok", "run_tests", "split_assert"]

TEST_TIMEOUT_S = 5.0
PASS_WEIGHT, FORMAT_WEIGHT = 2.0, 0.5
SANDBOX_URL_ENV = "MASKGRPO_SANDBOX_URL"
_FENCE = re.compile(r"```[ \t]*python3?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_OPEN_FENCE = re.compile(r"```[ \t]*python3?[ \t]*\n", re.IGNORECASE)
_UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)
_SCOPES = (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.NamedExpr,
           ast.Await, ast.Yield, ast.YieldFrom)
_TRUSTED = frozenset(dir(builtins)) | frozenset(sys.stdlib_module_names)

# The strict data codec, shared by both harnesses (its source is pasted into each).
_CODEC = r'''
def _enc(x, depth=0):
    # The value as plain data: a subclass of a data type is sent as its base type's content
    # (an int whose __eq__ is always True arrives as the int), anything else is not data.
    if depth > 40:
        raise ValueError("too deep")
    if x is None: return {"n": 0}
    if isinstance(x, bool): return {"b": x is True}
    if isinstance(x, int): return {"i": int.__repr__(x)}
    if isinstance(x, float): return {"f": float.__repr__(x)}
    if isinstance(x, complex): return {"c": [float.__repr__(x.real), float.__repr__(x.imag)]}
    if isinstance(x, str): return {"s": str.__str__(x)}
    if isinstance(x, bytes): return {"y": bytes.hex(x)}
    if isinstance(x, range): return {"r": [x.start, x.stop, x.step]}
    if isinstance(x, dict):
        return {"d": [[_enc(k, depth + 1), _enc(v, depth + 1)] for k, v in dict.items(x)]}
    for k, kt in (("l", list), ("t", tuple), ("S", set), ("F", frozenset)):
        if isinstance(x, kt): return {k: [_enc(v, depth + 1) for v in kt.__iter__(x)]}
    raise TypeError("not data: " + type(x).__name__)

def _dec(d):
    (k, v), = d.items()
    if k in ("b", "s"): return v
    if k == "i": return int(v)
    if k == "f": return float(v)
    if k == "c": return complex(float(v[0]), float(v[1]))
    if k == "y": return bytes.fromhex(v)
    if k == "n": return None
    if k == "r": return range(*v)
    if k in "ltSF": return {"l": list, "t": tuple, "S": set, "F": frozenset}[k](map(_dec, v))
    if k == "d": return {_dec(a): _dec(b) for a, b in v}
    raise ValueError(k)
'''

# Runs the completion, then only the leaves; prints one JSON line per leaf: [test, leaf, value].
_MODEL_HARNESS = _CODEC + r'''
import json, os, signal, sys

def _run_all():
    job = json.loads(sys.stdin.read())
    limit, out, write, dumps = job["limit"], os.dup(1), os.write, json.dumps

    class _TestTimeout(BaseException):
        pass

    def _alarm(signum, frame):
        raise _TestTimeout()

    signal.signal(signal.SIGALRM, _alarm)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}

    def run(source, filename, mode):
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            return eval(compile(source, filename, mode), ns)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    try:
        run(job["code"], "solution.py", "exec")
        run(job["setup"], "setup.py", "exec")
    except BaseException:
        return
    for i, leaves in enumerate(job["tests"]):
        for j, (source, mode) in enumerate(leaves):
            try:
                value = run(source, f"test_{i}.py", mode)
                line = dumps([i, j, _enc(value)])
            except BaseException:
                continue
            write(out, (line + "\n").encode())

_run_all()
'''

# Runs WITHOUT the completion: decodes the leaf values and evaluates the rest of each assert.
_CHECK_HARNESS = _CODEC + r'''
import json, signal, sys

def _check_all():
    job = json.loads(sys.stdin.read())
    signal.signal(signal.SIGALRM, signal.default_int_handler)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    verdicts = []
    try:
        exec(compile(job["setup"], "setup.py", "exec"), ns)
    except BaseException:
        print(json.dumps([False] * len(job["tests"])))
        return
    for test in job["tests"]:
        ok = False
        if test["verdict"] is not None:  # a test that is not one assert: the completion's word
            ok = test["verdict"] is True
        elif all(v is not None for v in test["leaves"]):
            env = dict(ns)
            for name in test["modules"]:
                env[name] = __import__(name)
            try:
                for j, v in enumerate(test["leaves"]):
                    env[f"_leaf{j}"] = _dec(v)
                signal.setitimer(signal.ITIMER_REAL, job["limit"])
                ok = bool(eval(compile(test["expr"], "check.py", "eval"), env))
            except BaseException:
                ok = False
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        verdicts.append(ok)
    print(json.dumps(verdicts))

_check_all()
'''


def _text(completion: Any) -> str:
    """A TRL completion: a string or a list of chat messages (the last one's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"completion must be a str or a list of messages, got {type(completion)}")


def extract_code(completion: str) -> str:
    """The last ```python fence's body (an unclosed last fence: up to the end), else the text."""
    opens = list(_OPEN_FENCE.finditer(completion))
    if not opens:
        return completion
    body = completion[opens[-1].end():]
    close = body.find("```")
    return body if close < 0 else body[:close]


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except _UNPARSABLE:
        return False
    return True


def format_ok(completion: str) -> bool:
    """True when the last closed ```python fence parses (ast.parse)."""
    fences = _FENCE.findall(completion)
    return bool(fences) and _parses(fences[-1])


def _defined(setup: str) -> set[str]:
    """Names ``setup`` defines, when it stands on its own (uses no name of the completion; the
    checker then runs it too); else none: what it defines depends on the completion."""
    try:
        tree = ast.parse(setup)
    except _UNPARSABLE:
        return set()
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
               and isinstance(n.ctx, ast.Store)} | {
        (a.asname or a.name).split(".")[0] for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names} | {
        n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | {
        a.arg for n in ast.walk(tree) if isinstance(n, ast.arg) for a in [n]}
    return defined if names <= defined | _TRUSTED else set()


def _code_names(code: str) -> set[str]:
    """Top-level names the completion defines (a ``def sum`` shadows the builtin); a plain
    ``import math`` does not make ``math`` the completion's."""
    try:
        body = ast.parse(code).body
    except _UNPARSABLE:
        return set()
    out: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.With)):
            out |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                    and isinstance(n.ctx, ast.Store)}
        elif isinstance(node, ast.ImportFrom):
            out |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.asname for a in node.names if a.asname and a.asname != a.name}
    return out


def split_assert(test: str, setup: str = "", code: str = "") -> tuple[str, list[str], list[str]] | None:
    """``assert E`` -> (E with every completion-dependent leaf replaced by ``_leafJ``, the
    leaves' sources, the standard-library modules E names); None when ``test`` is not a single
    assert. A name is the completion's unless it is a builtin, a standard-library module or
    defined by ``setup``, and ``code`` does not define it.

    >>> split_assert("assert math.isclose(area(2), 12.56, rel_tol=0.01)")
    ('math.isclose(_leaf0, 12.56, rel_tol=0.01)', ['area(2)'], ['math'])
    """
    try:
        body = ast.parse(test).body
    except _UNPARSABLE:
        return None
    if len(body) != 1 or not isinstance(body[0], ast.Assert):
        return None
    trusted = (_TRUSTED - _code_names(code)) | _defined(setup)
    leaves: list[str] = []

    def model(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id not in trusted for n in ast.walk(node))

    def leaf(node: ast.AST) -> ast.AST:
        leaves.append(ast.unparse(node))
        return ast.copy_location(ast.Name(id=f"_leaf{len(leaves) - 1}", ctx=ast.Load()), node)

    class Split(ast.NodeTransformer):
        def visit(self, node: ast.AST) -> ast.AST:
            if not model(node):
                return node
            if isinstance(node, (ast.Name, *_SCOPES)) or (
                    isinstance(node, ast.Call) and model(node.func)):
                return leaf(node)
            return self.generic_visit(node)

    try:
        expr = Split().visit(body[0].test)
        source = ast.unparse(expr)
    except (RecursionError, ValueError):
        return None
    modules = sorted({n.id for n in ast.walk(expr) if isinstance(n, ast.Name)
                      and n.id in sys.stdlib_module_names and n.id in trusted
                      and n.id not in _defined(setup)})
    return source, leaves, modules


Runner = Callable[..., SandboxResult]


def run_tests(code: str, tests: Sequence[str], setup: str = "", *,
              test_timeout_s: float = TEST_TIMEOUT_S, memory_mb: int = 512,
              runner: Runner | None = None) -> list[bool]:
    """Run ``code`` + ``setup`` + the tests' leaves in one sandbox, judge them in another (module
    docstring, item 3); one bool per test. ``runner``: `run_in_sandbox` or a service client."""
    run = runner or run_in_sandbox
    setup = setup or ""
    splits = [split_assert(t, setup, code) for t in tests]
    jobs = [[(leaf, "eval") for leaf in s[1]] if s else [(t, "exec")]
            for s, t in zip(splits, tests)]
    job = {"limit": test_timeout_s, "code": code, "setup": setup, "tests": jobs}
    n_leaves = sum(len(j) for j in jobs)
    result = run(_MODEL_HARNESS, stdin=json.dumps(job),
                 timeout_s=test_timeout_s * (n_leaves + 1) + 1.0, memory_mb=memory_mb,
                 max_output_chars=16 << 20)
    values: dict[tuple[int, int], Any] = {}
    for line in result.stdout.splitlines():
        try:
            i, j, value = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            continue  # whatever the completion printed that is not a leaf line
        if type(i) is int and type(j) is int and isinstance(value, dict):
            values.setdefault((i, j), value)
    checks = []
    for i, (s, leaves) in enumerate(zip(splits, jobs)):
        found = [values.get((i, j)) for j in range(len(leaves))]
        if s is None:
            checks.append({"verdict": found[0] is not None, "leaves": [], "expr": "", "modules": []})
        else:
            checks.append({"verdict": None, "leaves": found, "expr": s[0], "modules": s[2]})
    if not any(c["verdict"] is None and all(v is not None for v in c["leaves"]) for c in checks):
        return [c["verdict"] is True for c in checks]
    trusted_setup = setup if _defined(setup) or not setup.strip() else ""
    verdict = run(_CHECK_HARNESS, stdin=json.dumps({"setup": trusted_setup, "tests": checks,
                                                    "limit": test_timeout_s}),
                  timeout_s=test_timeout_s * (len(tests) + 1) + 1.0, memory_mb=memory_mb)
    try:
        out = json.loads(verdict.stdout.strip().splitlines()[-1]) if verdict.ok else None
    except (ValueError, IndexError):
        out = None
    if not isinstance(out, list) or len(out) != len(tests):
        return [False] * len(tests)
    return [v is True for v in out]


def _tests_of(value: Any, row: int) -> list[str]:
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else [value]
    if not isinstance(value, Sequence) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"test_list[{row}] must be a list of assert strings, got {value!r}")
    if not value:
        raise ValueError(f"test_list[{row}] is empty: no tests to score against")
    return list(value)


def _score(completion: Any, tests: list[str], setup: str, runner: Runner) -> float:
    text = _text(completion)
    fmt = FORMAT_WEIGHT if format_ok(text) else 0.0
    code = extract_code(text)
    if not _parses(code):
        return fmt  # nothing would run: skip the sandbox
    passed = run_tests(code, tests, setup, runner=runner)
    return PASS_WEIGHT * sum(passed) / len(tests) + fmt


def sandbox_runner(sandbox_url: str | None = None, insecure: bool | None = None) -> Runner:
    """Where the code reward runs code (module docstring, item 4); SandboxUnavailable if nowhere."""
    url = sandbox_url or os.environ.get(SANDBOX_URL_ENV)
    if url:
        from maskgrpo.rewards.sandbox_service import SandboxClient
        return SandboxClient(url)
    layers = check_sandbox(insecure=insecure)
    held = secret_env_names()
    insecure = bool(insecure) if insecure is not None else os.environ.get(
        "MASKGRPO_SANDBOX_INSECURE", "") == "1"
    if "private-uid" not in layers and held and not insecure:
        raise SandboxUnavailable(
            f"code reward: this process holds credentials ({', '.join(held)}) and its sandbox "
            "would share its uid: run `maskgrpo serve-sandbox` and set "
            f"{SANDBOX_URL_ENV} (or params.sandbox_url)")
    return lambda code, **kw: run_in_sandbox(code, insecure=insecure, **kw)


def code_reward(prompts: Sequence[Any], completions: Sequence[Any],
                test_list: Sequence[Any] | None = None,
                test_setup_code: Sequence[str | None] | None = None, *, max_workers: int = 2,
                sandbox_url: str | None = None, insecure: bool | None = None,
                **columns: Any) -> list[float]:
    """2 x test pass rate + 0.5 format, one float per completion (TRL reward signature).

    test_list: per completion, its list of assert strings (MBPP's column; a JSON string of the
    list is accepted too). test_setup_code: per completion, code run after the solution and
    before the tests (MBPP's column), or None. Other columns are ignored. sandbox_url: a
    ``maskgrpo serve-sandbox`` service (default ``MASKGRPO_SANDBOX_URL``); insecure: run here even
    without every isolation layer (module docstring, item 4).
    """
    if test_list is None:
        raise ValueError("code_reward needs the `test_list` column (one list of asserts per "
                         "completion)")
    n = len(completions)
    if len(test_list) != n:
        raise ValueError(f"test_list has {len(test_list)} rows for {n} completions")
    setups = list(test_setup_code) if test_setup_code is not None else [None] * n
    if len(setups) != n:
        raise ValueError(f"test_setup_code has {len(setups)} rows for {n} completions")
    tests = [_tests_of(t, i) for i, t in enumerate(test_list)]
    runner = sandbox_runner(sandbox_url, insecure)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(lambda i: _score(completions[i], tests[i], setups[i] or "", runner),
                             range(n)))
