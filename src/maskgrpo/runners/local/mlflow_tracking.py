"""MLflow logging of a local run when ``MLFLOW_TRACKING_URI`` is set (an http(s) tracking server).

The client is MLflow's documented REST API (``/api/2.0/mlflow/...``, and the artifact proxy
``/api/2.0/mlflow-artifacts/artifacts/...`` of a server started with ``--serve-artifacts``, the
default since MLflow 2) called with the standard library: no ``mlflow`` package in the run's
environment (the ``mlflow`` package pins graphql-core and pyarrow against Prefect's pins). What is
logged:

- params: the resolved pipeline document (``maskgrpo config``), flattened with dots
  (``rl.group_size``, ``reward.functions`` as JSON); a value longer than MLflow's 6000-character
  limit is cut there (the whole document is also an artifact, ``pipeline.yaml``);
- metrics: every number of each stage that ran, ``<kind>/<field>`` at step = round (the same tags as
  the TensorBoard event files), ``time/<kind>_seconds``, and ``summary/*`` at the end;
- tags: ``maskgrpo.run_id``, ``maskgrpo.run_uri``, ``maskgrpo.pipeline``, ``maskgrpo.model_source``,
  and the registry lineage of a retraining tick (``maskgrpo.registry_model``,
  ``maskgrpo.champion_version`` from resolve, ``maskgrpo.registry_version`` when promote registers
  a version);
- artifacts: the run's report files (report.md, its plots, summary.json, pipeline.yaml, image
  grids) and the first and last evaluation's samples (``samples/round-<r>.jsonl``).

Experiment: ``MLFLOW_EXPERIMENT_NAME`` (created if missing) or ``MLFLOW_EXPERIMENT_ID``, else
one named after the pipeline. A resumed run (same run id) continues the same MLflow run.
Auth: ``MLFLOW_TRACKING_TOKEN`` (bearer) or ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (basic).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value (characters)
BATCH = {"params": 100, "metrics": 1000, "tags": 100}  # log-batch limits per request


class MlflowError(RuntimeError):
    """The tracking server refused a request or could not be reached (one line)."""


def flatten(doc: Any, prefix: str = "") -> dict[str, str]:
    """A nested document as ``a.b.c`` -> string value (lists and null as JSON)."""
    if isinstance(doc, dict) and doc:
        out: dict[str, str] = {}
        for key, value in doc.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    value = doc if isinstance(doc, str) else json.dumps(doc)
    return {prefix: value[:MAX_PARAM_VALUE]}


class MlflowClient:
    """The few REST calls a run needs."""

    def __init__(self, uri: str, timeout: float = 30.0):
        self.uri, self.timeout = uri.rstrip("/"), timeout
        self.headers = {"Content-Type": "application/json"}
        if os.environ.get("MLFLOW_TRACKING_TOKEN"):
            self.headers["Authorization"] = f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"
        elif os.environ.get("MLFLOW_TRACKING_USERNAME"):
            pair = f"{os.environ['MLFLOW_TRACKING_USERNAME']}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()

    def _request(self, method: str, path: str, body: Any = None, data: bytes | None = None,
                 missing_ok: bool = False) -> dict[str, Any] | None:
        url = f"{self.uri}{path}"
        payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        headers = dict(self.headers, **({"Content-Type": "application/octet-stream"} if data is not None else {}))
        request = urllib.request.Request(url, data=payload, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            if missing_ok and err.code == 404:
                return None
            try:
                detail = json.loads(detail).get("message", detail)
            except ValueError:
                pass
            raise MlflowError(f"MLflow server {self.uri} refused {method} {path}: HTTP {err.code}: {detail[:300]}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise MlflowError(f"MLflow server MLFLOW_TRACKING_URI={self.uri} is not reachable ({reason})") from None
        return json.loads(text)

    def api(self, method: str, name: str, body: Any = None, missing_ok: bool = False) -> dict[str, Any] | None:
        if method == "GET" and body:
            return self._request("GET", f"/api/2.0/mlflow/{name}?{urllib.parse.urlencode(body)}", missing_ok=missing_ok)
        return self._request(method, f"/api/2.0/mlflow/{name}", body, missing_ok=missing_ok)

    def experiment_id(self, default_name: str) -> str:
        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            return os.environ["MLFLOW_EXPERIMENT_ID"]
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or default_name
        found = self.api("GET", "experiments/get-by-name", {"experiment_name": name}, missing_ok=True)
        if found and found.get("experiment"):
            return found["experiment"]["experiment_id"]
        return self.api("POST", "experiments/create", {"name": name})["experiment_id"]

    def log_batch(self, run_id: str, params: dict[str, str] | None = None, metrics: list[dict] | None = None,
                  tags: dict[str, str] | None = None) -> None:
        items = {"params": [{"key": k, "value": v} for k, v in (params or {}).items()],
                 "metrics": metrics or [], "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        for field, values in items.items():
            for i in range(0, len(values), BATCH[field]):
                self.api("POST", "runs/log-batch", {"run_id": run_id, field: values[i:i + BATCH[field]]})

    def upload(self, artifact_uri: str, name: str, data: bytes) -> None:
        """One artifact through the server's artifact proxy (``mlflow-artifacts:`` URIs)."""
        parsed = urllib.parse.urlparse(artifact_uri)
        if parsed.scheme != "mlflow-artifacts":
            raise MlflowError(f"MLflow run artifact URI {artifact_uri!r}: maskgrpo uploads through the server's artifact "
                              "proxy only (start `mlflow server` with --serve-artifacts, its default)")
        path = urllib.parse.quote(f"{parsed.path.strip('/')}/{name}")
        self._request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", data=data)


class MlflowTracker:
    """One MLflow run per maskgrpo run (the same on resume). The start checks the server; a
    failure later in the run is reported once and tracking stops, the training goes on."""

    def __init__(self, uri: str, run: Any, store: Any, run_id: str, echo: Any = print):
        scheme = urllib.parse.urlparse(uri).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"MLFLOW_TRACKING_URI={uri!r}: maskgrpo logs to an MLflow tracking server over its REST "
                             "API; give its http(s) URL (e.g. `mlflow server --backend-store-uri sqlite:///mlflow.db` "
                             "and MLFLOW_TRACKING_URI=http://127.0.0.1:5000)")
        self.client, self.echo, self.available = MlflowClient(uri), echo, True
        self.run_id = run_id
        experiment = self.client.experiment_id(run.name)
        found = self.client.api("POST", "runs/search", {
            "experiment_ids": [experiment], "max_results": 1,
            "filter": f"tags.`maskgrpo.run_id` = '{run_id}'"})
        existing = (found or {}).get("runs") or []
        if existing:
            info, data = existing[0]["info"], existing[0].get("data", {})
            self.client.api("POST", "runs/update", {"run_id": info["run_id"], "status": "RUNNING"})
            logged = {p["key"] for p in data.get("params", [])}
        else:
            info = self.client.api("POST", "runs/create", {
                "experiment_id": experiment, "run_name": run_id, "start_time": _now_ms(),
                "tags": [{"key": "mlflow.runName", "value": run_id}]})["run"]["info"]
            logged = set()
        self.mlflow_run_id, self.artifact_uri = info["run_id"], info["artifact_uri"]
        self.experiment_id = experiment
        tags = {"maskgrpo.run_id": run_id, "maskgrpo.run_uri": store.url(run_id), "maskgrpo.pipeline": run.name,
                "maskgrpo.model_source": run.model.source, "mlflow.source.name": "maskgrpo"}
        if run.retrain is not None:
            tags["maskgrpo.registry_model"] = run.retrain.model
        params = {k: v for k, v in flatten(run.model_dump(mode="json")).items() if k not in logged}
        self.client.log_batch(self.mlflow_run_id, params=params, tags=tags)

    def _guard(self, fn: Any, *args: Any) -> None:
        if not self.available:
            return
        try:
            fn(*args)
        except MlflowError as err:
            self.echo(f"      (MLflow tracking stopped: {err})")
            self.available = False

    def stage_done(self, call: Any, scalars: dict[str, float], seconds: float, result: Any) -> None:
        def log() -> None:
            stamp = _now_ms()
            metrics = [{"key": k, "value": v, "timestamp": stamp, "step": call.round or 0} for k, v in scalars.items()]
            tags = {}
            if call.kind == "resolve" and result.champion is not None:
                tags["maskgrpo.champion_version"] = str(result.champion)
            if call.kind == "promote" and result.promoted and result.version is not None:
                tags["maskgrpo.registry_version"] = str(result.version)
            self.client.log_batch(self.mlflow_run_id, metrics=metrics, tags=tags)
        self._guard(log)

    def finish(self, summary: dict[str, Any], files: dict[str, bytes]) -> None:
        def log() -> None:
            step = max([r["round"] for r in summary.get("rounds", [])], default=0)
            values = {"summary/gain": summary["gain"], "summary/final_accuracy": summary["final"]["accuracy"],
                      "summary/baseline_accuracy": summary["baseline"]["accuracy"],
                      "summary/wall_seconds": summary["wall_seconds"]}
            stamp = _now_ms()
            self.client.log_batch(self.mlflow_run_id, metrics=[
                {"key": k, "value": float(v), "timestamp": stamp, "step": step} for k, v in values.items()])
            for name, data in files.items():
                self.client.upload(self.artifact_uri, name, data)
            self.client.api("POST", "runs/update", {"run_id": self.mlflow_run_id, "status": "FINISHED",
                                                    "end_time": _now_ms()})
        self._guard(log)

    def close(self, status: str = "FINISHED") -> None:
        """After ``finish`` nothing; an interrupted or failed run is marked KILLED or FAILED."""
        if self.available and status != "FINISHED":
            self._guard(self.client.api, "POST", "runs/update",
                        {"run_id": self.mlflow_run_id, "status": status, "end_time": _now_ms()})
        self.available = False


def _now_ms() -> int:
    return int(time.time() * 1000)
