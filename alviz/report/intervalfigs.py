"""Figures that show sampling uncertainty: separation and accuracies by layer with bootstrap (one
seed) or combined seed-and-bootstrap (several seeds) intervals, and AL's readout ladder.

What this is not: no measuring, no drawing primitives (``alviz.simplots``).
"""
from __future__ import annotations

import math


def _records(summary: list[dict], measure: str) -> list[dict]:
    idx = {}
    for r in summary:
        if r["measure"] != measure or r.get("class") not in (None, "") or not r.get("on_path") or r.get("depth") is None:
            continue
        d = idx.setdefault((r["method"], r["layer"]), {"method": r["method"], "layer": r["layer"],
                                                      "depth": float(r["depth"]), "role": r.get("role")})
        d[r["stat"]] = r["value"]
    out = []
    for d in idx.values():
        if "mean" in d:
            lo, hi = d.get("boot_low", math.nan), d.get("boot_high", math.nan)
            if measure.endswith("_acc"):  # an accuracy's interval stays inside [0, 1]
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            out.append({**d, "value": d["mean"], "low": lo, "high": hi})
    return out


def interval_figures(summary: list[dict], ladder: list[dict], folder, log) -> dict:
    import matplotlib

    from .. import simplots
    from .figures import COLUMN_WIDTH, STYLE, TEXT_WIDTH, new_figure, save_figure

    figs = {}
    with matplotlib.rc_context(STYLE):
        measures = [m for m in ("ratio", "knn_acc", "probe_acc") if _records(summary, m)]
        if measures:
            fig = new_figure(TEXT_WIDTH, 2.5)
            axes = fig.subplots(1, len(measures), squeeze=False)[0]
            for ax, m in zip(axes, measures):
                simplots.interval_by_layer(_records(summary, m), m, ax=ax, legend=ax is axes[0],
                                           reference=1.0 if m == "ratio" else None, compact=True, xlabel="layer")
            figs["fig_intervals"] = {**save_figure(fig, folder, "fig_intervals"), "caption": (
                "Separation (inter/intra ratio) and 5-NN / linear-probe accuracy by layer with 95 % intervals: "
                "the stratified bootstrap over held-out samples for one seed; with several seeds, the mean over "
                "seeds with seed-to-seed and bootstrap variation combined. Overlapping intervals are not a test; "
                "the tables' verdicts come from paired comparisons.")}
        if ladder:
            fig = new_figure(COLUMN_WIDTH, 2.4)
            simplots.readout_ladder(ladder, ax=fig.add_subplot())
            figs["fig_ladder"] = {**save_figure(fig, folder, "fig_ladder"), "caption": (
                "AL's readout ladder (first AL run): accuracy of the early exit h_1(...h_k(b_k(s_k))) against a "
                "linear probe trained on the same layer s_k, with bootstrap 95 % intervals; where the probe is "
                "higher, the bridge reads out less than the layer holds.")}
    return figs
