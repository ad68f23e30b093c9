"""alviz.resample: one layer's measures with bootstrap replicates and per-class values."""
import numpy as np
import pytest

from alviz import metrics as M
from alviz import uncertainty as U
from alviz.resample import layer_report


def _blobs(n=120, d=6, C=3, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    Z = rng.normal(size=(n, d)) + sep * np.eye(C, d)[y]
    return Z, y


def test_values_equal_layer_measures_and_intervals_cover_them():
    Z, y = _blobs()
    Ztr, ytr = _blobs(150, seed=1)
    W = U.bootstrap_counts(y, 100, seed=0)
    r = layer_report(Z, y, Ztr, ytr, W=W, silhouette_samples=80)
    ref = M.layer_measures(Z, y, Ztr, ytr, silhouette_samples=80)
    for k, v in ref.items():
        assert r["values"][k] == pytest.approx(v, rel=1e-9), k
        lo, hi = U.percentile_interval(r["reps"][k])
        assert lo <= v * 1.02 + 1e-9 and hi >= v * 0.98 - 1e-9, (k, lo, v, hi)
    # per-class accuracies average (weighted by class size) to the overall accuracy
    cnt = r["counts"] / r["counts"].sum()
    assert cnt @ r["per_class"]["knn_acc"] == pytest.approx(r["values"]["knn_acc"])


def test_replicate_of_the_identity_weights_is_the_value():
    Z, y = _blobs(60)
    r = layer_report(Z, y, W=np.ones((1, 60)))
    for k in ("intra", "inter", "ratio", "fisher_ratio", "centroid_ratio", "nc1"):
        assert r["reps"][k][0] == pytest.approx(r["values"][k], rel=1e-9), k


def test_linearised_distance_bootstrap_spread_matches_the_full_recomputation():
    Z, y = _blobs(90, sep=2.0, seed=3)
    W = U.bootstrap_counts(y, 60, seed=1)
    r = layer_report(Z, y, W=W, silhouette_samples=90)
    D = np.sqrt(((Z[:, None] - Z[None]) ** 2).sum(-1))
    full = []
    for w in W.astype(float):
        P = w[:, None] * w[None] * D
        intra = [P[np.ix_(y == c, y == c)].sum() / (30 * 29) for c in range(3)]
        inter = [P[np.ix_(y == c, y != c)].sum() / (30 * 60) for c in range(3)]
        full.append(np.mean(inter) / np.mean(intra))
    assert np.std(r["reps"]["ratio"]) == pytest.approx(np.std(full), rel=0.35)
    assert np.corrcoef(r["reps"]["ratio"], full)[0, 1] > 0.8
