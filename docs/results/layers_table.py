"""Shared by the scripts in docs/results/: per-layer Markdown tables from an `alviz analyze`
metrics.csv (the rows aggregated over seeds: run = the method, seed = "all", stats mean / std / n),
and a t-interval of a mean. Not a module of alviz; reading the CSV needs only the standard library.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats


def t_interval(d, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval of the mean of `d` (n - 1 degrees of freedom; NaNs for n < 2)."""
    d = np.asarray(d, float)
    if len(d) < 2:
        return float("nan"), float("nan")
    h = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - h), float(d.mean() + h)


def read_aggregates(path: Path) -> dict:
    """{(method, layer, measure): {"mean", "std", "n", "role", "depth", "match"}} of whole layers."""
    out: dict = defaultdict(dict)
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["seed"] != "all" or r["class"] or r["stat"] not in ("mean", "std", "n"):
                continue
            key = (r["method"], r["layer"], r["measure"])
            out[key][r["stat"]] = float(r["value"])
            out[key].update(role=r["role"], depth=r["depth"], match=r["match"])
    return out


def _fmt(v: dict, digits: int = 3) -> str:
    if "mean" not in v or math.isnan(v["mean"]):
        return "–"
    sd = v.get("std", float("nan"))
    n = int(v.get("n", 1))
    s = f"{v['mean']:.{digits}f}"
    return s + (f" ± {sd:.{digits}f}" if n > 1 and not math.isnan(sd) else " (1 seed)")


def layer_table(path: Path, methods, measures, roles=None, layers=None) -> None:
    """Print one row per (layer, method): each measure as mean ± s.d. over seeds (n in the last column).
    `roles`: keep layers of these roles (encoder blocks: "block" matches role "encoder" by name);
    `layers`: keep these layer names."""
    agg = read_aggregates(path)
    names = sorted({(v["depth"], k[1]) for k, v in agg.items()
                    if (layers is None or k[1] in layers)
                    and (roles is None or any(r in k[1] or r == v["role"] for r in roles))},
                   key=lambda t: (float(t[0]) if t[0] not in ("", "nan") else 99.0, t[1]))
    print("| position | layer | method | " + " | ".join(measures) + " | seeds |")
    print("|---|---|---|" + "---|" * len(measures) + "---|")
    for depth, layer in names:
        for m in methods:
            cells = [agg.get((m, layer, q)) for q in measures]
            if not any(cells):
                continue
            n = next((int(c["n"]) for c in cells if c and "n" in c), 0)
            print(f"| {depth} | {layer} | {m} | " + " | ".join(_fmt(c) if c else "–" for c in cells) + f" | {n} |")


def read_values(path: Path) -> dict:
    """{(method, seed, layer, measure): value} of every run's whole-layer point values."""
    out = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["stat"] == "value" and not r["class"] and r["seed"] != "all":
                out[(r["method"], int(r["seed"]), r["layer"], r["measure"])] = float(r["value"])
    return out


def paired_table(path: Path, a: str, b: str, measures, layers, seeds=(0, 1, 2), lower_better=("nc1",)) -> None:
    """Per layer and measure: a - b paired by seed, its mean, 95 % t-interval and verdict."""
    v = read_values(path)
    print(f"| layer | measure | {a} − {b} per seed | mean | 95 % t-interval | verdict |")
    print("|---|---|---|---|---|---|")
    for layer in layers:
        for q in measures:
            d = [v[(a, s, layer, q)] - v[(b, s, layer, q)] for s in seeds
                 if (a, s, layer, q) in v and (b, s, layer, q) in v]
            if not d:
                continue
            lo, hi = t_interval(d)
            if math.isnan(lo):
                verdict = "one seed"
            elif lo <= 0 <= hi:
                verdict = "no difference"
            else:
                up = lo > 0
                verdict = f"{a} {'higher' if up else 'lower'}" + (
                    f" ({'worse' if up == (q in lower_better) else 'better'})")
            print(f"| {layer} | {q} | {', '.join(f'{x:+.3f}' for x in d)} | {np.mean(d):+.3f} | "
                  f"[{lo:+.3f}, {hi:+.3f}] | {verdict} |")
