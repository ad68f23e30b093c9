"""Figures against training epochs and across experiments: test accuracy per epoch, AL's local
losses, the accuracy at every exit, any measure by epoch (training dynamics), and a study of
accuracy or separation against depth or activation.

The data they take: *histories*, an iterable of mappings ``{"method", "seed", "history"}`` where
``history`` is the per-epoch list of dicts of a run's meta.json (keys ``epoch``, ``test_acc``,
``loss_assoc{k}``, ``loss_ae{k}``, ``test_acc_exit{k}``, ...), or records as in ``alviz.plots``.
Each function takes ``ax=None`` and returns the Axes; styles, colours and the error-bar helpers
are ``alviz.plots``'s, so a method looks the same in every figure.

What this is not: no file I/O, no ``savefig``, no global style changes, no figures by layer
(``alviz.plots``).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from .plots import (MEASURE_LABELS, _GROUP_LINESTYLES, _GROUP_MARKERS, _ax, _err, _log_y, _mean, _methods, _need, _records, _yerr, label_width, method_style)

__all__ = ["training_curves", "al_losses", "exit_accuracy", "epoch_axis", "series_by_epoch", "measure_by_epoch",
           "study"]


# ---------------------------------------------------------------------------------- training
def _histories(histories) -> list[dict]:
    hs = [dict(h) for h in histories]
    for h in hs:
        if "history" not in h or "method" not in h:
            raise ValueError("histories need the keys 'method' and 'history' (a list of epoch rows)")
    return hs


def _fitting_epoch_ticks(epochs: list[int] | None = None):
    """A matplotlib Locator of epoch ticks whose labels fit side by side. It is asked for ticks at
    every draw, after the layout has fixed the axes' width, and measures the labels' text there: two
    labels must clear each other by 0.4 em. ``epochs`` given: ticks at those epochs, thinned walking
    left to right (a label is kept when it clears the previous kept one and the last epoch's; the
    first and the last epoch are kept while both fit, the last one alone otherwise). None: integer
    ticks at round steps (MaxNLocator), the most that fit."""
    from matplotlib.ticker import Locator, MaxNLocator

    class FittingEpochTicks(Locator):
        def __call__(self):
            return self.tick_values(*self.axis.get_view_interval())

        def _clear(self, ticks):
            """clear(i, j): do the labels of ticks i and j clear each other?"""
            ax = self.axis.axes
            prop = self.axis.get_major_ticks(1)[0].label1.get_fontproperties()
            px = ax.figure.dpi / 72.0
            xs = ax.transData.transform(np.c_[ticks, np.zeros(len(ticks))])[:, 0]
            half = [label_width(f"{int(round(t))}", prop) * px / 2 for t in ticks]
            pad = 0.4 * prop.get_size_in_points() * px
            return lambda i, j: abs(xs[j] - xs[i]) >= half[i] + half[j] + pad

        def tick_values(self, vmin, vmax):
            lo, hi = min(vmin, vmax), max(vmin, vmax)
            if epochs is None:
                for n in range(12, 0, -1):
                    ticks = [t for t in MaxNLocator(nbins=n, integer=True).tick_values(lo, hi) if lo <= t <= hi]
                    if self.axis is None or len(ticks) < 2:
                        return ticks
                    clear = self._clear(ticks)
                    if all(clear(i, i + 1) for i in range(len(ticks) - 1)):
                        return ticks
                return ticks[-1:]
            ep = [e for e in epochs if lo <= e <= hi]
            if len(ep) < 2 or self.axis is None:
                return ep
            clear, last, kept = self._clear(ep), len(ep) - 1, [0]
            for i in range(1, last):
                if clear(kept[-1], i) and clear(i, last):
                    kept.append(i)
            if clear(kept[-1], last):
                kept.append(last)
            elif len(kept) > 1:
                kept[-1] = last
            else:
                kept = [last]
            return [ep[i] for i in kept]

    return FittingEpochTicks()


def _epoch_x(ax) -> None:
    """Epoch axis: integer ticks at round steps, as many as fit the axes' width side by side,
    starting at epoch 1 (markers at the edge are not clipped)."""
    ax.xaxis.set_major_locator(_fitting_epoch_ticks())
    hi = max([max(line.get_xdata(), default=1) for line in ax.get_lines()] + [1])
    ax.set_xlim(1, max(hi, 2))
    for line in ax.get_lines():
        line.set_clip_on(False)
    ax.set_xlabel("epoch")


def _curve(hist: list[dict], key: str):
    xs, ys = [], []
    for i, row in enumerate(hist, start=1):
        v = row.get(key)
        if v is None or v == "":
            continue
        xs.append(int(row.get("epoch", i)))
        ys.append(float(v))
    return np.asarray(xs), np.asarray(ys)


def _mean_curve(curves):
    """Mean (and spread) over seeds of curves on their common epochs."""
    common = None
    for xs, _ in curves:
        common = set(xs.tolist()) if common is None else common & set(xs.tolist())
    epochs = np.asarray(sorted(common or []))
    if not len(epochs):
        return epochs, np.array([]), np.array([]), np.array([])
    stack = np.stack([ys[np.searchsorted(xs, epochs)] for xs, ys in curves])
    return epochs, stack.mean(0), stack.min(0), stack.max(0)


def training_curves(histories, *, ax=None, key: str = "test_acc", ylabel: str | None = None):
    """Per-epoch curve ``key`` (default test accuracy) of each method: the mean over seeds as a
    line, the min-max range over seeds as a band. Returns the Axes."""
    hs = _histories(histories)
    ax = _ax(ax)
    by_method = defaultdict(list)
    for h in hs:
        xs, ys = _curve(h["history"], key)
        if len(xs):
            by_method[h["method"]].append((xs, ys))
    if not by_method:
        raise ValueError(f"training_curves: no history has the column {key!r}")
    for m in _methods(by_method):
        st = method_style(m)
        ep, mean, lo, hi = _mean_curve(by_method[m])
        n = len(by_method[m])
        ax.plot(ep, mean, color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                markersize=2.5 if len(ep) <= 30 else 0, linewidth=1.2,
                label=st["label"] + (f" (n={n}, band: min–max)" if n > 1 else ""))
        if n > 1:
            ax.fill_between(ep, lo, hi, color=st["color"], alpha=0.2, linewidth=0)
    _epoch_x(ax)
    ax.set_ylabel(ylabel or MEASURE_LABELS.get(key, key))
    ax.grid(linewidth=0.4, alpha=0.5)
    ax.legend(frameon=False, loc="best")
    return ax


def al_losses(histories, *, ax=None, logy: bool = True):
    """AL's local losses per epoch: ``loss_assoc{k}`` (solid) and ``loss_ae{k}`` (dashed) for
    every component k, mean over the AL seeds, one colour per component. Returns the Axes."""
    hs = [h for h in _histories(histories) if h["method"] == "al"]
    ax = _ax(ax)
    keys = sorted({k for h in hs for row in h["history"] for k in row
                   if k.startswith(("loss_assoc", "loss_ae"))},
                  key=lambda k: (int("".join(ch for ch in k if ch.isdigit()) or 0), k))
    if not keys:
        raise ValueError("al_losses: no AL history with loss_assoc{k} / loss_ae{k} columns")
    comps = sorted({int("".join(ch for ch in k if ch.isdigit())) for k in keys})
    from matplotlib import colormaps

    cmap = colormaps["cividis"]  # 0 .. 0.6: every component's line reaches 3:1 contrast on white
    for k in keys:
        comp = int("".join(ch for ch in k if ch.isdigit()))
        color = cmap(0.6 * comps.index(comp) / max(len(comps) - 1, 1))
        curves = [c for c in (_curve(h["history"], k) for h in hs) if len(c[0])]
        ep, mean, _, _ = _mean_curve(curves)
        kind = "assoc" if "assoc" in k else "AE"
        ax.plot(ep, mean, color=color, linestyle="-" if kind == "assoc" else "--",
                linewidth=1.2, label=f"{kind} {comp}")
    if logy:
        ax.set_yscale("log")
    _epoch_x(ax)
    ax.set_ylabel("AL local loss" + (" (log scale)" if logy else ""))
    ax.grid(linewidth=0.4, alpha=0.5)
    ax.legend(frameon=False, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.28),
              handlelength=1.8, columnspacing=1.0)
    return ax


def exit_accuracy(histories, *, ax=None, err: str | None = "std"):
    """Test accuracy at each exit depth k = 1..L (last epoch, mean over seeds, error bars ``err``)
    for every method with early exits (``test_acc_exit{k}`` columns: AL, al-e2e, DGL), and the
    final test accuracy of every method without them (BP, SCPL: one exit, at depth L) beside it
    and as a dotted reference line. Returns the Axes."""
    hs = _histories(histories)
    ax = _ax(ax)
    per_k: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    final: dict[str, list] = defaultdict(list)
    depth = 0
    for h in hs:
        if not h["history"]:
            continue
        last = h["history"][-1]
        exits = {int(k[len("test_acc_exit"):]): float(v) for k, v in last.items()
                 if k.startswith("test_acc_exit") and v not in (None, "")}
        if exits:
            for k, v in exits.items():
                per_k[h["method"]][k].append(v)
            depth = max(depth, max(exits))
        elif last.get("test_acc") not in (None, ""):
            final[h["method"]].append(float(last["test_acc"]))
            depth = max(depth, int(h.get("depth") or 0))
    if not per_k and not final:
        raise ValueError("exit_accuracy: no exit accuracies (test_acc_exit{k}) or final accuracy")
    for m in _methods(per_k):
        st = method_style(m)
        ks = sorted(per_k[m])
        ax.errorbar(ks, [_mean(per_k[m][k]) for k in ks], yerr=_yerr([_err(per_k[m][k], err) for k in ks]),
                    color=st["color"], marker=st["marker"], linestyle=st["linestyle"],
                    capsize=2, markersize=3.5, linewidth=1.2, label=f"{st['label']}, exit at depth k")
    for m in _methods(final):
        st = method_style(m)
        d = depth or 1
        ax.errorbar([d], [_mean(final[m])], yerr=_yerr([_err(final[m], err)]), color=st["color"],
                    marker=st["marker"], linestyle="", capsize=2, markersize=4,
                    label=f"{st['label']} (full depth)")
        ax.axhline(_mean(final[m]), color=st["color"], linestyle=":", linewidth=0.8)
    ks = sorted({k for d in per_k.values() for k in d} | ({depth} if depth else set()))
    ax.set_xticks(ks)
    if ks:
        ax.set_xlim(min(ks) - 0.5, max(ks) + 0.5)
    ax.set_xlabel("exit depth k (components used)")
    ax.set_ylabel("test accuracy")
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    ax.legend(frameon=False)
    return ax


# ------------------------------------------------------------------------------ against epoch
def epoch_axis(ax, epochs: Iterable[int]) -> None:
    """x axis for epochs: symmetric-log (linear below 1), so epoch 0 (the initialisation), 1 and 2
    stay apart beside 16 and 20; ticks at ``epochs``, thinned at draw time to the labels that fit
    the axes' width side by side (a narrow panel of a many-column figure shows fewer). The axis
    starts at epoch 1, or at 0 when epoch 0 (a snapshot of the initialisation) is drawn."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    ep = sorted({int(e) for e in epochs})
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
    ax.xaxis.set_major_locator(_fitting_epoch_ticks(ep))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(round(x))}"))
    ax.xaxis.set_minor_locator(NullLocator())
    if ep:
        ax.set_xlim(-0.15 if ep[0] <= 0 else 1, ep[-1] * 1.08 + 0.2)
        if ep[0] > 0:  # markers at epoch 1, on the axis's edge, are not cut in half
            for line in ax.get_lines():
                line.set_clip_on(False)
    ax.set_xlabel("epoch")


def series_by_epoch(series, *, ax=None, err: str | None = "std", markers: bool = True):
    """Lines against epoch, each with a band of ``err`` (``std``: ±1 sample s.d.; ``ci``: 95 % t-interval; None)
    over the values given at an epoch (seeds). ``series``: a list of dicts ``{label, values:
    {epoch: [values]}, color, linestyle, marker}`` (style keys optional). Returns the Axes."""
    ax = _ax(ax)
    epochs: set[int] = set()
    for i, s in enumerate(series):
        vals = {int(e): [float(v) for v in vs if v is not None and np.isfinite(float(v))]
                for e, vs in s["values"].items()}
        xs = sorted(e for e, vs in vals.items() if vs)
        if not xs:
            continue
        epochs |= set(xs)
        m = np.array([_mean(vals[e]) for e in xs])
        color = s.get("color") or f"C{i}"
        ax.plot(xs, m, color=color, linestyle=s.get("linestyle", "-"),
                marker=s.get("marker", "o") if markers else None, markersize=2.5, linewidth=1.1,
                label=s.get("label"))
        if err and any(len(vals[e]) > 1 for e in xs):
            e_ = np.array([_err(vals[e], err) for e in xs])
            ax.fill_between(xs, m - e_, m + e_, color=color, alpha=0.18, linewidth=0)
    epoch_axis(ax, epochs)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    return ax


def measure_by_epoch(records, measure: str, match: str, *, ax=None, err: str | None = "std",
                     logy: bool = False, title: str | None = None):
    """One measure of the layers with manifest key ``match`` (e.g. ``p2``: AL and BP block 2)
    against epoch: a line per method (mean over seeds) and a band of ±1 s.d. ``records``: tidy
    per-run rows with ``epoch``, ``method``, ``match``, ``measure`` and ``value``."""
    rows = [r for r in _records(records) if r.get("measure") == measure and r.get("match") == match
            and r.get("epoch") is not None and r.get("stat", "value") == "value"]
    per: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    names: dict[str, str] = {}
    for r in rows:
        per[r["method"]][int(r["epoch"])].append(float(r["value"]))
        names.setdefault(r["method"], r.get("layer", ""))
    series = []
    for m in _methods(per):
        st = method_style(m)
        series.append({"label": f"{st['label']} {names[m]}", "values": per[m], "color": st["color"],
                       "linestyle": st["linestyle"], "marker": st["marker"]})
    ax = series_by_epoch(series, ax=ax, err=err)
    if logy:
        _log_y(ax)
    if title is not None:
        ax.set_title(title, fontsize="small", pad=2)
    return ax


# ------------------------------------------------------------------------------ study across
def study(records, *, x: str, measure: str, group: str | None = None, ax=None,
          err: str | None = "std", ylabel: str | None = None, xlabel: str | None = None,
          legend: bool = True):
    """A measure across experiments (e.g. accuracy or ratio against depth), AL against BP.

    ``records`` have keys ``method``, ``x`` (the varying setting, e.g. ``depth`` or
    ``activation``), ``measure``, ``value`` and optionally ``group`` (a second setting, drawn
    with its own line style and marker, e.g. the activation when x is depth). Numeric x values
    are placed on a numeric axis, others as categories in first-seen order. Mean over seeds,
    error bars ``err``. Returns the Axes.
    """
    rows = [r for r in _records(records) if r.get("measure") == measure]
    if not rows:
        raise ValueError(f"study: no records with measure {measure!r}")
    _need(rows, ("method", x, "value"), "study")
    ax = _ax(ax)
    xs_all = list(dict.fromkeys(r[x] for r in rows))
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                  for v in xs_all)
    pos = {v: float(v) for v in xs_all} if numeric else {v: float(i) for i, v in enumerate(xs_all)}
    groups = list(dict.fromkeys(r.get(group) for r in rows)) if group else [None]
    vals = defaultdict(list)
    for r in rows:
        vals[(r["method"], r.get(group) if group else None, r[x])].append(float(r["value"]))
    for m in _methods({k[0] for k in vals}):
        st = method_style(m)
        for gi, g in enumerate(groups):
            pts = sorted(((pos[xv], v) for (mm, gg, xv), v in vals.items() if mm == m and gg == g),
                         key=lambda t: t[0])
            if not pts:
                continue
            label = st["label"] + (f", {g}" if group else "")
            ls = st["linestyle"] if not group else _GROUP_LINESTYLES[gi % len(_GROUP_LINESTYLES)]
            mk = st["marker"] if not group else _GROUP_MARKERS[gi % len(_GROUP_MARKERS)]
            ax.errorbar([p for p, _ in pts], [_mean(v) for _, v in pts],
                        yerr=_yerr([_err(v, err) for _, v in pts]), color=st["color"], marker=mk,
                        linestyle=ls, capsize=2, markersize=3.5, linewidth=1.2, label=label)
    ax.set_xticks(sorted(pos.values()))
    ax.set_xticklabels([str(v) for v in sorted(pos, key=pos.get)])
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or MEASURE_LABELS.get(measure, measure))
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    if legend:
        ax.legend(frameon=False)
    return ax
