"""What the report's shorter t-SNE schedule for panels started from another layout changes.

    python bench/bench_tsne_schedule.py EXPERIMENT [--layer block2] [--json PATH]

EXPERIMENT: an experiment trained with ``--snapshots`` and analysed once (so every snapshot's
held-out activations exist under ``RUN/activations/``). For each run and the layer (default: the
strip's, the deepest encoder block), the snapshots form a chain as in the report's t-SNE strip:
epoch 0 from PCA with openTSNE's full schedule (250 exaggerated + 500 plain iterations), every
later epoch started from the previous epoch's layout, embedded twice from the same start: with the
full schedule and with the report's short one (``options.TSNE_INIT_SCHEDULE``). Per panel: time, the
exact KL divergence of the embedding (P: openTSNE's perplexity affinities after the same PCA;
lower is better), the fraction of each point's 10 nearest neighbours (after the PCA) that stay
among its 10 nearest in the embedding (higher is better), and the class-centroid shift from the
starting layout (``alviz.embed.centroid_shift`` after Procrustes alignment). Not a test: nothing is
asserted; the machine's load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import loadavg  # noqa: E402


def quality(Z: np.ndarray, Y: np.ndarray, perplexity: float, seed: int, k: int = 10) -> tuple[float, float]:
    """(exact KL(P || Q), k-NN preservation) of embedding Y of the rows of Z (after alviz's PCA)."""
    from openTSNE.affinity import PerplexityBasedNN
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(Z, dtype=np.float64)
    if X.shape[1] > 50:
        X = PCA(n_components=50, random_state=seed).fit_transform(X)
    P = PerplexityBasedNN(X, perplexity=perplexity, n_jobs=1, random_state=seed).P.toarray()
    P = P / P.sum()
    d2 = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    W = 1.0 / (1.0 + d2)
    np.fill_diagonal(W, 0.0)
    Q = W / W.sum()
    m = P > 0
    kl = float((P[m] * np.log(P[m] / Q[m])).sum())
    a = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    b = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y, return_distance=False)[:, 1:]
    keep = float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(X))]))
    return kl, keep


def chain(sets: list[tuple[int, np.ndarray]], labels, perplexity: float, seed: int) -> list[dict]:
    from alviz.embed import centroid_shift, procrustes_align, tsne
    from alviz.report.options import TSNE_EE_ITER, TSNE_INIT_SCHEDULE, TSNE_ITER

    out = []
    prev = None
    for e, Z in sets:
        row = {"epoch": e}
        schedules = {"full": (TSNE_EE_ITER, TSNE_ITER)}
        if prev is not None:
            schedules["short"] = TSNE_INIT_SCHEDULE
        ys = {}
        for name, (ee, n) in schedules.items():
            t = time.process_time()
            Y = tsne(Z, perplexity=perplexity, seed=seed, n_jobs=1, n_iter=n, exaggeration_iter=ee, init=prev)
            row[f"{name}_cpu_s"] = round(time.process_time() - t, 3)
            row[f"{name}_kl"], row[f"{name}_knn10"] = (round(v, 4) for v in quality(Z, Y, perplexity, seed))
            if prev is not None:
                row[f"{name}_shift"] = round(centroid_shift(procrustes_align(Y, prev, scale=True), prev, labels), 4)
            ys[name] = Y
        out.append(row)
        prev = ys["full"]  # both schedules of the next epoch start from the same layout
    return out


def main(argv=None) -> None:
    from alviz.extract.store import load_activations

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--layer", default="block2")
    ap.add_argument("--perplexity", type=float, default=30.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = {"experiment": a.experiment, "layer": a.layer, "load_before": loadavg(), "runs": {}}
    for run in sorted(p for p in Path(a.experiment).iterdir() if (p / "activations").is_dir()):
        sets = []
        for folder in sorted((run / "activations").glob("*-test-epoch*")):
            acts = load_activations(folder)
            sets.append((int(folder.name.rsplit("epoch", 1)[1]), np.asarray(acts.layers[a.layer], dtype=np.float32)))
            labels = np.asarray(acts.labels)
        if len(sets) > 1:
            res["runs"][run.name] = chain(sets, labels, a.perplexity, 0)
            print(run.name, json.dumps(res["runs"][run.name]), flush=True)
    rows = [r for rs in res["runs"].values() for r in rs if "short_kl" in r]
    if rows:
        res["summary"] = {
            "panels": len(rows),
            "cpu_ratio_short_over_full": round(statistics.median(r["short_cpu_s"] / r["full_cpu_s"] for r in rows), 3),
            "kl_rel_diff_median": round(statistics.median((r["short_kl"] - r["full_kl"]) / r["full_kl"] for r in rows), 4),
            "kl_rel_diff_max": round(max((r["short_kl"] - r["full_kl"]) / r["full_kl"] for r in rows), 4),
            "knn10_diff_median": round(statistics.median(r["short_knn10"] - r["full_knn10"] for r in rows), 4),
            "knn10_diff_min": round(min(r["short_knn10"] - r["full_knn10"] for r in rows), 4),
            "shift_full_median": round(statistics.median(r["full_shift"] for r in rows), 4),
            "shift_short_median": round(statistics.median(r["short_shift"] for r in rows), 4),
        }
    res["load_after"] = loadavg()
    text = json.dumps(res, indent=1)
    print(json.dumps(res.get("summary"), indent=1))
    if a.json:
        Path(a.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
