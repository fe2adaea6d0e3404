"""maskgrpo.rewards.code: reward arithmetic, extraction, reward hacks, escapes, real MBPP data.

Reward = 2 x (passed / tests) + 0.5 if the completion has a ```python fence that parses.
"""

import ast
import doctest
import json
import os
import random
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

from maskgrpo.rewards import code as code_mod
from maskgrpo.rewards.code import code_reward, extract_code, format_ok, run_tests

REPO = Path(__file__).resolve().parents[2]
MBPP = REPO.parent / "shared" / "data" / "benchmarks" / "mbpp.jsonl"
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]


def fence(code: str) -> str:
    return f"Here is my answer.\n```python\n{code}```\nDone."


def mbpp_rows() -> list[dict]:
    if not MBPP.exists():
        pytest.skip(f"MBPP benchmark data not found at {MBPP} (shared data absent)")
    return [json.loads(line) for line in MBPP.read_text().splitlines()]


# ---------------------------------------------------------------- extraction and format

def test_extract_code_takes_the_last_python_fence():
    text = "```python\nx = 1\n```\nthen\n```python\ny = 2\n```"
    assert extract_code(text) == "y = 2\n"


def test_extract_code_unclosed_last_fence_and_no_fence():
    assert extract_code("prose\n```python\nz = 3\n") == "z = 3\n"
    assert extract_code("x = 1") == "x = 1"


def test_format_ok_needs_a_closed_fence_that_parses():
    assert format_ok(fence(ADD))
    assert not format_ok(fence("def broken(:\n"))
    assert not format_ok(ADD)  # no fence
    assert not format_ok("```python\nx = 1\n")  # never closed


# ---------------------------------------------------------------- arithmetic

def test_reward_values():
    completions = [
        fence(ADD),  # 3/3 pass + format: 2 * 1 + 0.5 = 2.5
        ADD,  # no fence, still runs: 2 * 1 + 0 = 2.0
        fence("def add(a, b):\n    return a * b\n"),  # only 2*2 == 2+2 passes: 2/3 + 0.5
        fence("def add(a, b):\n    return None\n"),  # 0 pass + format = 0.5
        fence("def add(a, b:\n"),  # does not parse: no format, nothing runs = 0.0
        [{"role": "assistant", "content": fence(ADD)}],  # chat message form: 2.5
    ]
    rewards = code_reward(["p"] * 6, completions, test_list=[ADD_TESTS] * 6)
    assert rewards == pytest.approx([2.5, 2.0, 2 * 1 / 3 + 0.5, 0.5, 0.0, 2.5])


def test_setup_code_runs_after_the_solution_and_before_the_tests():
    code = ("class Box:\n    def __init__(self, v):\n        self.v = v\n"
            "def get(b):\n    return b.v\n")
    rewards = code_reward(["p"], [code], test_list=[["assert get(box) == 7"]],
                          test_setup_code=["box = Box(7)"])
    assert rewards == [2.0]


def test_test_list_as_json_string_and_column_errors():
    assert code_reward(["p"], [ADD], test_list=[json.dumps(ADD_TESTS)]) == [2.0]
    with pytest.raises(ValueError, match="test_list"):
        code_reward(["p"], [ADD])
    with pytest.raises(ValueError, match="test_list has 1 rows for 2 completions"):
        code_reward(["p", "p"], [ADD, ADD], test_list=[ADD_TESTS])
    with pytest.raises(ValueError, match=r"test_list\[0\] is empty"):
        code_reward(["p"], [ADD], test_list=[[]])


def test_each_test_has_its_own_time_limit():
    # The second test never ends; SIGALRM stops it at the per-test limit and the third runs.
    code = "def f(n):\n    while n == 2:\n        pass\n    return n\n"
    tests = ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"]
    assert run_tests(code, tests, test_timeout_s=1.0) == [True, False, True]


# ---------------------------------------------------------------- reward hacks earn nothing

@pytest.mark.parametrize("hack", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "raise SystemExit(0)\n",
    "for i in range(3):\n    print('x', i, 'pass', '0.0')\n",
], ids=["sys.exit", "os._exit", "SystemExit", "fake-report"])
def test_exiting_early_or_faking_reports_scores_zero(hack):
    # A wrong solution that exits with status 0 before the asserts would get full marks from an
    # exit-status check; here each assert is judged outside the completion's process.
    wrong = "def add(a, b):\n    return None\n"
    assert code_reward(["p"], [wrong + hack], test_list=[ADD_TESTS]) == [0.0]


# ---------------------------------------------------------------- escapes: contained, scored 0

def test_escapes_are_contained_and_score_zero(monkeypatch):
    secret = "sekret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    outside = [os.path.join(tempfile.gettempdir(), f"escape-{uuid.uuid4().hex}"),
               str(REPO / f"escape-{uuid.uuid4().hex}")]
    ok = "\ndef f():\n    return True\n"  # reached only if the escape succeeded
    escapes = {
        "network": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
                   + ok,
        "write-tmp": f"open({outside[0]!r}, 'w').write('x')" + ok,
        "write-repo": f"open({outside[1]!r}, 'w').write('x')" + ok,
        "fork-bomb": "import os\nwhile True:\n    os.fork()\n" + ok,
        "infinite-loop": "while True:\n    pass\n" + ok,
        "memory-bomb": "x = bytearray(16 * 1024**3)" + ok,
        "env-var": f"import os\nassert os.environ.get('AWS_SECRET_ACCESS_KEY') == {secret!r}" + ok,
    }
    try:
        rewards = code_reward(["p"] * len(escapes), list(escapes.values()),
                              test_list=[["assert f()"]] * len(escapes))
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    finally:
        server.close()
        for path in outside:
            if os.path.exists(path):
                os.remove(path)
                pytest.fail(f"the sandbox wrote {path}")
    # The write to /tmp lands in the sandbox's private tmpfs (checked absent above), so that
    # correct solution runs on and scores 2.0; every other escape fails and scores 0. The infinite
    # loop is stopped by the 5 s per-stage alarm (2 workers run the rest): had it not been,
    # code_reward would not have returned.
    assert dict(zip(escapes, rewards)) == {**dict.fromkeys(escapes, 0.0), "write-tmp": 2.0}


# ---------------------------------------------------------------- real MBPP data

def _wrong(code: str) -> str:
    """The reference solution with every top-level function redefined to return None."""
    names = [n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)]
    return code + "".join(f"\ndef {n}(*args, **kwargs):\n    return None\n" for n in names)


def _mbpp_check(rows: list[dict], with_wrong: bool) -> None:
    """Each reference scores 2.5 (3/3 tests + format); its wrong variant scores strictly less."""
    right = [fence(r["code"].replace("\r\n", "\n") + "\n") for r in rows]
    wrong = [fence(_wrong(r["code"].replace("\r\n", "\n")) + "\n") for r in rows]
    copies = 2 if with_wrong else 1
    kw = dict(test_list=[r["test_list"] for r in rows] * copies,
              test_setup_code=[r["test_setup_code"] for r in rows] * copies)
    rewards = code_reward([r["text"] for r in rows] * copies,
                          right + wrong if with_wrong else right, **kw)
    good, bad = rewards[:len(rows)], rewards[len(rows):]
    # A few references are slow (task 123 takes ~4 s of its 5 s on an idle 2-core box); on a
    # loaded machine those can hit the limit. Re-run them with a generous limit: a reference
    # must pass its tests, the 5 s limit itself is tested elsewhere.
    slow = [r for r, g in zip(rows, good) if g != 2.5]
    failing = [r["task_id"] for r in slow
               if not all(run_tests(r["code"], r["test_list"], r["test_setup_code"],
                                    test_timeout_s=60.0))]
    assert failing == [], f"reference solutions that fail their own tests: {failing}"
    if slow:
        print("passed only with a 60 s limit (machine load):", [r["task_id"] for r in slow])
    assert all(b < g for g, b in zip(good, bad)), [
        (r["task_id"], b) for r, b in zip(rows, bad) if b >= 2.5]


def test_mbpp_sample_reference_passes_and_wrong_scores_lower():
    rows = mbpp_rows()
    _mbpp_check(random.Random(0).sample(rows, 40), with_wrong=True)  # the full set is below


@pytest.mark.slow
def test_mbpp_all_974_reference_solutions_pass_their_own_tests():
    # ~35 s on 2 cores. Wrong variants of all 974 double that: the sample above checks those.
    rows = mbpp_rows()
    assert len(rows) == 974
    _mbpp_check(rows, with_wrong=False)


def test_doctests():
    result = doctest.testmod(code_mod)
    assert result.attempted > 0 and result.failed == 0
