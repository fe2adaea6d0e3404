"""What ``maskgrpo run`` prints: one line per event, for people or (``--log-format json``) machines.

- text on a terminal: a line per stage; the stages' own tqdm bars render live on stderr while a
  stage runs (tqdm is the one progress library; the bars vanish when the stage ends).
- text elsewhere (a log file, a CI console): the same lines and nothing else: tqdm bars are sent
  to a null stream, so no carriage-return fragments end up in the log.
- json: one JSON object per line on stdout ({"event": "run" | "stage_start" | "stage" | "summary" |
  "error", ...}); bars are off as above.

Third-party bars are always off: transformers' "Loading weights" / "Writing model shards" and
huggingface_hub's downloads (``transformers.utils.logging.disable_progress_bar``); so is
DeepSpeed's accelerator warning on a CPU-only machine.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from typing import Any

_BARS_SILENCED = False


def quiet_third_party() -> None:
    """Turn off transformers' and huggingface_hub's progress bars (before any model loads), and
    DeepSpeed's "Setting accelerator to CPU" warning on a machine without CUDA (it is printed on
    import, although DeepSpeed is only used when model.deepspeed is set)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover  (transformers is a core dependency)
        return
    hf_logging.disable_progress_bar()


def silence_bars() -> None:
    """Send every tqdm bar created from now on to a null stream (idempotent). Stages pass
    ``disable=`` explicitly, so tqdm's ``TQDM_DISABLE`` cannot reach them; the default ``file``
    can, and a bar drawn nowhere costs almost nothing."""
    global _BARS_SILENCED
    if _BARS_SILENCED:
        return
    import tqdm.std

    tqdm.std.tqdm.__init__ = functools.partialmethod(tqdm.std.tqdm.__init__, file=io.StringIO())  # type: ignore[method-assign]
    _BARS_SILENCED = True


class Output:
    """The run's printer: ``line`` (text mode only), ``event`` (text and JSON), stage hooks."""

    def __init__(self, log_format: str = "text", stream: Any = None):
        self.json = log_format == "json"
        self.stream = stream or sys.stdout
        quiet_third_party()
        if self.json or not sys.stderr.isatty():
            silence_bars()

    def _json(self, event: str, **fields: Any) -> None:
        print(json.dumps({"event": event, **fields}, default=str), file=self.stream, flush=True)

    def line(self, text: str) -> None:
        if not self.json:
            print(text, file=self.stream, flush=True)

    def event(self, event: str, text: str, **fields: Any) -> None:
        if self.json:
            self._json(event, **fields)
        else:
            print(text, file=self.stream, flush=True)

    def stage_start(self, call: Any) -> None:
        if self.json:
            self._json("stage_start", name=call.name, kind=call.kind, round=call.round)

    def stage_done(self, call: Any, result: Any, seconds: float) -> None:
        if self.json:
            self._json("stage", name=call.name, kind=call.kind, round=call.round, seconds=round(seconds, 3),
                       result=result.model_dump(mode="json"))

    def error(self, message: str) -> None:
        if self.json:
            self._json("error", message=message)
        print(f"maskgrpo: {message}", file=sys.stderr, flush=True)
