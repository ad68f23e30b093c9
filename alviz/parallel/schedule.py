"""The pipeline's schedule as arithmetic: how long an epoch of micro-batches takes through stages
of given costs, the speed-up that allows, and the fill bubble in it.

The model is the schedule of ``pipeline.py``: stage r processes micro-batches in order; it hands
micro-batch u on after the forward share `fwd_share` of its cost (the backward and the update
follow), and stage r+1 starts u once it is handed on and it has finished u-1. Nothing waits for
anything else (enough receives are posted ahead: ``pipeline.WINDOW``), so with equal stages of cost
c an epoch of U micro-batches over K stages takes U*c + (K-1)*fwd_share*c: the first micro-batch's
forward passes are the fill, the rest overlaps. Costs are any unit (seconds, FLOPs).

Used by the benchmark (``bench/bench_parallel.py``: its "ideal" speed-up) and by the projection of
a multi-GPU pipeline in docs/PARALLEL.md. What this is not: no timing, no process group; it knows
nothing of transfers or per-message overhead unless they are folded into the stage costs.
"""
from __future__ import annotations


def epoch_time(stage_costs, units: int, fwd_share: float) -> float:
    """The time an epoch of `units` micro-batches takes through stages of per-micro-batch costs
    `stage_costs` (one per rank, in pipeline order), each handing a micro-batch on after
    `fwd_share` of its cost: the finish of the last stage's last micro-batch (exact for this
    schedule with deterministic costs)."""
    costs = [float(c) for c in stage_costs]
    if not costs or units < 1 or not 0.0 <= fwd_share <= 1.0 or any(not c >= 0 for c in costs):
        raise ValueError(f"need stages of non-negative cost, units >= 1 and 0 <= fwd_share <= 1; received "
                         f"{costs}, {units}, {fwd_share}")
    handed = [0.0] * units  # when the previous stage handed micro-batch u on (stage 0: at once)
    finish = 0.0
    for c in costs:
        done = 0.0  # when this stage finished its previous micro-batch
        for u in range(units):
            start = max(done, handed[u])
            handed[u] = start + fwd_share * c
            done = start + c
        finish = max(finish, done)
    return finish


def speedup(stage_costs, units: int, fwd_share: float) -> float:
    """One process doing every stage's work (sum of the costs, per micro-batch, no fill) against the
    pipeline of `epoch_time`."""
    t = epoch_time(stage_costs, units, fwd_share)
    return units * sum(float(c) for c in stage_costs) / t if t > 0 else 1.0


def ideal_speedup(ranks: int, units: int, fwd_share: float) -> float:
    """`speedup` of `ranks` equal stages: K*U / (U + (K-1)*fwd_share). It includes the fill bubble
    (the last rank starts after K-1 forward passes), so it is below K; it is what the benchmark's
    "of ideal" divides by."""
    return ranks * units / (units + (ranks - 1) * fwd_share)


def fill_bubble(ranks: int, units: int, fwd_share: float) -> float:
    """The share of K ranks' epoch that equal stages spend idle: (K-1)*f / (U + (K-1)*f)."""
    return (ranks - 1) * fwd_share / (units + (ranks - 1) * fwd_share)
