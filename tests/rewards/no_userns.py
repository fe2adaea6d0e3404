"""Run a command as uid/gid 65534 where user namespaces are OFF (test helper; needs root).

``python no_userns.py CMD...``: the command runs inside a user namespace that maps every uid
one-to-one (so it is uid 65534 everywhere, like a non-root pod) whose ``user.max_user_namespaces``
is 0, so it cannot create user namespaces: the situation of a non-root container under
RuntimeDefault seccomp/AppArmor. Exits 77 when it cannot set that up (not root, no user namespaces).
"""

import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000


def main() -> None:
    if os.geteuid() != 0:
        sys.exit(77)
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r), os.close(go_w)
        if libc.unshare(CLONE_NEWUSER) != 0:
            os._exit(77)
        os.write(ready_w, b"x")
        os.read(go_r, 1)  # the parent has written the identity maps
        try:
            with open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
        except OSError:
            os._exit(77)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        os.execvp(sys.argv[1], sys.argv[1:])
    os.close(ready_w), os.close(go_r)
    os.read(ready_r, 1)
    try:
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("0 0 4294967295")
    except OSError:
        os.kill(pid, 9)
        sys.exit(77)
    os.write(go_w, b"x")
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
