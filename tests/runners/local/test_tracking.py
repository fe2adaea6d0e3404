"""TensorBoard event files of a run, read back with TensorBoard's own reader (EventAccumulator):
every stage's metrics as scalars at step = round, equal to what summary.json reports; each
stage's scalars in a file of their own, written once (nothing re-uploaded as the run grows)."""

from __future__ import annotations

import json
import struct

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from maskgrpo.runners.local.tracking import scalars_of


def f32(x: float) -> float:
    """TensorBoard stores scalars as float32."""
    return struct.unpack("f", struct.pack("f", x))[0]


def test_event_files_hold_every_stage_metric_per_round(cli_run):
    run_dir = cli_run.root / cli_run.run_id
    files = sorted(run_dir.glob("events.out.tfevents.*"))
    assert [f.name.rsplit(".", 1)[1] for f in files] == [f"s{i:03d}" for i in range(9)]  # a file per stage, in order
    kinds = []
    for path in files:  # each file holds exactly one stage's scalars
        single = EventAccumulator(str(path))
        single.Reload()
        (kind,) = {tag.split("/")[1].removesuffix("_seconds") if tag.startswith("time/") else tag.split("/")[0]
                   for tag in single.Tags()["scalars"]}
        kinds.append(kind)
    assert kinds == ["sft", "evaluate", "rollout", "score", "update", "rollout", "score", "update", "evaluate"]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    series = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s for s, _ in series["evaluate/accuracy"]] == [0, 2]
    assert [v for _, v in series["evaluate/accuracy"]] == [f32(e["accuracy"]) for e in summary["evaluations"]]
    for tag, key in [("score/zero_std_ratio", "zero_std_ratio"), ("update/kl", "kl"),
                     ("update/clip_fraction", "clip_fraction"), ("score/reward_mean", "reward_mean")]:
        assert series[tag] == [(r["round"], f32(r[key])) for r in summary["rounds"]], tag
    for kind, steps in [("sft", [0]), ("rollout", [1, 2]), ("score", [1, 2]), ("update", [1, 2]), ("evaluate", [0, 2])]:
        assert [s for s, _ in series[f"time/{kind}_seconds"]] == steps
        assert all(v >= 0 for _, v in series[f"time/{kind}_seconds"])
    assert "sft/loss_last" in tags and "update/grad_norm" in tags
    for tag in ("rollout/generate_seconds", "rollout/logprob_seconds", "update/optimize_seconds", "update/store_seconds"):
        assert [s for s, _ in series[tag]] == [1, 2] and all(v >= 0 for _, v in series[tag]), tag


def test_scalars_of_keeps_finite_numbers_only():
    got = scalars_of({"a": 1, "b": 0.5, "ok": True, "s": "x", "nan": float("nan"), "n": {"c": 2}}, "k")
    assert got == {"k/a": 1.0, "k/b": 0.5, "k/n/c": 2.0}
