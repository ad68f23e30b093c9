"""Tests for alviz.plots: each figure function on tiny hand-made records, checked through the
artists it draws (data of lines and error bars, legend texts, tick labels, scales), not images."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from alviz import curves as C  # noqa: E402
from alviz import plots as P  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


LAYERS = {"al": [("block1", "encoder", 1), ("block2", "encoder", 2), ("bridge2", "bridge", 3)],
          "bp": [("block1", "encoder", 1), ("block2", "encoder", 2), ("head1", "head", 3)]}


def records(measure="ratio", values=None):
    """Two seeds per method; value = base + seed*2 so the mean is base + 1 and s.d. sqrt(2)."""
    rows = []
    for m, layers in LAYERS.items():
        for layer, role, depth in layers:
            for seed in (0, 1):
                base = depth + (0.5 if m == "al" else 0.0)
                v = values[(m, depth, seed)] if values else base + 2 * seed
                rows.append({"run": f"{m}-seed{seed}", "method": m, "seed": seed, "layer": layer, "role": role,
                             "depth": depth, "measure": measure, "value": v})
    return rows


def errorbar_segments(container):
    """(x, y_low, y_high) of the vertical error bars of an ErrorbarContainer."""
    (bars,) = container.lines[2]
    return [(seg[0][0], seg[0][1], seg[1][1]) for seg in bars.get_segments()]


# ------------------------------------------------------------------------- measure_by_layer
def test_measure_by_layer_means_and_std_error_bars():
    ax = P.measure_by_layer(records(), "ratio")
    assert len(ax.containers) == 2  # one errorbar container per method
    by_label = {c.get_label(): c for c in ax.containers}
    al = by_label["AL (n=2)"]
    line = al.lines[0]
    np.testing.assert_allclose(np.asarray(line.get_xdata(), float), [1, 2, 3])
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [2.5, 3.5, 4.5])  # base + 1
    for x, lo, hi in errorbar_segments(al):
        mean = x + 1.5
        assert lo == pytest.approx(mean - math.sqrt(2)) and hi == pytest.approx(mean + math.sqrt(2))
    # colour/marker/linestyle per method, AL solid, BP dashed
    assert to_hex(line.get_color()) == P.METHOD_STYLE["al"]["color"]
    bp_line = by_label["BP (n=2)"].lines[0]
    assert bp_line.get_linestyle() == "--" and bp_line.get_marker() == "s"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["block1", "block2", "bridge2\nhead1"]  # both methods' names where they differ
    assert ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["AL (n=2)", "BP (n=2)"]


def test_measure_by_layer_ci_is_wider_than_std_and_reference_line():
    ax_sd = P.measure_by_layer(records(), "ratio", err="std")
    ax_ci = P.measure_by_layer(records(), "ratio", err="ci", reference=1.0)
    sd = errorbar_segments(ax_sd.containers[0])[0]
    ci = errorbar_segments(ax_ci.containers[0])[0]
    # n = 2: half width t_{0.975,1} * s / sqrt(2) = 12.706 * sqrt(2) / sqrt(2)
    assert ci[2] - ci[1] == pytest.approx(2 * 12.7062047, rel=1e-6)
    assert sd[2] - sd[1] == pytest.approx(2 * math.sqrt(2))
    assert any(list(l.get_ydata()) == [1.0, 1.0] for l in ax_ci.lines)  # the reference line


def test_measure_by_layer_one_seed_no_error_bars_and_log_axis():
    rows = [r for r in records("intra") if r["seed"] == 0]
    ax = P.measure_by_layer(rows, "intra", logy=True)
    assert ax.get_yscale() == "log"
    assert {c.get_label() for c in ax.containers} == {"AL", "BP"}  # no (n=...) with one seed
    assert all(c.lines[2] == () for c in ax.containers)  # no error bars drawn


def test_measure_by_layer_compact_ticks_and_bad_input():
    ax = P.measure_by_layer(records(), "ratio", compact=True)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "bridge2/head1"
    with pytest.raises(ValueError, match="no records with measure 'nc1'"):
        P.measure_by_layer(records(), "nc1")
    with pytest.raises(ValueError, match="missing"):
        P.measure_by_layer([{"method": "al", "value": 1.0}], "ratio")
    with pytest.raises(ValueError, match="err must be"):
        P.measure_by_layer(records(), "ratio", err="sem")


def test_distances_and_measures_grid_figures():
    rows = records("intra") + records("inter") + records("ratio")
    fig = P.distances_by_layer(rows)
    axes = fig.get_axes()
    assert len(axes) == 2 and all(a.get_yscale() == "log" for a in axes)
    assert [a.get_title(loc="left") for a in axes] == ["(a) intra-class distance (lower is better)",
                                                         "(b) inter-class distance (higher is better)"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["AL (n=2)", "BP (n=2)"]  # one, above
    fig = P.measures_grid(rows, ["intra", "inter", "ratio", "nc1"], ncols=2)
    visible = [a for a in fig.get_axes() if a.get_visible()]
    assert len(visible) == 3  # nc1 has no records: left out
    assert [a.get_title(loc="left") for a in visible] == ["intra-class distance", "inter-class distance",
                                                         "inter / intra distance"]


def test_dataframe_like_input_is_accepted():
    class Frame:  # what pandas offers: to_dict("records")
        def __init__(self, rows):
            self.rows = rows

        def to_dict(self, orient):
            assert orient == "records"
            return self.rows

    ax = P.measure_by_layer(Frame(records()), "ratio")
    assert len(ax.containers) == 2


# ------------------------------------------------------------------------------- t-SNE grid
def test_tsne_grid_panels_colours_and_missing_panel():
    labels = np.array([0, 1, 2, 1, 0, 2])
    Y = np.arange(12, dtype=float).reshape(6, 2)
    panels = {("AL", "1"): Y, ("AL", "2"): Y * 2, ("BP", "1"): Y + 1}
    fig = P.tsne_grid(panels, labels, row_names=["AL", "BP"], col_names=["1", "2"],
                      titles={("AL", "2"): "bridge2"}, class_names=["zero", "one", "two"])
    axes = np.asarray(fig.get_axes()).reshape(2, 2)
    scat = [c for c in axes[0, 0].collections if isinstance(c, PathCollection)]
    assert len(scat) == 1
    order = np.random.default_rng(0).permutation(6)  # drawn in a seeded random order
    np.testing.assert_allclose(scat[0].get_offsets(), Y[order])
    colors = [to_hex(c) for c in scat[0].get_facecolors()]
    assert colors == [P.class_colors(3)[k] for k in labels[order]]  # class c -> palette[c]
    assert axes[0, 1].get_title() == "bridge2" and axes[0, 0].get_title() == "1"
    assert axes[0, 0].get_ylabel() == "AL" and axes[1, 0].get_ylabel() == "BP"
    assert [t.get_text() for t in axes[1, 1].texts] == ["n/a"]
    assert axes[0, 0].get_xticks().size == 0
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["zero", "one", "two"]


def test_tsne_grid_rejects_mismatched_panel():
    with pytest.raises(ValueError, match="same points as labels"):
        P.tsne_grid({("AL", "1"): np.zeros((5, 2))}, np.zeros(6, int), row_names=["AL"], col_names=["1"])


def test_class_colors():
    assert P.class_colors(10) == P.PALETTE
    many = P.class_colors(12)
    assert len(many) == 12 and len(set(many)) == 12
    with pytest.raises(ValueError):
        P.class_colors(-1)


# -------------------------------------------------------------------------------- training
def history(acc, exits=None, L=2, losses=True):
    rows = []
    for e, a in enumerate(acc, start=1):
        row = {"epoch": e, "test_acc": a, "train_acc": a}
        if losses:
            for k in range(1, L + 1):
                row[f"loss_assoc{k}"] = 0.1 / e / k
                row[f"loss_ae{k}"] = 0.2 / e / k
        if exits:
            for k, v in enumerate(exits[e - 1], start=1):
                row[f"test_acc_exit{k}"] = v
        rows.append(row)
    return rows


def test_training_curves_mean_and_band():
    hs = [{"method": "al", "seed": 0, "history": history([0.5, 0.7, 0.9])},
          {"method": "al", "seed": 1, "history": history([0.3, 0.5, 0.7])},
          {"method": "bp", "seed": 0, "history": history([0.6, 0.8, 0.85], losses=False)}]
    ax = C.training_curves(hs)
    lines = {l.get_label(): l for l in ax.lines}
    al = lines["AL (n=2, band: min–max)"]
    np.testing.assert_allclose(np.asarray(al.get_ydata(), float), [0.4, 0.6, 0.8])
    np.testing.assert_allclose(np.asarray(lines["BP"].get_ydata(), float), [0.6, 0.8, 0.85])
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # only AL has several seeds
    assert ax.get_xlabel() == "epoch"


def test_al_losses_one_line_per_component_loss():
    hs = [{"method": "al", "seed": 0, "history": history([0.5, 0.7], L=3)},
          {"method": "bp", "seed": 0, "history": history([0.5, 0.7], losses=False)}]
    ax = C.al_losses(hs)
    labels = sorted(l.get_label() for l in ax.lines)
    assert labels == ["AE 1", "AE 2", "AE 3", "assoc 1", "assoc 2", "assoc 3"]
    assert ax.get_yscale() == "log"
    assoc2 = next(l for l in ax.lines if l.get_label() == "assoc 2")
    np.testing.assert_allclose(np.asarray(assoc2.get_ydata(), float), [0.05, 0.025])
    with pytest.raises(ValueError, match="no AL history"):
        C.al_losses([hs[1]])


def test_exit_accuracy_per_depth_and_bp_reference():
    hs = [{"method": "al", "seed": 0, "history": history([0.5], exits=[[0.80, 0.90]])},
          {"method": "al", "seed": 1, "history": history([0.5], exits=[[0.84, 0.92]])},
          {"method": "bp", "seed": 0, "history": history([0.88], losses=False), "depth": 2}]
    ax = C.exit_accuracy(hs)
    by_label = {c.get_label(): c for c in ax.containers}
    al = by_label["AL, exit at depth k"].lines[0]
    np.testing.assert_allclose(np.asarray(al.get_xdata(), float), [1, 2])
    np.testing.assert_allclose(np.asarray(al.get_ydata(), float), [0.82, 0.91])
    bp = by_label["BP (full depth)"].lines[0]
    assert list(bp.get_xdata()) == [2] and list(bp.get_ydata()) == [0.88]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]


# ----------------------------------------------------------------------------------- study
def test_study_numeric_and_categorical_x_with_groups():
    recs = []
    for depth in (2, 4, 8):
        for act in ("relu", "sigmoid"):
            for m in ("al", "bp"):
                drop = 0.4 if (m == "bp" and act == "sigmoid" and depth == 8) else 0.0
                recs.append({"method": m, "depth": depth, "activation": act, "seed": 0,
                             "measure": "test_acc", "value": 0.95 - drop})
    ax = C.study(recs, x="depth", group="activation", measure="test_acc")
    labels = sorted(c.get_label() for c in ax.containers)
    assert labels == ["AL, relu", "AL, sigmoid", "BP, relu", "BP, sigmoid"]
    bp_sig = next(c for c in ax.containers if c.get_label() == "BP, sigmoid").lines[0]
    np.testing.assert_allclose(np.asarray(bp_sig.get_xdata(), float), [2, 4, 8])  # numeric axis: real depths
    np.testing.assert_allclose(np.asarray(bp_sig.get_ydata(), float), [0.95, 0.95, 0.55])
    assert bp_sig.get_linestyle() != next(c for c in ax.containers if c.get_label() == "BP, relu").lines[0].get_linestyle()
    ax2 = C.study([r for r in recs if r["depth"] == 2], x="activation", measure="test_acc")
    assert [t.get_text() for t in ax2.get_xticklabels()] == ["relu", "sigmoid"]  # categories
    with pytest.raises(ValueError, match="no records with measure 'ratio'"):
        C.study(recs, x="depth", measure="ratio")


# ------------------------------------------------------------------------ epoch tick labels
def _label_overlaps(fig):
    """Pairs of x tick labels of one Axes whose drawn boxes overlap, and {axes: shown labels}."""
    import itertools

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    bad, shown = [], {}
    for ax in fig.axes:
        lo, hi = sorted(ax.get_xlim())
        boxes = [(t.get_text(), t.get_window_extent(r)) for x, t in zip(ax.get_xticks(), ax.get_xticklabels())
                 if t.get_visible() and t.get_text() and lo - 1e-9 <= x <= hi + 1e-9]  # drawn: inside the view
        shown[ax] = [b[0] for b in boxes]
        bad += [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    return bad, shown


def _epoch_series(epochs):
    return [{"label": "AL", "values": {e: [1.0 + e] for e in epochs}}]


def test_epoch_ticks_all_shown_where_they_fit_and_the_axis_starts_at_1_or_0():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.35, 2.4), layout="constrained")
    ax = C.series_by_epoch(_epoch_series([0, 1, 2, 4, 8, 16]), ax=fig.add_subplot())
    bad, shown = _label_overlaps(fig)
    assert not bad and shown[ax] == ["0", "1", "2", "4", "8", "16"]
    assert ax.get_xlim()[0] < 0  # epoch 0 (the initialisation) is on the axis
    fig = Figure(figsize=(3.35, 2.4), layout="constrained")
    ax = C.series_by_epoch(_epoch_series([1, 2, 3, 4]), ax=fig.add_subplot())
    assert ax.get_xlim()[0] == 1 and _label_overlaps(fig)[1][ax] == ["1", "2", "3", "4"]


def test_epoch_tick_labels_never_overlap_in_narrow_panels():
    """Issue 15: a depth-4 net's dynamics figures have 9 columns; with epochs 0, 2, 4, 15 (and with
    every epoch 0..20) the labels ran together. They are thinned to what the panel's width holds,
    keeping the last epoch."""
    from matplotlib.figure import Figure

    for epochs in ([0, 2, 4, 15], list(range(21))):
        for width, cols in ((6.9, 9), (6.9, 14), (3.35, 1), (1.0, 1)):
            fig = Figure(figsize=(width, 2.0), layout="constrained")
            axes = fig.subplots(1, cols, squeeze=False)[0]
            for ax in axes:
                C.series_by_epoch(_epoch_series(epochs), ax=ax)
            bad, shown = _label_overlaps(fig)
            assert not bad, (epochs, width, cols, bad)
            for ax in axes:
                assert shown[ax][-1] == str(epochs[-1]), (epochs, width, cols, shown[ax])
                assert len(shown[ax]) >= 2 or width / cols < 0.5
    fig = Figure(figsize=(6.9, 2.0), layout="constrained")  # the training figures' linear epoch axes too
    hist = [{"method": "al", "seed": 0, "history": [{"epoch": e, "test_acc": 0.5, "loss_assoc1": 1.0 / e}
                                                   for e in range(1, 101)]}]
    for ax in fig.subplots(1, 6):
        C.training_curves(hist, ax=ax)
    assert not _label_overlaps(fig)[0]
    fig = Figure(figsize=(3.35, 2.0), layout="constrained")
    ax = C.series_by_epoch(_epoch_series(list(range(21))), ax=fig.add_subplot())
    labels = _label_overlaps(fig)[1][ax]
    assert 5 <= len(labels) < 21 and labels[:3] == ["0", "1", "2"]  # thinned where the log axis crowds them


def test_dynamics_figures_of_a_depth_4_net_have_readable_epoch_ticks(tmp_path, monkeypatch):
    """The report's dynamics figures (9 positions on the inference path, every measure, epochs 0, 2,
    4, 15), drawn as analyze draws them: no two tick labels overlap in any panel."""
    import os
    import shutil

    from alviz.metrics import MEASURES
    from alviz.report import dynamics, figures

    drawn = {}
    real_save = figures.save_figure

    def save(fig, folder, stem):
        drawn[stem] = fig
        return real_save(fig, folder, stem)

    monkeypatch.setattr(figures, "save_figure", save)
    rows = [{"run": f"{m}-seed0", "method": m, "seed": 0, "epoch": e, "layer": f"{m}{d}", "role": "encoder",
             "depth": d, "on_path": True, "match": f"p{d}", "measure": meas, "value": 1.0 + d + e}
            for m in ("al", "bp") for d in range(1, 10) for e in (0, 2, 4, 15) for meas in MEASURES]
    curves = [{"run": "al-seed0", "method": "al", "seed": 0, "epoch": e, "exit": k, "value": 0.1 * k}
              for e in (0, 2, 4, 15) for k in range(1, 5)]
    figs = dynamics.dynamics_figures(rows, curves, None, [str(c) for c in range(10)], tmp_path, 1, lambda *a: None)
    assert {"fig_dynamics", "fig_dynamics_measures", "fig_dynamics_exits"} <= set(figs)
    for stem, fig in drawn.items():
        bad, shown = _label_overlaps(fig)
        assert not bad, (stem, bad)
        bottom = [labels for labels in shown.values() if labels]
        assert bottom and all(labels[-1] == "15" for labels in bottom), (stem, bottom)
        assert all(ax.get_xlim()[0] < 0 for ax in fig.axes if ax.get_xlabel() == "epoch")
    if os.environ.get("ALVIZ_ARTIFACTS"):  # for a reader: the 9-column figure as the report shows it
        shutil.copy(tmp_path / "fig_dynamics.png", os.environ["ALVIZ_ARTIFACTS"])


def test_layer_figure_with_three_methods_keeps_its_legend_and_tick_labels_readable():
    """A column-wide measure_by_layer of AL, matched BP and the authors' BP at 5 positions: the
    stacked layer names (decoder2 / head2 next to decoder1 / head3) and a one-row legend ran into each
    other and off the figure. Tick labels rotate when the stacked names do not fit, the legend takes
    as many columns as fit, and everything stays inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = {"al": ["block1", "block2", "bridge2", "decoder2", "decoder1"],
             "bp": ["block1", "block2", "head1", "head2", "head3"],
             "bp-authors": ["block1", "block2", "head1", "head2", "head3"]}
    rows = [{"method": m, "seed": s, "layer": n, "depth": d + 1, "measure": "ratio", "value": 1.0 + d + s,
             "role": "encoder" if d < 2 else "head"}
            for m, ls in names.items() for d, n in enumerate(ls) for s in (0, 1, 2)]
    fig = Figure(figsize=(3.35, 2.5), layout="constrained")
    ax = P.measure_by_layer(rows, "ratio", ax=fig.add_subplot(), reference=1.0)
    # stacked, the names would run together in this width: one rotated line each (boxes of rotated
    # text overlap by construction, so the check is the rotation and the spacing of the anchors)
    assert all(t.get_rotation() == 40 for t in ax.get_xticklabels())
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    inside = fig.bbox.padded(1.0)
    legend = ax.get_legend().get_window_extent(r)
    assert inside.x0 <= legend.x0 and legend.x1 <= inside.x1 and legend.y1 <= inside.y1
    assert all(inside.x0 <= t.get_window_extent(r).x0 and t.get_window_extent(r).x1 <= inside.x1
               for t in ax.get_xticklabels() if t.get_text())
    assert ax.get_yaxis().get_label().get_window_extent(r).y1 <= inside.y1
    # two methods with short stacked names still stack (no needless rotation)
    fig2 = Figure(figsize=(6.9, 2.5), layout="constrained")
    ax2 = P.measure_by_layer([r_ for r_ in rows if r_["method"] != "bp-authors"], "ratio", ax=fig2.add_subplot())
    assert all(t.get_rotation() == 0 for t in ax2.get_xticklabels())
    assert not _label_overlaps(fig2)[0]
