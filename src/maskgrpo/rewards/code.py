"""Code reward: 2 x the pass rate of a problem's test asserts, run in the sandbox, + 0.5 format.

Implements docs/algorithm.md section 6, "Code" (the MaskGRPO/d1 MBPP reward):

1. Code = the body of the LAST ```python fence of the completion (an unclosed last fence counts
   up to the end of the text: a generation cut at the length limit still runs); the whole
   completion when there is no fence.
2. Format reward 0.5 when the completion has a closed ```python fence whose body parses
   (``ast.parse``); 0 otherwise.
3. Correctness 2 x (passed / len(test_list)). One sandbox process per completion
   (`rewards.sandbox.run_in_sandbox`): a trusted harness runs the code, then
   ``test_setup_code``, then each assert with its own 5 s limit (SIGALRM), and reports each
   test as it finishes. Measured on 100 MBPP reference solutions (3 tests each, 2 cores, one
   at a time): one process per completion 0.04 s median, ~0.1 s mean; one process per test
   ~0.26 s per problem (each process pays the interpreter start and the namespace set-up), so
   one process per completion it is. The whole process is also killed at
   5 s x (tests + 1) + 1 s of wall time.
4. Reports carry a per-run random nonce that the harness reads from stdin before the model's
   code runs, so ``exit(0)`` or printing fake results earns nothing. Deviation from the reference
   (which only checks the exit status of code + asserts) on purpose. Limits: code that shares the
   interpreter with its tests can always subvert them (an object whose ``__eq__`` is always True,
   digging the nonce out of a frame); the audit hook refuses gc introspection to make the latter
   harder, not impossible.

Completions are parallelised with a small thread pool (2 workers: the machine has 2 cores).

>>> fence = "```python\\ndef add(a, b):\\n    return a + b\\n```"
>>> code_reward(["Add two numbers."], [fence],
...             test_list=[["assert add(1, 2) == 3", "assert add(2, 2) == 5"]])
[1.5]

(One of two asserts passes: 2 x 1/2 = 1.0, plus 0.5 for a fence that parses.)
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from maskgrpo.rewards.sandbox import run_in_sandbox

__all__ = ["code_reward", "extract_code", "format_ok", "run_tests"]

TEST_TIMEOUT_S = 5.0
PASS_WEIGHT, FORMAT_WEIGHT = 2.0, 0.5
_FENCE = re.compile(r"```[ \t]*python3?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_OPEN_FENCE = re.compile(r"```[ \t]*python3?[ \t]*\n", re.IGNORECASE)

# Runs inside the sandbox. Everything it needs comes on stdin, read before the model's code runs.
_HARNESS = r'''
import json, os, signal, sys, time

def _run_all():
    job = json.loads(sys.stdin.read())
    out, limit, nonce = os.dup(1), job["limit"], job.pop("nonce")

    class _TestTimeout(BaseException):
        pass

    def _alarm(signum, frame):
        raise _TestTimeout()

    signal.signal(signal.SIGALRM, _alarm)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}

    def run(label, source, filename):
        start = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            exec(compile(source, filename, "exec"), ns)
            status = "pass"
        except _TestTimeout:
            status = "timeout"
        except BaseException:
            status = "fail"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        os.write(out, f"{nonce} {label} {status} {elapsed:.4f}\n".encode())
        return status == "pass"

    if run("code", job["code"], "solution.py") and run("setup", job["setup"], "setup.py"):
        for i, test in enumerate(job["tests"]):
            run(str(i), test, f"test_{i}.py")

_run_all()
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


def format_ok(completion: str) -> bool:
    """True when the last closed ```python fence parses (ast.parse)."""
    fences = _FENCE.findall(completion)
    if not fences:
        return False
    try:
        ast.parse(fences[-1])
    except (SyntaxError, ValueError):
        return False
    return True


def run_tests(code: str, tests: Sequence[str], setup: str = "", *,
              test_timeout_s: float = TEST_TIMEOUT_S, memory_mb: int = 512) -> list[bool]:
    """Run ``code``, then ``setup``, then each test in one sandbox; one bool per test."""
    nonce = secrets.token_hex(16)
    job = {"nonce": nonce, "limit": test_timeout_s, "code": code, "setup": setup or "",
           "tests": list(tests)}
    result = run_in_sandbox(_HARNESS, stdin=json.dumps(job),
                            timeout_s=test_timeout_s * (len(tests) + 1) + 1.0,
                            memory_mb=memory_mb, max_output_chars=16 << 20)
    passed = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == nonce and parts[2] == "pass":
            passed.add(parts[1])
    return [str(i) in passed for i in range(len(tests))]


def _tests_of(value: Any, row: int) -> list[str]:
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else [value]
    if not isinstance(value, Sequence) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"test_list[{row}] must be a list of assert strings, got {value!r}")
    if not value:
        raise ValueError(f"test_list[{row}] is empty: no tests to score against")
    return list(value)


def _score(completion: Any, tests: list[str], setup: str) -> float:
    text = _text(completion)
    fmt = FORMAT_WEIGHT if format_ok(text) else 0.0
    code = extract_code(text)
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return fmt  # nothing would run: skip the sandbox
    passed = run_tests(code, tests, setup)
    return PASS_WEIGHT * sum(passed) / len(tests) + fmt


def code_reward(prompts: Sequence[Any], completions: Sequence[Any],
                test_list: Sequence[Any] | None = None,
                test_setup_code: Sequence[str | None] | None = None, *, max_workers: int = 2,
                **columns: Any) -> list[float]:
    """2 x test pass rate + 0.5 format, one float per completion (TRL reward signature).

    test_list: per completion, its list of assert strings (MBPP's column; a JSON string of the
    list is accepted too). test_setup_code: per completion, code run after the solution and
    before the tests (MBPP's column), or None. Other columns are ignored.
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
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        return list(pool.map(lambda i: _score(completions[i], tests[i], setups[i] or ""),
                             range(n)))
