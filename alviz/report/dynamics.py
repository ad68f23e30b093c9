"""Training dynamics of an experiment whose runs keep snapshots (``alviz train --snapshots``).

- ``snapshot_activations`` / ``measure_snapshots``: every snapshot of every run extracted, then
  measured like the final checkpoint: the same held-out samples, the same measures, activations
  extracted once per snapshot
  (``RUN/activations/<data>-<split>-epochNNNN/``, reused while the snapshot is unchanged) and
  measures cached per snapshot (``.cache/metrics/<run>/epochNNNN/``), so a re-run after more
  snapshots measures only the new ones. A snapshot of the checkpoint's own epoch is the
  checkpoint: its rows are the final analysis's.
- ``exit_curves``: AL's test accuracy at every exit (and BP's) against epoch: the per-epoch
  history, plus epoch 0 (the initialisation) evaluated from its snapshot.
- ``StripJob``: a t-SNE strip of one layer across the snapshot epochs (rows: methods, the lowest
  seed; columns: epochs), the same points in every panel; each epoch's embedding starts from the
  previous epoch's (``alviz.embed.tsne(init=...)``), so a class stays where it was unless the
  layer moves it. Panels are cached keyed by their input and their starting layout.
- ``dynamics_figures`` / ``dynamics_section``: the figures and the report section.

What this is not: no extraction mechanics (``alviz.extract``), no measure definitions, no
drawing primitives (``alviz.plots``).
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..metrics import MEASURES
from .files import hash_arrays, prune_cache, save_npy_atomic, slug
from .options import Options
from .runs import RunInfo, method_order
from .tsne import PanelJob, embed_panel, schedule_settings

#: figure stems of the dynamics (beside ``options.FIGURES``)
FIGURES = {
    "fig_dynamics": "separation (inter/intra ratio) and linear-probe accuracy of each layer against epoch",
    "fig_dynamics_measures": "every measure of each layer on the inference path against epoch",
    "fig_dynamics_exits": "AL's test accuracy at every exit (and BP's) against epoch",
    "fig_dynamics_tsne": "t-SNE strip of one layer across epochs, positions held from epoch to epoch",
}


def snapshot_epochs(info: RunInfo) -> list[int]:
    from ..checkpoint import snapshot_epochs as _epochs

    return _epochs(info.path)


def has_snapshots(infos: list[RunInfo]) -> bool:
    return any(snapshot_epochs(i) for i in infos)


def snapshot_activations(infos: list[RunInfo], final_acts: dict, opts: Options, log) -> dict:
    """{(run, epoch): RunActivations} of every snapshot of every run, extracted (or read back) on
    the same held-out and training samples as the final checkpoint; the snapshot of the
    checkpoint's own epoch is the checkpoint's set."""
    from .measure import RunActivations

    acts: dict[tuple, object] = {}
    for info in infos:
        final = info.meta.get("epoch")
        for e in snapshot_epochs(info):
            acts[(info.name, e)] = final_acts[info.name] if e == final else RunActivations(info, opts, log, epoch=e)
    return acts


def measure_snapshots(infos: list[RunInfo], acts: dict, final_rows: list[dict], opts: Options, cache: Path,
                      log) -> list[dict]:
    """Rows with "epoch" for every snapshot of every run (``acts``: ``snapshot_activations``).

    The rows are each layer's measures (stat "value", whole layer): the dynamics show the spread
    over seeds, so a snapshot is measured without bootstrap replicates or per-class rows (which
    the final checkpoint's own analysis carries). The checkpoint's own epoch reuses its rows."""
    from dataclasses import replace

    from ..metrics import MEASURES
    from .measure import measure_run

    def whole(rs):
        return [r for r in rs if r.get("class") in (None, "") and r.get("stat", "value") == "value"
                and r["measure"] in MEASURES]

    light = replace(opts, boot=0)
    rows: list[dict] = []
    for info in infos:
        final = info.meta.get("epoch")
        for e in snapshot_epochs(info):
            if e == final:
                rows += [{**r, "epoch": e} for r in whole(final_rows) if r["run"] == info.name]
            else:
                rows += whole(measure_run(info, acts[(info.name, e)], light, cache, log, epoch=e))
    return rows


def exit_curves(infos: list[RunInfo], opts: Options, log) -> list[dict]:
    """Tidy rows {run, method, seed, epoch, exit (k, or 0 for the model's output), value}: the
    test accuracy from each run's per-epoch history, and at epoch 0 from its snapshot when kept
    (``alviz.train.evaluate`` on the same test split, as the history's)."""
    out: list[dict] = []
    data_cache: dict = {}
    for info in infos:
        rows = list(info.history)
        if 0 in snapshot_epochs(info):
            try:
                rows = [_evaluate_initial(info, opts, data_cache)] + rows
            except UserError as e:
                log(f"{info.name}: epoch 0 not evaluated ({e})")
        for i, h in enumerate(rows):
            e = int(h.get("epoch", i + 1) if h.get("epoch") is not None else i + 1)
            if h.get("test_acc") is not None:
                out.append({"run": info.name, "method": info.method, "seed": info.seed, "epoch": e, "exit": 0,
                            "value": float(h["test_acc"])})
            for k, v in h.items():
                if k.startswith("test_acc_exit") and v not in (None, ""):
                    out.append({"run": info.name, "method": info.method, "seed": info.seed, "epoch": e,
                                "exit": int(k[13:]), "value": float(v)})
    return out


def _evaluate_initial(info: RunInfo, opts: Options, data_cache: dict) -> dict:
    from ..checkpoint import load_run
    from ..data import load_dataset
    from ..train import evaluate

    run = load_run(info.path, opts.device, epoch=0)
    key = (run.config.dataset, run.config.test_fraction, str(run.meta["preprocess"]))
    if key not in data_cache:
        data_cache[key] = load_dataset(run.config.dataset, data_dir=run.config.data_dir,
                                       test_fraction=run.config.test_fraction, preprocess=run.meta["preprocess"])
    d = data_cache[key]
    ev = evaluate(run.model, d.x_test, d.y_test)
    row = {"epoch": 0, "test_acc": ev["acc"]}
    for k, a in enumerate(ev.get("exits", []), start=1):
        row[f"test_acc_exit{k}"] = a
    return row


# ------------------------------------------------------------------------------- t-SNE strip
def strip_layer(infos: list[RunInfo], acts: dict, wanted: str | None) -> str | None:
    """The layer of the strip: ``wanted`` if every method has it, else the deepest encoder block
    the methods share (``block{L}``, the representation AL's last bridge reads)."""
    names = None
    for info in infos:
        a = next((v for (r, _), v in acts.items() if r == info.name), None)
        if a is None:
            continue
        have = {e["name"]: e for e in a.test.manifest["layers"]}
        names = set(have) if names is None else names & set(have)
        roles = have
    if not names:
        return None
    if wanted:
        if wanted not in names:
            raise UserError(f"--strip-layer {wanted!r} is not a layer of every run; allowed: "
                            f"{', '.join(sorted(names))}")
        return wanted
    blocks = sorted((roles[n].get("position", 0), n) for n in names if roles[n].get("role") == "encoder")
    return blocks[-1][1] if blocks else sorted(names)[0]


class StripJob(PanelJob):
    """The t-SNE strip: one chain of panels per method (its lowest seed), epochs in order, each
    panel started from the previous one's layout. ``work()`` may run in several threads (each takes
    the next chain); ``result()`` returns a dict (panels {(method, epoch): Y}, labels, ids, rows,
    cols, layer, runs, n, perplexity) or None."""

    def __init__(self, infos: list[RunInfo], acts: dict, layer: str, opts: Options, cache: Path, log):
        from ..embed import stratified_sample

        super().__init__()
        self.opts, self.log, self.layer = opts, log, layer
        self.panels: dict[tuple, np.ndarray] = {}
        by_method: dict[str, RunInfo] = {}
        for info in sorted(infos, key=lambda i: (method_order(i.method), i.seed)):
            if snapshot_epochs(info):
                by_method.setdefault(info.method, info)
        runs = [by_method[m] for m in sorted(by_method, key=method_order)]
        if not runs:
            return
        common = None
        for info in runs:
            for (r, e), a in acts.items():
                if r == info.name:
                    ids = set(a.test.ids.tolist())
                    common = ids if common is None else common & ids
        ref = next(a for (r, _), a in acts.items() if r == runs[0].name).test
        keep = np.flatnonzero(np.isin(ref.ids, np.fromiter(common, dtype=np.int64)))
        if len(keep) < 4:
            log("t-SNE strip skipped: fewer than 4 held-out samples shared by the snapshots")
            return
        pick = keep[stratified_sample(ref.labels[keep], opts.tsne_samples, seed=opts.seed)]
        ids, labels = ref.ids[pick], ref.labels[pick]
        self.perp = min(opts.perplexity, (len(pick) - 1) / 3.0)
        self.tcache = cache / "tsne-strip"
        self.tcache.mkdir(parents=True, exist_ok=True)
        self.settings = {**schedule_settings(), "perplexity": self.perp, "seed": opts.seed, "chained": True}
        epochs_all: set[int] = set()
        for info in runs:
            chain = []
            for e in snapshot_epochs(info):
                a = acts.get((info.name, e))
                if a is None or layer not in a.test.layers:
                    continue
                row_of = {int(i): k for k, i in enumerate(a.test.ids.tolist())}
                Z = np.asarray(a.layer("test", layer)[np.asarray([row_of[int(i)] for i in ids])], dtype=np.float32)
                chain.append((e, Z))
                epochs_all.add(e)
            if chain:
                self.todo.append((info, chain))
        self.todo.reverse()  # pop() takes them in method order
        self.plan = {"labels": labels, "ids": ids, "cols": sorted(epochs_all), "rows": [i.method for i in runs],
                     "runs": {i.method: i.name for i in runs}, "n": int(len(pick)), "layer": layer}

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.todo:
                    return
                info, chain = self.todo.pop()
            prev = None
            for e, Z in chain:
                prefix = f"{slug(info.name)}-{slug(self.layer)}-epoch{e:04d}-"
                path = self.tcache / f"{prefix}{hash_arrays(self.settings, Z, *(() if prev is None else (prev,)))}.npy"
                Y = None
                if path.is_file():
                    try:
                        Y = np.load(path, allow_pickle=False)
                        Y = Y if Y.shape == (len(Z), 2) else None
                    except (ValueError, OSError, EOFError):
                        Y = None
                if Y is None:
                    t = time.perf_counter()
                    Y = embed_panel(Z, self.opts, self.perp, prev)
                    with self.lock:
                        save_npy_atomic(path, Y)
                        prune_cache(self.tcache, prefix, path.name)
                        self.computed += 1
                    self.log(f"t-SNE strip {info.name}/{self.layer} epoch {e}: {len(Z)} points in "
                             f"{time.perf_counter() - t:.1f}s")
                else:
                    with self.lock:
                        self.hits += 1
                with self.lock:
                    self.panels[(info.method, e)] = Y
                prev = Y

    def result(self):
        if self.error is not None:
            raise self.error
        if self.plan is None or not self.panels:
            return None
        self.log(f"t-SNE strip: {len(self.panels)} panels of {self.plan['n']} points ({self.computed} computed, "
                 f"{self.hits} from cache) in {time.perf_counter() - self.t0:.1f}s")
        return {**self.plan, "panels": dict(self.panels), "perplexity": self.perp}


# ------------------------------------------------------------------------------------ figures
def _path_matches(rows: list[dict]) -> list[tuple[float, str]]:
    """(position, match) of the layers on the inference path, in order."""
    seen = {}
    for r in rows:
        if r.get("on_path") and r.get("depth") is not None:
            seen.setdefault(r["match"], float(r["depth"]))
    return sorted((p, m) for m, p in seen.items())


def _layer_title(rows: list[dict], match: str) -> str:
    names = {}
    for r in rows:
        if r.get("match") == match:
            names.setdefault(r["method"], r["layer"])
    from .. import plots

    return "\n".join(f"{plots.method_style(m)['label']} {names[m]}" for m in sorted(names, key=method_order))


def dynamics_figures(rows: list[dict], curves: list[dict], strip, class_names, folder: Path, n_seeds: int,
                     log) -> dict[str, dict]:
    """Draw and save the dynamics figures; returns {stem: {"png": bytes, "caption"}}."""
    import matplotlib

    from .. import curves as epoch_figs
    from .. import plots
    from .figures import STYLE, TEXT_WIDTH, COLUMN_WIDTH, new_figure, save_figure

    figs: dict[str, dict] = {}
    band = ("line: mean over seeds, band: ±1 sample s.d." if n_seeds > 1 else "one run per method")
    matches = _path_matches(rows)
    with matplotlib.rc_context(STYLE):
        if matches:
            nc = len(matches)
            fig = new_figure(TEXT_WIDTH, 3.8)
            axes = np.asarray(fig.subplots(2, nc, squeeze=False))
            for j, (pos, match) in enumerate(matches):
                epoch_figs.measure_by_epoch(rows, "ratio", match, ax=axes[0, j], title=_layer_title(rows, match))
                epoch_figs.measure_by_epoch(rows, "probe_acc", match, ax=axes[1, j])
                if j == 0:
                    axes[0, j].set_ylabel(plots.MEASURE_LABELS["ratio"])
                    axes[1, j].set_ylabel(plots.MEASURE_LABELS["probe_acc"])
                for ax in axes[:, j]:
                    if ax.get_legend():
                        ax.get_legend().remove()
                axes[0, j].set_xlabel("")
            handles, labels = [], []
            for m in sorted({r["method"] for r in rows}, key=method_order):
                st = plots.method_style(m)
                from matplotlib.lines import Line2D

                handles.append(Line2D([], [], color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                                      markersize=3))
                labels.append(st["label"])
            fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), frameon=False)
            figs["fig_dynamics"] = {**save_figure(fig, folder, "fig_dynamics"), "caption": (
                "Separation of each layer on the inference path against training epoch (0: the "
                "initialisation; symmetric-log axis): top, inter- over intra-class distance ratio; bottom, "
                f"linear-probe accuracy. Columns: positions along the inference path. {band.capitalize()}.")}

            measures = list(MEASURES)
            fig = new_figure(TEXT_WIDTH, 0.95 * len(measures) + 0.7)
            axes = np.asarray(fig.subplots(len(measures), nc, squeeze=False))
            for i, meas in enumerate(measures):
                for j, (pos, match) in enumerate(matches):
                    ax = axes[i, j]
                    epoch_figs.measure_by_epoch(rows, meas, match, ax=ax, logy=meas in ("intra", "inter", "fisher_ratio",
                                                                                   "nc1"),
                                           title=_layer_title(rows, match) if i == 0 else None)
                    if ax.get_legend():
                        ax.get_legend().remove()
                    if i < len(measures) - 1:
                        ax.set_xlabel("")
                        ax.tick_params(axis="x", labelbottom=False)
                    if j == 0:
                        ax.set_ylabel(plots.MEASURE_LABELS.get(meas, meas), fontsize=6)
            fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), frameon=False)
            figs["fig_dynamics_measures"] = {**save_figure(fig, folder, "fig_dynamics_measures"), "caption": (
                "Every measure (rows; definitions in the Measures table) of every layer on the inference path "
                f"(columns) against epoch; intra, inter, Fisher ratio and NC1 on log scales. {band.capitalize()}.")}

        if curves:
            fig = new_figure(COLUMN_WIDTH, 2.5)
            ax = fig.add_subplot()
            series = []
            exits = sorted({c["exit"] for c in curves if c["method"] == "al" and c["exit"] > 0})
            cmap = matplotlib.colormaps["Blues"]
            for n, k in enumerate(exits):
                vals: dict[int, list] = defaultdict(list)
                for c in curves:
                    if c["method"] == "al" and c["exit"] == k:
                        vals[c["epoch"]].append(c["value"])
                series.append({"label": f"AL exit {k}", "values": vals, "marker": "",
                               "color": cmap(0.45 + 0.55 * (n + 1) / max(len(exits), 1))})
            for m in sorted({c["method"] for c in curves if c["method"] != "al"}, key=method_order):
                vals = defaultdict(list)
                for c in curves:
                    if c["method"] == m and c["exit"] == 0:
                        vals[c["epoch"]].append(c["value"])
                st = plots.method_style(m)
                series.append({"label": st["label"], "values": vals, "color": st["color"],
                               "linestyle": st["linestyle"], "marker": ""})
            epoch_figs.series_by_epoch(series, ax=ax, markers=False)
            ax.set_ylabel("test accuracy")
            ax.legend(frameon=False, fontsize=6)
            figs["fig_dynamics_exits"] = {**save_figure(fig, folder, "fig_dynamics_exits"), "caption": (
                "Test accuracy against epoch: AL when inference exits after component k (exit L is AL's "
                "output), and BP's output; every epoch from the training history, epoch 0 from the "
                f"initialisation's snapshot. {band.capitalize()}.")}

        if strip is not None:
            rows_n = [plots.method_style(m)["label"] for m in strip["rows"]]
            cols_n = [str(e) for e in strip["cols"]]
            panels = {(plots.method_style(m)["label"], str(e)): Y for (m, e), Y in strip["panels"].items()}
            titles = {k: f"epoch {k[1]}" for k in panels}
            nc = len(cols_n)
            fig = new_figure(min(TEXT_WIDTH, 1.05 * nc + 0.4), 1.0 * len(rows_n) + 0.6)
            plots.tsne_grid(panels, strip["labels"], row_names=rows_n, col_names=cols_n, titles=titles,
                            class_names=class_names, fig=fig, point_size=0.8 if strip["n"] > 1000 else 2.0)
            runs = ", ".join(f"{plots.method_style(m)['label']}: {r}" for m, r in strip["runs"].items())
            figs["fig_dynamics_tsne"] = {**save_figure(fig, folder, "fig_dynamics_tsne"), "caption": (
                f"t-SNE of layer {strip['layer']} across training (columns: epochs; rows: methods, {runs}), the "
                f"same {strip['n']} held-out samples in every panel, perplexity {strip['perplexity']:g}. Epoch 0 "
                "starts from PCA; each later epoch starts from the previous epoch's layout, so a class keeps its "
                "place unless the layer moves it. Colours: classes.")}
    log(f"dynamics figures: {', '.join(figs) or 'none'}")
    return figs


def strip_viewer_payload(strip, class_names, colors, thumbs, groups=None) -> dict:
    """The viewer data of the strip (the same format as the t-SNE grid's, columns are epochs)."""
    from .viewer import viewer_payload

    data = {**strip, "titles": {k: f"{strip['layer']}, epoch {k[1]}" for k in strip["panels"]}}
    payload = viewer_payload(data, class_names, colors, thumbs, groups=groups)
    payload["cols"] = [str(e) for e in strip["cols"]]
    payload["colLabel"] = "epoch"
    payload["layer"] = strip["layer"]
    return payload


def strip_viewer_block(payload: dict) -> tuple[str, str]:
    from .document import asset, script_json

    html_text = ("<p class=\"note\">Layer " + payload.get("layer", "") + " across the training epochs (a row per "
                 "method)<span class=\"interactive\">: drag to pan; zoom with ctrl/cmd + wheel, or click a panel "
                 "first and then use the wheel; hover a point to ring the same sample in every epoch</span>.</p>"
                 "<div id=\"tv-strip\"></div>"
                 f"<script type=\"application/json\" id=\"alviz-tsne-strip\">{script_json(payload)}</script>"
                 f"<script>{asset('viewer.js')}</script>")
    return html_text, "The interactive t-SNE strip across epochs is in `report.html`."


MEASURE_NAMES = {"ratio": "inter- over intra-class mean distance (higher: classes further apart)",
                 "probe_acc": "linear-probe accuracy (higher: linearly separable)"}

DYNAMICS_COLUMNS = ["experiment", "run", "method", "seed", "epoch", "layer", "role", "depth", "on_path", "match",
                    "measure", "stat", "value"]


def epoch_table(summary: list[dict], measure: str, epochs: list[int]):
    """(head, body) of a table: one row per method and layer on the inference path, one column per
    epoch, cells mean ± s.d. over seeds of ``measure``."""
    from .tables import fmt_pm

    idx: dict[tuple, dict] = defaultdict(dict)
    info: dict[tuple, float] = {}
    for r in summary:
        if r["measure"] == measure and r.get("on_path") and r.get("depth") is not None:
            idx[(r["method"], r["layer"], r["epoch"])][r["stat"]] = r["value"]
            info[(r["method"], r["layer"])] = float(r["depth"])
    keys = sorted(info, key=lambda k: (method_order(k[0]), info[k]))
    head = ["method", "layer", "pos."] + [f"epoch {e}" for e in epochs]
    body = []
    for m, layer in keys:
        cells = []
        for e in epochs:
            st = idx.get((m, layer, e))
            cells.append(fmt_pm(st["mean"], st["std"]) if st else "–")
        body.append([m.upper(), layer, f"{info[(m, layer)]:g}", *cells])
    return head, body


__all__ = ["FIGURES", "DYNAMICS_COLUMNS", "epoch_table", "snapshot_activations", "measure_snapshots", "exit_curves", "StripJob", "strip_layer", "dynamics_figures",
           "strip_viewer_payload", "strip_viewer_block", "has_snapshots", "snapshot_epochs"]
