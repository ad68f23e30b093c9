"""The analysis a researcher would write by hand instead of `alviz analyze` (issue 19's comparison).

    python bench/handwritten_analysis.py EXP --out DIR [--tsne-jobs N] [--tsne-samples N]

What it does, for every run folder under EXP (the default experiment: al-seed0, bp-seed0 and
bp-authors-seed0 of the MLP on mnist5k), with the libraries a user would call and nothing of alviz's beyond loading the
trained model and the data set (which stand for the researcher's own model code and data loader):
1. extract: forward hooks on the same layers `alviz analyze` measures (AL: block1..2, its early-exit
   bridge1, computed by a hook on block1 as alviz does, bridge2, decoder2, decoder1; BP: block1..2,
   head1..3; the authors' BP likewise), outputs kept in lists and concatenated, over the whole test split (the held-out
   samples) and the training split (the first 5,000 samples at most: mnist5k has 4,000);
2. measure each layer: silhouette (`sklearn.metrics.silhouette_score` on every test sample), the
   mean intra- and inter-class Euclidean distance and their ratio (`pairwise_distances`, per-class
   means: `class_distances`), 5-NN accuracy (`KNeighborsClassifier`, fitted on the training
   activations) and a linear probe (`StandardScaler` + `LogisticRegression(max_iter=300)`);
3. embed: t-SNE of every layer on the inference path (the same 15 panels as alviz's grid) on the
   same held-out samples (all, at most --tsne-samples), PCA to 50 dimensions (sklearn), then
   `openTSNE.TSNE(perplexity=30, n_iter=500, initialization="pca", random_state=0, n_jobs)`;
4. plot with matplotlib: the t-SNE grid (methods x positions) and the inter/intra ratio by layer
   (PNG and PDF each), and write the measures to metrics.csv.
It prints (and writes to DIR/timing.json) the seconds of each phase.

What it does NOT do that `alviz analyze` does: bootstrap intervals, exact binomial intervals and
paired AL-against-BP verdicts; per-class values and confusion matrices; the centroid, Fisher and
NC1 measures; the model's own accuracy with intervals; layer-to-layer similarity (CKA, Procrustes,
k-NN overlap) and its noise floor; comparable t-SNE layouts (panels started from one reference
panel, Procrustes-aligned, centroid shifts) and each panel's nearest neighbours; the interactive
viewer with image thumbnails and the HTML/Markdown report; caching of activations, measures and
panels; locks, NaN checks, and a record of which samples and settings were used.
Not a benchmark itself: bench/bench_script.py times it against `alviz analyze`.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# module names of the layers, and which of them lie on the inference path (the t-SNE panels), by
# family: AL, and BP (the matched BP and the authors' BP, bp-authors, share their module names)
LAYERS = {"al": {"block1": "blocks.0", "bridge1": "bridges.0", "block2": "blocks.1", "bridge2": "bridges.1",
                 "decoder2": "decoders.1", "decoder1": "decoders.0"},
          "bp": {"block1": "blocks.0", "block2": "blocks.1", "head1": "head.0", "head2": "head.1",
                 "head3": "head.2"}}
ON_PATH = {"al": ["block1", "block2", "bridge2", "decoder2", "decoder1"],
           "bp": ["block1", "block2", "head1", "head2", "head3"]}


def family(method: str) -> str:
    return method.split("-")[0]


def extract(model, method: str, x, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every layer's output over x, by forward hooks; AL's early-exit bridge1 is evaluated on
    block1's output by a hook on block1 (a plain forward pass never computes it)."""
    import torch

    modules = dict(model.named_modules())
    kept: dict[str, list] = {name: [] for name in LAYERS[family(method)]}
    handles = []
    for name, path in LAYERS[family(method)].items():
        handles.append(modules[path].register_forward_hook(
            lambda m, i, o, name=name: kept[name].append(o.detach().flatten(1).clone())))
    if family(method) == "al":
        def run_bridge1(m, i, o):  # returns None: a forward hook's return value would replace block1's output
            modules["bridges.0"](o)
        handles.append(modules["blocks.0"].register_forward_hook(run_bridge1))
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    for h in handles:
        h.remove()
    return {name: torch.cat(parts).numpy() for name, parts in kept.items()}


def class_distances(Z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean intra- and inter-class Euclidean distance (macro means over classes) from the full
    N x N distance matrix of sklearn's pairwise_distances."""
    from sklearn.metrics import pairwise_distances

    D = pairwise_distances(np.asarray(Z, dtype=np.float64))
    intra, inter = [], []
    for c in np.unique(y):
        m = y == c
        k = int(m.sum())
        intra.append(D[np.ix_(m, m)].sum() / (k * (k - 1)))
        inter.append(D[np.ix_(m, ~m)].mean())
    return float(np.mean(intra)), float(np.mean(inter))


def measure(Zte, yte, Ztr, ytr) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    intra, inter = class_distances(Zte, yte)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(Ztr, ytr)
    return {"intra": intra, "inter": inter, "ratio": inter / intra,
            "silhouette": float(silhouette_score(Zte, yte)),
            "knn_acc": float(KNeighborsClassifier(n_neighbors=5).fit(Ztr, ytr).score(Zte, yte)),
            "probe_acc": float(probe.score(Zte, yte))}


def embed(Z: np.ndarray, n_jobs: int) -> np.ndarray:
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    X = PCA(n_components=50, random_state=0).fit_transform(Z.astype(np.float64)) if Z.shape[1] > 50 else Z
    return np.asarray(TSNE(perplexity=30, n_iter=500, initialization="pca", random_state=0,
                           n_jobs=n_jobs).fit(np.ascontiguousarray(X, dtype=np.float64)))


def plot(rows: list[dict], panels: dict, y: np.ndarray, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(m for m, _ in panels))
    fig, axes = plt.subplots(len(methods), 5, figsize=(15, 3 * len(methods)), squeeze=False)
    for r, method in enumerate(methods):
        for c, name in enumerate(ON_PATH[family(method)]):
            ax = axes[r, c]
            if (method, name) in panels:
                E = panels[(method, name)]
                ax.scatter(E[:, 0], E[:, 1], c=y, cmap="tab10", s=3)
            ax.set_title(f"{method.upper()} {name}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"fig_tsne.{ext}", dpi=150)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        pts = [(i, r["ratio"]) for i, name in enumerate(ON_PATH[family(method)], 1) for r in rows
               if r["method"] == method and r["layer"] == name]
        ax.plot(*zip(*pts), marker="o", label=method.upper())
    ax.set_xlabel("position on the inference path")
    ax.set_ylabel("inter / intra distance")
    ax.legend()
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(out / f"fig_ratio.{ext}", dpi=150)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("exp", type=Path, help="experiment folder (run folders al-seed0, bp-seed0, ...)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tsne-jobs", type=int, default=1, help="openTSNE threads [1: openTSNE's default]")
    p.add_argument("--tsne-samples", type=int, default=2000, help="t-SNE points at most [2000]")
    p.add_argument("--train-samples", type=int, default=5000, help="training samples for k-NN and probe [5000]")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    import alviz
    from alviz.data import load_dataset

    a.out.mkdir(parents=True, exist_ok=True)
    timing = dict.fromkeys(("load", "extract", "measures", "tsne", "plots"), 0.0)
    rows, panels, data = [], {}, None
    for run_dir in sorted(d for d in a.exp.iterdir() if (d / "model.safetensors").exists()):
        t = time.perf_counter()
        run = alviz.load_run(run_dir)
        if data is None:
            data = load_dataset(run.config.dataset, test_fraction=run.config.test_fraction,
                                preprocess=run.meta["preprocess"])
        method = run.config.method
        timing["load"] += time.perf_counter() - t
        t = time.perf_counter()
        yte, ytr = data.y_test.numpy(), data.y_train.numpy()[:a.train_samples]
        test = extract(run.model, method, data.x_test)
        train = extract(run.model, method, data.x_train[:a.train_samples])
        timing["extract"] += time.perf_counter() - t
        t = time.perf_counter()
        for name in LAYERS[family(method)]:
            rows.append({"run": run_dir.name, "method": method, "layer": name,
                         **measure(test[name], yte, train[name], ytr)})
        timing["measures"] += time.perf_counter() - t
        t = time.perf_counter()
        pick = np.arange(len(yte))
        if len(pick) > a.tsne_samples:
            from sklearn.model_selection import train_test_split

            pick, _ = train_test_split(pick, train_size=a.tsne_samples, stratify=yte, random_state=0)
        for name in ON_PATH[family(method)]:
            panels[(method, name)] = embed(test[name][pick], a.tsne_jobs)
        timing["tsne"] += time.perf_counter() - t
    t = time.perf_counter()
    plot(rows, panels, yte[pick], a.out)
    with open(a.out / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    timing["plots"] = time.perf_counter() - t
    timing["total_in_script"] = time.perf_counter() - t_start
    (a.out / "timing.json").write_text(json.dumps({k: round(v, 3) for k, v in timing.items()}))
    print(json.dumps({k: round(v, 2) for k, v in timing.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
