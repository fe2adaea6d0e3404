"""A reference reward server: any registered reward over the JSON protocol of ``rewards/http.py``.

``serve_reward(name, host="127.0.0.1", port=8000, params=None)`` serves ``POST /`` (the protocol)
and ``GET /health`` (``{"reward": name}``) until interrupted; ``make_server`` returns the server
without serving (tests run it in a thread). What bounds it (issue 14):

- **Parameters** are fixed by the server's configuration (``make_server(..., params=...)``),
  never by a request: request ``columns`` are data only, one list per completion, and only names
  the reward declares (its positional columns; with ``**columns``, any name but its keyword-only
  parameters) are accepted (400 otherwise).
- **Auth**: with a token (``token=`` or the environment variable ``MASKGRPO_REWARD_TOKEN``, from a
  Kubernetes Secret) every request needs ``Authorization: Bearer <token>`` (401). Bound to a
  non-loopback address the server refuses to start without one, unless
  ``allow_unauthenticated=True`` (API only). The default bind is 127.0.0.1.
- **Body**: a ``Content-Length`` of digits, at most ``max_body`` bytes, is required (411/413: a
  negative, absent or chunked length cannot bypass it). Images: PNG only, at most
  ``MAX_PIXELS`` pixels, read from the PNG header before anything decodes them
  (`http.decode_item`).
- **Workers**: at most ``workers`` requests are served at once (a bounded pool); further
  connections wait in a queue of ``workers * 4``, beyond that they are closed. Each connection
  has a deadline (``request_timeout``, default 60 s): a socket timeout per read and a watchdog
  that shuts the socket at the deadline, so half-open or dribbling clients cannot hold a worker.
  The reward function itself cannot be interrupted (a thread): a slow one keeps its worker.

Errors answer JSON ``{"error": ...}``: 400 malformed, 401, 411, 413, 500 when the reward raises.

    maskgrpo serve-reward geneval_strict --port 8000
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import json
import logging
import os
import queue
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable

from maskgrpo.rewards import bind_reward, get_reward
from maskgrpo.rewards.http import decode_item

__all__ = ["BoundedHTTPServer", "MAX_BODY", "TOKEN_ENV", "make_server", "read_body",
           "serve_reward", "reward_columns"]

MAX_BODY = 64 * 1024 * 1024
TOKEN_ENV = "MASKGRPO_REWARD_TOKEN"
log = logging.getLogger("maskgrpo.reward_server")


class HttpError(Exception):
    """An answer to send: status code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BoundedHTTPServer(HTTPServer):
    """An HTTPServer with a fixed pool of worker threads, a bounded queue and a deadline per
    connection (module docstring). ``token``: the bearer token every request must carry."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 workers: int = 4, request_timeout: float = 60.0, token: str | None = None,
                 allow_unauthenticated: bool = False, what: str = "server") -> None:
        if not token and not is_loopback(address[0]) and not allow_unauthenticated:
            raise ValueError(f"{what}: binding {address[0]} (not loopback) needs a bearer token: "
                             f"set {TOKEN_ENV} (e.g. from a Kubernetes Secret)")
        if workers < 1 or not 0 < request_timeout < float("inf"):
            raise ValueError(f"{what}: workers >= 1 and a finite request_timeout > 0 are required")
        self.token, self.request_timeout = token or None, request_timeout
        self._queue: queue.Queue = queue.Queue(maxsize=workers * 4)
        super().__init__(address, handler)
        self._workers = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self._workers:
            t.start()

    def process_request(self, request, client_address) -> None:  # noqa: ANN001
        try:
            self._queue.put_nowait((request, client_address))
        except queue.Full:
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            request, client_address = self._queue.get()
            request.settimeout(self.request_timeout)
            watchdog = threading.Timer(self.request_timeout, _shut, (request,))
            watchdog.daemon = True
            watchdog.start()
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 (a broken connection is the client's business)
                log.debug("connection from %s failed", client_address, exc_info=True)
            finally:
                watchdog.cancel()
                self.shutdown_request(request)

    def authorized(self, header: str | None) -> bool:
        if not self.token:
            return True
        expected = f"Bearer {self.token}".encode()
        return hmac.compare_digest((header or "").encode(), expected)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def read_body(handler: BaseHTTPRequestHandler, max_body: int) -> bytes:
    """The request body, refusing a missing, malformed, negative or too large Content-Length."""
    if handler.headers.get("Transfer-Encoding"):
        raise HttpError(411, "chunked bodies are not accepted: send Content-Length")
    raw = handler.headers.get("Content-Length")
    if raw is None or not raw.strip().isdigit():
        raise HttpError(411, f"Content-Length must be a non-negative integer, got {raw!r}")
    length = int(raw)
    if length > max_body:
        raise HttpError(413, f"request body of {length} bytes exceeds {max_body}")
    data = handler.rfile.read(length)
    if len(data) != length:
        raise HttpError(400, f"body ended after {len(data)} of {length} bytes")
    return data


class JsonHandler(BaseHTTPRequestHandler):
    """Answers JSON; checks the bearer token; subclasses implement ``post(doc) -> doc``."""

    server_version = "maskgrpo/1"
    max_body = MAX_BODY
    protocol_version = "HTTP/1.0"

    def _answer(self, code: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: through logging
        log.debug("%s " + format, self.address_string(), *args)

    def health(self) -> dict[str, Any]:
        return {}

    def post(self, doc: Any) -> dict[str, Any]:
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            self._answer(200, self.health())
        else:
            self._answer(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:  # noqa: N802
        try:
            if not self.server.authorized(self.headers.get("Authorization")):  # type: ignore[attr-defined]
                raise HttpError(401, "missing or wrong bearer token")
            body = read_body(self, self.max_body)
            try:
                doc = json.loads(body.decode("utf-8"))
            except (ValueError, RecursionError) as err:
                raise HttpError(400, f"bad request: not JSON: {str(err)[:200]}") from None
            self._answer(200, self.post(doc))
        except HttpError as err:
            self._answer(err.code, {"error": str(err)})


def reward_columns(fn: Callable[..., Any]) -> tuple[set[str], set[str], bool]:
    """(declared column names, keyword-only parameter names, takes ``**columns``) of a reward."""
    target = getattr(fn, "func", fn)  # functools.partial from bind_reward
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return set(), set(), True
    declared = {p.name for p in params[2:] if p.kind is p.POSITIONAL_OR_KEYWORD}
    kw_only = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
    return declared, kw_only, any(p.kind is p.VAR_KEYWORD for p in params)


def _handler(name: str, fn: Callable[..., list], max_body: int) -> type[BaseHTTPRequestHandler]:
    declared, kw_only, var_kw = reward_columns(fn)

    class Handler(JsonHandler):
        def health(self) -> dict[str, Any]:
            return {"reward": name}

        def post(self, doc: Any) -> dict[str, Any]:
            try:
                prompts, completions = doc["prompts"], [decode_item(c) for c in doc["completions"]]
                columns = doc.get("columns", {})
                if not isinstance(prompts, list) or len(prompts) != len(completions) or not isinstance(columns, dict):
                    raise ValueError("prompts and completions must be lists of equal length; columns an object")
                for key, value in columns.items():
                    if key in kw_only or key in ("prompts", "completions") or not (
                            key in declared or var_kw):
                        raise ValueError(f"column {key!r} is not a data column of reward {name!r} "
                                         f"(columns: {sorted(declared)}; parameters are fixed by the server)")
                    if not isinstance(value, list) or len(value) != len(completions):
                        raise ValueError(f"column {key!r} must be a list of {len(completions)} values")
            except (ValueError, KeyError, TypeError) as err:
                raise HttpError(400, f"bad request: {err}") from None
            try:
                rewards = fn(prompts, completions, **columns)
            except Exception as err:  # the reward's failure is the client's information
                log.exception("reward %s failed", name)
                raise HttpError(500, f"reward {name!r} failed: {type(err).__name__}: {err}") from None
            return {"rewards": [None if r is None else float(r) for r in rewards]}

    Handler.max_body = max_body
    return Handler


def make_server(name: str, host: str = "127.0.0.1", port: int = 8000, *,
                params: dict[str, Any] | None = None, token: str | None = None,
                workers: int = 4, request_timeout: float = 60.0, max_body: int = MAX_BODY,
                allow_unauthenticated: bool = False) -> BoundedHTTPServer:
    """A server for the registered reward ``name`` bound to (host, port); port 0 picks a free one.
    ``token`` defaults to ``$MASKGRPO_REWARD_TOKEN``; ``params`` are the reward's fixed params."""
    fn = bind_reward(name, params) if params else get_reward(name)
    return BoundedHTTPServer((host, port), _handler(name, fn, max_body), workers=workers,
                             request_timeout=request_timeout,
                             token=token if token is not None else os.environ.get(TOKEN_ENV),
                             allow_unauthenticated=allow_unauthenticated, what=f"reward {name!r}")


def serve_forever(server: HTTPServer, what: str) -> None:
    log.info("serving %s on http://%s:%d/", what, *server.server_address[:2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def serve_reward(name: str, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve the registered reward ``name`` until interrupted (the ``maskgrpo serve-reward`` command)."""
    serve_forever(make_server(name, host, port, **options), f"reward {name}")
