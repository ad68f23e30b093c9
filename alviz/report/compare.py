"""``alviz compare A B``: two runs or experiments side by side, layer by layer (joined on the
manifest's ``match`` key), with the difference and the better side per measure, as a table and CSV.

What this is not: no per-experiment report (``analysis``); measures come from ``measure``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..checkpoint import write_text_atomic
from ..errors import UserError
from ..extract.runs import run_lock
from ..safeio import refuse_foreign
from ..metrics import MEASURES
from .files import csv_text, locked, slug
from .measure import RunActivations, measure_run
from .options import COMPARE_COLUMNS, DEFAULT_OUT, Options
from .runs import collect_runs, experiment_names, method_order, read_run
from .tables import fmt


def better_side(measure: str, a: float, b: float) -> str:
    """"A", "B", "tie" or "n/a" (a value is NaN) by the direction in ``MEASURES``."""
    if measure not in MEASURES:
        raise UserError(f"unknown measure {measure!r}; allowed: {', '.join(MEASURES)}")
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return "n/a"
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return "tie"
    hib = MEASURES[measure].higher_is_better
    return "A" if (a > b) == hib else "B"


def compare_rows(rows_a: list[dict], rows_b: list[dict], *, by_method: bool | None = None) -> list[dict]:
    """Join two sets of per-run rows (stat "value") layer by layer on the ``match`` key.

    Values of several runs (seeds) on one side are averaged. ``by_method``: also join on the
    method (AL with AL, BP with BP); default: when either side holds more than one method.
    Returns rows with ``COMPARE_COLUMNS``; ``diff = a - b``; ``better`` per ``better_side``.
    Layers without a partner on the other side are left out."""
    def index(rows):
        vals: dict[tuple, list] = defaultdict(list)
        info: dict[tuple, dict] = {}
        methods = set()
        for r in rows:
            if r.get("stat", "value") != "value" or r.get("match") in (None, ""):
                continue
            methods.add(r["method"])
            k = (r["method"], r["match"], r["measure"])
            vals[k].append(float(r["value"]))
            info.setdefault(k, r)
        return vals, info, methods

    va, ia, ma = index(rows_a)
    vb, ib, mb = index(rows_b)
    if by_method is None:
        by_method = len(ma) > 1 or len(mb) > 1
    out = []
    for ka in sorted(va, key=lambda k: (method_order(k[0]), float(ia[k]["depth"]) if ia[k].get("depth") is not None
                                        else 1e9, list(MEASURES).index(k[2]) if k[2] in MEASURES else 99)):
        m_a, match, meas = ka
        partners = [kb for kb in vb if kb[1] == match and kb[2] == meas and (not by_method or kb[0] == m_a)]
        for kb in partners:
            a = float(np.mean(va[ka]))
            b = float(np.mean(vb[kb]))
            out.append({"method_a": m_a, "method_b": kb[0], "match": match,
                        "layer_a": ia[ka]["layer"], "layer_b": ib[kb]["layer"],
                        "depth": ia[ka].get("depth"), "measure": meas, "a": a, "b": b,
                        "diff": a - b, "better": better_side(meas, a, b),
                        "scale_free": MEASURES[meas].scale_free if meas in MEASURES else None,
                        "n_a": len(va[ka]), "n_b": len(vb[kb])})
    return out


def format_compare_table(rows: list[dict], label_a: str = "A", label_b: str = "B") -> str:
    """A plain-text table of ``compare_rows`` output."""
    head = ["layer (A / B)", "measure", "A", "B", "A - B", "better"]
    body = []
    last = None
    for r in rows:
        layer = r["layer_a"] if r["layer_a"] == r["layer_b"] else f"{r['layer_a']} / {r['layer_b']}"
        if r["method_a"] != r["method_b"] or len({q["method_a"] for q in rows}) > 1:
            layer = f"{r['method_a'].upper()} {r['layer_a']} / {r['method_b'].upper()} {r['layer_b']}"
        show = layer if layer != last else ""
        last = layer
        star = "*" if r.get("scale_free") is False and r["better"] in ("A", "B") else ""
        body.append([show, r["measure"], fmt(r["a"], 4), fmt(r["b"], 4), fmt(r["diff"], 4),
                     r["better"] + star])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [f"A = {label_a}", f"B = {label_b}",
             "  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    for b in body:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(b, widths))))
    if any(b[-1].endswith("*") for b in body):
        lines.append("* in the units of each layer's activations: the direction holds only between layers of "
                     "equal scale; compare the unit-free measures (ratio, ...) across methods")
    return "\n".join(lines)


def _same_data(infos) -> None:
    """UserError unless every run was trained and tested on the same data (name, test fraction and,
    where recorded, the fingerprint of its arrays): measures on different samples do not compare."""
    def key(i):
        return (i.config.get("dataset"), i.config.get("test_fraction"), i.meta.get("data_sha256"))

    first = key(infos[0])
    for i in infos[1:]:
        k = key(i)
        same_sha = first[2] is None or k[2] is None or first[2] == k[2]
        if k[:2] != first[:2] or not same_sha:
            raise UserError(f"{infos[0].path} and {i.path} were trained and tested on different data ("
                            f"{first[0]}, test fraction {first[1]}, data sha256 {str(first[2])[:12]} against {k[0]}, "
                            f"{k[1]}, {str(k[2])[:12]}); their measures are not comparable")


def compare(a, b, *, out=DEFAULT_OUT, csv_path=None, options: Options | None = None, log=print,
            **kw) -> tuple[list[dict], Path]:
    """Compare two runs or two experiments layer by layer; writes a CSV (default
    ``<out>/<experiment of a>/compare-<a>-vs-<b>.csv``) and returns (rows, csv path)."""
    opts = options or Options()
    if kw:
        opts = Options(**{**asdict(opts), **kw})
    opts.tsne = False
    opts.validate()
    out = Path(out)
    sides = []
    for p in (a, b):
        groups = collect_runs([p])
        sides.append(groups)
    all_groups: dict[Path, list[Path]] = {}
    for g in sides:
        for k, v in g.items():
            all_groups.setdefault(k, [])
            all_groups[k] += [r for r in v if r not in all_groups[k]]
    names = experiment_names(all_groups)

    def label(p):
        p = Path(p)
        return p.name if Path(a).name != Path(b).name else f"{p.parent.name}-{p.name}"

    if csv_path is None:
        first_exp = next(iter(sides[0]))
        csv_path = out / names[first_exp] / f"compare-{slug(label(a))}-vs-{slug(label(b))}.csv"
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        raise UserError(f"--csv must name a file; {csv_path} is a directory")
    header = ",".join(COMPARE_COLUMNS).encode()
    refuse_foreign(csv_path, lambda head: head.startswith(header), "a comparison CSV")  # e.g. RUN/meta.json
    infos = [{e: [read_run(r, names[e]) for r in sorted(runs, key=lambda p: p.name)] for e, runs in g.items()}
             for g in sides]
    _same_data([i for side in infos for lst in side.values() for i in lst])
    side_rows = []
    for side in infos:
        rows = []
        for exp_dir, lst in side.items():
            folder = out / names[exp_dir]
            with locked(folder, log):
                for info in lst:
                    with run_lock(info.path):  # held until its sets are measured
                        rows += measure_run(info, RunActivations(info, opts, log), opts, folder / ".cache", log)
        side_rows.append(rows)
    result = compare_rows(side_rows[0], side_rows[1])
    if not result:
        raise UserError(f"{a} and {b} have no layers in common (joined on the manifest's match key)")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(csv_path, csv_text(result, COMPARE_COLUMNS))
    return result, csv_path
