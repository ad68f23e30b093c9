"""Tables and figures of RESULTS.md's "both recipes" section, from the runs under
checkpoints/claims/ and the reports under reports/claims/ (see RESULTS.md for the commands).

    PYTHONPATH=. python docs/results/recipe_claims.py        # prints Markdown, writes docs/results/recipe_*.png

Only finished runs (status complete) are counted; a missing cell is printed as "not run".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[2]
CK = ROOT / "checkpoints" / "claims"
REP = ROOT / "reports" / "claims"
OUT = ROOT / "docs" / "results"
METHODS = ("al", "bp", "bp-authors")
LABEL = {"al": "AL", "bp": "matched BP", "bp-authors": "authors' BP"}
RECIPES = ("alviz", "authors")


def final_acc(run: Path):
    meta = run / "meta.json"
    if not meta.is_file():
        return None
    m = json.loads(meta.read_text())
    if m.get("status") != "complete" or not m.get("history"):
        return None
    return float(m["history"][-1]["test_acc"]), [float(r["test_acc"]) for r in m["history"]]


def summary(values):
    v = np.asarray(values, float)
    if len(v) == 0:
        return None
    mean = v.mean()
    if len(v) < 2:
        return mean, float("nan"), (float("nan"), float("nan"))
    sd = v.std(ddof=1)
    h = stats.t.ppf(0.975, len(v) - 1) * sd / np.sqrt(len(v))
    return mean, sd, (mean - h, mean + h)


def fmt(s, digits=3):
    if s is None:
        return "not run"
    mean, sd, (lo, hi) = s
    if np.isnan(sd):
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def default_job():
    rows, data = [], {}
    for r in RECIPES:
        exp = CK / f"default-{r}"
        for m in METHODS:
            accs = []
            for seed in (0, 1, 2):
                got = final_acc(exp / f"{m}-seed{seed}")
                if got:
                    accs.append(got[0])
            data[(r, m)] = accs
            s = summary(accs)
            ci = "" if s is None or np.isnan(s[1]) else f"[{s[2][0]:.3f}, {s[2][1]:.3f}]"
            rows.append(f"| {r} | {LABEL[m]} | {fmt(s)} | {', '.join(f'{a:.4f}' for a in accs) or '-'} | {ci} |")
    print("| recipe | method | test accuracy (mean ± s.d.) | per seed (0, 1, 2) | 95 % CI |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return data


def paired(data):
    """AL minus each BP, paired by seed (same initial encoder weights and data order), per recipe."""
    sys.path.insert(0, str(OUT))
    from layers_table import t_interval

    print("\n| recipe | difference | per seed | mean | 95 % t-interval (2 d.f.) | verdict |")
    print("|---|---|---|---|---|---|")
    for r in RECIPES:
        exp = CK / f"default-{r}"
        for b in ("bp", "bp-authors"):
            d = []
            for seed in (0, 1, 2):
                a, c = final_acc(exp / f"al-seed{seed}"), final_acc(exp / f"{b}-seed{seed}")
                if a and c:
                    d.append(a[0] - c[0])
            if not d:
                continue
            lo, hi = t_interval(d)
            verdict = ("one seed" if np.isnan(lo) else "no difference" if lo <= 0 <= hi
                       else "AL higher" if lo > 0 else "AL lower")
            print(f"| {r} | AL − {LABEL[b]} | {', '.join(f'{x:+.3f}' for x in d)} | {np.mean(d):+.4f} | "
                  f"[{lo:+.4f}, {hi:+.4f}] | {verdict} |")


def sigmoid():
    data = {}
    print("\n| recipe | depth | AL | matched BP | authors' BP |")
    print("|---|---|---|---|---|")
    for r in RECIPES:
        for d in (2, 4, 6, 8):
            cells = []
            for m in METHODS:
                accs, curves = [], []
                for seed in (0, 1, 2):
                    for sub in sorted(CK.glob(f"sigmoid-{r}*/depth{d}")):
                        got = final_acc(sub / f"{m}-seed{seed}")
                        if got:
                            accs.append(got[0])
                            curves.append(got[1])
                            break
                data[(r, d, m)] = (accs, curves)
                s = summary(accs)
                if s is None and m == "bp-authors":  # the same network as the matched BP here (RESULTS.md)
                    cells.append("= matched BP")
                    continue
                best = f", best epoch {max(max(c) for c in curves):.3f}" if curves else ""
                cells.append(fmt(s) + (best if s is not None else ""))
            print(f"| {r} | {d} | " + " | ".join(cells) + " |")
    return data


def metafeatures():
    sys.path.insert(0, str(OUT))
    from layers_table import layer_table

    for r in RECIPES:
        path = REP / f"default-{r}" / "metrics.csv"
        print(f"\nrecipe {r}, {path.relative_to(ROOT)}:\n")
        if not path.is_file():
            print("no metrics.csv (analysis not run)")
            continue
        layer_table(path, METHODS, ("ratio", "fisher_ratio", "nc1", "silhouette", "knn_acc", "probe_acc"))
    return None


def figures(dflt, sig):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alviz.plots import method_style

    fig, ax = plt.subplots(figsize=(5.2, 3.2), layout="constrained")
    for i, m in enumerate(METHODS):
        st = method_style(m)
        for j, r in enumerate(RECIPES):
            accs = dflt.get((r, m), [])
            if not accs:
                continue
            x = j + (i - 1) * 0.22
            ax.scatter([x] * len(accs), accs, color=st["color"], marker=st["marker"], s=14, alpha=0.6)
            ax.errorbar([x], [np.mean(accs)], yerr=[np.std(accs, ddof=1) if len(accs) > 1 else 0],
                        color=st["color"], marker="_", markersize=14, capsize=3,
                        label=LABEL[m] if j == 0 else None)
    ax.set_xticks(range(len(RECIPES)), [f"recipe: {r}" for r in RECIPES])
    ax.set_ylabel("test accuracy (1,000 held-out)")
    ax.set_title("default job (2-component ReLU MLP, mnist5k, 20 epochs)", fontsize=9)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    ax.legend(frameon=False, fontsize=8)
    fig.savefig(OUT / "recipe_default.png", dpi=150)
    plt.close(fig)

    shown = [r for r in RECIPES if any(sig.get((r, d, m), ([], []))[0] for d in (2, 4, 6, 8) for m in METHODS)]
    if not shown:
        return
    fig, axes = plt.subplots(1, len(shown), figsize=(3.9 * len(shown), 3.0), sharey=True, layout="constrained",
                             squeeze=False)
    axes = axes[0]
    for ax, r in zip(axes, shown):
        for m in METHODS:
            st = method_style(m)
            ds = [d for d in (2, 4, 6, 8) if sig.get((r, d, m), ([], []))[0]]
            if not ds:
                continue
            ys = [np.mean(sig[(r, d, m)][0]) for d in ds]
            ax.plot(ds, ys, color=st["color"], marker=st["marker"], linestyle=st["linestyle"], label=LABEL[m])
        ax.axhline(0.1, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xticks([2, 4, 6, 8])
        ax.set_xlabel("components (sigmoid encoders)")
        ax.set_title(f"recipe: {r}", fontsize=9)
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    axes[0].set_ylabel("test accuracy, 15 epochs\n(mean of 3 seeds)")
    axes[-1].legend(frameon=False, fontsize=8, loc="center left")
    fig.savefig(OUT / "recipe_sigmoid.png", dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    d = default_job()
    paired(d)
    s = sigmoid()
    metafeatures()
    figures(d, s)
