"""The report's tables as (header, rows, bold cells): the runs, accuracy over seeds, every measure
by layer with the better side marked, the measure definitions; and the number formats they use.

What this is not: no rendering to Markdown or HTML (``document``), no measuring.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from ..metrics import MEASURES, summarize
from .measure import summary_index
from .runs import RunInfo, method_order


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}f}"


def fmt_pm(mean, std, digits: int = 3) -> str:
    s = fmt(mean, digits)
    if std is not None and isinstance(std, float) and math.isfinite(std):
        s += f" ± {fmt(std, digits)}"
    return s


def accuracy_summary(infos: list[RunInfo]) -> list[dict]:
    out = []
    for m in sorted({i.method for i in infos}, key=method_order):
        accs = [float(i.history[-1]["test_acc"]) for i in infos
                if i.method == m and i.history and i.history[-1].get("test_acc") not in (None, "")]
        if accs:
            out.append({"method": m, **summarize(accs)})
    return out


def run_table(infos: list[RunInfo]):
    head = ["run", "method", "seed", "epochs", "status", "test acc", "exit accuracies (k = 1..L)"]
    body = []
    for i in infos:
        last = i.history[-1] if i.history else {}
        exits = [last[k] for k in sorted((k for k in last if k.startswith("test_acc_exit")),
                                         key=lambda k: int(k[13:]))]
        body.append([i.name, i.method.upper(), str(i.seed), str(i.meta.get("epoch", "")),
                     str(i.meta.get("status", "")), fmt(last.get("test_acc")),
                     " ".join(fmt(e) for e in exits) or "–"])
    return head, body


TABLE_MEASURES = ["ratio", "centroid_ratio", "fisher_ratio", "nc1", "silhouette", "knn_acc", "probe_acc"]
SHORT_NAMES = {"ratio": "inter/intra", "centroid_ratio": "centroid", "fisher_ratio": "Fisher", "nc1": "NC1",
          "silhouette": "silhouette", "knn_acc": "5-NN acc", "probe_acc": "probe acc",
          "intra": "intra", "inter": "inter"}


def layer_table(rows: list[dict], summary: list[dict], measures=TABLE_MEASURES, winners: dict | None = None):
    """Rows: (position, method, layer); cells mean ± s.d.; the best of the methods at a position is
    marked (returned as a set of (row index, column index)). ``winners`` ({(depth, measure):
    method or None}, from paired comparisons) decides the marks when given: a side is marked only
    where its paired comparison excluded zero; without it the larger/smaller mean is marked."""
    rows = [r for r in rows if r.get("class") in (None, "") and r["measure"] in MEASURES]
    idx = summary_index(summary)
    layers = {}
    for r in rows:
        layers[(r["method"], r["layer"])] = (r["depth"], r["on_path"], r["role"])
    order = sorted(layers, key=lambda k: (layers[k][0] if layers[k][1] else 1e9 + (layers[k][0] or 0),
                                          method_order(k[0])))
    head = ["pos.", "method", "layer"] + [SHORT_NAMES.get(m, m) for m in measures]
    body, best = [], set()
    by_pos: dict = defaultdict(list)
    for k in order:
        depth, on_path, role = layers[k]
        pos = f"{depth:g}" if on_path and depth is not None else "exit"
        cells = [pos, k[0].upper(), k[1]]
        for m in measures:
            st = idx.get((k[0], k[1], m), {})
            cells.append(fmt_pm(st.get("mean"), st.get("std")))
        if on_path:
            by_pos[depth].append((len(body), k))
        body.append(cells)
    for depth, members in by_pos.items():
        if len(members) < 2:
            continue
        for j, m in enumerate(measures):
            if winners is not None:
                w = winners.get((depth, m))
                best |= {(i, 3 + j) for i, k in members if k[0] == w}
                continue
            vals = [idx.get((k[0], k[1], m), {}).get("mean") for _, k in members]
            if any(v is None or not math.isfinite(v) for v in vals) or len(set(vals)) == 1:
                continue
            hib = MEASURES[m].higher_is_better
            win = int(np.argmax(vals) if hib else np.argmin(vals))
            best.add((members[win][0], 3 + j))
    return head, body, best


def published_table(infos: list[RunInfo], acc: list[dict]):
    """The published accuracies (alviz/published.py) of the preset these runs were trained with, next
    to this experiment's accuracy of the matching method; None when there are none."""
    from ..published import for_preset

    presets = {i.config.get("preset") for i in infos} - {None}
    pubs = [p for name in sorted(presets) for p in for_preset(name)]
    if not pubs:
        return None
    ours = {a["method"]: a for a in acc}
    head = ["published", "rule (alviz method)", "published accuracy", "this experiment", "source"]
    body = []
    for p in pubs:
        a = ours.get(p.alviz_method)
        body.append([f"{p.dataset} {p.model}, {p.epochs} epochs", f"{p.rule} ({p.alviz_method})",
                     f"{p.test_acc:.4f}", fmt_pm(a["mean"], a["std"]) if a else "–", f"{p.source}, {p.where}"])
    return head, body


def measure_defs():
    head = ["measure", "better", "definition"]
    body = [[m.name, "higher" if m.higher_is_better else "lower", m.description] for m in MEASURES.values()]
    return head, body


def layout_note(tsne_data) -> str:
    """One sentence on how comparable the t-SNE panels' layouts are: the class-centroid shift of
    each panel from the reference panel (``alviz.embed.centroid_shift``)."""
    from .. import plots

    ref = tsne_data["reference"]
    parts = [f"{plots.method_style(m)['label']} {tsne_data['titles'][(m, p)]} {v:.2f}"
             for (m, p), v in sorted(tsne_data["shift"].items()) if (m, p) != ref]
    vals = [v for k, v in tsne_data["shift"].items() if k != ref]
    if not vals:
        return "One t-SNE panel: nothing to compare its layout with."
    return (f"Layout stability: mean distance of a class's centroid from its place in the reference panel "
            f"({plots.method_style(ref[0])['label']} {tsne_data['titles'][ref]}), in units of that panel's "
            f"radius (0: the same place; about 1: across the panel): median {float(np.median(vals)):.2f}, "
            f"largest {max(vals):.2f}. Per panel: " + "; ".join(parts) + ".")
