"""Which side is better, only where the data say so: paired comparisons of two methods (or two
runs) at each aligned layer, from bootstrap replicates on the same resampled samples, and McNemar's
exact test on the models' per-sample correctness.

The rule (used by the report's tables, ``compare`` and the headline): a side is "better" only
when the 95 % interval of the paired difference excludes zero, else "no detectable difference".
With one run per side the interval is the percentile interval of the paired replicate
differences. With several seeds the replicates of a side are averaged over its seeds (every seed
is measured on the same samples with the same multiplicities, so this is the replicate of the
seed mean) and the seed-to-seed variance of each mean (s^2 / k) is added to the variance of the
paired replicate differences: ``d +/- 1.96 sqrt(var_boot + s_a^2/k_a + s_b^2/k_b)``.

What this is not: no measuring (``measure``), no rendering.
"""
from __future__ import annotations

import math

import numpy as np

from ..metrics import MEASURES
from ..uncertainty import NO_DIFFERENCE, mcnemar_verdict, paired_verdict

DIRECTION = {**{k: m.higher_is_better for k, m in MEASURES.items()}, "model_acc": True, "exit_acc": True,
             "assoc_gap": False}


def side_reps(reps_by_run: dict, runs: list[str], layer: str, measure: str):
    """(per-seed values are given elsewhere) the replicate matrix (k x B) of one side, or None."""
    mats = [reps_by_run[r].get((layer, measure)) for r in runs]
    if not mats or any(m is None for m in mats):
        return None
    return np.vstack(mats)


def paired(values_a, values_b, reps_a, reps_b, measure: str, confidence: float = 0.95) -> dict:
    """Verdict on A - B: ``{"diff", "low", "high", "better"}`` (better: "A", "B" or
    ``NO_DIFFERENCE``). ``values_*``: the per-seed values; ``reps_*``: (k x B) replicates or None."""
    hib = DIRECTION.get(measure, True)
    va, vb = np.asarray(values_a, float), np.asarray(values_b, float)
    d = float(va.mean() - vb.mean())
    if reps_a is None or reps_b is None or reps_a.shape[1] < 2 or not math.isfinite(d):
        return {"diff": d, "low": float("nan"), "high": float("nan"), "better": NO_DIFFERENCE}
    ra, rb = reps_a.mean(axis=0), reps_b.mean(axis=0)
    if len(va) == 1 and len(vb) == 1:
        return {"diff": d, **paired_verdict(ra, rb, hib, confidence)}
    diff = ra - rb
    diff = diff[np.isfinite(diff)]
    var = float(np.var(diff, ddof=1)) if diff.size > 1 else float("nan")
    var += (va.var(ddof=1) / len(va) if len(va) > 1 else 0.0) + (vb.var(ddof=1) / len(vb) if len(vb) > 1 else 0.0)
    from scipy.stats import norm

    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(var) if math.isfinite(var) else float("nan")
    lo, hi = d - half, d + half
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 <= hi:
        better = NO_DIFFERENCE
    else:
        better = "A" if (lo > 0) == hib else "B"
    return {"diff": d, "low": lo, "high": hi, "better": better}


def accuracy_verdict(correct_a: list, correct_b: list) -> dict:
    """McNemar's exact test on the first run of each side (paired per-sample correctness), with the
    counts "A right, B wrong" (a_only) and the reverse (b_only)."""
    if not correct_a or not correct_b:
        return {"better": NO_DIFFERENCE, "a_only": None, "b_only": None, "p": float("nan")}
    return mcnemar_verdict(correct_a[0], correct_b[0])


def word(better: str, label_a: str, label_b: str) -> str:
    return {"A": f"{label_a} better", "B": f"{label_b} better"}.get(better, NO_DIFFERENCE)


def position_verdicts(rows: list[dict], reps_by_run: dict, measures) -> list[dict]:
    """For every on-path position held by exactly two methods and every measure: the paired
    verdict of the first method (A, in method order) against the second (B)."""
    from .runs import method_order

    vals: dict = {}
    runs: dict = {}
    layer_at: dict = {}
    for r in rows:
        if r.get("class") not in (None, "") or r.get("stat", "value") != "value" or not r.get("on_path") \
                or r.get("depth") is None or r["measure"] not in measures:
            continue
        vals.setdefault((r["method"], r["layer"], r["measure"]), []).append(float(r["value"]))
        runs.setdefault((r["method"], r["layer"], r["measure"]), []).append(r["run"])
        layer_at.setdefault(float(r["depth"]), {})[r["method"]] = r["layer"]
    out = []
    for depth in sorted(layer_at):
        ms = sorted(layer_at[depth], key=method_order)
        if len(ms) != 2:
            continue
        (ma, la), (mb, lb) = ((m, layer_at[depth][m]) for m in ms)
        for meas in measures:
            ka, kb = (ma, la, meas), (mb, lb, meas)
            if ka not in vals or kb not in vals:
                continue
            v = paired(vals[ka], vals[kb], side_reps(reps_by_run, runs[ka], la, meas),
                       side_reps(reps_by_run, runs[kb], lb, meas), meas)
            out.append({"depth": depth, "measure": meas, "method_a": ma, "layer_a": la, "method_b": mb,
                        "layer_b": lb, **v, "winner": {"A": ma, "B": mb}.get(v["better"])})
    return out
