"""Tables of RESULTS.md's "learning rules side by side" section, from the runs of
`alviz train --preset rules-mnist5k` (checkpoints/rules-mnist5k/depth4/) and the report of
`alviz analyze checkpoints/rules-mnist5k/depth4 --train-samples 1000` (reports/depth4/metrics.csv).

    PYTHONPATH=. python docs/results/rules.py [--runs DIR] [--report DIR]     # prints Markdown

Only finished runs count; every number says over which seeds it is. The paired comparison AL vs
al-e2e uses seed k of each (same initial encoder weights and data order): mean difference and a
95 % t-interval with n - 1 degrees of freedom; "no difference" when the interval holds 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "results"))

from layers_table import layer_table, paired_table, t_interval  # noqa: E402

RULES = ("bp", "bp-authors", "al", "al-e2e", "scpl", "dgl")
LABEL = {"bp": "BP (matched)", "bp-authors": "BP (the authors': ReLU head, softmax)", "al": "AL", "al-e2e": "al-e2e (AL's losses end to end)", "scpl": "SCPL",
         "dgl": "DGL"}
SEEDS = (0, 1, 2)


def history(run: Path):
    meta = run / "meta.json"
    if not meta.is_file():
        return None
    m = json.loads(meta.read_text())
    return m["history"] if m.get("status") == "complete" and m.get("history") else None


def first_above(h, key="test_acc", level=0.5):
    return next((r["epoch"] for r in h if r.get(key, 0) > level), None)


def accuracy_table(runs: Path) -> dict:
    hist = {(r, s): history(runs / f"{r}-seed{s}") for r in RULES for s in SEEDS}
    print("| rule | test accuracy, mean ± s.d. (seeds) | per seed | exits k = 1..4 (mean) | first epoch above 0.5 |")
    print("|---|---|---|---|---|")
    for r in RULES:
        hs = [(s, hist[(r, s)]) for s in SEEDS if hist[(r, s)]]
        if not hs:
            print(f"| {LABEL[r]} | not run | | | |")
            continue
        acc = np.array([h[-1]["test_acc"] for _, h in hs])
        sd = f" ± {acc.std(ddof=1):.3f}" if len(acc) > 1 else ""
        ex = [k for k in sorted(hs[0][1][-1]) if k.startswith("test_acc_exit")]
        exits = ", ".join(f"{np.mean([h[-1][k] for _, h in hs]):.3f}" for k in ex) or "–"
        first = ", ".join(str(first_above(h)) for _, h in hs)
        print(f"| {LABEL[r]} | {acc.mean():.3f}{sd} ({','.join(str(s) for s, _ in hs)}) | "
              f"{', '.join(f'{a:.3f}' for a in acc)} | {exits} | {first} |")
    return hist


def paired(hist: dict) -> None:
    print("\n| output | AL − al-e2e per seed | mean | 95 % t-interval | verdict |")
    print("|---|---|---|---|---|")
    seeds = [s for s in SEEDS if hist[("al", s)] and hist[("al-e2e", s)]]
    if not seeds:
        print("| – | no seed has both runs | | | |")
        return
    keys = [k for k in sorted(hist[("al", seeds[0])][-1]) if k.startswith("test_acc_exit")]
    for k in keys:
        d = np.array([hist[("al", s)][-1][k] - hist[("al-e2e", s)][-1][k] for s in seeds])
        lo, hi = t_interval(d)
        if np.isnan(lo):
            verdict = "one seed: no interval"
        else:
            verdict = "no difference" if lo <= 0 <= hi else ("AL higher" if lo > 0 else "al-e2e higher")
        print(f"| exit {k[-1]} | {', '.join(f'{x:+.3f}' for x in d)} | {d.mean():+.3f} | "
              f"[{lo:+.3f}, {hi:+.3f}] | {verdict} |")
    fa = [(first_above(hist[("al", s)]), first_above(hist[("al-e2e", s)])) for s in seeds]
    print(f"| first epoch above 0.5 at full depth (AL vs al-e2e) | {', '.join(f'{a} vs {b}' for a, b in fa)} | | | |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=ROOT / "checkpoints" / "rules-mnist5k" / "depth4")
    p.add_argument("--report", type=Path, default=ROOT / "reports" / "depth4")
    a = p.parse_args()
    hist = accuracy_table(a.runs)
    paired(hist)
    csv_path = a.report / "metrics.csv"
    if csv_path.is_file():
        print()
        layer_table(csv_path, RULES, ("ratio", "fisher_ratio", "nc1", "knn_acc", "probe_acc"),
                    roles=("block",))
        print()
        paired_table(csv_path, "al", "al-e2e", ("ratio", "fisher_ratio", "nc1", "probe_acc"),
                     ["block1", "block2", "block3", "block4", "bridge4", "decoder4", "decoder1"])
    else:
        print(f"\n(no {csv_path}: per-layer measures not analysed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
