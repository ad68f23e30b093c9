"""Analyse experiments of AL and BP runs: per-layer measures, t-SNE views, figures and reports.

What this is: the one package that decides file names, figure styles and formats. It takes run
or experiment folders, extracts activations where needed (``alviz.extract``), measures every
layer (``alviz.metrics``), embeds the layers on the inference path with t-SNE
(``alviz.embed``), draws the figures (``alviz.plots``) and writes, per experiment::

    <out>/<experiment>/metrics.csv     tidy: experiment, run, method, seed, layer, role, depth,
                                       on_path, match, measure, stat, value, class
                                       (stat "value": one run, with "boot_low"/"boot_high" (its
                                       stratified bootstrap interval) and for accuracies
                                       "cp_low"/"cp_high" (exact binomial); stats "mean", "std",
                                       "n", "ci_low", "ci_high" over the seeds of a method, and
                                       "boot_low"/"boot_high" combining seeds and bootstrap: run is
                                       the method name and seed is "all"; class: empty for a whole
                                       layer, else the class of a per-class row; confusion
                                       matrices: measure confusion_model (layer "output") or
                                       confusion_probe, class = true class, stat "pred=<j>";
                                       NaN is written "nan")
    <out>/<experiment>/similarity.csv  CKA, Procrustes and k-NN overlap of every layer pair of
                                       AL vs BP and of two seeds of each method
    <out>/<experiment>/metrics.json    the same rows, the aggregated summary, runs, settings,
                                       measure definitions
    <out>/<experiment>/fig_*.pdf/.png  figures (see FIGURES)
    <out>/<experiment>/report.md       tables and figures
    <out>/<experiment>/report.html     self-contained (base64 images, data, an interactive
                                       t-SNE viewer; no network, no CDN)
    <out>/<experiment>/.cache/         t-SNE embeddings and per-layer measures (.npy / .json)
                                       keyed by a hash of the exact inputs and settings

When experiments of one architecture and data set that differ in depth and/or activation are
analysed together, a study report ``<out>/study-<arch>-<dataset>/`` compares them.

Every file is written atomically (temporary file + rename). A lock file (``fcntl.flock`` on
``<out>/<experiment>/.lock``) serialises two ``alviz analyze`` of the same experiment: the
second waits, then finds the first one's cache.

One file per job, in the order the data flows::

    options.py    Options and the fixed names (CSV columns, figure stems, t-SNE settings)
    files.py      JSON/CSV text, slugs, the lock, atomic .npy writes, cache keys
    runs.py       finding runs and experiments; a run's config, meta and history
    measure.py    a run's activation sets, its per-layer measures (cached), the summary over seeds
    tsne.py       the t-SNE grid: planning, cache, worker threads, alignment
    figures.py    the paper-style figures of an experiment (PDF + PNG, captions)
    tables.py     the report's tables and number formats
    document.py   Markdown + self-contained HTML rendering; writing a report folder
    viewer.py     the interactive viewer's data (predictions, neighbours, a thumbnail sprite) and
                  its HTML block
    assets/       report.css and viewer.js: the page's style and the viewer, inlined when written
    study.py      study reports across experiments
    export.py     ``analyze --export``: t-SNE points as CSV/NPZ and a TensorBoard projector bundle
    analysis.py   ``analyze``: the steps above in order, per experiment
    verdicts.py   paired comparisons: which side is better only where the data say so
    simsection.py layer-to-layer similarity (CKA, Procrustes, k-NN overlap) and its seed noise floor
    perclass.py   per-class tables and confusion matrices
    aldiag.py     AL's association gap, label-code separation and readout ladder
    intervalfigs.py  figures with intervals; the readout ladder
    reviewer.py   the sections above, computed and placed in an experiment's report
    headline.py   the short AL-vs-BP table ``alviz analyze`` prints at the end
    compare.py    ``compare``: two runs or experiments side by side

What this is not: no training, no hooks (``alviz.extract``), no measure definitions
(``alviz.metrics``), no drawing primitives (``alviz.plots``), no argument parsing
(``alviz.cli``).
"""
from __future__ import annotations

from .analysis import analyze
from .compare import better_side, compare, compare_rows, format_compare_extra, format_compare_table
from .headline import headline
from .measure import aggregate
from .options import COMPARE_COLUMNS, CSV_COLUMNS, DEFAULT_OUT, FIGURES, Options
from .runs import collect_runs

__all__ = [
    "Options",
    "analyze",
    "compare",
    "compare_rows",
    "better_side",
    "format_compare_table",
    "format_compare_extra",
    "headline",
    "aggregate",
    "collect_runs",
    "DEFAULT_OUT",
    "CSV_COLUMNS",
    "COMPARE_COLUMNS",
    "FIGURES",
]
