"""Issue 14, item 7: the stage pods' egress is restricted, the sandbox holds nothing and reaches
nothing (the chart rendered by Helm's engine)."""

from __future__ import annotations

import yaml

from .conftest import RELEASE, objects_of, scenario_values


def _by(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_stage_pods_egress_only_to_dns_store_kfp_and_sandbox(rendered):
    objects = objects_of(rendered["gpu"])
    policy = _by(objects, "NetworkPolicy", f"{RELEASE}-stage-egress")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}
    assert policy["policyTypes"] == ["Egress"]
    rules = policy["egress"]
    assert [p["port"] for p in rules[0]["ports"]] == [53, 53]  # DNS
    assert rules[1]["to"][0]["podSelector"]["matchExpressions"][0]["values"] == [
        "ml-pipeline", "metadata-grpc-server", "minio", "seaweedfs"]
    assert rules[2]["ports"] == [{"port": 443, "protocol": "TCP"}] and "ipBlock" in rules[2]["to"][0]
    sandbox = rules[3]["to"][0]["podSelector"]["matchLabels"]
    assert sandbox["app.kubernetes.io/component"] == "sandbox" and rules[3]["ports"][0]["port"] == 8001
    assert rules[4]["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}]  # extraEgress: the API server
    assert len(rules) == 5  # nothing else: every other destination is refused
    kind = _by(objects_of(rendered["cpu-kind"]), "NetworkPolicy", f"{RELEASE}-stage-egress")["spec"]
    assert any(r.get("ports") == [{"port": 9000, "protocol": "TCP"}] for r in kind["egress"])  # dev MinIO


def test_sandbox_has_no_secret_no_token_no_egress(rendered):
    objects = objects_of(rendered["gpu"])
    deployment = _by(objects, "Deployment", f"{RELEASE}-sandbox")
    spec = deployment["spec"]["template"]["spec"]
    text = yaml.safe_dump(deployment)
    assert "secretKeyRef" not in text and "secretRef" not in text and "secret:" not in text
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["runtimeClassName"] == "gvisor"
    (container,) = spec["containers"]
    assert container["args"][:2] == ["serve-sandbox", "--host=0.0.0.0"]
    assert "--insecure" not in container["args"]
    assert {e["name"] for e in container["env"]} == {"HOME", "PYTHONUNBUFFERED"}
    assert not any("projected" in v or "secret" in v for v in spec.get("volumes", []))
    policy = _by(objects, "NetworkPolicy", f"{RELEASE}-sandbox")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []
    assert policy["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}}]


def test_sandbox_off_by_default_and_policies_follow_the_switch(render):
    values = scenario_values("external-s3")
    names = {o["metadata"]["name"] for o in objects_of(render(values))}
    assert f"{RELEASE}-sandbox" not in names and f"{RELEASE}-stage-egress" in names
    values["networkPolicy"] = {"enabled": True, "stages": {"enabled": False}}
    names = {o["metadata"]["name"] for o in objects_of(render(values))}
    assert f"{RELEASE}-stage-egress" not in names
