"""Tests for alviz.metrics: exact answers against brute force / textbook formulas, hand-computed
examples, direction properties (separated blobs vs shuffled labels) and input validation."""
import math
import tracemalloc

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from alviz import metrics as M


# ------------------------------------------------------------------------------- references
def brute_class_distances(Z, y):
    """O(N^2) reference: full distance matrix, per-class means over i != j / i in c, j not."""
    D = cdist(np.asarray(Z, np.float64), np.asarray(Z, np.float64))
    classes = np.unique(y)
    intra, inter = [], []
    for c in classes:
        m = y == c
        n = m.sum()
        intra.append(D[np.ix_(m, m)].sum() / (n * (n - 1)) if n > 1 else np.nan)
        inter.append(D[np.ix_(m, ~m)].mean())
    return np.array(intra), np.array(inter)


def textbook_scatter(Z, y):
    Z = np.asarray(Z, np.float64)
    mu = Z.mean(0)
    Sw = np.zeros((Z.shape[1],) * 2)
    Sb = np.zeros_like(Sw)
    for c in np.unique(y):
        Zc = Z[y == c]
        mc = Zc.mean(0)
        Sw += (Zc - mc).T @ (Zc - mc)
        Sb += len(Zc) * np.outer(mc - mu, mc - mu)
    return Sw, Sb


def textbook_nc1(Z, y):
    Z = np.asarray(Z, np.float64)
    classes = np.unique(y)
    C, N = len(classes), len(Z)
    mu_g = Z.mean(0)
    means = np.array([Z[y == c].mean(0) for c in classes])
    Sigma_b = sum(np.outer(m - mu_g, m - mu_g) for m in means) / C
    Sigma_w = sum((Z[y == c] - means[k]).T @ (Z[y == c] - means[k])
                  for k, c in enumerate(classes)) / N
    return np.trace(Sigma_w @ np.linalg.pinv(Sigma_b, rcond=1e-10, hermitian=True)) / C


def textbook_centroid_ratio(Z, y):
    classes = np.unique(y)
    means = np.array([Z[y == c].mean(0) for c in classes])
    between = np.mean([np.linalg.norm(means[a] - means[b])
                       for a in range(len(classes)) for b in range(a + 1, len(classes))])
    within = np.mean([np.linalg.norm(Z[y == c] - means[k], axis=1).mean()
                      for k, c in enumerate(classes)])
    return between / within


def blobs(n_per=(40, 25, 60, 15), d=6, sep=8.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(n_per), d)) * sep
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per)])
    Z = centers[y] + rng.normal(size=(len(y), d))
    perm = rng.permutation(len(y))
    return Z[perm], y[perm]


# ------------------------------------------------------------------------ class_distance_stats
@pytest.mark.parametrize("chunk_size", [1, 3, 17, 64, 141, 500, None])
def test_class_distance_stats_matches_brute_force(chunk_size):
    rng = np.random.default_rng(1)
    counts = [30, 7, 55, 2, 1, 46]  # unequal, with a pair and a singleton class
    y = np.concatenate([np.full(n, c * 3 + 1) for c, n in enumerate(counts)])
    y = y[rng.permutation(len(y))]
    Z = rng.normal(size=(len(y), 9)) * rng.uniform(0.5, 3, size=9) + 40.0  # off-origin
    bi, be = brute_class_distances(Z, y)
    st = M.class_distance_stats(Z, y, chunk_size=chunk_size)
    np.testing.assert_array_equal(st["classes"], np.unique(y))
    np.testing.assert_array_equal(st["counts"], np.bincount(y)[np.unique(y)])
    assert np.isnan(st["intra"][4]) and np.isnan(bi[4])  # the singleton class
    np.testing.assert_allclose(st["intra"], bi, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(st["inter"], be, rtol=1e-10)
    assert st["intra_mean"] == pytest.approx(np.nanmean(bi), rel=1e-10)
    assert st["inter_mean"] == pytest.approx(be.mean(), rel=1e-10)
    assert st["ratio"] == pytest.approx(be.mean() / np.nanmean(bi), rel=1e-10)


def test_class_distance_stats_float32_input_and_precision():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 300)
    Z = (rng.normal(size=(300, 32)) + 3 * y[:, None]).astype(np.float32)
    bi, be = brute_class_distances(Z, y)
    st = M.class_distance_stats(Z, y, chunk_size=64)
    np.testing.assert_allclose(st["intra"], bi, rtol=1e-9)
    np.testing.assert_allclose(st["inter"], be, rtol=1e-9)
    st32 = M.class_distance_stats(Z, y, chunk_size=64, precision="float32")
    np.testing.assert_allclose(st32["intra"], bi, rtol=1e-5)
    np.testing.assert_allclose(st32["inter"], be, rtol=1e-5)


def test_class_distance_stats_near_collapsed_layer_stays_exact():
    # within-class spread 1e-4 of the between-class distances, far from the origin
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    means = rng.normal(size=(4, 64)) * 10 + 100
    Z = (means[y] + 1e-3 * rng.normal(size=(200, 64))).astype(np.float32)
    bi, be = brute_class_distances(Z, y)
    st = M.class_distance_stats(Z, y, chunk_size=50)
    np.testing.assert_allclose(st["intra"], bi, rtol=1e-6)
    np.testing.assert_allclose(st["inter"], be, rtol=1e-9)


def test_class_distance_stats_hand_example():
    # points on a line: class 0 at {0, 1}, class 1 at {3, 5}, class 2 (singleton) at {10}
    Z = np.array([[3.0, 0], [0, 0], [10, 0], [5, 0], [1, 0]])
    y = np.array([1, 0, 2, 1, 0])
    st = M.class_distance_stats(Z, y, chunk_size=2)
    np.testing.assert_allclose(st["intra"], [1.0, 2.0, np.nan], equal_nan=True)
    # inter(0): {3,5,10,2,4,9}/6; inter(1): {3,2,7,5,4,5}/6; inter(2): {10,9,7,5}/4
    np.testing.assert_allclose(st["inter"], [33 / 6, 26 / 6, 31 / 4])
    assert st["intra_mean"] == pytest.approx(1.5)
    assert st["inter_mean"] == pytest.approx(211 / 36)
    assert st["ratio"] == pytest.approx((211 / 36) / 1.5)


def test_class_distance_stats_identical_points_give_zero_intra():
    Z = np.repeat(np.array([[1e3, -2e3, 5.0], [1e3 + 1, -2e3, 5.0]]), 5, axis=0)
    y = np.repeat([0, 1], 5)
    st = M.class_distance_stats(Z, y, chunk_size=3)
    np.testing.assert_array_equal(st["intra"], [0.0, 0.0])
    np.testing.assert_allclose(st["inter"], [1.0, 1.0], rtol=1e-9)
    assert st["ratio"] == math.inf


def test_class_distance_stats_memory_stays_below_n_squared():
    rng = np.random.default_rng(4)
    n = 4000
    Z = rng.normal(size=(n, 8)).astype(np.float32)
    y = rng.integers(0, 10, n)
    budget = 8 * 2**20
    tracemalloc.start()
    try:
        M.class_distance_stats(Z, y, memory_budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * budget  # an N x N float64 matrix would be 128 MB
    assert peak < n * n * 8 / 8


def test_class_distance_stats_readonly_memmap(tmp_path):
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(120, 5)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    path = tmp_path / "z.npy"
    np.save(path, Z)
    Zm = np.load(path, mmap_mode="r")
    a = M.class_distance_stats(Zm, y, chunk_size=50)
    b = M.class_distance_stats(Z, y, chunk_size=50)
    np.testing.assert_allclose(a["intra"], b["intra"], rtol=1e-12)
    for f in (M.centroid_ratio, M.fisher_trace_ratio, M.nc1):
        assert f(Zm, y) == pytest.approx(f(Z, y), rel=1e-12)
    np.testing.assert_array_equal(np.asarray(Zm), Z)


# ------------------------------------------------------------------ moment-based measures
def test_fisher_trace_ratio_matches_textbook():
    Z, y = blobs(sep=2.0)
    Z = Z + 1e4  # far from the origin: the one-pass sums must not cancel
    Sw, Sb = textbook_scatter(Z, y)
    assert M.fisher_trace_ratio(Z, y) == pytest.approx(np.trace(Sb) / np.trace(Sw), rel=1e-9)
    St = (Z - Z.mean(0)).T @ (Z - Z.mean(0))
    assert np.trace(Sw) + np.trace(Sb) == pytest.approx(np.trace(St), rel=1e-12)


def test_mean_squared_intra_distance_is_twice_class_trace():
    # the identity behind the one-pass measures: mean_{i != j} ||z_i - z_j||^2
    # = 2 n/(n-1) tr(Sigma_c) with Sigma_c the population covariance
    rng = np.random.default_rng(6)
    Zc = rng.normal(size=(25, 4))
    d2 = cdist(Zc, Zc, "sqeuclidean").sum() / (25 * 24)
    assert d2 == pytest.approx(2 * 25 / 24 * np.trace(np.cov(Zc.T, bias=True)))


@pytest.mark.parametrize("d", [3, 6, 40])  # 40 > number of classes: Sigma_B rank-deficient
def test_nc1_matches_textbook(d):
    Z, y = blobs(d=d, sep=1.5, seed=d)
    assert M.nc1(Z + 50.0, y) == pytest.approx(textbook_nc1(Z, y), rel=1e-8)


def test_nc1_goes_to_zero_for_collapsed_classes():
    rng = np.random.default_rng(7)
    means = rng.normal(size=(3, 10))
    y = np.repeat([0, 1, 2], 20)
    assert M.nc1(means[y], y) == pytest.approx(0.0, abs=1e-20)
    assert M.nc1(means[y] + 1e-3 * rng.normal(size=(60, 10)), y) < 1e-4
    assert np.isnan(M.nc1(np.zeros((6, 3)), np.repeat([0, 1], 3)))


def test_centroid_ratio_matches_textbook():
    Z, y = blobs(sep=1.5)
    assert M.centroid_ratio(Z, y) == pytest.approx(textbook_centroid_ratio(Z, y), rel=1e-10)


def test_centroid_ratio_hand_example():
    # class 0 at {0, 2} (centroid 1), class 1 at {10, 14} (centroid 12): 11 / mean(1, 2)
    Z = np.array([[0.0], [2.0], [10.0], [14.0]])
    assert M.centroid_ratio(Z, np.array([0, 0, 1, 1])) == pytest.approx(11 / 1.5)


# ------------------------------------------------------------------------ direction properties
def test_every_measure_prefers_separated_blobs_over_shuffled_labels():
    Z, y = blobs(n_per=(60, 40, 80, 50), d=8, sep=6.0, seed=11)
    rng = np.random.default_rng(0)
    y_shuf = rng.permutation(y)
    idx = rng.permutation(len(y))
    tr, te = idx[:120], idx[120:]
    good = M.layer_measures(Z[te], y[te], Z[tr], y[tr])
    bad = M.layer_measures(Z[te], y_shuf[te], Z[tr], y_shuf[tr])
    assert set(good) == set(M.MEASURES)
    for name, m in M.MEASURES.items():
        assert np.isfinite(good[name]) and np.isfinite(bad[name]), name
        better = good[name] > bad[name] if m.higher_is_better else good[name] < bad[name]
        assert better, (name, good[name], bad[name])
    assert good["knn_acc"] > 0.95 and good["probe_acc"] > 0.95
    assert good["ratio"] > 2 and bad["ratio"] == pytest.approx(1.0, abs=0.1)


def test_layer_measures_without_train_leaves_probes_nan():
    Z, y = blobs()
    out = M.layer_measures(Z, y)
    assert np.isnan(out["knn_acc"]) and np.isnan(out["probe_acc"])
    assert out["ratio"] == pytest.approx(M.class_distance_stats(Z, y)["ratio"])
    with pytest.raises(ValueError, match="given together"):
        M.layer_measures(Z, y, Z_train=Z)


def test_measures_registry_describes_direction():
    for name, m in M.MEASURES.items():
        assert m.name == name and m.description and isinstance(m.higher_is_better, bool)
    assert M.MEASURES["nc1"].higher_is_better is False
    assert M.MEASURES["ratio"].higher_is_better is True
    assert M.MEASURES["intra"].scale_free is False


def test_silhouette_is_seeded_and_subsampled():
    Z, y = blobs(n_per=(300, 200, 100), seed=3)
    a = M.silhouette(Z, y, max_samples=120, seed=1)
    assert a == M.silhouette(Z, y, max_samples=120, seed=1)
    from sklearn.metrics import silhouette_score
    assert M.silhouette(Z, y, max_samples=10_000) == pytest.approx(silhouette_score(Z, y))


def test_knn_and_probe_accuracy_known_answers():
    Ztr = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    ytr = np.array([0, 0, 0, 1, 1, 1])
    Zte = np.array([[0.05], [9.9], [0.3]])
    yte = np.array([0, 1, 1])
    assert M.knn_accuracy(Ztr, ytr, Zte, yte, k=3) == pytest.approx(2 / 3)
    assert M.linear_probe_accuracy(Ztr, ytr, Zte, yte) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must be between 1"):
        M.knn_accuracy(Ztr, ytr, Zte, yte, k=7)
    with pytest.raises(ValueError, match="same number of features"):
        M.knn_accuracy(Ztr, ytr, np.zeros((3, 2)), yte)


def test_linear_probe_training_cap_is_stratified_and_seeded():
    Z, y = blobs(n_per=(200, 150, 100), d=5, sep=5.0)
    a = M.linear_probe_accuracy(Z, y, Z, y, max_train=60, seed=2)
    assert a == M.linear_probe_accuracy(Z, y, Z, y, max_train=60, seed=2)
    assert a > 0.9


# ------------------------------------------------------------------------------- summarize
def test_summarize_t_interval():
    s = M.summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["n"] == 3
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert s["ci_low"] == pytest.approx(2 - half) and s["ci_high"] == pytest.approx(2 + half)
    s90 = M.summarize([1.0, 2.0, 3.0], confidence=0.9)
    assert s90["ci_high"] - s90["mean"] == pytest.approx(2.919985580355516 / math.sqrt(3))


def test_summarize_single_value_and_errors():
    s = M.summarize([0.7])
    assert s["mean"] == 0.7 and s["n"] == 1
    assert all(np.isnan(s[k]) for k in ("std", "ci_low", "ci_high"))
    with pytest.raises(ValueError, match="at least one value"):
        M.summarize([])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        M.summarize([1, 2], confidence=95)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("fn", [M.class_distance_stats, M.centroid_ratio, M.fisher_trace_ratio,
                                M.nc1, M.silhouette])
def test_input_validation_messages(fn):
    Z = np.arange(12.0).reshape(6, 2)
    y = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"Z must be a 2-D array .*got an array with shape "
                                         r"\(12,\)"):
        fn(Z.ravel(), y)
    with pytest.raises(ValueError, match=r"y must be a 1-D array .*got shape \(6, 1\)"):
        fn(Z, y[:, None])
    with pytest.raises(ValueError, match="same number of samples; got Z with 6 rows and y "
                                         "with 5 labels"):
        fn(Z, y[:5])
    bad = Z.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite values; got nan at row 3, column 1"):
        fn(bad, y)
    with pytest.raises(ValueError, match=r"at least 2 classes .*got 1 class\(es\): \[4\]"):
        fn(Z, np.full(6, 4))
    with pytest.raises(ValueError, match="integer class labels; got dtype float64"):
        fn(Z, y.astype(float))


def test_class_distance_stats_option_errors():
    Z, y = blobs()
    with pytest.raises(ValueError, match="precision must be 'float64' or 'float32'"):
        M.class_distance_stats(Z, y, precision="float16")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer; got 0"):
        M.class_distance_stats(Z, y, chunk_size=0)
