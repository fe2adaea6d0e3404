"""Issue 14, items 1-2: hostile completions through the code reward, each a reproducer.

Every case is a WRONG solution of ``add`` (or an attack) plus a hack; each must score what the
wrong solution deserves (0 or the format 0.5), the stage process must survive, and nothing may
leak out. They run here (as root: private uid), as uid 65534 with user namespaces, and as
uid 65534 WITHOUT user namespaces, where the sandbox must refuse to run anything (fails closed).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from maskgrpo.rewards import sandbox
from maskgrpo.rewards.code import code_reward, split_assert
from maskgrpo.rewards.sandbox import SandboxUnavailable

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"]
WRONG = "def add(a, b):\n    return a - b\n"  # passes none of TESTS
SYSTEM_PY = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"

# The six reward hacks of the issue (each scored a wrong solution 2.5 before) and more.
HACKS = {
    "rewind-stdin-nonce": WRONG + textwrap.dedent("""
        import sys, os, json
        sys.stdin.seek(0); job = json.loads(sys.stdin.read())
        for i in range(len(job.get('tests', []))):
            os.write(1, f"{job.get('nonce', '')} {i} pass 0.0\\n".encode())
            print(json.dumps([i, 0, {"b": True}]))
        """),
    "sys._getframe": WRONG + textwrap.dedent("""
        import sys
        f = sys._getframe()
        while f:
            for k, v in list(f.f_locals.items()):
                if k in ('nonce', 'job'): print('found', k)
            f = f.f_back
        """),
    "monkeypatch-os.write": WRONG + textwrap.dedent("""
        import os
        _w = os.write
        def write(fd, data):
            return _w(fd, data.replace(b'fail', b'pass').replace(b'"b": false', b'"b": true'))
        os.write = write
        """),
    "replace-builtins.exec": WRONG + textwrap.dedent("""
        import builtins
        builtins.exec = lambda *a, **k: None
        builtins.eval = lambda *a, **k: True
        """),
    "rewrite-stdout-at-exit": WRONG + textwrap.dedent("""
        import atexit, os, json
        def forge():
            os.ftruncate(1, 0); os.lseek(1, 0, 0)
            for i in range(3):
                os.write(1, (json.dumps([i, 0, {"b": True}]) + f"\\nx {i} pass 0.0\\n").encode())
        atexit.register(forge)
        """),
    "always-equal": textwrap.dedent("""
        class Eq(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        class Anything:
            def __eq__(self, other): return True
        def add(a, b):
            return Eq(99)
        """),
    "always-equal-object": "def add(a, b):\n    class A:\n        __eq__ = lambda s, o: True\n    return A()\n",
    "exit-0-early": WRONG + "import os\nos._exit(0)\n",
    "fork_exec-bypass": WRONG + textwrap.dedent("""
        import _posixsubprocess, os
        r, w = os.pipe()
        try:
            _posixsubprocess.fork_exec(['/bin/sh', '-c', 'echo [0,0,{"b":true}]'], [b'/bin/sh'],
                True, (), None, None, -1, -1, -1, w, -1, -1, r, w, True, False, None, None,
                None, -1, None, False)
        except Exception as e:
            print(e)
        """),
    "patch-isinstance": WRONG + "import builtins\nbuiltins.isinstance = lambda *a: True\n",
    "recursion-bomb": "x = " + "-" * 3000 + "1\n",
    "deep-json-answer": WRONG + "print('[' * 100000)\n",
}


def test_split_assert_keeps_expected_values_out_of_the_completion():
    expr, leaves, modules = split_assert("assert add(1, 2) == 3")
    assert (expr, leaves, modules) == ("_leaf0 == 3", ["add(1, 2)"], [])
    assert split_assert("assert sum(10, 15) == 6", code="def sum(a, b): pass")[1] == ["sum(10, 15)"]
    assert split_assert("x = 1") is None


def test_the_reward_hacks_score_a_wrong_solution_zero():
    # A correct solution with each hack appended still scores 2.0 (the hack changes nothing);
    # a wrong one scores 0 (no fence: no format reward).
    names = list(HACKS)
    rewards = code_reward(["p"] * len(names), [HACKS[n] for n in names],
                          test_list=[TESTS] * len(names))
    assert dict(zip(names, rewards)) == dict.fromkeys(names, 0.0)
    right = "def add(a, b):\n    return a + b\n"
    assert code_reward(["p"], [right], test_list=[TESTS]) == [2.0]


def test_concurrent_completions_cannot_see_each_others_files():
    # One completion lists /tmp and every other sandbox's files while the others run.
    spy = WRONG + textwrap.dedent("""
        import os, glob
        found = [p for p in glob.glob('/tmp/**', recursive=True) if 'maskgrpo' in p]
        def add(a, b):
            return len(found)
        """)
    slow = "import time\ntime.sleep(1)\ndef add(a, b):\n    return a + b\n"
    rewards = code_reward(["p"] * 4, [slow, spy, slow, spy],
                          test_list=[TESTS, ["assert add(0, 0) == 0"]] * 2, max_workers=4)
    assert rewards == [2.0, 2.0, 2.0, 2.0]  # spy's add() returned 0: it found nothing


def test_stage_survives_and_secrets_stay_in(monkeypatch):
    secret = "sekret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    target = Path(tempfile.mkdtemp()) / "caller-owned.txt"
    target.write_text("original")
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    port = server.getsockname()[1]
    attacks = {
        "read-parent-environ": "import os\ndata = b''\nfor p in os.listdir('/proc'):\n"
                               "    try: data += open(f'/proc/{p}/environ', 'rb').read()\n"
                               "    except Exception: pass\n"
                               f"def add(a, b):\n    return 3 if {secret!r}.encode() in data else None\n",
        "kill-parent": f"import os, signal\nfor pid in (os.getppid(), {os.getpid()}, 1):\n"
                       "    try: os.kill(pid, signal.SIGKILL)\n    except Exception: pass\n" + WRONG,
        "kill-all": "import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept Exception: pass\n" + WRONG,
        "loopback": f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 1)\n"
                    "except Exception: pass\n" + WRONG,
        "overwrite-caller-file": f"try: open({str(target)!r}, 'w').write('pwned')\n"
                                 "except Exception: pass\n" + WRONG,
        "leftover-process": "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                            "    time.sleep(30)\n    os._exit(0)\n" + WRONG,
    }
    try:
        rewards = code_reward(["p"] * len(attacks), list(attacks.values()),
                              test_list=[TESTS] * len(attacks))
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert dict(zip(attacks, rewards)) == dict.fromkeys(attacks, 0.0)
    assert target.read_text() == "original"
    # A later completion is scored correctly: nothing left behind rewrites its result.
    assert code_reward(["p"], [WRONG], test_list=[TESTS]) == [0.0]


def _as_nobody(script: str, *, userns: bool) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or not os.path.exists(SYSTEM_PY):
        pytest.skip("needs root (to become uid 65534) and the system interpreter")
    path = Path(tempfile.mkdtemp()) / "case.py"
    path.write_text(script)
    path.parent.chmod(0o755)
    path.chmod(0o644)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "AWS_SECRET_ACCESS_KEY": "sekret-x"}
    cmd = [SYSTEM_PY, str(path)]
    if userns:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    else:
        cmd = [SYSTEM_PY, str(HERE / "no_userns.py")] + cmd
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode == 77 or (userns and "setpriv:" in proc.stderr):
        pytest.skip(f"cannot become uid 65534 {'with' if userns else 'without'} user namespaces "
                    f"here: {proc.stderr.strip()[-200:]}")
    return proc


NOBODY_SCRIPT = f"""
import json, sys
from maskgrpo.rewards import sandbox
from maskgrpo.rewards.code import code_reward
HACKS = {json.dumps(HACKS)}
TESTS = {json.dumps(TESTS)}
try:
    layers = sandbox.check_sandbox()
except sandbox.SandboxUnavailable as err:
    print(json.dumps({{"refused": str(err)}}))
    sys.exit(0)
try:
    code_reward(["p"], ["x"], test_list=[TESTS])
except sandbox.SandboxUnavailable as err:  # holds AWS_SECRET_ACCESS_KEY, shares its uid
    held = str(err)
import os
del os.environ["AWS_SECRET_ACCESS_KEY"]
names = list(HACKS)
rewards = code_reward(["p"] * len(names), [HACKS[n] for n in names], test_list=[TESTS] * len(names))
right = code_reward(["p"], ["def add(a, b):\\n    return a + b\\n"], test_list=[TESTS])
print(json.dumps({{"layers": layers, "held": held, "rewards": dict(zip(names, rewards)), "right": right}}))
"""


def test_as_uid_65534_with_user_namespaces_every_hack_scores_zero():
    proc = _as_nobody(NOBODY_SCRIPT, userns=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "refused" in out:
        pytest.skip(f"user namespaces are off for uid 65534 here: {out['refused']}")
    assert "userns" in out["layers"] and "pidns" in out["layers"], out["layers"]
    assert "holds credentials (AWS_SECRET_ACCESS_KEY)" in out["held"]
    assert out["rewards"] == dict.fromkeys(HACKS, 0.0) and out["right"] == [2.0]


def test_as_uid_65534_without_user_namespaces_the_sandbox_fails_closed():
    proc = _as_nobody(NOBODY_SCRIPT, userns=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "refused" in out, out
    assert "private-uid|userns, netns, mountns, pidns not in force" in out["refused"]
    assert "unshare(2) refused" in out["refused"] and "\n" not in out["refused"]
