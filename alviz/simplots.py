"""Paper-style figure functions for comparing representations and showing uncertainty: a layer x
layer similarity heatmap (shared colour scale across panels), a measure by layer with interval
error bars, and a readout ladder (AL's exit accuracy against a linear probe per depth).

What this is: the companion of ``alviz.plots`` (kept in its own file so that each stays small);
the same conventions: data and an ``ax`` in, the Axes out, no saving, no global style, AL/BP
drawn with ``plots.method_style``.

What this is not: no measuring (``alviz.similarity``, ``alviz.uncertainty``), no files.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .plots import MEASURE_LABELS, _ax, _layer_ticks, _legend_above, method_style

__all__ = ["similarity_heatmap", "interval_by_layer", "readout_ladder"]


def similarity_heatmap(matrix, rows: Sequence[str], cols: Sequence[str], *, ax=None, vmin: float = 0.0,
                       vmax: float = 1.0, cmap: str = "viridis", title: str | None = None,
                       xlabel: str | None = None, ylabel: str | None = None, annotate: bool = True,
                       colorbar: bool = False, label: str = "CKA"):
    """A layer x layer matrix as a heatmap; ``vmin``/``vmax`` fixed by the caller so that several
    panels share one colour scale. Cells are annotated with their value (2 decimals) when
    ``annotate``. Returns the Axes."""
    M = np.asarray(matrix, dtype=float)
    if M.shape != (len(rows), len(cols)):
        raise ValueError(f"similarity_heatmap: matrix of shape {M.shape} for {len(rows)} rows x {len(cols)} columns")
    ax = _ax(ax)
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    if annotate and M.size <= 400:
        mid = (vmin + vmax) / 2
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                if np.isfinite(M[i, j]):
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="black" if M[i, j] > mid else "white")
    if title:
        ax.set_title(title, loc="left")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    for s in ax.spines.values():
        s.set_visible(False)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8, label=label)
    ax._alviz_image = im  # for a shared colour bar drawn by the caller
    return ax


def interval_by_layer(records, measure: str, *, ax=None, reference: float | None = None,
                      ylabel: str | None = None, legend: bool = True, compact: bool | None = None,
                      xlabel: str = "layer (position along the inference path)"):
    """One measure along the inference path with interval error bars: records are mappings with
    ``method``, ``layer``, ``depth``, ``value``, ``low``, ``high`` (one per method and layer: a
    run's value and bootstrap interval, or a method's mean over seeds and its combined interval).
    Returns the Axes."""
    rows = [dict(r) for r in records]
    if not rows:
        raise ValueError(f"interval_by_layer: no records for {measure!r}")
    ax = _ax(ax)
    names: dict = {}
    methods = sorted({r["method"] for r in rows}, key=lambda m: ({"al": 0, "bp": 1}.get(m, 2), m))
    boundary = None
    for m in methods:
        st = method_style(m)
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: float(r["depth"]))
        x = np.array([float(r["depth"]) for r in rs])
        y = np.array([float(r["value"]) for r in rs])
        lo = np.array([float(r["low"]) for r in rs])
        hi = np.array([float(r["high"]) for r in rs])
        yerr = np.vstack([np.where(np.isfinite(lo), y - lo, 0), np.where(np.isfinite(hi), hi - y, 0)])
        ax.errorbar(x, y, yerr=np.maximum(yerr, 0), color=st["color"], marker=st["marker"],
                    linestyle=st["linestyle"], label=st["label"], capsize=2, markersize=3.5, linewidth=1.2,
                    elinewidth=0.8)
        for r in rs:
            names.setdefault(float(r["depth"]), {})[m] = r["layer"]
            if r.get("role") == "encoder":
                boundary = max(boundary or 0, float(r["depth"]) + 0.5)
    if reference is not None:
        ax.axhline(reference, color="#888888", linewidth=0.6, zorder=0)
    _layer_ticks(ax, names, boundary, compact)
    ax.set_ylabel(ylabel or MEASURE_LABELS.get(measure, measure))
    ax.set_xlabel(xlabel)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    if legend:
        _legend_above(ax)
    return ax


def readout_ladder(records, *, ax=None, legend: bool = True):
    """AL's readout ladder: per depth k, the early-exit accuracy h_1(...h_k(b_k(s_k))) and a linear
    probe on the same layer s_k, with intervals. Records: ``depth``, ``what`` ("exit" or "probe"),
    ``value``, ``low``, ``high``. Returns the Axes."""
    rows = [dict(r) for r in records]
    ax = _ax(ax)
    style = {"exit": ("AL exit (own readout)", "#0173b2", "o", "-"),
             "probe": ("linear probe on s_k", "#029e73", "^", ":")}
    for what, (lab, col, mk, ls) in style.items():
        rs = sorted((r for r in rows if r["what"] == what), key=lambda r: r["depth"])
        if not rs:
            continue
        x = np.array([r["depth"] for r in rs], float)
        y = np.array([r["value"] for r in rs], float)
        lo = np.array([r["low"] for r in rs], float)
        hi = np.array([r["high"] for r in rs], float)
        yerr = np.maximum(np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)]), 0)
        ax.errorbar(x, y, yerr=yerr, color=col, marker=mk, linestyle=ls, label=lab, capsize=2, markersize=3.5,
                    linewidth=1.2, elinewidth=0.8)
    ax.set_xticks(sorted({r["depth"] for r in rows}))
    ax.set_xlabel("depth k (component)")
    ax.set_ylabel("held-out accuracy")
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    if legend:
        _legend_above(ax)
    return ax
