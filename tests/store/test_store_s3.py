"""s3:// specifics: configuration from the environment, unreachable endpoints, credentials,
buckets, and a multipart object on a real SeaweedFS server."""

from __future__ import annotations

import hashlib
import random

import pytest

from maskgrpo.store import StoreError, StoreUnreachableError, open_store
from maskgrpo.store.layout import attempt_prefix
from maskgrpo.store.s3 import s3_options_from_env
from maskgrpo.store.testing import s3_client

from .conftest import BUCKET


def test_env_config_precedence_and_missing_credentials():
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
           "AWS_ENDPOINT_URL": "http://generic", "AWS_ENDPOINT_URL_S3": "http://s3-specific"}
    opts = s3_options_from_env(env)
    assert opts["endpoint_url"] == "http://s3-specific" and opts["token"] is None
    assert opts["client_kwargs"] == {"region_name": "us-east-1"}
    env["MASKGRPO_S3_ENDPOINT_URL"] = "http://ours"
    env["AWS_REGION"] = "eu-west-3"
    env["AWS_SESSION_TOKEN"] = "TOK"
    opts = s3_options_from_env(env)
    assert (opts["endpoint_url"], opts["token"]) == ("http://ours", "TOK")
    assert opts["client_kwargs"] == {"region_name": "eu-west-3"}
    with pytest.raises(StoreError, match="AWS_SECRET_ACCESS_KEY is not set"):
        s3_options_from_env({"AWS_ACCESS_KEY_ID": "AK"})
    with pytest.raises(StoreError, match="no S3 credentials"):
        s3_options_from_env({})
    assert "key" not in s3_options_from_env({"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"})


def test_unreachable_endpoint_gives_up_after_bounded_attempts_naming_it(monkeypatch, closing_listener):
    endpoint, connections = closing_listener
    monkeypatch.setenv("MASKGRPO_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print-this-secret")
    store = open_store("s3://bucket/prefix")
    assert "do-not-print-this-secret" not in repr(store) + repr(store._b)
    with pytest.raises(StoreUnreachableError) as e:
        store.check_reachable()
    # The quick probe is configured for one botocore attempt: 4 connections measured (a
    # connection closed without an answer is reopened below botocore), never the retries below.
    assert 1 <= connections["n"] <= 4, connections
    assert endpoint in str(e.value) and "do-not-print-this-secret" not in str(e.value)
    connections["n"] = 0
    with pytest.raises(StoreUnreachableError, match=endpoint):
        store.committed("r1", "sft", None)                     # ordinary calls too, with retries
    # 3 botocore attempts x s3fs retries, bounded (24 measured), not an endless retry loop
    assert 4 < connections["n"] <= 24, connections


@pytest.mark.s3
def test_bad_credentials_and_missing_bucket(seaweed, s3_env, monkeypatch):
    open_store(f"s3://{BUCKET}/x").check_reachable()           # the good case
    with pytest.raises(StoreUnreachableError, match="'no-such-bucket' does not exist"):
        open_store("s3://no-such-bucket/x").check_reachable()
    with pytest.raises(StoreUnreachableError, match="does not exist"):
        open_store("s3://no-such-bucket/x").committed("r1", "sft", None)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    bad = open_store(f"s3://{BUCKET}/x")
    with pytest.raises(StoreUnreachableError, match="credentials rejected"):
        bad.check_reachable()
    with pytest.raises(StoreUnreachableError, match="credentials rejected") as e:
        bad.open("r1", "sft", None)
    assert "wrong-secret" not in str(e.value)


@pytest.mark.s3
def test_s3_layout_is_the_documented_keys(s3_store, s3_env):
    with s3_store.begin("r1", "score", 2, "h") as att:
        att.put_json("scores.json", [1])
    prefix = s3_store.uri[len(f"s3://{BUCKET}/"):]
    keys = {o["Key"] for o in s3_client(s3_env["MASKGRPO_S3_ENDPOINT_URL"], s3_env)
            .list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    a = attempt_prefix("r1", "score", 2, att.attempt_id)
    assert keys == {f"{prefix}/r1/score/2/_POINTER.json", f"{prefix}/{a}/scores.json",
                    f"{prefix}/{a}/_MANIFEST.json"}


@pytest.mark.slow
@pytest.mark.s3
def test_200mb_object_goes_multipart_and_verifies(s3_store, s3_env):
    data = random.Random(0).randbytes(200 << 20)
    with s3_store.begin("big", "update", 1, "h") as att:
        att.put_bytes("weights.bin", data)
    back = s3_store.open("big", "update", 1).get_bytes("weights.bin")
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    key = s3_store.uri[len(f"s3://{BUCKET}/"):] + "/" + attempt_prefix(
        "big", "update", 1, att.attempt_id) + "/weights.bin"
    head = s3_client(s3_env["MASKGRPO_S3_ENDPOINT_URL"], s3_env).head_object(Bucket=BUCKET, Key=key)
    # 200 MiB in 50 MiB parts: a multipart ETag ends in "-<number of parts>" = "-4"
    assert head["ETag"].strip('"').endswith("-4") and head["ContentLength"] == 200 << 20
