"""rewards/http.py + rewards/server.py on loopback: the JSON protocol, batching, retries, errors."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import maskgrpo.rewards.http as http_module
from maskgrpo.rewards.http import HttpReward, RewardServerError, decode_item, encode_item
from maskgrpo.rewards.server import make_server
from maskgrpo.tasks.geneval import grid_to_png, text_to_grid

META = {"tag": "colors", "include": [{"class": "bar", "count": 1, "color": "red"}], "prompt": "a red bar"}
GOOD = "111" + "0" * 61


def test_registered_reward_over_http_with_png_images_and_batches(served):
    url = served(make_server("geneval_strict", "127.0.0.1", 0))
    client = HttpReward(url, batch_size=2)
    png = grid_to_png(text_to_grid(GOOD, 8))
    completions = [GOOD, png, GOOD.replace("1", "2"), png, GOOD]
    # 5 completions in batches of 2 -> 3 requests; green bar (code 2) fails the red check.
    assert client(["a red bar"] * 5, completions, metadata=[META] * 5) == [1.0, 1.0, 0.0, 1.0, 1.0]


def test_item_codec_never_pickles():
    png = grid_to_png(text_to_grid(GOOD, 8))
    doc = encode_item(png)
    assert set(doc) == {"image_png_base64"} and json.loads(json.dumps(doc)) == doc
    assert decode_item(doc) == png and encode_item("abc") == "abc"
    with pytest.raises(TypeError, match="object"):
        encode_item(object())


def test_server_down_fails_after_retries_naming_the_url(monkeypatch):
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()  # nothing listens on this port now
    client = HttpReward(f"http://127.0.0.1:{port}/", retries=2, backoff=0.01, timeout=2)
    sleeps: list[float] = []
    monkeypatch.setattr(http_module.time, "sleep", sleeps.append)
    with pytest.raises(RewardServerError, match=f"127.0.0.1:{port}.*after 3 attempts"):
        client(["p"], ["c"])
    assert sleeps == [0.01, 0.02]  # exponential backoff between the 3 attempts, nothing more


class Flaky(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):  # noqa: N802
        Flaky.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        code, doc = (503, {"error": "warming up"}) if Flaky.calls < 3 else (200, {"rewards": [0.5] * len(body["completions"])})
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_5xx_is_retried_with_backoff_then_succeeds(served):
    Flaky.calls = 0
    url = served(ThreadingHTTPServer(("127.0.0.1", 0), Flaky))
    assert HttpReward(url, retries=3, backoff=0.01)(["p", "q"], ["a", "b"]) == [0.5, 0.5]
    assert Flaky.calls == 3  # two 503s, then the answer


def test_bad_request_is_not_retried(served):
    url = served(make_server("geneval_strict", "127.0.0.1", 0))
    # geneval_strict without its metadata column: the reward raises -> 500; a malformed body -> 400.
    with pytest.raises(RewardServerError, match="after 1 attempts"):
        HttpReward(url, retries=0)(["p"], [GOOD])
    with pytest.raises(ValueError, match="http://"):
        HttpReward("ftp://x")


def test_doctests():
    import doctest

    import maskgrpo.rewards.http as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
