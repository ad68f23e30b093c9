"""The report's per-class and per-sample tables: per-class accuracy of the models and of the probe
and per-class separation at the last encoder layer, the models' confusion matrices, and the
headline comparison of the two methods' per-sample correctness (McNemar).

What this is not: no measuring (``measure`` writes the per-class rows these tables read), no
rendering (``document``).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .runs import method_order
from .tables import fmt


def _index(rows):
    """{(method, layer, measure, class): [values over seeds]} of per-class "value" rows."""
    idx = defaultdict(list)
    for r in rows:
        if r.get("class") not in (None, "") and r.get("stat") == "value":
            idx[(r["method"], r["layer"], r["measure"], int(r["class"]))].append(float(r["value"]))
    return idx


def last_encoder(rows, method: str):
    layers = {(r["layer"], r["depth"]) for r in rows if r["method"] == method and r.get("role") == "encoder"}
    return max(layers, key=lambda x: float(x[1]))[0] if layers else None


def class_table(rows, class_names):
    """Rows: classes; columns per method: model accuracy, probe accuracy and inter/intra ratio at
    the last encoder layer (mean over seeds)."""
    idx = _index(rows)
    methods = sorted({r["method"] for r in rows}, key=method_order)
    enc = {m: last_encoder(rows, m) for m in methods}
    head = ["class"]
    for m in methods:
        head += [f"{m.upper()} model acc", f"{m.upper()} probe acc ({enc[m]})", f"{m.upper()} ratio ({enc[m]})"]
    classes = sorted({k[3] for k in idx})
    body = []
    for c in classes:
        cells = [class_names[c] if c < len(class_names) else str(c)]
        for m in methods:
            for layer, meas in (("output", "model_acc"), (enc[m], "probe_acc"), (enc[m], "ratio")):
                v = idx.get((m, layer, meas, c))
                cells.append(fmt(float(np.mean(v))) if v else "–")
        body.append(cells)
    return head, body


def confusion_table(rows, run: str, measure: str = "confusion_model", layer: str = "output", class_names=()):
    """The confusion matrix of one run (true class by row, predicted by column) as a table."""
    cells = {}
    for r in rows:
        if r["run"] == run and r["measure"] == measure and r["layer"] == layer and r["stat"].startswith("pred="):
            cells[(int(r["class"]), int(r["stat"][5:]))] = int(float(r["value"]))
    if not cells:
        return None
    cls = sorted({c for c, _ in cells} | {p for _, p in cells})
    name = (lambda c: class_names[c] if c < len(class_names) else str(c))
    head = ["true \\ predicted"] + [name(c) for c in cls]
    body = [[name(t)] + [str(cells.get((t, p), 0)) for p in cls] for t in cls]
    best = {(i, 1 + i) for i in range(len(cls))}
    return head, body, best
