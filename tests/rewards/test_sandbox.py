"""maskgrpo.rewards.sandbox: every escape is contained, with and without the audit hook.

Each escape runs twice: with the audit hook (the default) and with it off, which shows that the
process / rlimit / uid / namespace layers hold on their own. An audit-off case skips, saying
which layer is missing, on machines where that layer could not be set up.
"""

import doctest
import os
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from maskgrpo.rewards import sandbox
from maskgrpo.rewards.sandbox import run_in_sandbox, sandbox_layers

REPO = Path(__file__).resolve().parents[2]
LAYERS = sandbox_layers()
AUDIT = pytest.mark.parametrize("audit_hook", [True, False], ids=["audit-on", "audit-off"])


def _needs(audit_hook: bool, *layers: str) -> None:
    """Skip an audit-off case when none of the layers that contain it is in force here."""
    if not audit_hook and not any(layer in LAYERS for layer in layers):
        pytest.skip(f"without the audit hook this needs one of {layers}; in force: {LAYERS}")


def _sandbox_uid_processes() -> list[int]:
    """Live processes of the private sandbox uids (root only): an escapee would be one."""
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) >= sandbox._UidPool.BASE and "Z" not in fields["State"]:
            out.append(int(status.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a killed orphan may stay a zombie until init reaps it


def test_runs_code_and_reports_layers():
    res = run_in_sandbox("import sys\nprint(6 * 7)\nprint('oops', file=sys.stderr)")
    assert (res.ok, res.returncode, res.stdout, res.reason) == (True, 0, "42\n", "")
    assert "oops" in res.stderr
    assert res.layers == LAYERS and {"process", "rlimits", "audit-hook"} <= set(res.layers)
    print("layers in force:", LAYERS, sandbox._support().notes)


def test_exit_status_and_stdin():
    res = run_in_sandbox("import sys\nprint(sys.stdin.read().upper())\nsys.exit(3)",
                         stdin="hello")
    assert (res.ok, res.returncode, res.stdout, res.reason) == (False, 3, "HELLO\n", "exit code 3")


def test_scratch_dir_is_cwd_writable_and_deleted_afterwards():
    name = f"f-{uuid.uuid4().hex}.txt"
    res = run_in_sandbox(f"import os\nopen({name!r}, 'w').write('x' * 10)\n"
                         f"print(os.getcwd())\nprint(os.path.getsize({name!r}))")
    cwd, size = res.stdout.split()
    assert res.ok and size == "10"
    if "mountns" in LAYERS:  # a private tmpfs on /tmp: gone with the namespace
        assert cwd == "/tmp" and not os.path.exists(os.path.join(cwd, name))
    else:
        assert not os.path.exists(cwd), "the scratch directory must be removed after the run"


def test_output_is_truncated():
    res = run_in_sandbox("print('x' * 1000)", max_output_chars=100)
    assert res.stdout == "x" * 100 + "\n[... truncated]"


@AUDIT
def test_caller_environment_is_not_visible(monkeypatch, audit_hook):
    _needs(audit_hook, "private-uid")  # else /proc/<parent>/environ is readable (same user)
    secret = "sekret-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code = ("import os\nprint(sorted(os.environ))\nprint(os.environ.get('AWS_SECRET_ACCESS_KEY'))\n"
            "try:\n    print(open(f'/proc/{os.getppid()}/environ', 'rb').read())\n"
            "except OSError as e:\n    print('refused', type(e).__name__)\n")
    res = run_in_sandbox(code, audit_hook=audit_hook)
    assert res.ok, res.stderr
    assert secret not in res.stdout and secret not in res.stderr
    # Only the minimal environment the sandbox sets itself:
    assert res.stdout.splitlines()[0] == "['HOME', 'LC_ALL', 'PATH', 'TMPDIR']"
    assert "refused" in res.stdout


@AUDIT
def test_network_to_a_loopback_server_fails(audit_hook):
    _needs(audit_hook, "netns")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def serve():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except socket.timeout:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "s.sendall(b'leak')\nprint('connected')")
        res = run_in_sandbox(code, audit_hook=audit_hook)
        # Control: the server is reachable from outside the sandbox.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert not res.ok and "connected" not in res.stdout
    assert len(accepted) == 1, "only the control connection may reach the server"
    expected = "refused" if audit_hook else "Network is unreachable"
    assert expected in res.stderr, res.stderr


@AUDIT
@pytest.mark.parametrize("where", ["tmp", "repo"])
def test_writing_outside_the_scratch_dir_fails(audit_hook, where):
    needed = ("mountns",) if where == "tmp" else ("mountns", "private-uid")
    _needs(audit_hook, *needed)
    folder = tempfile.gettempdir() if where == "tmp" else str(REPO)
    target = os.path.join(folder, f"sandbox-escape-{uuid.uuid4().hex}")
    code = f"open({target!r}, 'w').write('escaped')\nprint('wrote')"
    try:
        res = run_in_sandbox(code, audit_hook=audit_hook)
        if not (where == "tmp" and "mountns" in LAYERS):  # else it wrote its private /tmp
            assert not res.ok and "wrote" not in res.stdout
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


@AUDIT
def test_fork_bomb_is_contained_and_cleaned_up(audit_hook):
    _needs(audit_hook, "private-uid", "userns")
    if not audit_hook and os.geteuid() == 0 and "private-uid" not in LAYERS:
        pytest.skip("root without a private uid: RLIMIT_NPROC would not apply")
    code = ("import os, time\n"
            "while True:\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except BlockingIOError:  # EAGAIN: RLIMIT_NPROC reached\n"
            "        time.sleep(60)\n"
            "        continue\n"
            "    if pid:\n"
            "        print(pid, flush=True)\n")
    res = run_in_sandbox(code, timeout_s=2.0, max_procs=16, audit_hook=audit_hook)
    assert not res.ok, res.reason
    pids = [int(p) for p in res.stdout.split() if p.isdigit()]
    if audit_hook:
        assert pids == [] and "os.fork refused" in res.stderr
    else:
        # RLIMIT_NPROC = 16 counts the sandbox's processes: at most 15 forks succeed.
        assert res.timed_out and 0 < len(pids) <= 15, (len(pids), res.reason)
    if "pidns" in LAYERS:  # the pids are the namespace's: look for the sandbox uid instead
        assert "private-uid" not in LAYERS or _sandbox_uid_processes() == []
    else:
        assert not any(_alive(p) for p in pids), "every forked process is killed"


@pytest.mark.skipif("private-uid" not in LAYERS, reason="needs the private-uid layer (root)")
def test_setsid_escapee_is_killed_after_the_run():
    # The child leaves the process group (killpg misses it); the per-uid sweep still kills it.
    code = ("import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(60)\n"
            "else:\n    print(pid)\n")
    res = run_in_sandbox(code, audit_hook=False)
    assert res.ok, res.stderr
    assert _sandbox_uid_processes() == []
    if "pidns" not in LAYERS:
        assert not _alive(int(res.stdout))


@AUDIT
@pytest.mark.parametrize("code", ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"],
                         ids=["busy", "sleep"])
def test_infinite_loop_is_killed_at_the_timeout(audit_hook, code):
    start = time.monotonic()
    res = run_in_sandbox(code, timeout_s=1.0, audit_hook=audit_hook)
    wall = time.monotonic() - start
    assert res.timed_out and not res.ok and res.returncode == -9  # SIGKILLed by the timeout
    assert wall >= 1.0, wall  # not before it
    assert res.reason.startswith("timed out after 1 s")


def test_cpu_limit_stops_a_busy_loop_before_the_wall_clock():
    res = run_in_sandbox("while True:\n    pass\n", timeout_s=20.0, cpu_s=1)
    assert not res.timed_out  # RLIMIT_CPU ended it, not the 20 s wall-clock timeout
    assert res.reason.startswith(("CPU time limit", "killed")), res.reason


@AUDIT
@pytest.mark.parametrize("code", ["x = bytearray(8 * 1024**3)\nprint('allocated')\n",
                                  "chunks = []\nwhile True:\n    chunks.append(b'x' * 2**24)\n"],
                         ids=["one-block", "growing"])
def test_memory_bomb_fails_with_memory_error(audit_hook, code):
    res = run_in_sandbox(code, memory_mb=256, audit_hook=audit_hook)
    assert not res.ok and not res.timed_out and "allocated" not in res.stdout
    assert "MemoryError" in res.stderr, res.stderr[-500:]


def test_file_size_limit():
    # Python ignores SIGXFSZ, so the write past RLIMIT_FSIZE raises EFBIG ("File too large").
    res = run_in_sandbox("open('big', 'wb').write(b'x' * (3 * 2**20))", max_file_mb=1)
    assert not res.ok and "File too large" in res.stderr, res.stderr[-300:]


def test_concurrent_runs_from_threads():
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run_in_sandbox(f"print({i} * {i})"), range(8)))
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(8)]


def test_probe_turns_off_layers_that_cannot_be_set_up(monkeypatch):
    # A kernel that refuses unshare(2): the namespace layers go, the notes say why.
    class NoNamespaces:
        mount, prctl = sandbox._LIBC.mount, sandbox._LIBC.prctl

        @staticmethod
        def unshare(flags):
            return -1

    monkeypatch.setattr(sandbox, "_LIBC", NoNamespaces)
    support = sandbox._probe()
    assert support.netns is None and not support.ro_mounts and not support.pidns
    assert any("netns unavailable: unshare(2) refused" in n for n in support.notes), support.notes
    assert any("mountns unavailable" in n for n in support.notes)
    assert any("pidns unavailable" in n for n in support.notes)
    assert support.missing(network=False) == ["netns", "mountns", "pidns"]


def test_audit_hook_alone_still_refuses_network_and_outside_writes(monkeypatch):
    # The weakest fallback (no uid switch, no namespaces): only the audit hook says no.
    weakest = sandbox._Support(python=sandbox._support().python, drop_uid=False, netns=None,
                               ro_mounts=False)
    monkeypatch.setattr(sandbox, "_SUPPORT", weakest)
    target = os.path.join(tempfile.gettempdir(), f"sandbox-escape-{uuid.uuid4().hex}")
    with pytest.raises(sandbox.SandboxUnavailable, match="netns, mountns, pidns not in force"):
        run_in_sandbox("print(1)")  # fails closed ...
    net = run_in_sandbox("import socket\nsocket.socket()", insecure=True)  # ... unless insecure
    write = run_in_sandbox(f"open({target!r}, 'w')", insecure=True)
    assert net.layers == ("process", "rlimits", "audit-hook")
    assert not net.ok and "socket.__new__ refused" in net.stderr
    assert not write.ok and "write outside the scratch directory" in write.stderr
    assert not os.path.exists(target)


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="timeout_s"):
        run_in_sandbox("pass", timeout_s=0)


def test_doctests():
    result = doctest.testmod(sandbox)
    assert result.attempted == 2 and result.failed == 0
