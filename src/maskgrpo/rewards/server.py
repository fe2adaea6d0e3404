"""A reference reward server: any registered reward over the JSON protocol of ``rewards/http.py``.

``serve_reward(name, host="127.0.0.1", port=8000)`` serves ``POST /`` (the protocol) and
``GET /health`` (``{"reward": name}``) with the standard library's threading HTTP server until
interrupted; ``make_server`` returns the server without serving (tests run it in a thread).
Images arrive as base64 PNG and reach the reward function as PNG ``bytes``; nothing is unpickled.
Request bodies over ``MAX_BODY`` bytes are refused (413). Errors answer JSON ``{"error": ...}``:
400 for a malformed request, 500 when the reward function raises.

    maskgrpo serve-reward geneval_strict --port 8000
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from maskgrpo.rewards import get_reward
from maskgrpo.rewards.http import decode_item

__all__ = ["make_server", "serve_reward", "MAX_BODY"]

MAX_BODY = 64 * 1024 * 1024
log = logging.getLogger("maskgrpo.reward_server")


def _handler(name: str, fn: Callable[..., list]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "maskgrpo-reward/1"

        def _answer(self, code: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: through logging
            log.debug("%s " + format, self.address_string(), *args)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._answer(200, {"reward": name})
            else:
                self._answer(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"error": f"request body of {length} bytes exceeds {MAX_BODY}"})
                return
            try:
                doc = json.loads(self.rfile.read(length).decode("utf-8"))
                prompts, completions = doc["prompts"], [decode_item(c) for c in doc["completions"]]
                columns = doc.get("columns", {})
                if not isinstance(prompts, list) or len(prompts) != len(completions) or not isinstance(columns, dict):
                    raise ValueError("prompts and completions must be lists of equal length; columns an object")
            except (ValueError, KeyError, TypeError) as err:
                self._answer(400, {"error": f"bad request: {err}"})
                return
            try:
                rewards = fn(prompts, completions, **columns)
            except Exception as err:  # the reward's failure is the client's information
                log.exception("reward %s failed", name)
                self._answer(500, {"error": f"reward {name!r} failed: {type(err).__name__}: {err}"})
                return
            self._answer(200, {"rewards": [None if r is None else float(r) for r in rewards]})

    return Handler


def make_server(name: str, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server for the registered reward ``name`` bound to (host, port); port 0 picks a free one."""
    return ThreadingHTTPServer((host, port), _handler(name, get_reward(name)))


def serve_reward(name: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the registered reward ``name`` until interrupted (the ``maskgrpo serve-reward`` command)."""
    server = make_server(name, host, port)
    log.info("serving reward %s on http://%s:%d/", name, *server.server_address[:2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
