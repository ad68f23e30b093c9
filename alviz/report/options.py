"""What an analysis is asked to do: the ``Options`` of ``alviz analyze`` / ``compare`` and the fixed
names of what it writes (CSV columns, figure stems, t-SNE settings).

What this is not: no reading of runs, no measuring, no drawing; every other file of
``alviz.report`` imports its settings from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..schema import MAX_SEED


DEFAULT_OUT = Path("reports")
DEFAULT_ROOT = Path("checkpoints")
CSV_COLUMNS = ["experiment", "run", "method", "seed", "layer", "role", "depth", "on_path", "match",
               "measure", "stat", "value", "class"]
COMPARE_COLUMNS = ["method_a", "method_b", "match", "layer_a", "layer_b", "depth", "measure", "class",
                   "a", "b", "diff", "better", "scale_free", "n_a", "n_b", "a_low", "a_high", "b_low", "b_high",
                   "diff_low", "diff_high"]
STATS = ("mean", "std", "n", "ci_low", "ci_high")
#: per-run interval stats: the stratified bootstrap's percentile interval, and for accuracies the
#: exact (Clopper-Pearson) binomial interval
BOOT_STATS = ("boot_low", "boot_high")
CP_STATS = ("cp_low", "cp_high")
#: figure file stems and what they show
FIGURES = {
    "fig_ratio": "inter/intra distance ratio by layer, AL against BP",
    "fig_distances": "intra- and inter-class distances by layer",
    "fig_measures": "every separability measure by layer",
    "fig_tsne": "t-SNE of each layer on the inference path (rows AL, BP)",
    "fig_training": "test accuracy per epoch and AL's local losses",
    "fig_exits": "AL's test accuracy at each exit depth",
    "fig_study": "accuracy and separation across experiments (study reports only)",
}
CACHE_VERSION = 4  # 3: t-SNE panels start from the shared reference; 4: the short schedule below
#: t-SNE schedules, (early-exaggeration iterations, plain iterations): a panel started from PCA
#: (the grid's reference, a strip's first epoch) runs openTSNE's full default; a panel started from
#: a neighbouring panel's layout half of it (bench/bench_tsne_schedule.py: same KL divergence and
#: neighbour preservation within about 1 %, half the time)
TSNE_EE_ITER = 250
TSNE_ITER = 500
TSNE_INIT_SCHEDULE = (125, 250)
TSNE_PCA = 50
NEIGHBOURS = 8  # nearest neighbours per point and panel, listed when a point is pinned


@dataclass
class Options:
    """Settings of an analysis. ``max_samples`` caps the held-out (test) samples (None: all);
    ``train_samples`` caps the training samples the k-NN and probe measures learn from;
    ``tsne_samples`` points (stratified, the same in every panel) are embedded with
    ``perplexity``, ``tsne_jobs`` threads; ``seed`` seeds every sample and t-SNE;
    ``device`` runs the extraction; ``boot`` bootstrap replicates per measure and layer (0: no
    intervals; the paired verdicts then say "no detectable difference"); ``similarity``: the
    layer-to-layer CKA / Procrustes / k-NN overlap section (and its noise floor across seeds);
    ``snapshots``: measure the snapshots of runs that keep them (``alviz.report.dynamics``),
    ``strip_layer`` (None: the deepest encoder block) is the layer of the t-SNE strip across epochs;
    ``export`` also writes the t-SNE points (CSV, NPZ) and a TensorBoard projector bundle under
    ``export/``."""

    max_samples: int | None = None
    train_samples: int = 5000
    tsne: bool = True
    tsne_samples: int = 2000
    perplexity: float = 30.0
    tsne_jobs: int = 1
    device: str = "cpu"
    seed: int = 0
    boot: int = 200
    similarity: bool = True
    snapshots: bool = True  # runs with snapshots: measure every snapshot too (training dynamics)
    strip_layer: str | None = None  # the layer of the t-SNE strip across epochs [deepest shared encoder block]
    export: bool = False

    def validate(self) -> "Options":
        for name in ("train_samples", "tsne_samples", "tsne_jobs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and not (name == "tsne_jobs" and v == -1)):
                allowed = "a positive integer" + (" or -1 (all cores)" if name == "tsne_jobs" else "")
                raise UserError(f"{name.replace('_', '-')} must be {allowed}; received {v!r}")
        if self.max_samples is not None and (isinstance(self.max_samples, bool) or
                                             not isinstance(self.max_samples, int) or self.max_samples < 2):
            raise UserError(f"max-samples must be an integer >= 2 (or left out for all); received {self.max_samples!r}")
        if self.tsne_samples < 4:
            raise UserError(f"tsne-samples must be at least 4; received {self.tsne_samples}")
        if not (isinstance(self.perplexity, (int, float)) and 0 < self.perplexity < float("inf")):
            raise UserError(f"perplexity must be a positive number; received {self.perplexity!r}")
        if isinstance(self.boot, bool) or not isinstance(self.boot, int) or not 0 <= self.boot <= 100000:
            raise UserError(f"boot must be a number of bootstrap replicates from 0 (off) to 100000; "
                            f"received {self.boot!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"seed must be a non-negative integer (at most {MAX_SEED}); received {self.seed!r}")
        return self
