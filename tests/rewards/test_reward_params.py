"""Reward parameters (RewardFunctionSpec.params): binding, validation, the ``http`` reward by name
against the loopback reference server, secret headers only from the environment, and scoring."""

import json
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from maskgrpo.cli import main
from maskgrpo.rewards import bind_reward, check_reward_params, get_reward
from maskgrpo.rewards.http import HttpReward
from maskgrpo.rewards.server import make_server
from maskgrpo.specs import RewardFunctionSpec, RewardSpec, TaskSpec, spec_hash
from maskgrpo.stages.scoring import score_rows

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "toy-text.yaml"
META = {"tag": "colors", "include": [{"class": "bar", "count": 1, "color": "red"}], "prompt": "a red bar"}
GOOD = "111" + "0" * 61  # a red 1x3 bar on an 8x8 grid
GREEN = GOOD.replace("1", "2")


def rows_of(completions):
    return [{"prompt": "a red bar", "answer": "", "columns": {"metadata": META}, "completion": c} for c in completions]


def test_params_are_bound_as_keyword_arguments():
    # sort_exact(answer_tag=True) reads the text inside <answer>...</answer>: "12" == "12" -> 1.0
    tagged = bind_reward("sort_exact", {"answer_tag": True})
    assert tagged(["sort:21="], ["<answer>12</answer>"], answer=["12"]) == [1.0]
    assert bind_reward("sort_exact", {}) is get_reward("sort_exact")  # no params: the function itself


def test_missing_and_unknown_params_fail_naming_the_field():
    with pytest.raises(ValueError, match=r"reward 'http' needs parameter 'url' \(missing: url\)"):
        check_reward_params("http", {"timeout": 5})
    with pytest.raises(ValueError, match=r"reward 'http' needs parameter 'url'"):
        bind_reward("http", {})
    # sort_exact takes **columns for the task's data columns; parameters are its keyword-only
    # arguments, so a misspelt one is refused, not swallowed
    with pytest.raises(ValueError, match=r"reward 'sort_exact' has no parameter 'bonsu' .*valid: answer_tag"):
        check_reward_params("sort_exact", {"bonsu": 1.0})
    with pytest.raises(ValueError, match=r"reward 'sort_exact' has no parameter 'answer'"):
        bind_reward("sort_exact", {"answer": ["12"]})  # a column is no parameter
    with pytest.raises(ValueError, match=r"unknown reward 'not-installed-here'; valid rewards: add, "):
        check_reward_params("not-installed-here", {"x": 1})


@pytest.mark.parametrize("override, message", [
    ("reward.functions=[{name: sort_exakt}]", "reward.functions.0.name: Value error, unknown reward 'sort_exakt'; valid rewards: "),
    ("reward.functions=[{name: sort_exact, params: {bonsu: 1.0}}]",
     "reward.functions.0.params: Value error, reward 'sort_exact' has no parameter 'bonsu'"),
    ("task.name=sortt", "task.name: Value error, unknown task 'sortt'; valid tasks: add, chain, countdown, "),
    ("task.params={lenght: 3}", "task.params: Value error, task 'sort' has no parameter 'lenght' (unknown: lenght; valid: length, digits)"),
])
def test_validate_refuses_unknown_names_and_params_with_the_field_path(override, message, capsys):
    assert main(["validate", str(PIPELINE), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_validate_reports_a_missing_param(tmp_path, capsys):
    doc = tmp_path / "doc.yaml"
    doc.write_text("name: x\nreward:\n  functions: [{name: http, params: {timeout: 5}}]\n")
    assert main(["validate", str(doc)]) == 2
    err = capsys.readouterr().err
    assert "reward.functions.0.params: Value error, reward 'http' needs parameter 'url'" in err


def test_spec_json_of_param_less_rewards_is_unchanged():
    # params are omitted from the JSON when empty, so spec hashes (resume) and goldens stay put
    plain = RewardFunctionSpec(name="sort_dense")
    assert plain.model_dump(mode="json") == {"name": "sort_dense", "weight": 1.0}
    with_params = RewardFunctionSpec(name="http", params={"url": "http://h:1/", "timeout": 120})
    assert with_params.model_dump(mode="json")["params"] == {"url": "http://h:1/", "timeout": 120}
    assert RewardFunctionSpec.model_validate_json(with_params.model_dump_json()) == with_params
    assert spec_hash(plain) != spec_hash(RewardFunctionSpec(name="sort_dense", params={"answer_tag": True}))


def test_http_reward_by_name_matches_the_local_reward(served):
    url = served(make_server("geneval_strict", "127.0.0.1", 0))
    completions = [GOOD, GREEN, GOOD, "junk"]
    reward = RewardSpec(functions=[{"name": "http", "params": {"url": url, "batch_size": 3, "timeout": 10}},
                                   {"name": "geneval_strict", "weight": 0.5}])
    per_fn, totals = score_rows(rows_of(completions), reward, TaskSpec(name="toy-geneval"))
    local = get_reward("geneval_strict")(["a red bar"] * 4, completions, metadata=[META] * 4)
    assert per_fn["http"] == local == [1.0, 0.0, 1.0, 0.0]  # "junk" is no grid: strict 0.0
    # totals: 1 * http + 0.5 * local
    assert totals == [1.5, 0.0, 1.5, 0.0]


def test_one_reward_name_twice_with_different_params(served):
    strict = served(make_server("geneval_strict", "127.0.0.1", 0))
    soft = served(make_server("geneval_soft", "127.0.0.1", 0))
    reward = RewardSpec(functions=[{"name": "http", "params": {"url": strict}},
                                   {"name": "http", "weight": 2.0, "params": {"url": soft}}])
    per_fn, totals = score_rows(rows_of([GOOD, GREEN]), reward, TaskSpec(name="toy-geneval"))
    # GREEN: strict 0; soft = mean(count 0/1 -> 0.0, clean 1.0) = 0.5 -> total 2 * 0.5 = 1.0
    assert per_fn == {"http": [1.0, 0.0], "http.1": [1.0, 0.5]}
    assert totals == [3.0, 1.0]


def test_params_may_not_shadow_reward_columns():
    with pytest.raises(ValueError, match=r"reward 'geneval_strict' has no parameter 'metadata'"):
        RewardSpec(functions=[{"name": "geneval_strict", "params": {"metadata": [META]}}])  # a column
    # score_rows keeps its own guard (a keyword-only parameter named like a column of the task)
    fn = RewardFunctionSpec.model_construct(name="geneval_strict", weight=1.0, params={"metadata": [META]})
    reward = RewardSpec.model_construct(functions=[fn], accuracy_threshold=1.0)
    with pytest.raises(ValueError, match=r"reward.functions\[0\] \(geneval_strict\): params \['metadata'\] clash"):
        score_rows(rows_of([GOOD]), reward, TaskSpec(name="toy-geneval"))


class _HeaderEcho(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(self.headers.get("Authorization"))
        data = json.dumps({"rewards": [1.0] * len(body["completions"])}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_secret_headers_come_only_from_the_named_environment_variable(served, monkeypatch):
    url = served(ThreadingHTTPServer(("127.0.0.1", 0), _HeaderEcho))
    params = {"url": url, "headers_env": {"Authorization": "MASKGRPO_TEST_REWARD_AUTH"}}
    fn = bind_reward("http", params)
    monkeypatch.delenv("MASKGRPO_TEST_REWARD_AUTH", raising=False)
    with pytest.raises(ValueError, match=r"params.headers_env.Authorization: environment variable "
                                         r"MASKGRPO_TEST_REWARD_AUTH is not set"):
        fn(["p"], ["c"])
    monkeypatch.setenv("MASKGRPO_TEST_REWARD_AUTH", "Bearer s3cret")
    assert fn(["p", "q"], ["c", "d"]) == [1.0, 1.0]
    assert _HeaderEcho.seen[-1] == "Bearer s3cret"
    # the spec holds the variable's name only; the client never shows the header's value
    assert "s3cret" not in RewardFunctionSpec(name="http", params=params).model_dump_json()
    assert "s3cret" not in repr(HttpReward(url, headers={"Authorization": "Bearer s3cret"}))
