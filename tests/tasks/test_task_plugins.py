"""Third-party tasks and rewards register through package entry points (a real dist-info on sys.path)."""

import sys
import textwrap

import pytest

from maskgrpo.rewards import get_reward, list_rewards
from maskgrpo.tasks import get_task, list_tasks


@pytest.fixture()
def plugin_dist(tmp_path, monkeypatch):
    (tmp_path / "mg_plugin_demo.py").write_text(textwrap.dedent("""
        from maskgrpo.tasks.base import Example

        class EchoTask:
            name, reward, completion_length = "echo", "echo_exact", 8
            def __init__(self, word="hi"):
                self.word = word
            def examples(self, split, n, seed):
                return [Example(f"echo:{self.word}=", self.word)] * n

        def echo_exact(prompts, completions, answer, **_):
            return [float(c == a) for c, a in zip(completions, answer)]

        class Shadow:  # tries to replace the built-in "sort": built-ins win
            pass
    """))
    dist = tmp_path / "mg_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mg-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[maskgrpo.tasks]\necho = mg_plugin_demo:EchoTask\nsort = mg_plugin_demo:Shadow\n\n"
        "[maskgrpo.rewards]\necho_exact = mg_plugin_demo:echo_exact\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("mg_plugin_demo", None)


def test_plugin_task_and_reward(plugin_dist):
    assert "echo" in list_tasks() and "echo_exact" in list_rewards()
    task = get_task("echo", word="ok")
    (ex,) = task.examples("train", 1, seed=0)
    assert ex.prompt == "echo:ok=" and get_reward(task.reward)([ex.prompt], ["ok"], answer=["ok"]) == [1.0]
    assert type(get_task("sort")).__name__ == "SortTask"  # a plugin cannot shadow a built-in
    with pytest.raises(ValueError, match=r"task 'echo' has no parameter 'nope'"):
        get_task("echo", nope=1)


def test_examples_are_json_serialisable():
    import json

    for name in ["sort", "add", "countdown-lite", "sudoku-4x4"]:
        for ex in get_task(name).examples("train", 5, seed=0):
            assert json.loads(json.dumps(ex.to_json()))["prompt"] == ex.prompt
