"""The KFP UI outputs every step writes: Metrics JSON, Markdown, and the executor output file."""

import json

import pytest

from maskgrpo.runners.kfp.outputs import scalar_metrics, write_kfp_outputs


def test_scalar_metrics_keeps_finite_numbers_only():
    values = {"loss": 0.25, "steps": 3, "ok": True, "name": "x", "nan": float("nan"), "inf": float("inf")}
    assert scalar_metrics(values) == {"loss": 0.25, "steps": 3.0}


def test_write_all_three(tmp_path):
    # an executor input as the KFP launcher substitutes it for {{$}} (only the fields we read matter)
    output_file = tmp_path / "kfp_outputs" / "output_metadata.json"
    executor_input = json.dumps({
        "inputs": {"parameterValues": {"spec": "{}"}},
        "outputs": {"artifacts": {"metrics": {"artifacts": [{"name": "metrics", "uri": "minio://b/m"}]}},
                    "outputFile": str(output_file)},
    })
    write_kfp_outputs({"reward_mean": 0.5, "accuracy": 0.75, "note": "x"}, "# score\n",
                      metrics_path=str(tmp_path / "m" / "metrics"), summary_path=str(tmp_path / "s" / "summary"),
                      executor_input=executor_input)
    assert json.loads((tmp_path / "m" / "metrics").read_text()) == {"accuracy": 0.75, "reward_mean": 0.5}
    assert (tmp_path / "s" / "summary").read_text() == "# score\n"
    assert json.loads(output_file.read_text()) == {
        "artifacts": {"metrics": {"artifacts": [{"metadata": {"accuracy": 0.75, "reward_mean": 0.5}}]}}}


def test_nothing_requested_writes_nothing(tmp_path):
    write_kfp_outputs({"a": 1}, "x")
    assert list(tmp_path.iterdir()) == []


def test_bad_executor_input_names_the_flag():
    with pytest.raises(ValueError, match="--executor-input: not a KFP executor input"):
        write_kfp_outputs({"a": 1}, "x", executor_input='{"outputs": {}}')
