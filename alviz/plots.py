"""Paper-style figure functions for hidden-layer studies of AL and BP runs.

What this is: functions that take data (plain Python records or arrays) and draw onto
Matplotlib Axes. Each takes ``ax=None`` (or ``fig=None`` for a grid) and returns the Axes (or
the Figure for grids); when no Axes is given a new pyplot figure is made. The data they take:

- *records*: an iterable of mappings, one per (run, layer, measure), with at least the keys
  ``method`` ("al"/"bp"), ``seed``, ``layer``, ``depth`` (position along the inference path),
  ``measure`` and ``value`` -- the rows of ``reports/<experiment>/metrics.csv``. A pandas
  DataFrame works too (its rows are read with ``to_dict("records")``). Values of several seeds
  are drawn as mean with error bars (``err="std"``: one sample standard deviation;
  ``"ci"``: 95 % Student-t interval; ``None``: none). Legends sit outside the data: above
  the Axes, or above the panels of a grid.
Figures against epochs (training curves, AL's losses, exits, measures by epoch) and across
experiments (studies) are in ``alviz.curves``, which draws with the styles defined here.

The palette is colour-blind safe: classes use seaborn's ``colorblind`` 10-colour list, always
in label order, so class ``c`` has the same colour in every panel and in the HTML viewer
(``class_colors``). Beyond 10 classes, classes are coloured by group (``class_groups``:
CIFAR-100's 20 superclasses, else blocks of consecutive labels), never by 100 shades of one
colormap; the class itself is shown on hover in the viewer. AL and BP differ by colour, marker
and line style, so the figures survive greyscale printing. Every line drawn reaches 3:1
contrast on white; log axes say so in their label; epoch axes start at 1; every measure's axis
says which direction is better.

What this is not: no file I/O, no ``savefig``, no global style changes (fonts, sizes and file
formats are chosen by ``alviz.report``), no computation of measures (see ``alviz.metrics``).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .palette import PALETTE, class_colors, class_groups

__all__ = [
    "PALETTE",
    "METHOD_STYLE",
    "MEASURE_LABELS",
    "class_colors",
    "class_groups",
    "method_style",
    "figure_legend",
    "measure_by_layer",
    "distances_by_layer",
    "measures_grid",
    "tsne_grid",
]

#: How each method is drawn: colour, marker, line style and legend label.
METHOD_STYLE = {
    "al": {"color": "#0173b2", "marker": "o", "linestyle": "-", "label": "AL"},
    "bp": {"color": "#d55e00", "marker": "s", "linestyle": "--", "label": "BP"},
    "al-e2e": {"color": "#56b4e9", "marker": "D", "linestyle": "-.", "label": "AL-E2E"},
    "scpl": {"color": "#029e73", "marker": "^", "linestyle": "-", "label": "SCPL"},
    "dgl": {"color": "#cc78bc", "marker": "v", "linestyle": "-", "label": "DGL"},
    "bp-authors": {"color": "#7f6d00", "marker": "P", "linestyle": (0, (5, 1, 1, 1)), "label": "BP (authors')"},
}
#: The order methods are listed and stacked in (others after, alphabetically).
METHOD_ORDER = {m: i for i, m in enumerate(METHOD_STYLE)}

#: Axis labels of the measures of ``alviz.metrics.MEASURES`` (plus accuracies).
MEASURE_LABELS = {
    "intra": "intra-class distance",
    "inter": "inter-class distance",
    "ratio": "inter / intra distance",
    "centroid_ratio": "centroid distance ratio",
    "fisher_ratio": "Fisher trace ratio",
    "nc1": "NC1 (lower: more collapsed)",
    "silhouette": "silhouette",
    "knn_acc": "5-NN accuracy",
    "probe_acc": "linear-probe accuracy",
    "test_acc": "test accuracy",
}

_GROUP_LINESTYLES = ["-", "--", ":", "-."]
_GROUP_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


# ------------------------------------------------------------------------------------ helpers
def direction(measure: str) -> str:
    """"higher is better" / "lower is better" for a measure of ``alviz.metrics`` (else "")."""
    from .metrics import MEASURES

    m = MEASURES.get(measure)
    if m is None:
        return ""
    return "higher is better" if m.higher_is_better else "lower is better"


def _yerr(errs):
    """Error bars to draw, or None when there are none (the legend then shows no bars)."""
    return errs if any(e > 0 for e in errs) else None


def method_style(method: str) -> dict:
    """Style of a method (``METHOD_STYLE``); an unknown method gets a grey dotted style."""
    return dict(METHOD_STYLE.get(method, {"color": "#555555", "marker": "^", "linestyle": ":",
                                          "label": str(method).upper()}))


def _records(data) -> list[dict]:
    if hasattr(data, "to_dict"):  # pandas DataFrame
        data = data.to_dict("records")
    if isinstance(data, Mapping):
        raise TypeError("expected an iterable of records (mappings), got one mapping")
    rows = [dict(r) for r in data]
    return rows


def _need(rows: list[dict], keys: Sequence[str], what: str) -> None:
    for r in rows[:1]:
        missing = [k for k in keys if k not in r]
        if missing:
            raise ValueError(f"{what}: records need the keys {list(keys)}; missing {missing} "
                             f"(got {sorted(r)})")


def _ax(ax, figsize=(3.35, 2.4)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _err(values: np.ndarray, err: str | None) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if err is None or len(v) < 2:
        return 0.0
    sd = float(v.std(ddof=1))
    if err == "std":
        return sd
    if err == "ci":
        from scipy import stats

        return float(stats.t.ppf(0.975, len(v) - 1)) * sd / math.sqrt(len(v))
    raise ValueError(f"err must be 'std', 'ci' or None; got {err!r}.")


def _mean(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _methods(keys: Iterable[str]) -> list[str]:
    return sorted(set(keys), key=lambda m: (METHOD_ORDER.get(m, len(METHOD_ORDER)), m))


def _legend_above(ax, **kw) -> None:
    """Legend in one row above the axes, outside the data (never hides a point)."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=_legend_cols(ax, labels),
              frameon=False, borderaxespad=0.2, **kw)


def _legend_cols(ax, labels, fig_wide: bool = False) -> int:
    """As many legend columns as fit in the axes' (or the figure's) width, at least one."""
    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties

    if len(labels) <= 1:
        return 1
    prop = FontProperties(size=mpl.rcParams["legend.fontsize"])
    em = prop.get_size_in_points()
    width = ax.figure.get_figwidth() * 72.0 * (0.95 if fig_wide else 0.9 * ax.get_position().width)
    # handle, the gap to the text and the spacing between columns, in em (matplotlib's defaults)
    pad = mpl.rcParams["legend.handlelength"] + mpl.rcParams["legend.handletextpad"] + mpl.rcParams["legend.columnspacing"]
    need = [label_width(t, prop) + pad * em for t in labels]
    for n in range(len(labels), 1, -1):
        rows = [need[i:i + n] for i in range(0, len(need), n)]
        if max(sum(r) for r in rows) <= width:
            return n
    return 1


def figure_legend(fig, ax) -> None:
    """One legend for a whole figure, above the panels, from the handles of ``ax``."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=_legend_cols(ax, labels, fig_wide=True),
                   frameon=False)


_WIDTHS: dict[tuple, float] = {}


def label_width(text: str, prop) -> float:
    """Width in points of ``text`` set in the font ``prop`` (no renderer needed); remembered per
    text and font (tick locators ask for the same labels at every draw)."""
    from matplotlib.textpath import text_to_path

    key = (text, tuple(prop.get_family()), prop.get_style(), prop.get_variant(), prop.get_weight(),
           prop.get_stretch(), prop.get_size_in_points(), prop.get_file(), prop.get_math_fontfamily())
    if key not in _WIDTHS:
        if len(_WIDTHS) > 4096:
            _WIDTHS.clear()
        _WIDTHS[key] = text_to_path.get_text_width_height_descent(text, prop, ismath=False)[0]
    return _WIDTHS[key]


def _layer_ticks(ax, names_at: dict[float, dict[str, str]], boundary: float | None,
                 compact: bool | None = None) -> None:
    """x ticks at depths; a tick label stacks the layer names of the methods when they differ
    (AL's first). ``compact`` (default: more than 6 positions, or names too wide to sit side by side
    in the axes' width) joins them with "/" on one rotated line instead, for narrow panels and deep
    models."""
    order = METHOD_ORDER
    xs = sorted(names_at)
    if compact is None:
        compact = len(xs) > 6
    stacks = []
    for x in xs:
        names = [n for m, n in sorted(names_at[x].items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))]
        stacks.append(list(dict.fromkeys(names)))
    if not compact and len(xs) > 1:  # stacked labels that would not fit side by side: rotate instead
        prop = ax.xaxis.get_major_ticks()[0].label1.get_fontproperties() if ax.xaxis.get_major_ticks() else None
        if prop is not None:
            widest = max(label_width(n, prop) for st in stacks for n in st)
            # the axes' width once the layout has made room for labels: about 85 % of its slot
            room = 0.85 * ax.get_position().width * ax.figure.get_figwidth() * 72.0 / (len(xs) - 1 + 0.8)
            compact = widest + 0.4 * prop.get_size_in_points() > room
    labels = [("/" if compact else "\n").join(st) for st in stacks]
    ax.set_xticks(xs)
    if compact:
        ax.set_xticklabels(labels, rotation=40, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticklabels(labels)
    if len(xs) > 1:
        ax.set_xlim(xs[0] - 0.4, xs[-1] + 0.4)
    if boundary is not None:
        ax.axvline(boundary, color="#767676", linewidth=0.6, linestyle=":", zorder=0)


def _log_y(ax) -> None:
    """Log y axis with plain-number labels; minor ticks (2, 5) labelled when the data span
    less than two decades (otherwise too few labels would be left)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.relim()
    ax.autoscale_view()
    lo, hi = ax.get_ylim()

    def label(v, _):
        if v <= 0:
            return ""
        if 1e-3 <= v < 1e4:
            return f"{v:g}"
        e = math.floor(math.log10(v) + 1e-9)
        m = v / 10 ** e
        return f"$10^{{{e}}}$" if abs(m - 1) < 1e-6 else f"${m:g}\\times10^{{{e}}}$"

    fmt = FuncFormatter(label)
    ax.yaxis.set_major_formatter(fmt)
    if lo > 0 and math.log10(hi / lo) < 2.0:
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(fmt)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


# ------------------------------------------------------------------------ measures by layer
def _by_layer(rows: list[dict], measure: str):
    """{method: [(depth, mean, values)]} and tick names {depth: {method: layer}} for a measure."""
    vals: dict[tuple[str, float], list[float]] = defaultdict(list)
    names: dict[float, dict[str, str]] = defaultdict(dict)
    roles: dict[float, set] = defaultdict(set)
    for r in rows:
        if r["measure"] != measure:
            continue
        d = r["depth"]
        if d is None or d == "" or (isinstance(d, float) and math.isnan(d)):
            continue
        d = float(d)
        vals[(r["method"], d)].append(float(r["value"]))
        names[d][r["method"]] = str(r["layer"])
        if "role" in r:
            roles[d].add(r["role"])
    series: dict[str, list] = defaultdict(list)
    for (m, d), v in sorted(vals.items(), key=lambda kv: kv[0][1]):
        series[m].append((d, np.asarray(v, float)))
    enc = [d for d, rs in roles.items() if rs and rs <= {"encoder"}]
    boundary = max(enc) + 0.5 if enc and len(enc) < len(names) else None
    return series, names, boundary


def measure_by_layer(records, measure: str = "ratio", *, ax=None, err: str | None = "std",
                     logy: bool = False, ylabel: str | None = None, legend: bool = True,
                     reference: float | None = None, compact: bool | None = None):
    """One measure along the inference path: x = layer position, one line per method.

    Points are the mean over seeds, error bars ``err`` (see module docstring). Tick labels name
    the layer of each method at that position (e.g. "bridge2" over "head1"); a dotted line
    separates encoder layers from the rest. ``reference`` draws a horizontal line (e.g. 1.0 for
    the ratio: inter = intra, no separation). ``compact`` tick labels: see ``_layer_ticks``.
    Returns the Axes.
    """
    rows = _records(records)
    _need(rows, ("method", "layer", "depth", "measure", "value"), "measure_by_layer")
    ax = _ax(ax)
    series, names, boundary = _by_layer(rows, measure)
    if not series:
        raise ValueError(f"measure_by_layer: no records with measure {measure!r} and a depth")
    for m in _methods(series):
        st = method_style(m)
        xs = [d for d, _ in series[m]]
        means = [_mean(v) for _, v in series[m]]
        errs = [_err(v, err) for _, v in series[m]]
        n_seeds = max(len(v) for _, v in series[m])
        label = st["label"] + (f" (n={n_seeds})" if n_seeds > 1 else "")
        ax.errorbar(xs, means, yerr=_yerr(errs), color=st["color"],
                    marker=st["marker"], linestyle=st["linestyle"], label=label, capsize=2,
                    markersize=3.5, linewidth=1.2, elinewidth=0.8)
    if reference is not None:
        ax.axhline(reference, color="#888888", linewidth=0.6, linestyle="-", zorder=0)
    _layer_ticks(ax, names, boundary, compact)
    if logy:
        _log_y(ax)
    label = ylabel or MEASURE_LABELS.get(measure, measure)
    notes = [n for n in (direction(measure) if ylabel is None and "lower:" not in label else "",
                         "log scale" if logy else "") if n]
    if notes:
        label += f"\n({', '.join(notes)})"
    ax.set_ylabel(label)
    ax.set_xlabel("layer (position along the inference path)")
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    if legend:
        _legend_above(ax)
    return ax


def distances_by_layer(records, *, fig=None, err: str | None = "std", logy: bool = True):
    """Intra- and inter-class mean distances by layer, side by side (two panels), AL against BP.

    Distances are in the units of each layer's activations, so the y axes are logarithmic by
    default: layers of different width or activation function differ in scale, and only the
    comparison at one position is meaningful. Returns the Figure.
    """
    rows = _records(records)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(6.9, 2.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, meas, title in zip(axes, ("intra", "inter"),
                               ("(a) intra-class distance", "(b) inter-class distance")):
        measure_by_layer(rows, meas, ax=ax, err=err, logy=logy, legend=False,
                         ylabel="mean Euclidean distance")
        ax.set_title(f"{title} ({direction(meas)})" if direction(meas) else title, loc="left")
    axes[1].tick_params(labelleft=True)
    figure_legend(fig, axes[0])
    return fig


def measures_grid(records, measures: Sequence[str], *, fig=None, err: str | None = "std",
                  ncols: int = 3):
    """Small multiples: one panel per measure (``measure_by_layer``), AL against BP.

    Returns the Figure; one legend above the panels.
    """
    rows = _records(records)
    measures = [m for m in measures if any(r["measure"] == m for r in rows)]
    if not measures:
        raise ValueError("measures_grid: none of the measures appear in the records")
    nrows = math.ceil(len(measures) / ncols)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(6.9, 1.9 * nrows + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, (ax, m) in enumerate(zip(axes, measures)):
        measure_by_layer(rows, m, ax=ax, err=err, legend=False, compact=True,
                         logy=m in ("intra", "inter", "fisher_ratio", "nc1"), ylabel="")
        ax.set_xlabel("")
        log = m in ("intra", "inter", "fisher_ratio", "nc1")
        better = direction(m)
        ax.set_title(MEASURE_LABELS.get(m, m).replace(" (lower: more collapsed)", ""), loc="left")
        ax.set_ylabel(", ".join(x for x in (better.replace(" is ", " "), "log scale" if log else "") if x),
                      fontsize="x-small")
        ax.tick_params(axis="x", labelsize="x-small")
        ax.tick_params(axis="y", which="both", labelsize="x-small")
    for ax in axes[len(measures):]:
        ax.set_visible(False)
    figure_legend(fig, axes[0])
    return fig


# ----------------------------------------------------------------------------------- t-SNE
def tsne_grid(panels, labels, *, row_names: Sequence[str], col_names: Sequence[str],
              titles: Mapping | None = None, class_names: Sequence[str] | None = None,
              colors: Sequence[str] | None = None, point_size: float = 1.5, fig=None,
              legend: bool = True, rasterized: bool = True, seed: int = 0):
    """A grid of 2-D embeddings: one row per ``row_names`` entry (e.g. AL, BP), one column per
    ``col_names`` entry (e.g. layer positions).

    ``panels`` maps ``(row, col)`` (names) to an (N, 2) array of the same N points in the same
    order (missing or None: an empty panel). ``labels`` (N,) are class indices 0..C-1, coloured
    with ``class_colors`` (or ``colors``). ``titles`` maps ``(row, col)`` to a panel title
    (default: the column name). Axes carry no ticks: t-SNE coordinates have no units. Scatter
    points are rasterised inside vector outputs to keep PDFs small; they are drawn in a seeded
    random order (``seed``), so no class always lies on top of the others. Beyond 10 classes the
    legend shows the colour groups (``class_groups``). Returns the Figure.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {labels.shape}")
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    colors = list(colors) if colors is not None else class_colors(n_classes)
    if len(colors) < n_classes:
        raise ValueError(f"need {n_classes} colours, got {len(colors)}")
    order = np.random.default_rng(seed).permutation(len(labels))
    point_colors = np.asarray(colors, dtype=object)[labels[order]] if len(labels) else []
    nr, nc = len(row_names), len(col_names)
    if nr == 0 or nc == 0:
        raise ValueError("tsne_grid needs at least one row and one column")
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(min(6.9, 1.45 * nc + 0.6), 1.45 * nr + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(nr, nc, squeeze=False))
    for i, r in enumerate(row_names):
        for j, c in enumerate(col_names):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal", adjustable="datalim")
            for s in ax.spines.values():  # a full thin frame, whatever the style's spines
                s.set_visible(True)
                s.set_linewidth(0.5)
                s.set_color("#999999")
            Y = panels.get((r, c)) if isinstance(panels, Mapping) else None
            title = (titles or {}).get((r, c), str(c))
            ax.set_title(title, fontsize="small", pad=2)
            if j == 0:
                ax.set_ylabel(str(r), fontsize="medium", fontweight="bold")
            if Y is None:
                ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center",
                        color="#999999")
                continue
            Y = np.asarray(Y, dtype=float)
            if Y.shape != (len(labels), 2):
                raise ValueError(f"panel {(r, c)} has shape {Y.shape}; expected "
                                 f"({len(labels)}, 2), the same points as labels")
            ax.scatter(Y[order, 0], Y[order, 1], c=point_colors, s=point_size, linewidths=0,
                       marker="o", rasterized=rasterized)
    if legend and n_classes:
        from matplotlib.lines import Line2D

        names = list(class_names) if class_names is not None else [str(k) for k in range(n_classes)]
        names += [str(k) for k in range(len(names), n_classes)]
        title = "class"
        entries = [(names[k], colors[k]) for k in range(n_classes)]
        if n_classes > len(PALETTE):  # one entry per colour group
            gnames, of = class_groups(names)
            entries = [(gnames[g], colors[of.index(g)]) for g in range(len(gnames))]
            title = "class group"
        handles = [Line2D([], [], marker="o", linestyle="", markersize=4, color=c, label=lab)
                   for lab, c in entries]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(entries), 10 if len(entries) <= 10 else 4),
                   frameon=False, handletextpad=0.1, columnspacing=0.8, title=title)
    return fig
