"""Gate: should this tick's challenger replace the champion?  (The numbers: core/gate.py.)

The challenger is the last round's evaluation; the champion's is ``evaluate/0`` of the same run:
with a warm start SFT passes the champion through, so both were evaluated on the same held-out
examples with the same seeds (on the first tick, with no champion, ``evaluate/0`` is the SFT
model).  Rows are paired by position and must name the same prompts.  Per-example metrics:
``accuracy`` (reward >= reward.accuracy_threshold), ``reward`` and ``completion_length``
(characters of the decoded completion).

It also checks the warm start really loaded the champion (the SFT pass-through's weight digest
equals the one the version recorded) and, unless it promotes, releases the tick's lease.  The
decision is committed (``decision.json``, ``decision.md``); the KFP step also writes the Markdown
as its summary and ``true``/``false`` to ``--promote-path`` for the pipeline's ``dsl.If``.

    python -m maskgrpo.stages.gate --spec @gate.json [--promote-path P]
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from maskgrpo.core.gate import Guard, decide
from maskgrpo.specs import GateSpec, spec_hash
from maskgrpo.stages.policy import parse_ref
from maskgrpo.stages.retrain import DECISION, read_resolved
from maskgrpo.store import CorruptOutputError, Store

STAGE = "gate"
DECISION_MD = "decision.md"


class GateResult(BaseModel):
    decision: str
    promote: bool
    n: int
    challenger: float
    champion: float
    diff: float
    ci_low: float
    ci_high: float
    reason: str
    skipped: bool = False


def example_metrics(rows: list[dict], threshold: float) -> dict[str, list[float]]:
    rewards = [float(r["reward"]) for r in rows]
    return {"reward": rewards, "accuracy": [float(x >= threshold) for x in rewards],
            "completion_length": [float(len(str(r.get("completion", "")))) for r in rows]}


def markdown(d: dict, champion: int | None) -> str:
    head = f"# Promotion gate: **{d['decision'].upper()}**\n\n{d['reason']}\n\n"
    vs = f"champion v{champion}" if champion is not None else "the first tick's SFT model (no champion yet)"
    lines = [f"Challenger vs {vs}, {d['n']} paired held-out examples.\n",
             "| metric | challenger | champion | difference | limit |", "|---|---|---|---|---|",
             f"| {d['metric']} (gate) | {d['challenger']:.4f} | {d['champion']:.4f} | {d['diff']:+.4f} "
             f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | margin {d['margin']} |"]
    for g in d["guards"]:
        lines.append(f"| {g['metric']} (guard) | {g['challenger']:.4f} | {g['champion']:.4f} | "
                     f"regression {g['regression']:+.4f} | tolerance {g['tolerance']} {'ok' if g['ok'] else 'FAILED'} |")
    return head + "\n".join(lines) + "\n"


def run(spec: GateSpec, store: Store) -> GateResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, spec.round, digest):
        d = store.open(spec.run_id, STAGE, spec.round).get_json(DECISION)
        return GateResult(**{k: d[k] for k in GateResult.model_fields if k in d}, skipped=True)
    resolved = read_resolved(store, spec.run_id)
    if resolved["warm_start"] and resolved.get("champion_weight_digest"):
        loaded = store.open(spec.run_id, "sft", 0).get_json("metrics.json")["weight_digest"]
        if loaded != resolved["champion_weight_digest"]:
            raise CorruptOutputError(f"run {spec.run_id}: the warm start loaded weights {loaded[:12]} but champion "
                                     f"v{resolved['champion']} recorded {resolved['champion_weight_digest'][:12]}")
    rows = {}
    for side, ref in (("challenger", spec.challenger), ("champion", spec.champion)):
        rows[side] = store.open(spec.run_id, *parse_ref(ref)).get_jsonl("samples.jsonl")
    if [r["prompt"] for r in rows["challenger"]] != [r["prompt"] for r in rows["champion"]]:
        raise ValueError(f"gate: {spec.challenger} and {spec.champion} were not evaluated on the same held-out prompts")
    g = spec.gate
    d = decide(example_metrics(rows["challenger"], spec.accuracy_threshold),
               example_metrics(rows["champion"], spec.accuracy_threshold),
               metric=g.metric, margin=g.margin, guards=[Guard(x.metric, x.tolerance, x.higher_is_better) for x in g.guards],
               confidence=g.confidence, resamples=g.resamples, min_examples=g.min_examples, seed=g.seed)
    d.update(champion_version=resolved["champion"], challenger_policy=spec.challenger_policy,
             challenger_eval=spec.challenger, champion_eval=spec.champion)
    with store.begin(spec.run_id, STAGE, spec.round, digest) as attempt:
        attempt.put_json(DECISION, d)
        attempt.put_bytes(DECISION_MD, markdown(d, resolved["champion"]).encode())
        attempt.commit()
    if not d["promote"]:
        store.registry(spec.model_name).release_lease(spec.run_id)
    return GateResult(**{k: d[k] for k in GateResult.model_fields if k in d})


def main(argv: list[str] | None = None) -> int:
    from maskgrpo.stages.main import read_spec_arg, split_flags, stage_main

    known, rest = split_flags(argv, ("--promote-path",), ("--summary-path", "--spec", "--run-id"))
    code = stage_main(STAGE, GateSpec, run, rest)
    if code == 0 and (known.promote_path or known.summary_path):
        raw = read_spec_arg(known.spec)
        spec = GateSpec.model_validate({**raw, **({"run_id": known.run_id} if known.run_id else {})})
        from maskgrpo.store import open_store

        out = open_store(spec.store).open(spec.run_id, STAGE, spec.round)
        if known.summary_path:
            Path(known.summary_path).write_text(out.get_bytes(DECISION_MD).decode())
        if known.promote_path:
            Path(known.promote_path).parent.mkdir(parents=True, exist_ok=True)
            Path(known.promote_path).write_text("true" if out.get_json(DECISION)["promote"] else "false")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
