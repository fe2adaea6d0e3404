"""The sandbox as a service: ``maskgrpo serve-sandbox`` runs model code for the code reward in a
process that holds no credentials, apart from the score stage (issue 14).

Server (`make_sandbox_server`, `serve_sandbox`): ``POST /run`` with
``{"code": str, "stdin": str, "timeout_s": float, "memory_mb": int, "max_output_chars": int}``
answers the `SandboxResult` fields as JSON (``GET /health``: the layers in force). Limits are the
server's: a request may ask for less time/memory/output than ``max_timeout_s``/``max_memory_mb``/
``max_output_chars``, never more; bodies over 8 MB are refused; a bounded pool of ``workers``
(`rewards.server.BoundedHTTPServer`). It binds 127.0.0.1 by default; an optional bearer token comes
from ``MASKGRPO_SANDBOX_TOKEN`` (on Kubernetes the chart's NetworkPolicy admits only stage pods).

At start it checks, and refuses to start with one line naming what is wrong, unless
``insecure=True`` (``--insecure``, documented as unsafe):

- every required isolation layer of `rewards.sandbox` is in force (private uid as root, or a
  user namespace; network, mount and pid namespaces; rlimits), and
- its own environment holds no credentials (`sandbox.secret_env_names`; the token variable is
  exempt): a process that runs model code must have nothing to steal.

Client (`SandboxClient`): what the code reward uses when ``MASKGRPO_SANDBOX_URL`` (or the
reward's ``params.sandbox_url``) is set; same call signature as `run_in_sandbox`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from typing import Any

from maskgrpo.rewards.http import post_json
from maskgrpo.rewards.sandbox import (SandboxResult, SandboxUnavailable, check_sandbox,
                                      run_in_sandbox, sandbox_layers, secret_env_names)
from maskgrpo.rewards.server import BoundedHTTPServer, HttpError, JsonHandler, serve_forever

__all__ = ["SandboxClient", "TOKEN_ENV", "make_sandbox_server", "serve_forever", "serve_sandbox"]

TOKEN_ENV = "MASKGRPO_SANDBOX_TOKEN"
MAX_BODY = 8 * 1024 * 1024


def _number(doc: dict[str, Any], key: str, default: float, most: float) -> float:
    value = doc.get(key, default)
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 < value <= most:
        raise HttpError(400, f"{key} must be a number in (0, {most:g}], got {str(value)[:40]}")
    return value


def make_sandbox_server(host: str = "127.0.0.1", port: int = 8001, *, insecure: bool = False,
                        workers: int = 2, max_timeout_s: float = 120.0, max_memory_mb: int = 2048,
                        max_output_chars: int = 16 << 20) -> BoundedHTTPServer:
    """The sandbox service bound to (host, port), after the start checks (module docstring)."""
    check_sandbox(insecure=insecure)
    held = secret_env_names(allow=(TOKEN_ENV,))
    if held and not insecure:
        raise SandboxUnavailable(f"serve-sandbox: this process holds credentials ({', '.join(held)}): "
                                 "start it without them (no Secret in its environment) or pass --insecure")
    layers = sandbox_layers()

    class Handler(JsonHandler):
        max_body = MAX_BODY

        def health(self) -> dict[str, Any]:
            return {"sandbox": list(layers), "insecure": insecure}

        def post(self, doc: Any) -> dict[str, Any]:
            if self.path != "/run":
                raise HttpError(404, f"no route {self.path}")
            if not isinstance(doc, dict) or not isinstance(doc.get("code"), str) or not isinstance(
                    doc.get("stdin", ""), str):
                raise HttpError(400, "bad request: {code: str, stdin: str, ...} expected")
            result = run_in_sandbox(
                doc["code"], stdin=doc.get("stdin", ""),
                timeout_s=_number(doc, "timeout_s", 5.0, max_timeout_s),
                memory_mb=int(_number(doc, "memory_mb", 512, max_memory_mb)),
                max_output_chars=int(_number(doc, "max_output_chars", 64_000, max_output_chars)),
                insecure=insecure)
            return asdict(result)

    return BoundedHTTPServer((host, port), Handler, workers=workers,
                             request_timeout=max_timeout_s + 30.0,
                             token=os.environ.get(TOKEN_ENV), allow_unauthenticated=True,
                             what="serve-sandbox")


def serve_sandbox(host: str = "127.0.0.1", port: int = 8001, **options: Any) -> None:
    """Serve until interrupted (the ``maskgrpo serve-sandbox`` command)."""
    serve_forever(make_sandbox_server(host, port, **options), "sandbox")


class SandboxClient:
    """`run_in_sandbox` over HTTP: ``SandboxClient(url)(code, stdin=..., timeout_s=...)``."""

    def __init__(self, url: str, token: str | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"sandbox URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/") + "/run"
        self._token = token if token is not None else os.environ.get(TOKEN_ENV)

    def __repr__(self) -> str:
        return f"SandboxClient({self.url!r})"

    def __call__(self, code: str, *, stdin: str = "", timeout_s: float = 5.0, memory_mb: int = 512,
                 max_output_chars: int = 64_000, **_: Any) -> SandboxResult:
        body = json.dumps({"code": code, "stdin": stdin, "timeout_s": timeout_s,
                           "memory_mb": memory_mb, "max_output_chars": max_output_chars}).encode()
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            status, answer = post_json(self.url, body, headers, timeout_s + 30.0,
                                       max_answer=2 * max_output_chars + 65536)
        except (TimeoutError, OSError) as err:
            raise SandboxUnavailable(f"sandbox service {self.url} unreachable: {err}") from None
        try:
            doc = json.loads(answer.decode("utf-8"))
        except (ValueError, RecursionError):
            doc = None
        if status != 200 or not isinstance(doc, dict):
            detail = doc.get("error") if isinstance(doc, dict) else answer[:200]
            raise SandboxUnavailable(f"sandbox service {self.url}: HTTP {status}: {detail}")
        try:
            return SandboxResult(**{**doc, "layers": tuple(doc.get("layers", ()))})
        except TypeError as err:
            raise SandboxUnavailable(f"sandbox service {self.url}: bad answer: {err}") from None
