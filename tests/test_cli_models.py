"""`maskgrpo models ...`: the registry from the command line (cli.py)."""

from maskgrpo.cli import main
from maskgrpo.store import open_store


def publish(store, run_id, tmp_path):
    folder = tmp_path / run_id
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "tiny"}')
    (folder / "model.safetensors").write_bytes(b"weights of " + run_id.encode())
    with store.begin(run_id, "update", 1, spec_hash="h") as att:
        att.put_dir("checkpoint", folder)
        att.put_json("metrics.json", {"weight_digest": run_id})
        committed = att.commit()
    reg = store.registry("toy")
    return reg.register({"run_id": run_id, "checkpoint": store.pin(committed), "parent": reg.aliases()["champion"],
                         "metrics": {"accuracy": 0.5}, "gate": {"decision": "promote", "diff": 0.1}})


def test_models_commands(tmp_path, capsys):
    uri = f"file://{tmp_path}/runs"
    store = open_store(uri)
    reg = store.registry("toy")
    for run_id in ("a", "b"):
        v = publish(store, run_id, tmp_path)
        assert main(["models", "promote", uri, "toy", str(v)]) == 0
    assert main(["models", "list", uri]) == 0
    assert "champion v2  previous v1  2 version(s), 0 orphan(s)" in capsys.readouterr().out
    assert main(["models", "show", uri, "toy"]) == 0
    out = capsys.readouterr().out
    assert "v2  parent v1  run b" in out and "v1  parent vNone  run a" in out and "promote" in out

    assert main(["models", "export", uri, "toy", str(tmp_path / "served")]) == 0
    assert (tmp_path / "served" / "model.safetensors").read_bytes() == b"weights of b"
    assert main(["models", "rollback", uri, "toy"]) == 0
    assert reg.aliases()["champion"] == 1
    assert main(["models", "export", uri, "toy", str(tmp_path / "old"), "--version", "2"]) == 0
    assert (tmp_path / "old" / "model.safetensors").read_bytes() == b"weights of b"

    assert main(["models", "promote", uri, "toy", "2", "--expected", "2"]) == 1  # the champion is v1: refused
    assert "champion is v1, not v2" in capsys.readouterr().err and reg.aliases()["champion"] == 1
    publish(store, "c", tmp_path)  # registered, never promoted
    assert main(["models", "gc", uri, "toy", "--min-age", "0", "--dry-run"]) == 0
    assert "would remove 1 orphan version(s)" in capsys.readouterr().out and reg.version_numbers() == [1, 2, 3]
    assert main(["models", "gc", uri, "toy", "--min-age", "0"]) == 0 and reg.version_numbers() == [1, 2]
    assert main(["models", "show", uri, "nope"]) == 1
