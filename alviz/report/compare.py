"""``alviz compare A B``: two runs or experiments side by side, layer by layer (joined on the
manifest's ``match`` key): each measure for A and B with bootstrap intervals, the difference with its
paired interval and the verdict ("A", "B" or "no detectable difference": ``verdicts``), per-class
rows, the models' per-sample correctness (McNemar, every seed pair and combined) and the
layer-to-layer similarity of the first runs (CKA, Procrustes, k-NN overlap, cached like the
measures); as a table, CSV and JSON. Runs measured on different
held-out data are refused.

What this is not: no per-experiment report (``analysis``); measures come from ``measure``.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
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
from ..uncertainty import NO_DIFFERENCE, percentile_interval
from .files import to_json
from .measure import RunActivations, measure_run
from .options import COMPARE_COLUMNS, DEFAULT_OUT, Options
from .runs import collect_runs, experiment_names, method_order, read_run
from .simsection import SIM_COLUMNS, compare_pair, csv_rows, same_samples
from .tables import fmt
from .verdicts import accuracy_lines, accuracy_pairs, paired, side_reps


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


def compare_rows(rows_a: list[dict], rows_b: list[dict], *, by_method: bool | None = None,
                 reps_a: dict | None = None, reps_b: dict | None = None, per_class: bool = False) -> list[dict]:
    """Join two sets of per-run rows (stat "value") layer by layer on the ``match`` key.

    Values of several runs (seeds) on one side are averaged. ``by_method``: also join on the
    method (AL with AL, BP with BP); default: when either side holds more than one method.
    Returns rows with ``COMPARE_COLUMNS``; ``diff = a - b``. Without replicates ``better`` is
    ``better_side`` (the larger/smaller value); with ``reps_a`` / ``reps_b`` ({run: {(layer,
    measure): replicates}} from ``measure_run``) it is the paired verdict ("A", "B" or "no
    detectable difference", ``verdicts.paired``) and the intervals are filled in. ``per_class``:
    join the per-class rows instead (column ``class``). Layers without a partner are left out."""
    def index(rows):
        vals: dict[tuple, list] = defaultdict(list)
        runs: dict[tuple, list] = defaultdict(list)
        info: dict[tuple, dict] = {}
        methods = set()
        for r in rows:
            if r.get("stat", "value") != "value" or r.get("match") in (None, "") or r["measure"] not in MEASURES:
                continue
            if (r.get("class") not in (None, "")) != per_class:
                continue
            methods.add(r["method"])
            k = (r["method"], r["match"], r["measure"], r.get("class"))
            vals[k].append(float(r["value"]))
            runs[k].append(r.get("run"))
            info.setdefault(k, r)
        return vals, info, methods, runs

    va, ia, ma, ra = index(rows_a)
    vb, ib, mb, rb = index(rows_b)
    if by_method is None:
        by_method = len(ma) > 1 or len(mb) > 1
    out = []
    nan = float("nan")
    for ka in sorted(va, key=lambda k: (method_order(k[0]), float(ia[k]["depth"]) if ia[k].get("depth") is not None
                                        else 1e9, list(MEASURES).index(k[2]) if k[2] in MEASURES else 99,
                                        -1 if k[3] in (None, "") else int(k[3]))):
        m_a, match, meas, cls = ka
        partners = [kb for kb in vb if kb[1] == match and kb[2] == meas and kb[3] == cls
                    and (not by_method or kb[0] == m_a)]
        for kb in partners:
            a = float(np.mean(va[ka]))
            b = float(np.mean(vb[kb]))
            row = {"method_a": m_a, "method_b": kb[0], "match": match, "class": cls,
                   "layer_a": ia[ka]["layer"], "layer_b": ib[kb]["layer"],
                   "depth": ia[ka].get("depth"), "measure": meas, "a": a, "b": b,
                   "diff": a - b, "better": better_side(meas, a, b),
                   "scale_free": MEASURES[meas].scale_free if meas in MEASURES else None,
                   "n_a": len(va[ka]), "n_b": len(vb[kb]), "a_low": nan, "a_high": nan, "b_low": nan,
                   "b_high": nan, "diff_low": nan, "diff_high": nan}
            if reps_a is not None and reps_b is not None and not per_class:
                xa = side_reps(reps_a, ra[ka], ia[ka]["layer"], meas)
                xb = side_reps(reps_b, rb[kb], ib[kb]["layer"], meas)
                v = paired(va[ka], vb[kb], xa, xb, meas)
                row.update(better=v["better"], diff_low=v["low"], diff_high=v["high"])
                if xa is not None:
                    row["a_low"], row["a_high"] = percentile_interval(xa.mean(0))
                if xb is not None:
                    row["b_low"], row["b_high"] = percentile_interval(xb.mean(0))
            out.append(row)
    return out


def format_compare_table(rows: list[dict], label_a: str = "A", label_b: str = "B") -> str:
    """A plain-text table of ``compare_rows`` output."""
    intervals = any(math.isfinite(r.get("diff_low", float("nan"))) for r in rows)
    head = ["layer (A / B)", "measure", "A", "B", "A - B"] + (["95 % (A - B)"] if intervals else []) + ["better"]
    body = []
    for r in rows:
        layer = r["layer_a"] if r["layer_a"] == r["layer_b"] else f"{r['layer_a']} / {r['layer_b']}"
        if r["method_a"] != r["method_b"] or len({q["method_a"] for q in rows}) > 1:
            layer = f"{r['method_a'].upper()} {r['layer_a']} / {r['method_b'].upper()} {r['layer_b']}"
        star = "*" if r.get("scale_free") is False and r["better"] in ("A", "B") else ""
        iv = [f"[{fmt(r['diff_low'], 4)}, {fmt(r['diff_high'], 4)}]"] if intervals else []
        body.append([layer, r["measure"], fmt(r["a"], 4), fmt(r["b"], 4), fmt(r["diff"], 4), *iv,
                     r["better"] + star])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [f"A = {label_a}", f"B = {label_b}",
             "  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    for b in body:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(b, widths))))
    if intervals:
        lines.append(f"better: only where the paired 95 % interval of A - B excludes zero, else '{NO_DIFFERENCE}'")
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
            extra_out: dict | None = None, **kw) -> tuple[list[dict], Path]:
    """Compare two runs or two experiments layer by layer; writes a CSV (default
    ``<out>/<experiment of a>/compare-<a>-vs-<b>.csv``), the same with the rest as JSON beside it
    (``.json``) and the similarity of the first runs (``-similarity.csv``); returns (rows, csv path).
    ``extra_out`` receives ``{"mcnemar": verdicts.accuracy_pairs(...) or None, "similarity": [...]}``."""
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
    side_rows, side_reps, side_acts = [], [], []
    with ExitStack() as held:  # every run locked (in path order) until its sets are read
        for info in sorted({str(i.path): i for side in infos for lst in side.values() for i in lst}.values(),
                           key=lambda i: str(i.path)):
            held.enter_context(run_lock(info.path))
        for side in infos:
            rows, reps, acts = [], {}, {}
            for exp_dir, lst in side.items():
                folder = out / names[exp_dir]
                with locked(folder, log):
                    for info in lst:
                        key = f"{names[exp_dir]}/{info.name}"
                        acts[key] = RunActivations(info, opts, log)
                        reps[info.name] = {}
                        rows += measure_run(info, acts[key], opts, folder / ".cache", log, reps[info.name])
            side_rows.append(rows)
            side_reps.append(reps)
            side_acts.append(acts)
        first = [next(iter(acts)) for acts in side_acts]
        same_samples(first[0], side_acts[0][first[0]], first[1], side_acts[1][first[1]])
        extra = {"mcnemar": None, "similarity": []}
        if opts.similarity:
            folder = out / names[next(iter(sides[0]))]
            with locked(folder, log):
                pair = compare_pair(f"{first[0]} vs {first[1]}", first[0], side_acts[0][first[0]], first[1],
                                    side_acts[1][first[1]], opts.boot, opts.seed, folder / ".cache", log)
            extra["similarity"] = csv_rows([pair])
    result = compare_rows(side_rows[0], side_rows[1], reps_a=side_reps[0], reps_b=side_reps[1])
    if not result:
        raise UserError(f"{a} and {b} have no layers in common (joined on the manifest's match key)")
    result += compare_rows(side_rows[0], side_rows[1], per_class=True)
    correct = [[{"run": f"{names[e]}/{i.name}", "method": i.method, "seed": i.seed,
                 "correct": side_reps[k][i.name].get(("output", "correct"))}
                for e, lst in side.items() for i in lst] for k, side in enumerate(infos)]
    correct = [[r for r in side if r["correct"] is not None] for side in correct]
    if correct[0] and correct[1]:
        extra["mcnemar"] = accuracy_pairs(*correct)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(csv_path, csv_text(result, COMPARE_COLUMNS))
    if extra["similarity"]:
        write_text_atomic(csv_path.with_name(csv_path.stem + "-similarity.csv"), csv_text(extra["similarity"], SIM_COLUMNS))
    write_text_atomic(csv_path.with_suffix(".json"), to_json({"a": str(a), "b": str(b), "rows": result, **extra}))
    if extra_out is not None:
        extra_out.update(extra)
    return result, csv_path


def format_compare_extra(extra: dict) -> str:
    """McNemar's line and the aligned layer pairs' similarity, one layer pair per line."""
    lines = []
    m = extra.get("mcnemar")
    if m and m["pairs"]:
        lines.append("model accuracy on the same held-out samples, McNemar's exact test on per-sample correctness, "
                     "per seed pair:")
        lines += accuracy_lines(m)
    sim = [r for r in extra.get("similarity", []) if r["match_a"] == r["match_b"]]
    if sim:
        lines.append("similarity of aligned layers (first run of each side; CKA: similarity, Procrustes: distance):")
        for r in sim:
            lines.append(f"  {r['layer_a']} / {r['layer_b']}  {r['measure']}  {fmt(r['value'], 4)}  "
                         f"[{fmt(r['boot_low'], 4)}, {fmt(r['boot_high'], 4)}]")
    return "\n".join(lines)
