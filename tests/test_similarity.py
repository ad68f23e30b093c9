"""Known answers for alviz.similarity (CKA, Procrustes, k-NN overlap, group bootstrap) and
alviz.uncertainty (stratified bootstrap, Clopper-Pearson, McNemar, paired verdicts)."""
import math

import numpy as np
import pytest
from scipy.stats import ortho_group

from alviz import similarity as S
from alviz import uncertainty as U


def _data(n=200, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d))


def test_cka_invariances_rotation_scale_translation():
    X = _data()
    Q = ortho_group.rvs(12, random_state=1)
    for Y in (X @ Q, 3.7 * X, X + 5.0, 0.1 * (X @ Q) - 2.0):
        assert S.cka(X, Y) == pytest.approx(1.0, abs=1e-10)
        assert S.cka(X, Y, debiased=False) == pytest.approx(1.0, abs=1e-10)
        assert S.procrustes(X, Y) == pytest.approx(0.0, abs=1e-6)


def test_cka_matches_the_brute_force_gram_version_biased_and_unbiased():
    X = _data(60, 7)
    Y = np.tanh(X[:, :5] @ np.random.default_rng(3).normal(size=(5, 9))) + 0.3 * _data(60, 9, 4)
    for deb in (True, False):
        assert S.cka(X, Y, debiased=deb) == pytest.approx(S.cka_gram(X, Y, debiased=deb), rel=1e-9)
    assert S.cka(X, Y) != pytest.approx(S.cka(X, Y, debiased=False), rel=1e-3)


def test_unbiased_cka_is_near_zero_on_independent_data_where_the_biased_is_not():
    rng = np.random.default_rng(0)
    b, u = [], []
    for _ in range(100):
        X, Y = rng.normal(size=(32, 10)), rng.normal(size=(32, 10))
        b.append(S.cka(X, Y, debiased=False))
        u.append(S.cka(X, Y))
    assert 0.15 < np.mean(b) < 0.3         # the biased estimator's inflation (~0.24 here)
    assert abs(np.mean(u)) < 0.02          # unbiased: mean ~0 (s.d. of one value ~0.05)


def test_streaming_in_chunks_gives_the_same_value(monkeypatch):
    X, Y = _data(500, 20), _data(500, 16, 2)
    whole = S.cka(X, Y)
    monkeypatch.setattr(S, "_BUDGET", 8 * 40 * 7)  # a few rows per chunk
    assert S.cka(X, Y) == pytest.approx(whole, rel=1e-12)
    assert S.cka(X.astype(np.float32), Y) == pytest.approx(whole, rel=1e-5)


def test_tiny_batches_and_constant_layers_are_refused_not_nan():
    X = _data(3, 4)
    with pytest.raises(ValueError, match="at least 4 samples"):
        S.cka(X, X)
    with pytest.raises(ValueError, match="undefined"):
        S.cka(np.ones((10, 3)), _data(10, 3))
    with pytest.raises(ValueError, match="same samples"):
        S.cka(_data(10, 3), _data(11, 3))


def test_similarity_and_distance_point_the_right_way():
    X = _data(300, 10)
    rng = np.random.default_rng(5)
    near, far = X + 0.1 * rng.normal(size=X.shape), rng.normal(size=X.shape)
    assert S.cka(X, near) > S.cka(X, far)                      # CKA: a similarity
    assert S.procrustes(X, near) < S.procrustes(X, far)        # Procrustes: a distance
    assert 0 <= S.procrustes(X, far) <= math.pi / 2
    assert S.SIM_MEASURES["cka"][1] and not S.SIM_MEASURES["procrustes"][1]


def test_knn_sets_and_overlap_against_brute_force():
    X = _data(80, 5)
    nx = S.knn_sets(X, 4)
    D = ((X[:, None] - X[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    ref = np.argsort(D, axis=1)[:, :4]
    assert all(set(a) == set(b) for a, b in zip(nx, ref))
    assert S.knn_overlap(nx, S.knn_sets(2 * X + 1, 4)).mean() == 1.0
    assert S.knn_overlap(nx, S.knn_sets(np.random.default_rng(1).normal(size=X.shape), 4)).mean() < 0.3


def test_matrices_and_group_bootstrap():
    X = _data(400, 8)
    y = np.arange(400) % 4
    m = S.similarity_matrices({"a1": X, "a2": X[:, :4]}, {"b1": X @ ortho_group.rvs(8, random_state=0)}, k=5)
    assert m["cka"].shape == (2, 1) and m["cka"][0, 0] == pytest.approx(1.0)
    a, b = m["stats_a"]["a2"], m["stats_b"]["b1"]
    # a replicate of all groups once is the full-sample value
    g = S._groups(y, 20, 0)
    gs, ga, gb = S._GroupStats(a, b, g, 20), S._GroupStats(a, a, g, 20), S._GroupStats(b, b, g, 20)
    one = np.ones((1, 20))
    full = gs.hsic_u(one)[0] / math.sqrt(ga.hsic_u(one)[0] * gb.hsic_u(one)[0])
    assert full == pytest.approx(m["cka"][1, 0], rel=1e-9)
    reps = S.group_bootstrap(a, b, y, n_boot=100, n_groups=20, procrustes_boot=10)
    lo, hi = U.percentile_interval(reps["cka"])
    assert lo < m["cka"][1, 0] < hi and hi - lo < 0.5
    assert len(reps["procrustes"]) == 10


def test_stratified_bootstrap_counts():
    y = np.array([0] * 30 + [1] * 10 + [2] * 5)
    W = U.bootstrap_counts(y, 50, seed=3)
    assert W.shape == (50, 45) and (W.sum(1) == 45).all()
    for c, n in ((0, 30), (1, 10), (2, 5)):
        assert (W[:, y == c].sum(1) == n).all()
    np.testing.assert_array_equal(W, U.bootstrap_counts(y, 50, seed=3))
    v = np.arange(45.0)
    assert U.boot_mean(v, np.ones((1, 45)))[0] == pytest.approx(v.mean())


def test_clopper_pearson_known_values():
    lo, hi = U.clopper_pearson(950, 1000)
    assert lo == pytest.approx(0.9346, abs=1e-3) and hi == pytest.approx(0.9628, abs=1e-3)
    assert U.clopper_pearson(0, 10)[0] == 0.0 and U.clopper_pearson(10, 10)[1] == 1.0
    assert U.clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** 0.1, rel=1e-9)


def test_mcnemar_and_paired_verdicts():
    a = np.array([True] * 90 + [False] * 10)
    b = a.copy()
    b[:1] = False  # one sample apart: no detectable difference
    assert U.mcnemar_verdict(a, b)["better"] == U.NO_DIFFERENCE
    b[:30] = False
    v = U.mcnemar_verdict(a, b)
    assert v["better"] == "A" and v["a_only"] == 30 and v["b_only"] == 0 and v["p"] < 1e-6
    rng = np.random.default_rng(0)
    ra = rng.normal(0.5, 0.01, 500)
    assert U.paired_verdict(ra, ra - 0.05, True)["better"] == "A"
    assert U.paired_verdict(ra, ra - 0.05, False)["better"] == "B"
    assert U.paired_verdict(ra, ra + rng.normal(0, 0.01, 500), True)["better"] == U.NO_DIFFERENCE


def test_combine_seeds():
    lo, hi = U.combine_seeds([0.9], [0.88], [0.92])
    assert (lo, hi) == (0.88, 0.92)
    lo, hi = U.combine_seeds([0.90, 0.91, 0.92], [0.88, 0.89, 0.90], [0.92, 0.93, 0.94])
    assert lo < 0.91 < hi and (hi - lo) > (0.94 - 0.88) / 2


def test_group_bootstrap_of_a_wide_low_cka_pair_covers_the_value():
    # duplicated samples in a replicate must not count as pairs (that would inflate CKA)
    rng = np.random.default_rng(0)
    y = np.arange(600) % 10
    X = rng.normal(size=(600, 120))
    X[np.arange(600), y] += 3.0
    Y = 0.5 * X + rng.normal(size=X.shape)
    a, b = S.LayerStats(X), S.LayerStats(Y)
    v = S.cka(X, Y)
    lo, hi = U.percentile_interval(S.group_bootstrap(a, b, y, n_boot=200, procrustes_boot=0)["cka"])
    assert lo < v < hi and hi - lo < 0.2


def _f32(n=3000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) @ rng.normal(size=(d, d))).astype(np.float32)
    Y = (np.tanh(X[:, :10] @ rng.normal(size=(10, 16)) / 4) + 0.5 * rng.normal(size=(n, 16))).astype(np.float32)
    return X, Y


def test_float32_inputs_match_the_float64_gram_reference(monkeypatch):
    """float32 layers go through float32 chunk products (float64 sums): the CKA agrees with the
    brute-force float64 Gram computation on the same numbers to 1e-7, far from the mean too (the
    reference centres first: an uncentred Gram of values near 1000 loses digits itself)."""
    monkeypatch.setattr(S, "_BUDGET", 8 * 40 * 300)  # ~300 rows per chunk: many chunks
    X, Y = _f32()
    for Xs, Ys in ((X, Y), (X + np.float32(1000.0), Y - np.float32(50.0))):
        assert S.LayerStats(Xs).dtype == np.float32
        X64, Y64 = Xs.astype(np.float64), Ys.astype(np.float64)
        X64, Y64 = X64 - X64.mean(0), Y64 - Y64.mean(0)
        assert S.cka(Xs, Ys) == pytest.approx(S.cka_gram(X64, Y64), abs=1e-7)
        assert S.cka(Xs, Ys, debiased=False) == pytest.approx(S.cka_gram(X64, Y64, debiased=False), abs=1e-7)
        assert S.procrustes(Xs, Ys) == pytest.approx(S.procrustes(Xs.astype(np.float64), Ys.astype(np.float64)),
                                                     abs=1e-6)
    Q = ortho_group.rvs(24, random_state=2).astype(np.float32)
    for Z in (X @ Q, np.float32(0.01) * X, X + np.float32(300.0), np.float32(7.0) * (X @ Q) - np.float32(20.0)):
        assert S.cka(X, Z) == pytest.approx(1.0, abs=1e-6)
        assert S.procrustes(X, Z) == pytest.approx(0.0, abs=2e-3)  # arccos near 1: sqrt of the rounding


def test_cka_reads_each_row_once_and_keeps_memory_flat(monkeypatch):
    import tracemalloc

    class Counting(np.ndarray):
        reads = 0

        def __getitem__(self, k):
            out = super().__getitem__(k)
            if isinstance(k, slice):
                Counting.reads += len(out)
            return out

    monkeypatch.setattr(S, "_BUDGET", 2**20)
    X, Y = _f32(20000, 50)
    v = S.cka(X.view(Counting), Y.view(Counting))
    # one pass over both layers (and each one's first rows once more, for the shift)
    assert Counting.reads == 2 * (len(X) + S._SHIFT_ROWS)
    tracemalloc.start()
    assert S.cka(X, Y) == pytest.approx(v, rel=1e-12)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.4 * X.size * 8  # far below one float64 copy of a layer (8 MB here)


def test_non_finite_activations_are_refused_naming_the_row():
    X, Y = _data(50, 4), _data(50, 3, 1)
    X[17, 2] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        S.cka(X, Y)
    X[17, 2], X[0, 0] = 0.0, np.inf
    with pytest.raises(ValueError, match="row 0"):
        S.cka(X, Y)


def test_wide_layers_sum_the_group_gram_in_sample_space_with_the_same_replicates(monkeypatch):
    """Above GROUP_BUDGET the G per-group D x D products are not kept: the Gram <S_g, S_h> is the
    sum over sample pairs of (x_i . x_j)(y_i . y_j), in chunk pairs; the replicates are the same."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 24))
    Y = X @ rng.normal(size=(24, 16)) + rng.normal(size=(300, 16))
    y = np.arange(300) % 5
    a, b = S.LayerStats(X), S.LayerStats(Y)
    g = S._groups(y, 30, 0)
    kept, summed = S._GroupStats(a, b, g, 30), S._GroupStats(a, b, g, 30, budget=0)
    assert kept.stored and not summed.stored and summed.S is None
    # brute force: the Gram of the explicit group products
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sg = np.stack([Xc[g == h].T @ Yc[g == h] for h in range(30)])
    brute = np.einsum("gde,hde->gh", Sg, Sg)
    np.testing.assert_allclose(summed.gram, brute, rtol=1e-10)
    np.testing.assert_allclose(summed.T, kept.T, rtol=1e-10, atol=1e-9 * np.abs(kept.T).max())
    monkeypatch.setattr(S, "_BUDGET", 8 * 40 * 40)  # chunks of a few rows: many chunk pairs
    np.testing.assert_allclose(S._GroupStats(a, b, g, 30, budget=0).gram, brute, rtol=1e-10)
    full = S.group_bootstrap(a, b, y, n_boot=40, n_groups=30, procrustes_boot=5)
    monkeypatch.setattr(S, "GROUP_BUDGET", 0)
    monkeypatch.setattr(S._GroupStats.__init__, "__defaults__", (0,))
    wide = S.group_bootstrap(a, b, y, n_boot=40, n_groups=30, procrustes_boot=5)
    np.testing.assert_allclose(wide["cka"], full["cka"], rtol=1e-9)
    assert len(full["procrustes"]) == 5 and len(wide["procrustes"]) == 0  # no D x D sums to draw from
