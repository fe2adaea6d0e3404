"""A client for remote reward servers over a JSON protocol (docs/algorithm.md §6; never pickle).

Protocol (``POST <url>``, ``Content-Type: application/json``):

    request:  {"prompts": [str], "completions": [item], "columns": {name: [value]}}
    response: {"rewards": [float | null]}

An ``item`` is a string, or an image as ``{"image_png_base64": "<base64 PNG>"}`` (``PIL.Image``
and PNG ``bytes`` completions are sent that way). ``rewards`` has one entry per completion.

``HttpReward(url, batch_size, timeout, retries, backoff, headers)`` splits the call into batches;
each batch is retried on connection errors, timeouts and 5xx answers with exponential backoff
(``backoff * 2**attempt`` seconds), then fails with an error naming the URL. A 4xx answer is not
retried. ``headers`` are sent with every request and never shown (repr, errors). Bounds
(`post_json`): redirects are never followed (so credentials never reach another origin), an
answer over ``MAX_ANSWER`` bytes is refused, ``timeout`` is a TOTAL deadline per attempt (a
watchdog closes the socket: a dribbling server cannot hold the client), and a reward that is not
a finite number or null is refused. Images are PNG only, at most ``MAX_PIXELS`` pixels by their
header, checked before any decoder sees them (`decode_item`).
``maskgrpo.rewards.server.serve_reward`` is the matching reference server.

``http_reward`` is the registered reward ``http``: the pipeline names the server in
``RewardFunctionSpec.params`` (``{url: ..., timeout: 120, batch_size: 16}``). A secret header (an
API key) comes only from an environment variable named in ``params.headers_env``
(``{Authorization: REWARD_API_AUTH}`` sends the variable's value as ``Authorization``), read when
the reward is called, never from the spec. Deviation from docs/design.md, "Style" (secrets read in ``main()``):
the variable is read at call time, inside the score stage, because the stage does not know which
rewards need which variables; its value is never logged or stored.

>>> encode_item("0120")
'0120'
>>> decode_item({"image_png_base64": base64.b64encode(b"GIF89a...").decode()})
Traceback (most recent call last):
ValueError: an image must be a PNG (bad signature or header)
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import struct
import threading
import time
import urllib.parse
from typing import Any

__all__ = ["HttpReward", "RewardServerError", "encode_item", "decode_item", "http_reward", "IMAGE_KEY",
           "MAX_ANSWER", "MAX_PIXELS", "post_json"]

IMAGE_KEY = "image_png_base64"
MAX_ANSWER = 16 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
_PNG = b"\x89PNG\r\n\x1a\n"


class RewardServerError(RuntimeError):
    """The reward server could not be reached or answered badly."""


def encode_item(item: Any) -> Any:
    """A completion as JSON: strings as is, images as base64 PNG."""
    if isinstance(item, (bytes, bytearray)):
        return {IMAGE_KEY: base64.b64encode(bytes(item)).decode("ascii")}
    if hasattr(item, "save") and hasattr(item, "convert"):  # PIL image
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return {IMAGE_KEY: base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(item, (str, int, float)) or item is None:
        return item
    raise TypeError(f"cannot send a completion of type {type(item).__name__} to a reward server")


def decode_item(item: Any) -> Any:
    """Inverse of ``encode_item``: images come back as PNG bytes."""
    if isinstance(item, dict):
        if set(item) != {IMAGE_KEY}:
            raise ValueError(f"a completion object must be {{{IMAGE_KEY!r}: ...}}, got keys {sorted(item)}")
        data = base64.b64decode(item[IMAGE_KEY], validate=True)
        png_size(data)
        return data
    return item


def png_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR header; ValueError when it is not a PNG or has more
    than ``max_pixels`` pixels (a 285 KB PNG can decompress to 100 MP: refuse it unread)."""
    if len(data) < 24 or data[:8] != _PNG or data[12:16] != b"IHDR":
        raise ValueError("an image must be a PNG (bad signature or header)")
    width, height = struct.unpack(">II", data[16:24])
    if width * height > max_pixels or not width or not height:
        raise ValueError(f"a {width}x{height} image exceeds the {max_pixels}-pixel limit")
    return width, height


def post_json(url: str, data: bytes, headers: dict[str, str], timeout: float,
              max_answer: int = MAX_ANSWER) -> tuple[int, bytes]:
    """POST ``data``; (status, body). Never follows a redirect (a 3xx is an answer like any other),
    reads at most ``max_answer`` bytes, and a watchdog closes the socket after ``timeout`` seconds
    in total. OSError/TimeoutError on connection failures; RewardServerError on an oversize answer."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    expired, socks = threading.Event(), []

    def expire() -> None:  # the response keeps the socket after conn.sock is dropped: keep it too
        expired.set()
        for sock in socks:
            try:
                sock.shutdown(2)
            except OSError:
                pass

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        socks.append(conn.sock)
        if expired.is_set():
            expire()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=data, headers={**headers, "Content-Length": str(len(data))})
        response = conn.getresponse()
        body = response.read(max_answer + 1)
        if len(body) > max_answer:
            raise RewardServerError(f"{url}: the answer exceeds {max_answer} bytes")
        if expired.is_set():
            raise TimeoutError(f"no complete answer within {timeout:g} s")
        return response.status, body
    except (OSError, http.client.HTTPException) as err:
        if expired.is_set():
            raise TimeoutError(f"no complete answer within {timeout:g} s") from None
        raise OSError(str(err)) from None
    finally:
        watchdog.cancel()
        conn.close()


class HttpReward:
    """A reward function (TRL signature) backed by a remote server."""

    def __init__(self, url: str, *, batch_size: int = 32, timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 headers: dict[str, str] | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"reward server URL must start with http:// or https://, got {url!r}")
        if batch_size < 1 or retries < 0 or timeout <= 0:
            raise ValueError("batch_size >= 1, retries >= 0 and timeout > 0 are required")
        self.url, self.batch_size, self.timeout, self.retries, self.backoff = url, batch_size, timeout, retries, backoff
        self._headers = dict(headers or {})

    def __repr__(self) -> str:  # never the headers: they may hold a secret
        return f"HttpReward(url={self.url!r}, batch_size={self.batch_size}, timeout={self.timeout})"

    def __call__(self, prompts: list[str], completions: list[Any], **columns: list[Any]) -> list[float | None]:
        out: list[float | None] = []
        for start in range(0, len(completions), self.batch_size):
            rows = slice(start, start + self.batch_size)
            body = {
                "prompts": list(prompts[rows]),
                "completions": [encode_item(c) for c in completions[rows]],
                "columns": {k: list(v[rows]) for k, v in columns.items()},
            }
            rewards = self._post(body)
            if len(rewards) != len(body["completions"]):
                raise RewardServerError(f"{self.url}: sent {len(body['completions'])} completions, got {len(rewards)} rewards")
            for r in rewards:
                if r is not None and (type(r) not in (int, float) or not math.isfinite(r)):
                    raise RewardServerError(f"{self.url}: a reward must be a finite number or null, got {str(r)[:50]}")
                out.append(None if r is None else float(r))
        return out

    def _post(self, body: dict[str, Any]) -> list[Any]:
        data = json.dumps(body).encode("utf-8")
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, answer = post_json(self.url, data, {**self._headers, "Content-Type": "application/json"},
                                           self.timeout)
            except (TimeoutError, OSError) as err:
                last = err
                continue
            if status >= 300:
                detail = answer.decode("utf-8", "replace")[:300]
                if status < 500:
                    raise RewardServerError(f"{self.url}: HTTP {status} (redirects are not followed): {detail}") from None
                last = RewardServerError(f"HTTP {status}: {detail}")
                continue
            try:
                doc = json.loads(answer.decode("utf-8"))
            except (ValueError, RecursionError) as err:
                raise RewardServerError(f"{self.url}: the answer is not JSON: {str(err)[:200]}") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("rewards"), list):
                raise RewardServerError(f"{self.url}: the answer must be {{\"rewards\": [...]}}, got {str(doc)[:200]}")
            return doc["rewards"]
        raise RewardServerError(
            f"reward server {self.url} is unreachable or failing after {self.retries + 1} attempts: {last}"
        ) from None


def http_reward(prompts: list[str], completions: list[Any], *, url: str, timeout: float = 30.0, batch_size: int = 32,
                retries: int = 3, backoff: float = 0.5, headers_env: dict[str, str] | None = None,
                **columns: list[Any]) -> list[float | None]:
    """The reward ``http``: ``HttpReward`` built from the spec's params (module docstring).

    ``headers_env`` maps a header name to the environment variable holding its value; a variable
    that is unset or empty fails naming ``params.headers_env`` and the variable (never a value).
    """
    headers = {}
    for header, var in (headers_env or {}).items():
        if not isinstance(var, str) or not var:
            raise ValueError(f"reward 'http': params.headers_env.{header} must name an environment variable, got {var!r}")
        value = os.environ.get(var)
        if not value:
            raise ValueError(f"reward 'http': params.headers_env.{header}: environment variable {var} is not set")
        headers[header] = value
    client = HttpReward(url, batch_size=batch_size, timeout=timeout, retries=retries, backoff=backoff, headers=headers)
    return client(prompts, completions, **columns)

