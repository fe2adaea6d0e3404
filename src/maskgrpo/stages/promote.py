"""Promote: register the challenger as a new version and move the ``champion`` alias to it.

Runs after a gate that said ``promote`` (under ``dsl.If`` on KFP; locally it reads the decision
and does nothing otherwise).  The version records the challenger's checkpoint pinned by attempt
id and manifest sha256, the parent (the champion the tick started from), the data snapshot, the
pipeline document's hash, the code version, the challenger's evaluation and the gate's numbers.

The alias moves by compare-and-swap against the champion the gate compared with: if another tick
promoted meanwhile, this one loses (``promoted`` false, its version stays an orphan for
``maskgrpo models gc``) and the champion is whatever the winner made it.  A rerun after a crash
between registering and the alias move reuses the version this run registered.  The tick's
lease is released either way.

    python -m maskgrpo.stages.promote --spec @promote.json
"""

from __future__ import annotations

from pydantic import BaseModel

from maskgrpo.specs import PromoteSpec, spec_hash
from maskgrpo.stages.policy import parse_ref
from maskgrpo.stages.retrain import DECISION, read_resolved
from maskgrpo.store import PromotionConflict, Store

STAGE = "promote"
RESULT = "promotion.json"


class PromoteResult(BaseModel):
    promoted: bool
    version: int | None
    champion: int | None
    reason: str
    skipped: bool = False


def version_record(spec: PromoteSpec, store: Store, decision: dict, resolved: dict) -> dict:
    policy = decision["challenger_policy"]
    ckpt = store.open(spec.run_id, *parse_ref(policy))
    evaluation = store.open(spec.run_id, *parse_ref(decision["challenger_eval"])).get_json("metrics.json")
    snapshot = resolved.get("data_snapshot") or {}
    return {
        "run_id": spec.run_id, "checkpoint": store.pin(ckpt), "parent": resolved["champion"],
        "weight_digest": ckpt.get_json("metrics.json").get("weight_digest"),
        "data_snapshot": {k: snapshot[k] for k in ("pattern", "files", "digest", "rows", "row_ids") if k in snapshot} or None,
        "pipeline_hash": spec.pipeline_hash, "code_version": ckpt.manifest["package_version"],  # the package that wrote the checkpoint
        "metrics": {"accuracy": evaluation["accuracy"], "reward_mean": evaluation["reward_mean"],
                    "examples": evaluation["examples"]},
        "gate": {k: decision[k] for k in ("decision", "metric", "diff", "ci_low", "ci_high", "n", "reason")},
    }


def run(spec: PromoteSpec, store: Store) -> PromoteResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, spec.round, digest):
        return PromoteResult(**store.open(spec.run_id, STAGE, spec.round).get_json(RESULT), skipped=True)
    decision = store.open(spec.run_id, *parse_ref(spec.gate_ref)).get_json(DECISION)
    resolved = read_resolved(store, spec.run_id)
    registry = store.registry(spec.model_name)
    version = None
    if not decision["promote"]:
        promoted, reason = False, f"gate: {decision['decision']}: {decision['reason']}"
    else:
        existing = registry.find_by_run(spec.run_id)  # a rerun after a crash before the alias moved
        version = existing["version"] if existing else registry.register(version_record(spec, store, decision, resolved))
        if registry.aliases()["champion"] == version:
            promoted, reason = True, "already champion (rerun after the alias moved)"
        else:
            try:
                registry.promote(version, expected=resolved["champion"], reason=decision["reason"])
                promoted, reason = True, decision["reason"]
            except PromotionConflict as err:
                promoted, reason = False, str(err)
    result = PromoteResult(promoted=promoted, version=version, champion=registry.aliases()["champion"], reason=reason)
    with store.begin(spec.run_id, STAGE, spec.round, digest) as attempt:
        attempt.put_json(RESULT, result.model_dump(exclude={"skipped"}))
        attempt.commit()
    registry.release_lease(spec.run_id)
    return result


def main(argv: list[str] | None = None) -> int:
    from maskgrpo.stages.main import stage_main

    return stage_main(STAGE, PromoteSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
