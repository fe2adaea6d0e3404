"""Run model-written Python in a separate, resource-limited, network-less process that fails closed.

Layers (docs/algorithm.md section 6, "Code": a sandbox with no network, CPU/memory/time limits).
`sandbox_layers()` says which are in force on this machine (probed once per process, each layer
checked by a real trial run); every `SandboxResult` carries the same tuple.

1. **process**: a new ``python -I -S -B`` with an EMPTY environment (``PATH``, ``HOME=/tmp``,
   ``TMPDIR=/tmp``, ``LC_ALL``), in its own session; a wall-clock timeout SIGKILLs the process
   group. Standard input is a 0600 file in a directory private to the caller, so the job is
   visible to this run only.
2. **rlimits**: RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_CORE=0,
   plus ``PR_SET_NO_NEW_PRIVS`` and ``PR_SET_PDEATHSIG``. The probe reads them back in the child.
3. **private-uid** (caller is root) or **userns** (caller is not: ``CLONE_NEWUSER`` with the
   caller's uid mapped to uid 1000 inside, so the exec'd interpreter has no capabilities): the
   code cannot signal, trace or read the caller. As root each call gets a uid of its own
   (``_UidPool``) and every leftover process of that uid is killed after the run.
4. **netns**: ``CLONE_NEWNET``, an empty network namespace (every connect fails, loopback too).
5. **mountns**: ``CLONE_NEWNS``; every mount is remounted read-only, a fresh size-limited tmpfs
   is mounted on ``/tmp`` (the cwd: concurrent runs cannot see each other's files) and on
   ``/dev/shm``, and an empty read-only tmpfs covers ``/proc`` (no other process is visible).
6. **pidns**: ``CLONE_NEWPID``; a trusted prelude forks pid 1 of the namespace (with
   ``PR_SET_PDEATHSIG``), which runs the code as pid 2: killing the prelude kills every process
   the code started, including ``setsid`` escapees, and no pid outside is addressable.
7. **audit-hook** (``sys.addaudithook``, optional): refuses sockets, outside writes, subprocesses,
   ctypes and gc introspection with clear errors. NOT a boundary (bypassed in one line through
   ``_posixsubprocess``); layers 1-6 are.

**Fails closed.** Layers 1-6 are REQUIRED (``network=True`` waives netns). When one is missing,
`run_in_sandbox` raises `SandboxUnavailable` (one line naming the missing layers and why) instead
of running the code, unless ``insecure=True`` is passed (``MASKGRPO_SANDBOX_INSECURE=1`` in the
environment, or ``maskgrpo serve-sandbox --insecure``): then the code runs with the layers that
are left, which a hostile completion can escape. Where user namespaces are off for non-root
users (RuntimeDefault seccomp/AppArmor), run ``maskgrpo serve-sandbox`` where they are on (the
chart's sandbox Deployment) and point the code reward at it (``MASKGRPO_SANDBOX_URL``).

``secret_env_names()`` lists environment variables that look like credentials; the sandbox
service refuses to start while its own environment has any (the child never sees them either way).

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

__all__ = ["REQUIRED_LAYERS", "SandboxResult", "SandboxUnavailable", "check_sandbox",
           "run_in_sandbox", "sandbox_layers", "secret_env_names"]

_CLONE_NEWNS, _CLONE_NEWPID = 0x00020000, 0x20000000
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND = 32, 1024, 2048, 4096
_MS_REC, _MS_PRIVATE, _MS_RELATIME = 16384, 1 << 18, 1 << 21
_MOUNT_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC,
                "noatime": _MS_NOATIME, "nodiratime": _MS_NODIRATIME, "relatime": _MS_RELATIME}
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_ENV_PATH = "/usr/bin:/bin"
_INNER_UID = 1000  # the caller's uid inside a user namespace: not 0, so exec drops capabilities
INSECURE_ENV = "MASKGRPO_SANDBOX_INSECURE"
#: Every layer but the audit hook must be in force (netns only when network=False).
REQUIRED_LAYERS = ("process", "rlimits", "private-uid|userns", "netns", "mountns", "pidns")
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|"
                          r"SESSION_KEY|AUTH", re.IGNORECASE)


class SandboxUnavailable(RuntimeError):
    """A required isolation layer is not in force here: the code was not run (fails closed)."""


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


def secret_env_names(environ: dict[str, str] | None = None, allow: tuple[str, ...] = ()) -> list[str]:
    """Names of environment variables that look like credentials (AWS_SECRET_ACCESS_KEY, *_TOKEN,
    *PASSWORD*, *API_KEY*, ...), minus ``allow``; sorted."""
    env = os.environ if environ is None else environ
    return sorted(k for k, v in env.items() if v and k not in allow and _SECRET_NAME.search(k))


# ---------------------------------------------------------------- the prelude (runs in the child)

_PRELUDE = r'''
import os, sys
def _maskgrpo_sandbox(audit, network, pidns):  # argv: audit network pidns code-fd
    if pidns:
        # This process stays outside the new pid namespace and relays the exit status; its child
        # is pid 1 (init) of the namespace, and the code runs as pid 2, an ordinary process (the
        # kernel ignores default-action signals such as SIGXCPU for an init). When pid 1 exits,
        # the kernel kills every process left in the namespace.
        _relay(os.fork())
        import ctypes
        ppid = os.getppid()
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG: SIGKILL
        if os.getppid() != ppid:
            os._exit(137)
        _relay(os.fork(), init=True)
    with os.fdopen(int(sys.argv[4]), "r", encoding="utf-8") as f:  # an inherited descriptor
        code = compile(f.read(), "main.py", "exec")
    if audit:
        _install_hook(os.path.realpath(os.getcwd()), network)
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

def _relay(pid, init=False):
    """In the parent of ``pid``: wait for it (as init: reaping every orphan meanwhile), then exit
    the way it did. Returns in the child."""
    if not pid:
        return
    import signal
    while True:
        try:
            got, status = os.waitpid(-1 if init else pid, 0)
        except InterruptedError:
            continue
        if got == pid:
            break
    code = os.waitstatus_to_exitcode(status)
    if init:  # an init cannot kill itself with a signal: 128 + N says "killed by signal N"
        os._exit(128 - code if code < 0 else code)
    if code < 0 or 128 < code < 128 + signal.NSIG:  # (an exit(129..) of the code reads the same)
        sig = -code if code < 0 else code - 128
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(code)

_maskgrpo_sandbox(sys.argv[1] == "1", sys.argv[2] == "1", sys.argv[3] == "1")
'''


# ---------------------------------------------------------------- what this machine supports

@dataclass(frozen=True)
class _Support:
    python: str  # interpreter path for the child
    drop_uid: bool  # root only: run as a private uid
    netns: str | None  # "root" | "userns" | None
    ro_mounts: bool  # mount namespace: read-only mounts, private /tmp, /proc covered
    pidns: bool = False
    rlimits: bool = True  # read back in force by the probe
    notes: tuple[str, ...] = ()

    def layers(self, network: bool, audit_hook: bool) -> tuple[str, ...]:
        out = ["process"] + (["rlimits"] if self.rlimits else [])
        if self.drop_uid:
            out.append("private-uid")
        elif self.netns == "userns":
            out.append("userns")
        if self.netns and not network:
            out.append("netns")
        if self.ro_mounts:
            out.append("mountns")
        if self.pidns:
            out.append("pidns")
        if audit_hook:
            out.append("audit-hook")
        return tuple(out)

    def missing(self, network: bool) -> list[str]:
        have = set(self.layers(network, False))
        need = [layer for layer in REQUIRED_LAYERS if not (network and layer == "netns")]
        return [layer for layer in need if not have & set(layer.split("|"))]


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


_LIMIT_CHECK = ("import resource, os\nassert resource.getrlimit(resource.RLIMIT_NPROC)[1] == 16\n"
                "assert resource.getrlimit(resource.RLIMIT_AS)[1] == 512 << 20\n"
                "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n")


def _probe() -> _Support:
    """Try each layer once with a tiny program; keep what works, note why the rest is off."""
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
    steps = [("netns", dict(netns="root" if root else "userns"), "pass"),
             ("mountns", dict(ro_mounts=True), "open('/tmp/probe', 'w').write('x')\n"
              "import os\nassert not os.listdir('/proc')"),
             ("pidns", dict(pidns=True), "import os\nassert os.getpid() == 2")]
    for name, change, code in steps:
        trial = _Support(**{**support.__dict__, **change})
        res = _spawn(code, trial, audit_hook=False, network=False)
        if res.ok:
            support = trial
        else:
            why = _unshare_error(trial) or f"{res.reason} {res.stderr.strip()[-160:]}".strip()
            notes.append(f"{name} unavailable: {why}")
    res = _spawn(_LIMIT_CHECK, support, audit_hook=False, network=False)
    if not res.ok:
        notes.append(f"rlimits not in force: {res.stderr.strip()[-160:]}")
    return _Support(**{**support.__dict__, "rlimits": res.ok, "notes": tuple(notes)})


def _unshare_error(support: _Support) -> str | None:
    """Why unshare(2) with this support's namespaces fails here (tried in a forked child)."""
    flags = ((_CLONE_NEWNET if support.netns else 0) | (_CLONE_NEWNS if support.ro_mounts else 0)
             | (_CLONE_NEWPID if support.pidns else 0)
             | (_CLONE_NEWUSER if os.geteuid() != 0 else 0))
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        os._exit(0 if _LIBC.unshare(flags) == 0 else min(ctypes.get_errno(), 254) or 255)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code <= 0:
        return None
    return "unshare(2) refused" + (f": {os.strerror(code)}" if code < 255 else "")


def _support() -> _Support:
    global _SUPPORT
    with _PROBE_LOCK:
        if _SUPPORT is None:
            _SUPPORT = _probe()
        return _SUPPORT


def sandbox_layers(network: bool = False, audit_hook: bool = True) -> tuple[str, ...]:
    """The isolation layers `run_in_sandbox` uses on this machine (probed once per process), e.g.
    ``('process', 'rlimits', 'private-uid', 'netns', 'mountns', 'pidns', 'audit-hook')``."""
    return _support().layers(network, audit_hook)


def _insecure(insecure: bool | None) -> bool:
    return bool(insecure) if insecure is not None else os.environ.get(INSECURE_ENV, "") == "1"


def check_sandbox(network: bool = False, insecure: bool | None = None) -> tuple[str, ...]:
    """The layers in force; `SandboxUnavailable` (one line: the missing layers and why) when a
    required one is missing, unless ``insecure`` (default: ``MASKGRPO_SANDBOX_INSECURE=1``)."""
    support = _support()
    missing = support.missing(network)
    if missing and not _insecure(insecure):
        why = "; ".join(support.notes) or "not supported here"
        raise SandboxUnavailable(
            f"sandbox: required isolation layer(s) {', '.join(missing)} not in force ({why}); "
            "refusing to run model code. Run `maskgrpo serve-sandbox` where user namespaces are "
            f"available and set MASKGRPO_SANDBOX_URL, or set {INSECURE_ENV}=1 to run without them")
    return support.layers(network, False)


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


def _make_preexec(support: _Support, network: bool, scratch: str | None, uid: int | None,
                  limits: list[tuple[int, int, int]], tmp_mb: int):
    """The function the forked child runs before exec. Order matters: namespaces need the
    caller's privileges, so they come first; then the uid drop; then prctl and rlimits."""
    mounts = _mounts() if support.ro_mounts else []
    netns = support.netns if not network else None
    userns = support.netns == "userns" or (
        (support.ro_mounts or support.pidns) and os.geteuid() != 0)
    flags = ((_CLONE_NEWNET if netns else 0) | (_CLONE_NEWNS if support.ro_mounts else 0)
             | (_CLONE_NEWPID if support.pidns else 0))
    my_uid, my_gid = os.getuid(), os.getgid()
    unshare, mount, prctl = _LIBC.unshare, _LIBC.mount, _LIBC.prctl
    tmp_opts = f"size={tmp_mb}m,mode=1777".encode()
    hidden = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    has_shm = os.path.isdir("/dev/shm")

    def preexec() -> None:
        if flags and userns:
            _check(unshare(flags | _CLONE_NEWUSER), "unshare(user+net/mount/pid)")
            _write_proc("/proc/self/setgroups", "deny")
            _write_proc("/proc/self/uid_map", f"{_INNER_UID} {my_uid} 1")
            _write_proc("/proc/self/gid_map", f"{_INNER_UID} {my_gid} 1")
        elif flags:
            _check(unshare(flags), "unshare(net/mount/pid)")
        if support.ro_mounts:
            _check(mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
            for point, keep in mounts:
                rc = mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | keep, None)
                if point == b"/":
                    _check(rc, "remount / read-only")
            _check(mount(b"tmpfs", b"/tmp", b"tmpfs", _MS_NOSUID | _MS_NODEV, tmp_opts),
                   "private /tmp")
            if has_shm:
                mount(b"tmpfs", b"/dev/shm", b"tmpfs", _MS_NOSUID | _MS_NODEV, tmp_opts)
            _check(mount(b"tmpfs", b"/proc", b"tmpfs", hidden, b"size=4k,mode=555"),
                   "cover /proc")
            os.chdir("/tmp")
        elif scratch is not None:
            os.chdir(scratch)
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


def _private_file(base: str, name: str, data: bytes = b"") -> str:
    path = os.path.join(base, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _spawn(code: str, support: _Support, *, timeout_s: float = 5.0, memory_mb: int = 512,
           cpu_s: float | None = None, max_file_mb: int = 16, max_procs: int = 16,
           network: bool = False, stdin: str | bytes | None = None, audit_hook: bool = True,
           max_output_chars: int = 64_000) -> SandboxResult:
    layers = support.layers(network, audit_hook)
    base = tempfile.mkdtemp(prefix="maskgrpo-sandbox-")  # 0700: only the caller reads its files
    scratch = None
    uid = _UIDS.acquire() if support.drop_uid else None
    start = time.monotonic()
    try:
        if not support.ro_mounts:  # no private tmpfs: a scratch directory of our own
            os.chmod(base, 0o711)  # the sandbox uid may traverse to it, not list the rest
            scratch = os.path.join(base, "work")
            os.mkdir(scratch, 0o700)
            if uid is not None:
                os.chown(scratch, uid, uid)
        stdin_b = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        code_path = _private_file(base, "code", code.encode("utf-8", "surrogatepass"))
        in_path = _private_file(base, "stdin", stdin_b)
        out_path, err_path = _private_file(base, "stdout"), _private_file(base, "stderr")
        cpu = max(1, math.ceil(cpu_s if cpu_s is not None else timeout_s + 1))
        limits = [(resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20),
                  (resource.RLIMIT_CPU, cpu, cpu + 1),
                  (resource.RLIMIT_FSIZE, max_file_mb << 20, max_file_mb << 20),
                  (resource.RLIMIT_NPROC, max_procs, max_procs),
                  (resource.RLIMIT_NOFILE, 64, 64),
                  (resource.RLIMIT_CORE, 0, 0)]
        home = "/tmp" if support.ro_mounts else scratch
        env = {"PATH": _ENV_PATH, "HOME": home, "TMPDIR": home, "LC_ALL": "C.UTF-8"}
        argv = [support.python, "-I", "-S", "-B", "-X", "utf8", "-c", _PRELUDE,
                "1" if audit_hook else "0", "1" if network else "0",
                "1" if support.pidns else "0"]
        with open(code_path, "rb") as fcode, open(in_path, "rb") as fin, \
                open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            try:
                proc = subprocess.Popen(
                    argv + [str(fcode.fileno())], stdin=fin, stdout=fout, stderr=ferr, cwd=home or "/", env=env,
                    close_fds=True, start_new_session=True, pass_fds=(fcode.fileno(),),
                    preexec_fn=_make_preexec(support, network, scratch, uid, limits,
                                             max_file_mb))
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
                   audit_hook: bool = True, max_output_chars: int = 64_000,
                   insecure: bool | None = None) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a fresh sandboxed interpreter (see the module docstring).

    timeout_s: wall clock; the whole process group is SIGKILLed at the deadline.
    memory_mb: address-space limit. cpu_s: CPU seconds (default timeout_s + 1).
    max_file_mb: largest file the code may write (stdout/stderr included); also the size of
    its private /tmp. max_procs: RLIMIT_NPROC (processes + threads of the sandbox uid).
    network: True leaves the network namespace and the socket refusal out.
    stdin: bytes or text fed to the code's standard input.
    audit_hook: False skips the audit hook (to test that the other layers hold on their own).
    max_output_chars: stdout and stderr are each cut to this many bytes (then decoded).
    insecure: run even when a required layer is missing (default: ``MASKGRPO_SANDBOX_INSECURE``);
    otherwise that raises `SandboxUnavailable` and nothing runs.
    """
    if not (0 < timeout_s < math.inf) or memory_mb <= 0 or max_file_mb <= 0 or max_procs <= 0:
        raise ValueError("run_in_sandbox: timeout_s, memory_mb, max_file_mb and max_procs must "
                         f"be positive (got {timeout_s}, {memory_mb}, {max_file_mb}, {max_procs})")
    check_sandbox(network, insecure)
    return _spawn(code, _support(), timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s,
                  max_file_mb=max_file_mb, max_procs=max_procs, network=network, stdin=stdin,
                  audit_hook=audit_hook, max_output_chars=max_output_chars)
