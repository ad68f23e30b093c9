"""An experiment's figures in paper style (8 pt text, one- or two-column widths), each saved as
PDF and PNG with its caption: the separation by layer, distances, every measure, the t-SNE grid,
training curves and AL's exits.

What this is not: no drawing primitives (``alviz.plots``: each takes data and an ``ax``), no
measuring, no documents.
"""
from __future__ import annotations

import io
from pathlib import Path

from .. import __version__
from ..checkpoint import write_bytes_atomic
from ..metrics import MEASURES
from .runs import method_order


# paper style: 8 pt text (column width 3.35 in), TrueType fonts in PDFs
STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "legend.title_fontsize": 7,
    "figure.titlesize": 9, "axes.linewidth": 0.6, "xtick.major.width": 0.6,
    "ytick.major.width": 0.6, "lines.linewidth": 1.2, "pdf.fonttype": 42, "ps.fonttype": 42,
    "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False,
    "savefig.dpi": 300, "figure.dpi": 100, "font.family": "DejaVu Sans",
}
COLUMN_WIDTH = 3.35  # inches, one column of a two-column paper
TEXT_WIDTH = 6.9


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig, folder: Path, stem: str) -> dict:
    """Write stem.pdf and stem.png atomically; returns {"png": bytes}."""
    out = {}
    # solve the constrained layout once (one draw), then save both formats with it frozen
    engine = fig.get_layout_engine()
    if engine is not None:
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    for fmt in ("pdf", "png"):
        buf = io.BytesIO()
        meta = {"Software": None} if fmt == "png" else {"Creator": f"alviz {__version__}"}
        fig.savefig(buf, format=fmt, metadata=meta, dpi=300 if fmt == "png" else None)
        data = buf.getvalue()
        write_bytes_atomic(folder / f"{stem}.{fmt}", data)
        out[fmt] = data
    return out


def experiment_figures(rows, infos, tsne_data, class_names, folder: Path, log) -> dict[str, dict]:
    """Draw and save every figure of one experiment; returns {stem: {"png": bytes, caption}}."""
    import matplotlib

    from .. import curves, plots

    figs: dict[str, dict] = {}
    path_rows = [r for r in rows if r["on_path"] and r["depth"] is not None]
    n_seeds = max((sum(1 for i in infos if i.method == m) for m in {i.method for i in infos}), default=1)
    err_note = ("Points: mean over seeds; error bars: ±1 sample s.d." if n_seeds > 1
                else "One run per method (no error bars).")
    with matplotlib.rc_context(STYLE):
        if path_rows:
            n_methods = len({r["method"] for r in path_rows})
            fig = new_figure(COLUMN_WIDTH if n_methods <= 3 else TEXT_WIDTH, 2.5)  # room for the legend
            ax = fig.add_subplot()
            plots.measure_by_layer(path_rows, "ratio", ax=ax, reference=1.0)
            figs["fig_ratio"] = {**save_figure(fig, folder, "fig_ratio"), "caption": (
                "Inter-class over intra-class mean Euclidean distance of each layer on the "
                "inference path (held-out samples; higher: classes better separated; 1: no "
                f"separation). {err_note} The dotted line separates the encoder from the "
                "bridge/decoder (AL) or head (BP) layers; tick labels give both methods' layers.")}

            fig = new_figure(TEXT_WIDTH, 2.5)
            plots.distances_by_layer(path_rows, fig=fig)
            figs["fig_distances"] = {**save_figure(fig, folder, "fig_distances"), "caption": (
                "Mean Euclidean distance between two samples of the same class (a) and of "
                "different classes (b), by layer (log scale). Distances are in each layer's own "
                f"units: compare AL with BP at one position, not across positions. {err_note}")}

            fig = new_figure(TEXT_WIDTH, 6.2)
            plots.measures_grid(path_rows, list(MEASURES), fig=fig)
            figs["fig_measures"] = {**save_figure(fig, folder, "fig_measures"), "caption": (
                "Every separability measure by layer (definitions in the table below); intra, "
                f"inter, Fisher ratio and NC1 on log scales. Lower is better for intra and NC1. {err_note}")}

        if tsne_data is not None:
            rows_n = [plots.method_style(m)["label"] for m in tsne_data["rows"]]
            cols_n = [f"{p:g}" for p in tsne_data["cols"]]
            panels = {(plots.method_style(m)["label"], f"{p:g}"): Y
                      for (m, p), Y in tsne_data["panels"].items()}
            titles = {(plots.method_style(m)["label"], f"{p:g}"): t
                      for (m, p), t in tsne_data["titles"].items()}
            nc = len(cols_n)
            width = min(TEXT_WIDTH, 1.3 * nc + 0.4)
            fig = new_figure(width, 1.25 * len(rows_n) + 0.55)
            groups = plots.class_groups(class_names)
            plots.tsne_grid(panels, tsne_data["labels"], row_names=rows_n, col_names=cols_n,
                            titles=titles, class_names=class_names, fig=fig,
                            colors=plots.class_colors(len(class_names), None if groups is None else groups[1]),
                            point_size=1.2 if tsne_data["n"] > 1000 else 2.5)
            ref = tsne_data["reference"]
            runs = ", ".join(f"{plots.method_style(m)['label']}: {r}" for m, r in tsne_data["runs"].items())
            figs["fig_tsne"] = {**save_figure(fig, folder, "fig_tsne"), "caption": (
                f"t-SNE (openTSNE, PCA initialisation, perplexity {tsne_data['perplexity']:g}) of "
                f"the same {tsne_data['n']} held-out samples (stratified) in every panel; columns: "
                f"layers along the inference path, rows: methods ({runs}). Each panel is "
                f"started from the embedding of the {plots.method_style(ref[0])['label']} {tsne_data['titles'][ref]} "
                f"panel (the reference) and then Procrustes-aligned (rotation, reflection, scale) onto it, so a "
                f"class tends to keep its region (each panel's class-centroid shift is in the report); points drawn in a seeded random order; colours: "
                + ("class groups." if groups else "classes."))}

        hist = [{"method": i.method, "seed": i.seed, "history": i.history,
                 "depth": i.config.get("depth")} for i in infos if i.history]
        if hist:
            has_al_loss = any(i.method == "al" for i in infos if i.history)
            fig = new_figure(COLUMN_WIDTH, 4.4 if has_al_loss else 2.3)
            axes = fig.subplots(2 if has_al_loss else 1, 1, squeeze=False)[:, 0]
            curves.training_curves(hist, ax=axes[0])
            axes[0].set_title("(a) test accuracy per epoch", loc="left")
            if has_al_loss:
                curves.al_losses(hist, ax=axes[1])
                axes[1].set_title("(b) AL local losses (training set, mean over seeds)", loc="left")
            figs["fig_training"] = {**save_figure(fig, folder, "fig_training"), "caption": (
                ("Test accuracy per epoch (line: mean over seeds; band: min–max over seeds)" if n_seeds > 1
                 else "Test accuracy per epoch (one run per method)")
                + ("; AL's association (assoc k: bridge vs label code) and auto-encoder (AE k) "
                   "losses of each component k." if has_al_loss else "."))}
            with_exits = sorted({h["method"] for h in hist for k in (h["history"][-1] if h["history"] else {})
                                 if k.startswith("test_acc_exit")}, key=method_order)
            if with_exits:
                fig = new_figure(COLUMN_WIDTH, 2.3)
                ax = fig.add_subplot()
                curves.exit_accuracy(hist, ax=ax)
                what = {"al": "AL: h_1(...h_k(b_k(s_k)))", "al-e2e": "AL-E2E: the same path",
                        "dgl": "DGL: its auxiliary classifier a_k(s_k)"}
                names = "; ".join(what.get(m, plots.method_style(m)["label"]) for m in with_exits)
                figs["fig_exits"] = {**save_figure(fig, folder, "fig_exits"), "caption": (
                    f"Test accuracy when inference exits after component k ({names}), at the last "
                    f"epoch; the methods with only a full-depth output for reference. {err_note}")}
    log(f"figures: {', '.join(figs)}")
    return figs
