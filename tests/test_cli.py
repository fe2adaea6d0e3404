"""The CLI's argument-level behaviour and failures that need no finished run: an unreachable S3
endpoint fails after one probe naming the endpoint, writes nothing; --version; exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskgrpo import __version__
from maskgrpo.cli import main
from maskgrpo.store.s3 import ENDPOINT_VARS

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "toy-text.yaml"


def test_unreachable_s3_endpoint_fails_after_one_probe_naming_it(monkeypatch, capsys, tmp_path, closing_listener):
    endpoint, connections = closing_listener
    for var in (*ENDPOINT_VARS, "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MASKGRPO_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-not-real")
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(PIPELINE), "--store", "s3://bucket/x", "--run-id", "r1"])
    err = capsys.readouterr().err
    assert code == 1, err
    # only the quick reachability probe ran (4 connections measured in tests/store/test_store_s3.py),
    # not the retrying calls of a stage
    assert 1 <= connections["n"] <= 4, connections
    assert endpoint in err
    assert "test-secret-not-real" not in err
    assert list(tmp_path.iterdir()) == []  # no local fallback store appeared


def test_python_dash_m_is_the_same_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "maskgrpo", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("maskgrpo "), done.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"maskgrpo {__version__}"


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_show_rejects_a_bare_name(capsys):
    assert main(["show", "runid-only"]) == 2
    assert "'runid-only' is not a run URI" in capsys.readouterr().err


def _outcome(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    return code, capsys.readouterr().err


def _misuses(tmp_path: Path) -> list[list[str]]:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- 1\n- 2\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00name")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    doc = str(PIPELINE)
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens
    return [
        [], ["frobnicate"],
        ["validate"], ["validate", str(tmp_path / "missing.yaml")], ["validate", str(tmp_path)],
        ["validate", str(bad_yaml)], ["validate", str(not_a_mapping)], ["validate", str(binary)],
        ["validate", doc, "--set", "rl.rounds=[1, 2"], ["validate", doc, "--set", "rl.rounds"],
        ["validate", doc, "--set", "rl.rounds.x=1"], ["validate", doc, "--set", "reward.functions.7.weight=1"],
        ["validate", doc, "--set", "nope=1"], ["validate", doc, "--set", "task.name=sortt"],
        ["validate", doc, "--set", "rl.lr=abc"],
        ["run", doc, "--run-id", "../escape"], ["run", doc, "--run-id", "a b"], ["run", doc, "--resume"],
        ["run", doc, "--store", "bogus://x", "--run-id", "r"], ["run", doc, "--runner", "nope"],
        ["run", doc, "--log-format", "xml"], ["run", doc, "--store", f"file://{a_file}", "--run-id", "r"],
        ["show"], ["show", "runid-only"], ["show", f"file://{tmp_path}/nothing/r"], ["show", f"file://{a_file}/r"],
        ["compile", doc], ["compile", doc, "-o", str(tmp_path), "--run-id", "ok"],
        ["compile", doc, "-o", str(tmp_path / "x.yaml"), "--run-id", "../x"],
        ["submit", doc], ["submit", doc, "--host", dead], ["submit", doc, "--host", "not a url"],
        ["schedule", doc, "--cron", "0 3 * * *"], ["schedule", doc, "--host", dead, "--cron", "banana"],
        ["gc"], ["gc", "bogus://x"], ["gc", f"file://{a_file}"], ["gc", f"file://{tmp_path}", "--min-age", "soon"],
        ["merge", str(tmp_path / "none"), str(tmp_path / "out")], ["merge", str(tmp_path)],
        ["serve-reward"], ["serve-reward", "no-such-reward"], ["serve-reward", "sort_exact", "--port", "99999"],
        ["serve-reward", "sort_exact", "--port", "http"],
        ["serve-reward", "sort_exact", "--host", "no.such.host.invalid", "--port", "0"],
        ["serve-sandbox", "--port", "99999"], ["serve-sandbox", "--bogus"],
        ["config"], ["config", str(tmp_path)], ["list"], ["list", "models-and-more"],
    ]


@pytest.mark.slow  # ~15 s idle (imports of torch, kfp, transformers), minutes on a loaded machine
def test_every_subcommand_with_bad_arguments_fails_in_one_line(tmp_path, capsys):
    failures = []
    for argv in _misuses(tmp_path):
        code, err = _outcome(argv, capsys)
        lines = err.strip().splitlines()
        errors = [line for line in lines if line.startswith("maskgrpo")]
        usage = [line for line in lines if line.startswith(("usage:", " "))]
        if code not in (1, 2) or "Traceback" in err or len(errors) != 1 or len(errors) + len(usage) != len(lines):
            failures.append(f"{argv}: exit {code}\n{err}")
    assert failures == [], "\n".join(failures)


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        main(["validate", str(PIPELINE), "--set", "nope=1", "--debug"])


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "130", "143"):
        assert f"\n  {code}" in out or f", {code}" in out, out
    assert "--debug" in out


def test_list_names_descriptions_and_params(capsys):
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "sort " in out and "params: length=8, digits=10" in out and "countdown-lite" in out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if not line.startswith(" ")}
    assert lines["sort"] == "[text]" and lines["toy-geneval"] == "[image]" and lines["geneval"] == "[image]"
    assert main(["list", "rewards"]) == 0
    out = capsys.readouterr().out
    assert "sort_exact" in out and "params: answer_tag=None" in out and "params: url, timeout=30.0" in out
    assert main(["list", "estimators"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["maskgrpo", "d1", "unigrpo", "coupled", "random", "spg", "wd1", "espo"]
    assert main(["list", "samplers"]) == 0
    assert "image/emerge" in capsys.readouterr().out


def test_config_prints_the_resolved_document_with_defaults(tmp_path, capsys):
    assert main(["config", str(PIPELINE), "--set", "rl.rounds=3"]) == 0
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(capsys.readouterr().out)
    text = resolved.read_text()
    assert "rounds: 3" in text and "weight_decay: 0.0" in text  # a default the document does not spell out
    assert main(["validate", str(resolved)]) == 0  # the output is itself a valid document


def test_a_closed_pipe_is_not_an_error(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert main(["list", "tasks"]) == 0  # `maskgrpo list tasks | head -1`
    assert "Traceback" not in capsys.readouterr().err


def test_plan_dump_writes_runnable_specs_and_a_rerun_says_it_skipped(tmp_path, capsys):
    """`plan --dump` writes one spec per stage call; the SFT one runs as `python -m
    maskgrpo.stages.sft --spec @file` (a real subprocess); run again, it skips in one line."""
    import json
    import os
    import subprocess
    import sys

    store = tmp_path / "store"
    assert main(["plan", str(PIPELINE), "--set", "rl.rounds=1", "--set", "sft.steps=2", "--store", str(store),
                 "--run-id", "r1", "--dump", str(tmp_path / "specs")]) == 0
    out = capsys.readouterr().out
    files = sorted(p.name for p in (tmp_path / "specs").iterdir())
    assert files == ["0-sft.json", "1-evaluate_0.json", "2-rollout_1.json", "3-score_1.json", "4-update_1.json",
                     "5-evaluate_1.json"]
    assert f"python -m maskgrpo.stages.sft --spec @{tmp_path / 'specs' / '0-sft.json'}" in out
    spec = json.loads((tmp_path / "specs" / "0-sft.json").read_text())
    assert spec["run_id"] == "r1" and spec["store"] == f"file://{store}" and spec["sft"]["steps"] == 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "maskgrpo.stages.sft", "--spec", f"@{tmp_path / 'specs' / '0-sft.json'}"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "skipped" not in first.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    skipped = [line for line in again.stderr.splitlines() if "skipped" in line]
    assert skipped == [f"sft round 0 of run r1: skipped, its output in file://{store} is already committed with this "
                       "spec's hash (nothing recomputed; change the spec or the run id to recompute)"]


def test_merge_without_pins_names_the_flag_not_the_yaml_field(tmp_path, capsys):
    import json

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llada_moe"}))  # remote code only
    (base / "modeling_x.py").write_text("raise SystemExit('never run')\n")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    assert main(["merge", str(adapter), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pass --trust-remote-code with the {file: sha256} pins" in err and "model.trust_remote_code" not in err, err
    assert main(["merge", str(adapter), str(tmp_path / "out"), "--trust-remote-code", '{"other.py": "' + "0" * 64 + '"}']) == 2
    err = capsys.readouterr().err
    assert "modeling_x.py: code file not pinned in --trust-remote-code" in err, err
