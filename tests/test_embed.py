"""Tests for alviz.embed: stratified sampling, Procrustes alignment, seeded t-SNE."""
import numpy as np
import pytest

from alviz import embed as E


# ------------------------------------------------------------------------ stratified_sample
def test_stratified_sample_proportions_exact():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat([3, 7, 9], [500, 300, 200]))
    idx = E.stratified_sample(y, 100, seed=0)
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    assert np.all(np.diff(idx) > 0)  # sorted
    np.testing.assert_array_equal(np.unique(y[idx], return_counts=True)[1], [50, 30, 20])


def test_stratified_sample_keeps_rare_classes_and_total():
    y = np.repeat([0, 1, 2, 3], [1000, 5, 1, 94])
    idx = E.stratified_sample(y, 50, seed=1)
    labels, counts = np.unique(y[idx], return_counts=True)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])  # every class present when n >= C
    assert counts.sum() == 50
    # quotas 45.45, 0.23, 0.05, 4.27: the two forced extra samples come out of the big class
    np.testing.assert_array_equal(counts, [44, 1, 1, 4])


def test_stratified_sample_edge_cases():
    y = np.array([0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(E.stratified_sample(y, 6), np.arange(6))
    np.testing.assert_array_equal(E.stratified_sample(y, 100), np.arange(6))
    idx = E.stratified_sample(y, 2, seed=0)  # fewer slots than classes: largest classes first
    assert sorted(y[idx].tolist()) == [0, 1]
    with pytest.raises(ValueError, match="positive number of samples; got 0"):
        E.stratified_sample(y, 0)
    with pytest.raises(ValueError, match=r"1-D array of labels; got shape \(3, 2\)"):
        E.stratified_sample(y.reshape(3, 2), 2)


def test_stratified_sample_is_deterministic():
    y = np.random.default_rng(2).integers(0, 10, 5000)
    a = E.stratified_sample(y, 300, seed=5)
    np.testing.assert_array_equal(a, E.stratified_sample(y, 300, seed=5))
    assert not np.array_equal(a, E.stratified_sample(y, 300, seed=6))


# ------------------------------------------------------------------------ procrustes_align
def _rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_procrustes_recovers_rotation_reflection_translation():
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(50, 2))
    R = _rotation(0.7) @ np.diag([1.0, -1.0])  # rotation + reflection
    ref = Y @ R + np.array([4.0, -2.0])
    np.testing.assert_allclose(E.procrustes_align(Y, ref), ref, atol=1e-10)


def test_procrustes_scale_and_3d():
    rng = np.random.default_rng(4)
    Y = rng.normal(size=(40, 3))
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    ref = 2.5 * Y @ Q + 1.0
    np.testing.assert_allclose(E.procrustes_align(Y, ref, scale=True), ref, atol=1e-10)
    assert not np.allclose(E.procrustes_align(Y, ref), ref, atol=1e-3)  # no scale: not exact


def test_procrustes_without_reflection_uses_a_proper_rotation():
    rng = np.random.default_rng(5)
    Y = rng.normal(size=(30, 2))
    ref = Y @ np.diag([1.0, -1.0])  # a pure mirror image
    out = E.procrustes_align(Y, ref, reflection=False)
    R = np.linalg.lstsq(Y - Y.mean(0), out - out.mean(0), rcond=None)[0]
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ R.T, np.eye(2), atol=1e-10)
    # the best rotation is still no better than the best rotation+reflection
    err_rot = np.linalg.norm(out - ref)
    assert err_rot > np.linalg.norm(E.procrustes_align(Y, ref) - ref)
    with pytest.raises(ValueError, match=r"same shape .*got \(30, 2\) and \(29, 2\)"):
        E.procrustes_align(Y, ref[:-1])


# ------------------------------------------------------------------------------------- tsne
def _three_blobs(n=200, d=10, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.normal(size=(3, d))[y] * 8 + rng.normal(size=(n, d)), y


# n_jobs=1 in tests: openTSNE's threads slow down badly on a CPU shared with other processes
def test_tsne_is_deterministic_and_separates_blobs():
    Z, y = _three_blobs()
    a = E.tsne(Z, seed=3, n_iter=250, n_jobs=1)
    b = E.tsne(Z, seed=3, n_iter=250, n_jobs=1)
    assert a.shape == (200, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    from alviz.metrics import knn_accuracy
    assert knn_accuracy(a, y, a, y, k=5) > 0.95


def test_tsne_wide_input_goes_through_pca():
    Z, _ = _three_blobs(n=120, d=300, seed=1)
    a = E.tsne(Z, seed=0, n_iter=100, n_jobs=1)
    np.testing.assert_array_equal(a, E.tsne(Z, seed=0, n_iter=100, n_jobs=1))


def test_tsne_small_input_lowers_perplexity_with_warning():
    Z, _ = _three_blobs(n=40)
    with pytest.warns(UserWarning, match="perplexity 30 is too large for 40 points"):
        out = E.tsne(Z, n_iter=50, n_jobs=1)
    assert out.shape == (40, 2)
    with pytest.raises(ValueError, match="at least 4 points; got 3"):
        E.tsne(Z[:3])
    with pytest.raises(ValueError, match=r"2-D array .*got shape \(40,\)"):
        E.tsne(Z[:, 0])
