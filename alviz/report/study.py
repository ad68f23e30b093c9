"""Study reports: experiments of one architecture and data set that differ in depth and/or
activation, compared in one figure and table (accuracy and separation at the last encoder layer).

What this is not: no per-experiment analysis (``analysis``); it reads the results that produced.
"""
from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..metrics import summarize
from ..sweep import read_sweep_file
from .document import Doc, write_report
from .figures import STYLE, TEXT_WIDTH, new_figure, save_figure
from .files import locked, slug
from .runs import method_order, sweep_of
from .tables import fmt_pm


@dataclass
class ExperimentResult:
    name: str
    folder: Path
    infos: list
    rows: list
    summary: list
    config: dict
    seconds: float
    path: Path | None = None  # the experiment folder analysed


def study_groups(results: list[ExperimentResult]) -> dict[tuple, list[ExperimentResult]]:
    groups: dict[tuple, list] = defaultdict(list)
    for r in results:
        groups[(r.config["arch"], r.config["dataset"])].append(r)
    out = {}
    for k, rs in groups.items():
        settings = {(r.config["depth"], r.config["activation"]) for r in rs}
        if len(rs) >= 2 and len(settings) >= 2:
            out[k] = rs
    return out


def write_study(key, results: list[ExperimentResult], out: Path, log) -> Path:
    import matplotlib

    from .. import curves, plots

    arch, dataset = key
    name = f"study-{slug(arch)}-{slug(dataset)}"
    sweeps = {sweep_of(r.path) if r.path is not None else None for r in results}
    if len(sweeps) == 1 and None not in sweeps:  # cells of one sweep: the sweep's own report
        sweep = next(iter(sweeps))
        try:
            grid = read_sweep_file(sweep).get("grid") or {}
        except (OSError, UserError):
            grid = {}
        name = slug(sweep.name)
        if "arch" in grid or "dataset" in grid:  # several studies in one sweep: keep them apart
            name = slug(f"{sweep.name}-{arch}-{dataset}")
    folder = out / name
    depths = sorted({r.config["depth"] for r in results})
    acts = list(dict.fromkeys(r.config["activation"] for r in results))
    if len(depths) > 1:
        x, group, xlabel = "depth", ("activation" if len(acts) > 1 else None), "depth (components)"
    else:
        x, group, xlabel = "activation", None, "activation"
    recs = []
    for r in results:
        L = r.config["depth"]
        for i in r.infos:
            base = {"experiment": r.name, "method": i.method, "seed": i.seed, "depth": L,
                    "activation": r.config["activation"]}
            if i.history and i.history[-1].get("test_acc") not in (None, ""):
                recs.append({**base, "measure": "test_acc", "value": float(i.history[-1]["test_acc"])})
        for row in r.rows:  # the last encoder layer: block L, present in AL and BP alike
            if row["role"] == "encoder" and row["depth"] == L and row["measure"] in ("ratio", "probe_acc"):
                recs.append({"experiment": r.name, "method": row["method"], "seed": row["seed"], "depth": L,
                             "activation": r.config["activation"], "measure": row["measure"],
                             "value": row["value"]})
    with locked(folder, log), matplotlib.rc_context(STYLE):
        fig = new_figure(TEXT_WIDTH, 2.5)
        axes = fig.subplots(1, 2)
        curves.study(recs, x=x, group=group, measure="test_acc", ax=axes[0], xlabel=xlabel, legend=False)
        axes[0].set_title("(a) test accuracy", loc="left")
        curves.study(recs, x=x, group=group, measure="ratio", ax=axes[1], xlabel=xlabel, legend=False,
                    ylabel="inter / intra distance (block L)")
        axes[1].set_title("(b) separation at the last encoder layer", loc="left")
        plots.figure_legend(fig, axes[0])
        png = save_figure(fig, folder, "fig_study")["png"]
        caption = (f"{arch} on {dataset}: test accuracy (a) and inter/intra distance ratio of the last "
                   f"encoder layer, block L (b), against {x}" + (f", one line style per {group}" if group else "")
                   + "; mean ± s.d. over seeds.")
        doc = Doc(f"alviz study: {arch} on {dataset}")
        doc.p(f"{len(results)} experiments compared: " + ", ".join(r.name for r in results) + ".")
        head = ["experiment", "depth", "activation", "method", "test acc", "ratio (block L)", "probe acc (block L)"]
        body = []
        for r in sorted(results, key=lambda r: (r.config["activation"], r.config["depth"])):
            for m in sorted({i.method for i in r.infos}, key=method_order):
                def mean_of(meas):
                    v = [q["value"] for q in recs if q["experiment"] == r.name and q["method"] == m
                         and q["measure"] == meas]
                    s = summarize(v) if v else {"mean": None, "std": None}
                    return fmt_pm(s["mean"], s["std"])
                body.append([r.name, str(r.config["depth"]), r.config["activation"], m.upper(),
                             mean_of("test_acc"), mean_of("ratio"), mean_of("probe_acc")])
        doc.table(head, body)
        doc.fig("fig_study", png, caption)
        links = " ".join(f"<a href=\"../{html.escape(r.name)}/report.html\">{html.escape(r.name)}</a>"
                         for r in results)
        doc.raw_html(f"<p>Reports of the experiments: {links}</p>",
                     md="Reports of the experiments: " + ", ".join(f"[{r.name}](../{r.name}/report.md)"
                                                                   for r in results))
        rows_all = [row for r in results for row in r.rows + r.summary]
        payload = {"study": name, "arch": arch, "dataset": dataset, "x": x, "group": group,
                   "experiments": [r.name for r in results], "records": recs, "alviz_version": __version__}
        write_report(folder, doc, rows_all, payload)
    log(f"study report: {folder / 'report.html'}")
    return folder
