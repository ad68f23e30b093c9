"""Sampling uncertainty of measures on held-out samples: a seeded stratified bootstrap, exact
binomial (Clopper-Pearson) intervals for accuracies, paired tests for "is A better than B", and
the combination of bootstrap and seed-to-seed variation.

What this is: pure numpy/scipy functions on per-sample quantities.

- ``bootstrap_counts(y, B, seed)``: B x N multiplicities of a stratified bootstrap (each class
  resampled with replacement to its own size, so class counts are fixed in every replicate).
  Same ``seed`` and labels -> same replicates; two runs measured on the same samples therefore
  share replicates, which makes paired comparisons paired.
- ``boot_mean(values, W)``: the replicates of a per-sample mean, ``W @ values / N`` (exact: no
  refit is needed for a mean of per-sample values).
- ``percentile_interval(reps, conf)``: the percentile interval of the replicates.
- ``clopper_pearson(k, n, conf)``: the exact binomial interval of an accuracy k / n.
- ``mcnemar(correct_a, correct_b)``: the exact (binomial) McNemar test on paired per-sample
  correctness; returns the discordant counts and the two-sided p-value.
- ``paired_verdict(reps_a, reps_b, conf, higher_is_better)``: "A", "B" or "no detectable
  difference" from the interval of the paired replicate differences (A - B).
- ``combine_seeds(points, lows, highs, conf)``: one interval from several seeds' values and
  their bootstrap intervals (see its docstring for how).

What this is not: no measure definitions (``alviz.metrics``, ``alviz.similarity``), no files.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_REPLICATES", "NO_DIFFERENCE", "bootstrap_counts", "boot_mean", "percentile_interval",
           "clopper_pearson", "mcnemar", "mcnemar_verdict", "paired_verdict", "combine_seeds"]

#: default number of bootstrap replicates (an ``Options`` field of the report): enough for a 95 %
#: percentile interval whose ends move by about a tenth of its width between seeds
DEFAULT_REPLICATES = 200
NO_DIFFERENCE = "no detectable difference"


def bootstrap_counts(y, n_boot: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Multiplicities (``n_boot`` x N) of a seeded stratified bootstrap of the labels ``y``.

    Within every class the class's n_c members are drawn n_c times with replacement; row r
    counts how often each sample was drawn in replicate r (rows sum to N, class sums are the
    class counts). Vectorised: one ``integers`` draw and one ``bincount`` per class."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y must be a non-empty 1-D array of labels; got shape {y.shape}.")
    n_boot = int(n_boot)
    if n_boot < 0:
        raise ValueError(f"the number of bootstrap replicates must be >= 0; got {n_boot}.")
    rng = np.random.default_rng(seed)
    n = len(y)
    W = np.zeros((n_boot, n), dtype=dtype)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        draw = rng.integers(0, len(members), size=(n_boot, len(members)))
        flat = (np.arange(n_boot)[:, None] * len(members) + draw).ravel()
        W[:, members] = np.bincount(flat, minlength=n_boot * len(members)).reshape(n_boot, len(members))
    return W


def boot_mean(values, W: np.ndarray) -> np.ndarray:
    """Replicates of the mean of per-sample ``values`` (N,) under multiplicities ``W`` (B x N)."""
    v = np.asarray(values, dtype=np.float64)
    return (W @ v) / W.sum(axis=1)


def percentile_interval(reps, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high): the percentile interval of bootstrap replicates (NaN replicates dropped;
    (nan, nan) when fewer than 2 finite replicates)."""
    r = np.asarray(reps, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return float(lo), float(hi)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial interval of the proportion k / n."""
    from scipy.stats import beta

    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1; got k={k}, n={n}.")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def mcnemar(correct_a, correct_b) -> dict:
    """Exact McNemar test on paired per-sample correctness (booleans, same samples, same order).

    ``a_only``: samples A gets right and B wrong; ``b_only``: the reverse. Under the null
    (equal accuracy) a_only ~ Binomial(a_only + b_only, 1/2); ``p`` is the two-sided exact
    p-value (1.0 when there is no discordant pair)."""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be 1-D and of equal length; got {a.shape} and {b.shape}.")
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    p = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "both": int(np.sum(a & b)), "neither": int(np.sum(~a & ~b)),
            "p": p}


def paired_verdict(reps_a, reps_b, higher_is_better: bool, confidence: float = 0.95) -> dict:
    """Paired bootstrap comparison: the interval of ``reps_a - reps_b`` (replicates on the same
    resampled samples). Returns ``{"low", "high", "better"}`` where better is "A" or "B" when the
    interval excludes zero (by the measure's direction), else ``NO_DIFFERENCE``."""
    d = np.asarray(reps_a, dtype=np.float64) - np.asarray(reps_b, dtype=np.float64)
    lo, hi = percentile_interval(d, confidence)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 <= hi:
        better = NO_DIFFERENCE
    else:
        a_higher = lo > 0
        better = "A" if a_higher == higher_is_better else "B"
    return {"low": lo, "high": hi, "better": better}


def mcnemar_verdict(correct_a, correct_b, alpha: float = 0.05) -> dict:
    """McNemar's exact test as a verdict on accuracy: "A", "B" or ``NO_DIFFERENCE``."""
    m = mcnemar(correct_a, correct_b)
    if m["p"] >= alpha or m["a_only"] == m["b_only"]:
        return {**m, "better": NO_DIFFERENCE}
    return {**m, "better": "A" if m["a_only"] > m["b_only"] else "B"}


def combine_seeds(points, lows, highs, confidence: float = 0.95) -> tuple[float, float]:
    """One interval for a method from several seeds, each with a value and a bootstrap interval.

    The two sources of variation are added as variances: the seed-to-seed variance of the mean
    is ``s^2 / k`` (s: sample s.d. of the k seed values); the sampling variance of the mean of k
    runs measured on the same held-out samples is taken as the mean of the seeds' bootstrap
    variances (each estimated from its interval, ``((high - low) / (2 z))^2``; the same samples
    make these errors correlated across seeds, so it is not divided by k: the conservative
    choice). The interval is ``mean +/- t_{k-1} * sqrt(s^2 / k + v_boot)``; with one seed it is
    the seed's own bootstrap interval."""
    from scipy import stats

    p = np.asarray(points, dtype=np.float64)
    lo = np.asarray(lows, dtype=np.float64)
    hi = np.asarray(highs, dtype=np.float64)
    k = len(p)
    if k == 0:
        raise ValueError("combine_seeds needs at least one seed.")
    if k == 1:
        return float(lo[0]), float(hi[0])
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    v_boot = float(np.mean(((hi - lo) / (2 * z)) ** 2))
    half = float(stats.t.ppf(0.5 + confidence / 2, k - 1)) * math.sqrt(p.var(ddof=1) / k + v_boot)
    m = float(p.mean())
    return m - half, m + half
