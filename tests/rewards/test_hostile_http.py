"""Issue 14, item 3: hostile clients against the reward/sandbox servers, hostile servers against
the client. Real servers on loopback; each case is a reproducer from the issue."""

import json
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from maskgrpo.rewards.code import code_reward
from maskgrpo.rewards.http import HttpReward, RewardServerError, encode_item
from maskgrpo.rewards.sandbox import SandboxUnavailable
from maskgrpo.rewards.sandbox_service import SandboxClient, make_sandbox_server
from maskgrpo.rewards.server import make_server

SRC = Path(__file__).resolve().parents[2] / "src"


def _raw(url: str, data: bytes) -> tuple[int, dict]:
    host, port = url.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def _post(url: str, doc: dict, headers: str = "") -> tuple[int, dict]:
    body = json.dumps(doc).encode()
    return _raw(url, f"POST / HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
                .encode() + body)


def test_columns_cannot_override_reward_params(served):
    # Before: columns became keyword arguments, so a client set the `http` reward's url and
    # headers_env, and the server POSTed its own env secret to the client's address.
    url = served(make_server("http", "127.0.0.1", 0, params={"url": "http://127.0.0.1:9/"}))
    for column in ("url", "headers_env", "timeout"):
        code, doc = _post(url, {"prompts": ["p"], "completions": ["c"], "columns": {column: ["x"]}})
        assert code == 400 and f"column {column!r} is not a data column" in doc["error"], doc
    code_url = served(make_server("code", "127.0.0.1", 0))
    for column in ("sandbox_url", "insecure", "max_workers"):
        code, doc = _post(code_url, {"prompts": ["p"], "completions": ["c"],
                                     "columns": {column: [True]}})
        assert code == 400 and "parameters are fixed by the server" in doc["error"], doc
    code, doc = _post(code_url, {"prompts": ["p"], "completions": ["c"],
                                 "columns": {"test_list": "not a list"}})
    assert code == 400 and "must be a list of 1 values" in doc["error"]


@pytest.mark.parametrize("length", ["-1", "", "abc", "1e9", None, "chunked"])
def test_a_bad_content_length_cannot_bypass_the_body_limit(served, length):
    url = served(make_server("sort_exact", "127.0.0.1", 0))
    header = {None: "", "chunked": "Transfer-Encoding: chunked\r\n"}.get(
        length, f"Content-Length: {length}\r\n")
    code, doc = _raw(url, f"POST / HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode() + b"x" * 4096)
    assert code == 411 and "Content-Length" in doc["error"], doc


def test_an_oversize_body_is_refused_unread(served):
    url = served(make_server("sort_exact", "127.0.0.1", 0, max_body=1000))
    code, doc = _raw(url, b"POST / HTTP/1.1\r\nContent-Length: 300000000\r\n\r\n{")
    assert code == 413 and "exceeds 1000" in doc["error"]


def _png_bomb(width: int, height: int) -> bytes:
    """A real, valid PNG of width x height black grey pixels, compressed to a few hundred KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    comp, rows, parts = zlib.compressobj(6), b"\0" * ((width + 1) * 500), []
    for _ in range(height // 500):
        parts.append(comp.compress(rows))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def test_a_decompression_bomb_png_is_refused_by_its_header(served):
    bomb = _png_bomb(10_000, 10_000)  # 100 MP
    assert len(bomb) < 400_000
    url = served(make_server("geneval_strict", "127.0.0.1", 0))
    code, doc = _post(url, {"prompts": ["p"], "completions": [encode_item(bomb)],
                            "columns": {"metadata": [{}]}})
    assert code == 400 and "10000x10000 image exceeds" in doc["error"], doc


def test_half_open_connections_cannot_exhaust_the_server(served):
    server = make_server("sort_exact", "127.0.0.1", 0, workers=2, request_timeout=0.3)
    url = served(server)
    before = threading.active_count()
    idle = [socket.create_connection(server.server_address[:2]) for _ in range(30)]
    time.sleep(0.2)
    # a bounded pool: no thread per connection (before: one thread per connection)
    assert threading.active_count() - before <= 2  # one deadline watchdog per worker
    client = HttpReward(url, timeout=30, retries=3, backoff=0.2)
    assert client(["sort:21="], ["12"], answer=["12"]) == [1.0]  # served once the idle ones time out
    for s in idle:
        s.close()


def test_bearer_token_required_off_loopback_and_checked(served, monkeypatch):
    monkeypatch.delenv("MASKGRPO_REWARD_TOKEN", raising=False)
    with pytest.raises(ValueError, match="not loopback.*needs a bearer token"):
        make_server("sort_exact", "0.0.0.0", 0)
    url = served(make_server("sort_exact", "127.0.0.1", 0, token="t0ken"))
    doc = {"prompts": ["sort:21="], "completions": ["12"], "columns": {"answer": ["12"]}}
    assert _post(url, doc)[0] == 401
    assert _post(url, doc, "Authorization: Bearer wrong\r\n")[0] == 401
    assert _post(url, doc, "Authorization: Bearer t0ken\r\n") == (200, {"rewards": [1.0]})
    assert HttpReward(url, headers={"Authorization": "Bearer t0ken"})(
        ["sort:21="], ["12"], answer=["12"]) == [1.0]


class Hostile(BaseHTTPRequestHandler):
    """A hostile reward server: mode = redirect | huge | nan | inf | dribble | string."""

    mode, target, seen = "", "", []

    def do_POST(self):  # noqa: N802
        Hostile.seen.append(dict(self.headers))
        self.rfile.read(int(self.headers["Content-Length"]))
        if Hostile.mode == "redirect":
            self.send_response(307)
            self.send_header("Location", Hostile.target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = {"huge": b'{"rewards": [' + b"1.0, " * 5_000_000 + b"1.0]}",
                "nan": b'{"rewards": [NaN]}', "inf": b'{"rewards": [1e999]}',
                "string": b'{"rewards": ["1.0"]}', "dribble": b'{"rewards": [1.0]}' + b" " * 60}[
            Hostile.mode]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if Hostile.mode == "dribble":  # one byte every 0.2 s: ~16 s in all, a valid answer
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.2)
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_client_never_forwards_credentials_on_a_redirect(served):
    other = served(ThreadingHTTPServer(("127.0.0.1", 0), Hostile))  # "another origin"
    url = served(ThreadingHTTPServer(("127.0.0.1", 0), Hostile))
    Hostile.mode, Hostile.target, Hostile.seen = "redirect", other.replace("127.0.0.1", "localhost"), []
    with pytest.raises(RewardServerError, match="HTTP 307.*redirects are not followed"):
        HttpReward(url, headers={"Authorization": "Bearer secret"}, retries=0)(["p"], ["c"])
    assert len(Hostile.seen) == 1  # the redirect target never got a request


@pytest.mark.parametrize("mode,match", [("huge", "exceeds"), ("nan", "finite"), ("inf", "finite"),
                                        ("string", "finite")])
def test_the_client_refuses_huge_or_non_finite_answers(served, mode, match):
    url = served(ThreadingHTTPServer(("127.0.0.1", 0), Hostile))
    Hostile.mode = mode
    with pytest.raises(RewardServerError, match=match):
        HttpReward(url, retries=0)(["p"], ["c"])


def test_a_dribbling_server_cannot_hold_the_client_past_its_deadline(served):
    # Each byte arrives well within a per-read timeout; only a total deadline stops it. Without
    # one the client would wait ~16 s and then succeed: here it must fail.
    url = served(ThreadingHTTPServer(("127.0.0.1", 0), Hostile))
    Hostile.mode = "dribble"
    with pytest.raises(RewardServerError, match="no complete answer within 1 s"):
        HttpReward(url, timeout=1.0, retries=0)(["p"], ["c"])


# ---------------------------------------------------------------- the sandbox service

def test_sandbox_service_refuses_to_start_holding_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    with pytest.raises(SandboxUnavailable, match=r"holds credentials \(AWS_SECRET_ACCESS_KEY\)"):
        make_sandbox_server("127.0.0.1", 0)


def test_code_reward_through_the_sandbox_service(served, monkeypatch):
    for name in [k for k in __import__("os").environ if "SECRET" in k or "TOKEN" in k]:
        monkeypatch.delenv(name)
    url = served(make_sandbox_server("127.0.0.1", 0))
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    right, wrong = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return 0\n"
    hack = wrong + "import builtins\nbuiltins.eval = lambda *a, **k: True\n"
    assert code_reward(["p"] * 3, [right, wrong, hack], test_list=[tests] * 3,
                       sandbox_url=url) == [2.0, 0.0, 0.0]
    res = SandboxClient(url)("import os; print(os.getpid())", timeout_s=5)
    assert res.ok and res.stdout == "2\n" and "pidns" in res.layers  # pid 2 of its namespace
    code, doc = _post(url.rstrip("/") + "/", {"code": "print(1)", "timeout_s": 1e9})
    assert code == 404  # only /run
    body = json.dumps({"code": "print(1)", "timeout_s": float("nan")})
    code, doc = _raw(url, f"POST /run HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
    assert code == 400 and "timeout_s must be a number" in doc["error"]


def test_serve_sandbox_command_fails_closed_in_one_line():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), "AWS_SECRET_ACCESS_KEY": "x"}
    proc = subprocess.run([sys.executable, "-m", "maskgrpo.cli", "serve-sandbox", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds credentials (AWS_SECRET_ACCESS_KEY)" in lines[0]
