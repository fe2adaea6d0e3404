"""The promotion gate's decision: pure math on paired per-example metrics (no I/O, stdlib + torch).

Challenger and champion are evaluated on the same held-out examples with the same seeds, so each
metric comes as two aligned lists.  For the gate metric the per-example difference
d_i = challenger_i - champion_i is resampled with replacement (``resamples`` paired bootstrap draws
from a seeded ``torch.Generator``) to a two-sided ``confidence`` interval of its mean.

    promote   mean(d) >= margin, the interval's lower end > 0, every guard within its tolerance
    reject    mean(d) < margin, or a guard metric regressed by more than its tolerance
    uncertain fewer than ``min_examples`` pairs, or mean(d) >= margin but the interval reaches 0:
              too few examples to tell, so the champion stays

A guard regresses by ``champion - challenger`` (``higher_is_better``) or ``challenger - champion``
(otherwise), compared on the means.  Percentile bootstrap, not BCa: simple and stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Guard", "bootstrap_ci", "decide"]


@dataclass(frozen=True)
class Guard:
    metric: str
    tolerance: float
    higher_is_better: bool = True


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def bootstrap_ci(diff: list[float], confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(diff) from ``resamples`` seeded resamples."""
    if not diff:
        return (-math.inf, math.inf)
    d = torch.tensor(diff, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(diff), (resamples, len(diff)), generator=gen)
    means = d[idx].mean(dim=1).sort().values
    alpha = (1.0 - confidence) / 2
    lo = means[min(int(math.floor(alpha * resamples)), resamples - 1)]
    hi = means[min(int(math.ceil((1 - alpha) * resamples)) - 1, resamples - 1)]
    return float(lo), float(hi)


def decide(challenger: dict[str, list[float]], champion: dict[str, list[float]], *, metric: str, margin: float,
           guards: list[Guard] = (), confidence: float = 0.9, resamples: int = 2000, min_examples: int = 20,
           seed: int = 0) -> dict:
    """The decision ('promote' | 'reject' | 'uncertain') and every number it rests on."""
    for name in [metric] + [g.metric for g in guards]:
        if name not in challenger or name not in champion:
            raise ValueError(f"gate metric {name!r} is missing (have {sorted(set(challenger) & set(champion))})")
        if len(challenger[name]) != len(champion[name]):
            raise ValueError(f"gate metric {name!r}: {len(challenger[name])} challenger values but "
                             f"{len(champion[name])} champion values: the evaluations are not paired")
        if not all(math.isfinite(x) for x in challenger[name] + champion[name]):
            raise ValueError(f"gate metric {name!r} has NaN or infinite values")
    diff = [a - b for a, b in zip(challenger[metric], champion[metric])]
    n = len(diff)
    lo, hi = bootstrap_ci(diff, confidence, resamples, seed)
    out = {
        "metric": metric, "n": n, "margin": margin, "confidence": confidence, "resamples": resamples, "seed": seed,
        "challenger": _mean(challenger[metric]), "champion": _mean(champion[metric]), "diff": _mean(diff),
        "ci_low": lo, "ci_high": hi, "guards": [],
    }
    guard_failed = []
    for g in guards:
        new, old = _mean(challenger[g.metric]), _mean(champion[g.metric])
        regression = (old - new) if g.higher_is_better else (new - old)
        ok = regression <= g.tolerance
        out["guards"].append({"metric": g.metric, "challenger": new, "champion": old, "regression": regression,
                              "tolerance": g.tolerance, "ok": ok})
        if not ok:
            guard_failed.append(g.metric)
    if n < min_examples:
        decision, reason = "uncertain", f"{n} paired examples < min_examples {min_examples}"
    elif guard_failed:
        decision, reason = "reject", f"guard metric(s) regressed beyond tolerance: {', '.join(guard_failed)}"
    elif out["diff"] < margin:
        decision, reason = "reject", f"{metric} improved by {out['diff']:+.4f} < margin {margin}"
    elif lo <= 0.0:
        decision, reason = "uncertain", (f"{metric} improved by {out['diff']:+.4f} but the {confidence:.0%} "
                                         f"interval [{lo:+.4f}, {hi:+.4f}] includes 0: too few examples to tell")
    else:
        decision, reason = "promote", (f"{metric} improved by {out['diff']:+.4f} >= margin {margin}, "
                                       f"{confidence:.0%} interval [{lo:+.4f}, {hi:+.4f}]")
    out.update(decision=decision, promote=decision == "promote", reason=reason)
    return out
