"""The Helm chart's CronJob path schedules scheduled retraining too: a `run` with a `retrain`
section renders (values schema included), and the document every tick submits plans
resolve -> ... -> gate -> promote, with at most one tick at a time (concurrencyPolicy Forbid)."""

from __future__ import annotations

import copy

import pytest
import yaml

from .conftest import objects_of, scenario_values


def test_cronjob_ticks_submit_the_retraining_dag(render):
    specs = pytest.importorskip("maskgrpo.specs")
    plan = pytest.importorskip("maskgrpo.plan")
    values = copy.deepcopy(scenario_values("external-s3"))
    values["run"]["model"] = {"source": "registry:toy-sort@champion"}
    values["run"]["retrain"] = {"model": "toy-sort", "data": "s3://team-bucket/datasets/toy/",
                                "unseen_only": True, "gate": {"metric": "accuracy", "margin": 0.01}}
    rendered = render(values, namespace=values["kfp"]["namespace"])
    (cm,) = [o for o in objects_of(rendered) if o["kind"] == "ConfigMap"]
    run = specs.RunSpec.model_validate(yaml.safe_load(cm["data"]["pipeline.yaml"]))
    assert run.retrain.model == "toy-sort" and run.retrain.gate.margin == 0.01
    kinds = [c.kind for c in plan.build_plan(run, "tick", run.cluster.store)]
    assert kinds[0] == "resolve" and kinds[-2:] == ["gate", "promote"]
    (cron,) = [o for o in objects_of(rendered) if o["kind"] == "CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_a_bad_retrain_section_fails_the_render(render):
    values = copy.deepcopy(scenario_values("external-s3"))
    values["run"]["retrain"] = {"model": "Not A Name"}
    with pytest.raises(Exception, match="retrain|model"):
        render(values, namespace=values["kfp"]["namespace"])
