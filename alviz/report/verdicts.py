"""Which side is better, only where the data say so: paired comparisons of two methods (or two
runs) at each aligned layer, from bootstrap replicates on the same resampled samples, and McNemar's
exact test on the models' per-sample correctness, for every seed pair (``accuracy_pairs``).

The rule (used by the report's tables, ``compare`` and the headline): a side is "better" only
when the 95 % interval of the paired difference excludes zero, else "no detectable difference".
With one run per side the interval is the percentile interval of the paired replicate
differences. With several seeds the replicates of a side are averaged over its seeds (every seed
is measured on the same samples with the same multiplicities, so this is the replicate of the
seed mean) and the seed-to-seed variance of each mean (s^2 / k) is added to the variance of the
paired replicate differences: ``d +/- 1.96 sqrt(var_boot + s_a^2/k_a + s_b^2/k_b)``.

What this is not: no measuring (``measure``), no rendering but the McNemar lines that ``compare``
and the report share (``accuracy_lines``).
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


def seed_pairs(seeds_a: list, seeds_b: list) -> tuple[list[tuple[int, int]], str]:
    """Index pairs (i, j) of two sides' runs given their seeds, and how they were paired: "seed"
    (seed s of A with seed s of B, for the seeds both hold) when one side's seeds are all among
    the other's, else "sorted order" (the i-th smallest seed of A with the i-th of B)."""
    oa = sorted(range(len(seeds_a)), key=lambda i: seeds_a[i])
    ob = sorted(range(len(seeds_b)), key=lambda j: seeds_b[j])
    if set(seeds_a) <= set(seeds_b) or set(seeds_b) <= set(seeds_a):
        where = {seeds_b[j]: j for j in ob}
        return [(i, where[seeds_a[i]]) for i in oa if seeds_a[i] in where], "seed"
    return list(zip(oa, ob)), "sorted order"


def accuracy_pairs(runs_a: list[dict], runs_b: list[dict], alpha: float = 0.05) -> dict:
    """McNemar's exact test on the per-sample correctness of every seed pair, and their combination.

    ``runs_*``: ``{"run", "method", "seed", "correct"}`` per run of a side. When a side holds
    several methods, runs are paired within a method (AL with AL, BP with BP), else across; then
    by seed (``seed_pairs``). Returns ``{"pairs":
    [per pair: run_a, run_b, method_a, method_b, seed_a, seed_b, a_only, b_only, both, neither, p,
    better], "combined": [per method pair: n_pairs, paired_by, significant (pairs with p < alpha),
    a_better, b_better (of those), a_only and b_only summed over the pairs, better]}``.

    The combination: the pairs share the held-out samples, so they are not independent trials
    and no p-value is computed from the pooled counts (they are reported as counts); the combined
    verdict is "A" or "B" only when every pair's own test says so, else ``NO_DIFFERENCE``."""
    by_method = len({r["method"] for r in runs_a}) > 1 or len({r["method"] for r in runs_b}) > 1
    groups = ([([r for r in runs_a if r["method"] == m], [r for r in runs_b if r["method"] == m])
               for m in sorted({r["method"] for r in runs_a} & {r["method"] for r in runs_b})]
              if by_method else [(runs_a, runs_b)])
    pairs, combined = [], []
    for ga, gb in groups:
        idx, how = seed_pairs([r["seed"] for r in ga], [r["seed"] for r in gb])
        rows = []
        for i, j in idx:
            ra, rb = ga[i], gb[j]
            rows.append({"run_a": ra["run"], "run_b": rb["run"], "method_a": ra["method"], "method_b": rb["method"],
                         "seed_a": ra["seed"], "seed_b": rb["seed"],
                         **mcnemar_verdict(ra["correct"], rb["correct"], alpha)})
        if not rows:
            continue
        pairs += rows
        verdicts = {r["better"] for r in rows}
        combined.append({"method_a": rows[0]["method_a"], "method_b": rows[0]["method_b"], "n_pairs": len(rows),
                         "paired_by": how, "alpha": alpha, "significant": sum(r["p"] < alpha for r in rows),
                         "a_better": sum(r["better"] == "A" for r in rows),
                         "b_better": sum(r["better"] == "B" for r in rows),
                         "a_only": sum(r["a_only"] for r in rows), "b_only": sum(r["b_only"] for r in rows),
                         "better": verdicts.pop() if len(verdicts) == 1 else NO_DIFFERENCE})
    return {"pairs": pairs, "combined": combined}


def accuracy_lines(m: dict, name_a: str = "A", name_b: str = "B") -> list[str]:
    """Plain-text lines of ``accuracy_pairs``: one per seed pair (naming both runs and seeds),
    then one combined line per method pair."""
    words = {"A": f"{name_a} better", "B": f"{name_b} better"}
    lines = []
    for r in m["pairs"]:
        lines.append(f"  {r['run_a']} vs {r['run_b']} (seeds {r['seed_a']}/{r['seed_b']}): {name_a} right and {name_b} "
                     f"wrong on {r['a_only']} samples, the reverse on {r['b_only']}; McNemar exact p = {r['p']:.3g}: "
                     + words.get(r["better"], NO_DIFFERENCE))
    for c in m["combined"]:
        lines.append(f"  combined {c['method_a'].upper()}/{c['method_b'].upper()} ({c['n_pairs']} pair(s), paired by "
                     f"{c['paired_by']}): p < {c['alpha']:g} in {c['significant']} ({name_a} better in "
                     f"{c['a_better']}, {name_b} in {c['b_better']}); summed over pairs {name_a} right and "
                     f"{name_b} wrong {c['a_only']}, the reverse {c['b_only']} (the pairs share the samples: counts "
                     f"only, no pooled test); {words.get(c['better'], NO_DIFFERENCE)} (only when every pair agrees)")
    return lines


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
