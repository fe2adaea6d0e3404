"""Run model-written Python in a separate, resource-limited, network-less process.

What is implemented (docs/algorithm.md section 6, "Code": a sandbox with no network, CPU/memory/time
limits), layer by layer, strongest first. `sandbox_layers()` says which layers are in force on
the running machine; every `SandboxResult` carries the same tuple.

1. **Process.** The code runs in a new process, ``python -I -S -B`` (isolated mode: no user site,
   no ``PYTHON*`` variables, no site-packages, no bytecode writes), with an EMPTY environment
   (only ``PATH=/usr/bin:/bin``, ``HOME`` and ``TMPDIR`` pointing at the scratch directory: the
   caller's AWS keys and everything else stay out), a fresh scratch directory as its cwd (deleted
   afterwards), in its own session (``start_new_session=True``). A wall-clock timeout SIGKILLs the
   whole process group (``os.killpg``); leftover processes are killed after every run too.
2. **Resource limits** (``resource.setrlimit`` in ``preexec_fn``): RLIMIT_AS (memory_mb),
   RLIMIT_CPU (cpu_s; SIGXCPU, then SIGKILL one second later), RLIMIT_FSIZE (max_file_mb; stdout
   and stderr go to files, so this also caps output), RLIMIT_NPROC (max_procs), RLIMIT_NOFILE,
   RLIMIT_CORE = 0. ``PR_SET_NO_NEW_PRIVS`` (no set-uid escalation) and ``PR_SET_PDEATHSIG``
   (the sandbox dies with its parent).
3. **Unprivileged user** (when the caller is root, as in this container and in CI): the child
   switches to a uid/gid of its own, picked per call from a private range (``_UidPool``), so root
   bypasses nothing: RLIMIT_NPROC is enforced (root ignores it), files of other users and
   ``/proc/<pid>/environ`` of the caller are unreadable, and after the run every process of that
   uid is killed, including any that escaped the process group with ``setsid``. The interpreter
   must be readable by that uid: ``sys.executable`` if it is, else a system ``python3.X`` of the
   same version (here ``/usr/bin/python3.11``: the venv's pyenv interpreter lives under the
   0700 ``/root``); with none, this layer is off.
4. **Namespaces** (Linux ``unshare(2)`` through ctypes libc in ``preexec_fn``; ``os.unshare``
   needs Python 3.12). *Network*: ``CLONE_NEWNET`` gives the child an empty network namespace
   (a DOWN loopback only: every connect, loopback included, fails with ENETUNREACH). As root
   this works directly; otherwise it is tried inside a new user namespace
   (``CLONE_NEWUSER``, own uid mapped). *Filesystem*: ``CLONE_NEWNS`` plus a bind mount of the
   scratch directory onto itself and a read-only bind-remount of every other mount point, so
   nothing outside the scratch directory is writable, whatever the uid. Each namespace is probed
   once per process; a failed probe turns that layer off (and `sandbox_layers()` says so).
5. **Audit hook** (``sys.addaudithook``, installed by a prelude before the code runs): refuses
   ``socket.*`` (unless network=True), writes/renames/removals outside the scratch directory,
   reading other processes' ``/proc/<pid>``, subprocess/exec/fork/kill, ctypes and gc
   introspection. An audit hook is NOT a security boundary: code in the same interpreter can
   reach around it (``os.open`` with ``dir_fd``, C extensions, ...). It is a second layer that
   gives clear errors; the boundary is layers 1-4.

Known limits: without root there is no private uid, so the child runs as the caller's user:
``/proc/<parent>/environ`` is then refused only by the audit hook, and escapees that call
``setsid`` are bounded only by RLIMIT_CPU; without user namespaces as well, only layers 1, 2
and 5 hold. ``preexec_fn`` is documented as unsafe
with threads in the parent; the one here only calls pre-resolved libc functions and ``os``/
``resource`` builtins (no imports, no locks), which is the safe subset in practice.

Example (``python -m doctest -v src/maskgrpo/rewards/sandbox.py``):

>>> run_in_sandbox("print(6 * 7)").stdout
'42\\n'
>>> run_in_sandbox("import socket; socket.create_connection(('127.0.0.1', 80), timeout=1)").ok
False
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

__all__ = ["SandboxResult", "run_in_sandbox", "sandbox_layers"]

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND = 32, 1024, 2048, 4096
_MS_REC, _MS_PRIVATE, _MS_RELATIME = 16384, 1 << 18, 1 << 21
_MOUNT_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC,
                "noatime": _MS_NOATIME, "nodiratime": _MS_NODIRATIME, "relatime": _MS_RELATIME}
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_ENV_PATH = "/usr/bin:/bin"


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run. ``ok`` = exited with status 0 before the timeout."""

    ok: bool
    returncode: int | None  # None when the sandbox could not start; negative = killed by signal
    stdout: str  # decoded UTF-8, truncated to max_output_chars
    stderr: str
    timed_out: bool
    reason: str  # "" when ok, else why not: "exit code 1", "timed out after 2.0 s", ...
    layers: tuple[str, ...] = ()  # isolation layers in force, see sandbox_layers()
    wall_s: float = 0.0


# ---------------------------------------------------------------- the prelude (runs in the child)

_PRELUDE = r'''
import os, sys
def _maskgrpo_sandbox(root, audit, network):
    with open("main.py", encoding="utf-8") as f:
        code = compile(f.read(), "main.py", "exec")
    if audit:
        _install_hook(os.path.realpath(root), network)
    g = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": "main.py"}
    del sys.modules["__main__"].__dict__["_maskgrpo_sandbox"]
    exec(code, g)

def _install_hook(root, network):
    realpath, join, fspath, getcwd = os.path.realpath, os.path.join, os.fspath, os.getcwd
    prefix, me = root + os.sep, str(os.getpid())
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    deny = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.fork", "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen",
        "ctypes.dlsym", "ctypes.cdata", "gc.get_objects", "gc.get_referrers",
        "gc.get_referents", "pty.spawn"})
    # event -> (indices of paths that must lie inside root, indices of dir_fd arguments)
    paths = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
        "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)),
        "os.truncate": ((0,), ()), "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)),
        "os.symlink": ((1,), (2,)), "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
        "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()), "os.mkfifo": ((0,), (2,)),
        "os.mknod": ((0,), (3,)), "shutil.rmtree": ((0,), (1,))}

    def resolve(p):
        if isinstance(p, bytes):
            p = p.decode("utf-8", "surrogateescape")
        return realpath(join(getcwd(), fspath(p)))

    def inside(p):
        if isinstance(p, int):
            return True  # an already open descriptor
        full = resolve(p)
        return full == root or full.startswith(prefix)

    def refuse(event, what):
        raise PermissionError(f"sandbox: {event} refused ({what})")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (flags & writes)
            if writing and not inside(path):
                refuse(event, f"write outside the scratch directory: {path!r}")
            if not isinstance(path, int) and "proc" in str(path):
                parts = resolve(path).split(os.sep)
                if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != me:
                    refuse(event, f"another process's /proc entry: {path!r}")
        elif event in deny or (not network and event.startswith("socket.")):
            refuse(event, "not allowed in the sandbox")
        elif event in paths:
            path_idx, fd_idx = paths[event]
            if any(i < len(args) and args[i] not in (None, -100) for i in fd_idx):
                refuse(event, "dir_fd-relative paths")
            for i in path_idx:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    refuse(event, f"outside the scratch directory: {args[i]!r}")

    sys.addaudithook(hook)

_maskgrpo_sandbox(sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1")
'''


# ---------------------------------------------------------------- what this machine supports

@dataclass(frozen=True)
class _Support:
    python: str  # interpreter path for the child
    drop_uid: bool  # root only: run as a private uid
    netns: str | None  # "root" | "userns" | None
    ro_mounts: bool  # mount namespace with everything but the scratch dir read-only
    notes: tuple[str, ...] = ()

    def layers(self, network: bool, audit_hook: bool) -> tuple[str, ...]:
        out = ["process", "rlimits"]
        if self.drop_uid:
            out.append("private-uid")
        if self.netns and not network:
            out.append(f"netns({self.netns})")
        if self.ro_mounts:
            out.append("readonly-mounts")
        if audit_hook:
            out.append("audit-hook")
        return tuple(out)


class _UidPool:
    """Per-call uids (root only): base + (pid mod 1e6) * 64 + slot, so concurrent sandboxes of
    this process and of other processes rarely share a uid (and hence RLIMIT_NPROC and the
    kill-by-uid sweep)."""

    BASE, SLOTS = 1_600_000_000, 64

    def __init__(self) -> None:
        self._free = list(range(self.SLOTS))
        self._cond = threading.Condition()

    def acquire(self) -> int:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._free))
            slot = self._free.pop(0)
        return self.BASE + (os.getpid() % 1_000_000) * self.SLOTS + slot

    def release(self, uid: int) -> None:
        with self._cond:
            self._free.append((uid - self.BASE) % self.SLOTS)
            self._cond.notify()


_UIDS = _UidPool()
_PROBE_LOCK = threading.Lock()
_SUPPORT: _Support | None = None
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.unshare.argtypes = [ctypes.c_int]
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_LIBC.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def _mounts() -> list[tuple[bytes, int]]:
    """(mount point, per-mount flags to keep) for every line of /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            flags = 0
            for opt in fields[5].decode().split(","):
                flags |= _MOUNT_FLAGS.get(opt, 0)
            out.append((point, flags))
    return out


def _python_candidates() -> list[str]:
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    names = [sys.executable, os.path.realpath(sys.executable),
             getattr(sys, "_base_executable", sys.executable),
             f"/usr/bin/python{v}", f"/usr/local/bin/python{v}"]
    return list(dict.fromkeys(n for n in names if n and os.path.exists(n)))


def _probe() -> _Support:
    """Try each layer once with a tiny program; keep what works."""
    notes: list[str] = []
    root = os.geteuid() == 0
    support = _Support(python=sys.executable, drop_uid=False, netns=None, ro_mounts=False)
    check = "import encodings, json, re, math, collections, itertools"
    if root:
        for py in _python_candidates():
            trial = _Support(python=py, drop_uid=True, netns=None, ro_mounts=False)
            if _spawn(check, trial, audit_hook=False, network=True).ok:
                support = trial
                break
        else:
            notes.append("no interpreter readable by an unprivileged uid: running as root")
    for kind in (("root",) if root else ("userns",)):
        trial = _Support(support.python, support.drop_uid, kind, False)
        res = _spawn("pass", trial, audit_hook=False, network=False)
        if res.ok:
            support = trial
        else:
            notes.append(f"network namespace unavailable: {res.reason}")
    trial = _Support(support.python, support.drop_uid, support.netns, True)
    res = _spawn("open('probe', 'w').write('x')", trial, audit_hook=False, network=False)
    if res.ok:
        support = trial
    else:
        notes.append(f"read-only mount namespace unavailable: {res.reason}")
    return _Support(support.python, support.drop_uid, support.netns, support.ro_mounts,
                    tuple(notes))


def _support() -> _Support:
    global _SUPPORT
    with _PROBE_LOCK:
        if _SUPPORT is None:
            _SUPPORT = _probe()
        return _SUPPORT


def sandbox_layers(network: bool = False, audit_hook: bool = True) -> tuple[str, ...]:
    """The isolation layers `run_in_sandbox` uses on this machine (probed once per process), e.g.
    ``('process', 'rlimits', 'private-uid', 'netns(root)', 'readonly-mounts', 'audit-hook')``."""
    return _support().layers(network, audit_hook)


# ---------------------------------------------------------------- the child's setup

def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write_proc(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _make_preexec(support: _Support, network: bool, scratch: str, uid: int | None,
                  limits: list[tuple[int, int, int]]):
    """The function the forked child runs before exec. Order matters: namespaces need the
    caller's privileges, so they come first; then the uid drop; then prctl and rlimits."""
    scratch_b = scratch.encode()
    mounts = _mounts() if support.ro_mounts else []
    netns = support.netns if not network else None
    userns = support.netns == "userns" or (support.ro_mounts and os.geteuid() != 0)
    flags = (_CLONE_NEWNET if netns else 0) | (_CLONE_NEWNS if support.ro_mounts else 0)
    my_uid, my_gid = os.getuid(), os.getgid()
    unshare, mount, prctl = _LIBC.unshare, _LIBC.mount, _LIBC.prctl

    def preexec() -> None:
        if flags and userns:
            _check(unshare(flags | _CLONE_NEWUSER), "unshare(user+net/mount)")
            _write_proc("/proc/self/setgroups", "deny")
            _write_proc("/proc/self/uid_map", f"{my_uid} {my_uid} 1")
            _write_proc("/proc/self/gid_map", f"{my_gid} {my_gid} 1")
        elif flags:
            _check(unshare(flags), "unshare(net/mount)")
        if support.ro_mounts:
            _check(mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
            _check(mount(scratch_b, scratch_b, None, _MS_BIND | _MS_REC, None), "bind scratch")
            for point, keep in mounts:
                rc = mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | keep, None)
                if point == b"/":
                    _check(rc, "remount / read-only")
            os.chdir(scratch)  # the cwd inherited from Popen is on the old, now read-only, mount
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _check(prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))

    return preexec


# ---------------------------------------------------------------- running and cleaning up

def _uid_pids(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
        if int(fields.get(b"Uid", b"-1 ").split()[0]) == uid and b"Z" not in fields.get(
                b"State", b"")[:3]:
            pids.append(int(name))
    return pids


def _kill_leftovers(pgid: int, uid: int | None) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(50 if uid is not None else 0):  # a fork bomb may refill between sweeps
        pids = _uid_pids(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait for the child to exit WITHOUT reaping it (its pid keeps the process group id
    reserved until we have killed the group). True when it exited before the deadline."""
    pause = 0.001
    while True:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(pause, deadline - now))
        pause = min(pause * 2, 0.02)


def _read(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[... truncated]" if len(data) > limit else "")


def _rmtree(path: str) -> None:
    def fix(func, p, _exc):
        os.chmod(os.path.dirname(p), 0o700)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
        func(p)

    shutil.rmtree(path, onerror=fix)


def _reason(rc: int, timed_out: bool, timeout_s: float) -> str:
    if timed_out:
        return f"timed out after {timeout_s:g} s (process group killed)"
    if rc == 0:
        return ""
    if rc < 0:
        sig = signal.Signals(-rc)
        why = {signal.SIGXCPU: "CPU time limit", signal.SIGXFSZ: "file size limit",
               signal.SIGKILL: "killed (CPU hard limit or out of memory)"}.get(sig, "signal")
        return f"{why}: {sig.name}"
    return f"exit code {rc}"


def _spawn(code: str, support: _Support, *, timeout_s: float = 5.0, memory_mb: int = 512,
           cpu_s: float | None = None, max_file_mb: int = 16, max_procs: int = 16,
           network: bool = False, stdin: str | bytes | None = None, audit_hook: bool = True,
           max_output_chars: int = 64_000) -> SandboxResult:
    layers = support.layers(network, audit_hook)
    base = tempfile.mkdtemp(prefix="maskgrpo-sandbox-")
    os.chmod(base, 0o711)  # the sandbox uid may traverse to its scratch dir, not list the rest
    scratch = os.path.join(base, "work")
    os.mkdir(scratch, 0o700)
    uid = _UIDS.acquire() if support.drop_uid else None
    start = time.monotonic()
    try:
        with open(os.path.join(scratch, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        if uid is not None:
            os.chown(scratch, uid, uid)
        stdin_b = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        with open(os.path.join(base, "stdin"), "wb") as f:
            f.write(stdin_b)
        cpu = max(1, math.ceil(cpu_s if cpu_s is not None else timeout_s + 1))
        limits = [(resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
                  (resource.RLIMIT_CPU, cpu, cpu + 1),
                  (resource.RLIMIT_FSIZE, max_file_mb << 20, max_file_mb << 20),
                  (resource.RLIMIT_NPROC, max_procs, max_procs),
                  (resource.RLIMIT_NOFILE, 64, 64),
                  (resource.RLIMIT_CORE, 0, 0)]
        env = {"PATH": _ENV_PATH, "HOME": scratch, "TMPDIR": scratch, "LC_ALL": "C.UTF-8"}
        argv = [support.python, "-I", "-S", "-B", "-X", "utf8", "-c", _PRELUDE, scratch,
                "1" if audit_hook else "0", "1" if network else "0"]
        out_path, err_path = os.path.join(base, "stdout"), os.path.join(base, "stderr")
        with open(os.path.join(base, "stdin"), "rb") as fin, open(out_path, "wb") as fout, \
                open(err_path, "wb") as ferr:
            try:
                proc = subprocess.Popen(
                    argv, stdin=fin, stdout=fout, stderr=ferr, cwd=scratch, env=env,
                    close_fds=True, start_new_session=True,
                    preexec_fn=_make_preexec(support, network, scratch, uid, limits))
            except (OSError, subprocess.SubprocessError) as exc:
                return SandboxResult(False, None, "", "", False,
                                     f"could not start the sandbox: {exc}", layers)
        exited = _wait_unreaped(proc.pid, start + timeout_s)
        _kill_leftovers(proc.pid, uid)
        rc = proc.wait()
        wall = time.monotonic() - start
        return SandboxResult(
            ok=exited and rc == 0, returncode=rc, stdout=_read(out_path, max_output_chars),
            stderr=_read(err_path, max_output_chars), timed_out=not exited,
            reason=_reason(rc, not exited, timeout_s), layers=layers, wall_s=wall)
    finally:
        if uid is not None:
            _UIDS.release(uid)
        _rmtree(base)


def run_in_sandbox(code: str, *, timeout_s: float = 5.0, memory_mb: int = 512,
                   cpu_s: float | None = None, max_file_mb: int = 16, max_procs: int = 16,
                   network: bool = False, stdin: str | bytes | None = None,
                   audit_hook: bool = True, max_output_chars: int = 64_000) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a fresh sandboxed interpreter (see the module docstring).

    timeout_s: wall clock; the whole process group is SIGKILLed at the deadline.
    memory_mb: address-space limit. cpu_s: CPU seconds (default timeout_s + 1).
    max_file_mb: largest file the code may write (stdout/stderr included).
    max_procs: RLIMIT_NPROC (processes + threads of the sandbox uid).
    network: True leaves the network namespace and the socket refusal out.
    stdin: bytes or text fed to the code's standard input.
    audit_hook: False skips layer 5 (to test that layers 1-4 hold on their own).
    max_output_chars: stdout and stderr are each cut to this many bytes (then decoded).
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_file_mb <= 0 or max_procs <= 0:
        raise ValueError("run_in_sandbox: timeout_s, memory_mb, max_file_mb and max_procs must "
                         f"be positive (got {timeout_s}, {memory_mb}, {max_file_mb}, {max_procs})")
    return _spawn(code, _support(), timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s,
                  max_file_mb=max_file_mb, max_procs=max_procs, network=network, stdin=stdin,
                  audit_hook=audit_hook, max_output_chars=max_output_chars)
