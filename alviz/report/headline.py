"""The short table ``alviz analyze`` ends with: per position on the inference path (AL and BP
layers matched), the paper's inter/intra ratio and the main measures, AL against BP, each as a
mean with its 95 % interval over seeds when there are several (one run: its value).

What this is not: no measuring (it reads the report folder's ``metrics.json``), no report page.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .measure import summary_index
from .tables import fmt

HEADLINE_MEASURES = [("ratio", "inter/intra"), ("knn_acc", "5-NN acc"), ("probe_acc", "probe acc")]


def _cell(st: dict) -> str:
    mean = st.get("mean")
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "–"
    lo, hi = st.get("ci_low"), st.get("ci_high")
    if lo is None or hi is None or not all(math.isfinite(v) for v in (lo, hi)):
        return fmt(mean)
    return f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def headline_rows(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per (position, measure) with AL's and BP's cells."""
    idx = summary_index(summary)
    layers: dict[float, dict[str, str]] = {}
    for r in summary:
        if r.get("on_path") and r.get("depth") is not None:
            layers.setdefault(float(r["depth"]), {})[r["method"]] = r["layer"]
    methods = sorted({m for v in layers.values() for m in v}, key=lambda m: (m != "al", m != "bp", m))
    head = ["pos.", "layers", "measure"] + [m.upper() for m in methods]
    rows = []
    for pos in sorted(layers):
        names = "/".join(dict.fromkeys(layers[pos].get(m, "–") for m in methods))
        first = True
        for key, short in HEADLINE_MEASURES:
            cells = [_cell(idx.get((m, layers[pos].get(m), key), {})) for m in methods]
            if any(c != "–" for c in cells):
                rows.append([f"{pos:g}" if first else "", names if first else "", short] + cells)
                first = False
    return head, rows


def format_rows(head, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if j < 3 else str(c).rjust(w)  # noqa: E731
                                   for j, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head)] + [line(r) for r in rows])


def headline(folder) -> str | None:
    """The headline of the experiment report in ``folder`` (None for a study or an unreadable
    folder)."""
    try:
        data = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    summary = data.get("summary") if isinstance(data, dict) else None
    if not summary or "experiment" not in data:
        return None
    head, rows = headline_rows(summary)
    if not rows:
        return None
    many = any(r.get("stat") == "n" and (r.get("value") or 0) > 1 for r in summary)
    note = ("mean [95 % CI over seeds]" if many else "one run per method: values, no interval") + \
        "; higher is better for every measure shown"
    return f"{data['experiment']}: {note}\n" + format_rows(head, rows)
