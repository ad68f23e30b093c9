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
