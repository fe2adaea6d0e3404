"""Local scheduled retraining: the Prefect deployment is built offline with the right cron and
parameters; serving it needs a Prefect server, which these tests do not start."""

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings

from maskgrpo.runners.local.schedule import local_cron, local_deployment, schedule_local

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DOC = """name: sched-test
rl: {rounds: 1}
"""


@flow
def stand_in_flow(pipeline_path: str, store: str, run_id: str | None = None, overrides: list[str] = [],
                  resume: bool = False) -> None:
    """Same signature as maskgrpo.runners.local.flow.run_pipeline_flow."""


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "sched-test.yaml"
    path.write_text(DOC)
    return path


@pytest.mark.parametrize("given, expected", [
    ("0 3 * * *", "0 3 * * *"),
    ("0 30 2 * * 1-5", "30 2 * * 1-5"),  # KFP's six fields with seconds = 0
    (" */10  * * * * ", "*/10 * * * *"),
])
def test_local_cron(given, expected):
    assert local_cron(given) == expected


@pytest.mark.parametrize("given, message", [
    ("15 0 3 * * *", "needs seconds = 0"),
    ("0 3 * *", "expected 5 fields .* got 4"),
    ("0 25 * * *", "not a valid cron expression"),
])
def test_local_cron_rejects(given, message):
    with pytest.raises(ValueError, match=message):
        local_cron(given)


def test_deployment_has_the_cron_and_parameters(doc):
    dep = local_deployment(doc, "0 0 3 * * *", store="file:///data/runs", overrides=["rl.rounds=2"], flow=stand_in_flow)
    assert dep.name == "sched-test-scheduled"
    (schedule,) = dep.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.active
    assert dep.parameters == {"pipeline_path": str(doc.resolve()), "store": "file:///data/runs", "run_id": None,
                              "overrides": ["rl.rounds=2"], "resume": False}
    assert dep.entrypoint.endswith("test_local_schedule.py:stand_in_flow")
    assert "maskgrpo" in dep.tags


def test_default_store_and_bad_document(doc, tmp_path):
    dep = local_deployment(doc, "0 3 * * *", store=None, overrides=[], flow=stand_in_flow)
    assert dep.parameters["store"] == "file://./runs"
    with pytest.raises(ValueError, match="rl.rounds"):  # validated now, not at the first tick
        local_deployment(doc, "0 3 * * *", store=None, overrides=["rl.rounds=-1"], flow=stand_in_flow)


def test_real_local_flow_when_present(doc):
    real = pytest.importorskip("maskgrpo.runners.local.flow")
    dep = local_deployment(doc, "0 3 * * *", store="file:///r", overrides=[], flow=real.run_pipeline_flow)
    assert dep.entrypoint.endswith("flow.py:run_pipeline_flow")
    assert set(dep.parameters) == {"pipeline_path", "store", "run_id", "overrides", "resume"}


def test_schedule_local_needs_a_server(doc):
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(RuntimeError, match="prefect server start"):
            schedule_local(doc, "0 3 * * *", store=None, overrides=[])


def test_schedule_local_serves_the_deployment(doc, monkeypatch):
    served = []
    monkeypatch.setattr("prefect.serve", lambda *deps: served.extend(deps))  # instead of serving forever
    monkeypatch.setattr("maskgrpo.runners.local.schedule.local_deployment",
                        lambda *a, **k: ("deployment", a, k))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        schedule_local(doc, "0 3 * * *", store="file:///r", overrides=["seed=1"])
    assert served == [("deployment", (doc, "0 3 * * *"), {"store": "file:///r", "overrides": ["seed=1"]})]
