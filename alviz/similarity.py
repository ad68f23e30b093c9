"""Similarity between the layers of two networks on the same samples: linear CKA (unbiased and
biased), orthogonal Procrustes distance and mutual k-NN overlap, as layer x layer matrices, with
bootstrap replicates for uncertainty.

What this is: numpy functions on activations ``X`` (N, Dx) and ``Y`` (N, Dy) whose rows are the
same samples in the same order (memmaps welcome: every pass reads row chunks, float64 sums).

Linear CKA is computed in feature space, never with an N x N Gram matrix: after centring both
layers by their means (pass 1), one pass accumulates ``X^T Y``, ``X^T X``, ``Y^T Y`` (D x D, float64)
and the squared row norms ``|x_i|^2``, ``|y_i|^2``. Then (Kornblith et al. 2019, their
``feature_space_linear_cka``)::

    HSIC_b(X, Y) ~ ||X^T Y||_F^2                                         (biased, Gretton 2005)
    HSIC_u(X, Y) ~ ||X^T Y||_F^2 - n/(n-2) sum_i |x_i|^2 |y_i|^2
                   + (sum_i |x_i|^2)(sum_i |y_i|^2) / ((n-1)(n-2))       (unbiased, Song et al. 2012)
    CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))

(the common factor 1/(n(n-3)) of the unbiased estimator cancels). The biased estimator is
inflated for finite n (about 0.2 for independent Gaussians at n = 32 against ~0 for the unbiased
one); alviz reports the unbiased one. It needs n >= 4 samples and a positive HSIC_u(X, X) and
HSIC_u(Y, Y); anything else is refused with an error, never a silent NaN. CKA is a SIMILARITY
(1: the same representation up to rotation and isotropic scale).

The Procrustes distance (Williams et al. 2021) is a DISTANCE (0: identical up to rotation,
reflection, translation and scale): ``arccos(||X^T Y||_*)`` with X, Y centred and scaled to unit
Frobenius norm, in radians, in [0, pi/2]. Mutual k-NN overlap (similarity, in [0, 1]): for each
sample, the fraction of its k nearest neighbours (Euclidean, itself excluded) shared by the two
layers, averaged over samples (chunked distance rows, never N x N).

Uncertainty (see ``uncertainty``): CKA and Procrustes replicates come from a stratified GROUP
bootstrap: the samples are dealt into G groups of the same class mix and the per-group
cross-products are kept (for wide layers, whose G products would exceed ``GROUP_BUDGET``, only
their G x G Gram, summed in sample space in chunks); a replicate redraws G groups with replacement
and recombines them (for CKA from the G x G Gram of the group products: O(G^2) per replicate, no
pass over the data; for Procrustes one D x D sum and one SVD per replicate, only where the
products are kept). For sums of per-sample products this has
the sample bootstrap's variance to first order. A replicate's unbiased HSIC leaves out the pairs
of copies of one sample (as the estimator leaves out i = j; counting them would inflate CKA, the
biased estimator's pitfall again), and its sum of |x_i|^2 |y_i|^2 uses the full-sample centring
(an O(1/n) change of a term that is itself O(1/n)). The k-NN overlap's replicates are exact bootstrap means of its per-sample overlaps
(the neighbour sets stay those of the full sample).

What this is not: no files, no torch, no choice of layers or samples, no plotting.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_SAMPLES", "SIM_MEASURES", "cka", "cka_gram", "procrustes", "knn_sets", "knn_overlap",
           "LayerStats", "similarity_matrices", "group_bootstrap"]

MIN_SAMPLES = 4
#: name -> (description, higher means more similar)
SIM_MEASURES = {
    "cka": ("linear CKA, unbiased (debiased HSIC) estimator: similarity in [about 0, 1]; 1 = same "
            "representation up to rotation and isotropic scale", True),
    "procrustes": ("orthogonal Procrustes distance (angular, radians, after centring and unit Frobenius "
                   "norm): a distance in [0, pi/2]; 0 = same up to rotation/reflection/scale", False),
    "knn_overlap": ("mutual k-NN overlap (k = 10, Euclidean): mean fraction of a sample's nearest "
                    "neighbours shared by the two layers; similarity in [0, 1]", True),
}
_BUDGET = 64 * 2**20


def _flat(Z, name: str) -> np.ndarray:
    a = Z if isinstance(Z, np.ndarray) else np.asarray(Z)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {a.shape}.")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers; got dtype {a.dtype}.")
    return a


def _check(X, Y):
    X, Y = _flat(X, "X"), _flat(Y, "Y")
    if len(X) != len(Y):
        raise ValueError(f"X and Y must hold the same samples (rows); got {len(X)} and {len(Y)} rows.")
    if len(X) < MIN_SAMPLES:
        raise ValueError(f"linear CKA needs at least {MIN_SAMPLES} samples (the unbiased HSIC divides by "
                         f"n - 3); got {len(X)}.")
    return X, Y


def _step(*dims: int, budget: int = _BUDGET) -> int:
    return max(1, budget // (8 * max(1, sum(dims))))


def _chunks(n: int, step: int):
    for s in range(0, n, step):
        yield s, min(n, s + step)


def _mean(Z, step: int) -> np.ndarray:
    tot = np.zeros(Z.shape[1])
    for s, e in _chunks(len(Z), step):
        blk = np.asarray(Z[s:e], dtype=np.float64)
        if not np.isfinite(blk).all():
            raise ValueError(f"activations must be finite; found NaN or inf in rows {s}..{e - 1}.")
        tot += blk.sum(axis=0)
    return tot / len(Z)


class LayerStats:
    """One layer's centred self-products: mean, ``X^T X`` (float64), squared row norms."""

    def __init__(self, Z, defer: bool = False):
        Z = _flat(Z, "Z")
        if len(Z) < MIN_SAMPLES:
            raise ValueError(f"linear CKA needs at least {MIN_SAMPLES} samples; got {len(Z)}.")
        self.Z, self.n, self.d = Z, len(Z), Z.shape[1]
        step = _step(self.d)
        self.mean = _mean(Z, step)
        self.gram = np.zeros((self.d, self.d))
        self.rows = np.zeros(self.n)
        if defer:  # the caller streams the rows through add() and calls finish()
            return
        for s, e in _chunks(self.n, step):
            self.add(s, e, self.block(s, e))
        self.finish()

    def add(self, s: int, e: int, blk: np.ndarray) -> None:
        self.gram += blk.T @ blk
        self.rows[s:e] = np.einsum("ij,ij->i", blk, blk)

    def finish(self) -> None:
        g2 = float(np.sum(self.gram * self.gram))
        self.hsic_u = _hsic_u(g2, self.rows, self.rows, self.n)
        self.hsic_b = g2

    def block(self, s: int, e: int) -> np.ndarray:
        return np.asarray(self.Z[s:e], dtype=np.float64) - self.mean


def _hsic_u(xty2: float, rx: np.ndarray, ry: np.ndarray, n: int) -> float:
    """Kornblith et al.'s debiased dot-product similarity (times n(n-3)) from centred data."""
    return float(xty2 - n / (n - 2.0) * float(rx @ ry) + rx.sum() * ry.sum() / ((n - 1.0) * (n - 2.0)))


def _cross(a: LayerStats, b: LayerStats) -> np.ndarray:
    if a.n != b.n:
        raise ValueError(f"the two layers must hold the same samples; got {a.n} and {b.n} rows.")
    out = np.zeros((a.d, b.d))
    step = _step(a.d, b.d)
    for s, e in _chunks(a.n, step):
        out += a.block(s, e).T @ b.block(s, e)
    return out


def _cka_from(a: LayerStats, b: LayerStats, cross: np.ndarray, debiased: bool = True) -> float:
    c2 = float(np.sum(cross * cross))
    if not debiased:
        den = math.sqrt(a.hsic_b * b.hsic_b)
        if den <= 0:
            raise ValueError("CKA is undefined when a layer is constant over the samples.")
        return c2 / den
    if a.hsic_u <= 0 or b.hsic_u <= 0:
        raise ValueError(f"the unbiased CKA is undefined here: HSIC_u of a layer with itself is not positive "
                         f"({a.hsic_u:.3g}, {b.hsic_u:.3g}) with n = {a.n} samples; a constant layer, or too "
                         "few samples for the features' spread: use more samples")
    return _hsic_u(c2, a.rows, b.rows, a.n) / math.sqrt(a.hsic_u * b.hsic_u)


def _procrustes_from(a: LayerStats, b: LayerStats, cross: np.ndarray) -> float:
    na, nb = float(a.rows.sum()), float(b.rows.sum())
    if na <= 0 or nb <= 0:
        raise ValueError("the Procrustes distance is undefined when a layer is constant over the samples.")
    nuc = float(np.linalg.svd(cross, compute_uv=False).sum()) / math.sqrt(na * nb)
    return float(math.acos(min(1.0, max(-1.0, nuc))))


def _pair(X, Y):
    """LayerStats of X and Y and their cross-product in one pass over the rows after the means."""
    X, Y = _check(X, Y)
    a, b = LayerStats(X, defer=True), LayerStats(Y, defer=True)
    cross = np.zeros((a.d, b.d))
    for s, e in _chunks(a.n, _step(a.d, b.d)):
        xa, xb = a.block(s, e), b.block(s, e)
        a.add(s, e, xa)
        b.add(s, e, xb)
        cross += xa.T @ xb
    a.finish()
    b.finish()
    return a, b, cross


def cka(X, Y, *, debiased: bool = True) -> float:
    """Linear CKA of X and Y (rows: the same samples) in feature space; unbiased by default."""
    a, b, cross = _pair(X, Y)
    return _cka_from(a, b, cross, debiased)


def cka_gram(X, Y, *, debiased: bool = True) -> float:
    """Reference: linear CKA from the N x N Gram matrices (O(N^2) memory; for tests and small N).

    Unbiased: HSIC_u of Song et al. (2012) on Grams with zeroed diagonals; biased: tr(KHLH)."""
    X, Y = _check(X, Y)
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    n = len(X)

    def hsic(K, L):
        if not debiased:
            H = np.eye(n) - 1.0 / n
            return float(np.trace(K @ H @ L @ H))
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0.0)
        np.fill_diagonal(L, 0.0)
        one = np.ones(n)
        return float(np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                     - 2.0 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def procrustes(X, Y) -> float:
    """Angular orthogonal Procrustes distance (radians) of X and Y after centring and unit norm."""
    a, b, cross = _pair(X, Y)
    return _procrustes_from(a, b, cross)


def knn_sets(Z, k: int = 10, budget: int = _BUDGET) -> np.ndarray:
    """(N, k) indices of each sample's k nearest neighbours (Euclidean, itself excluded), from
    chunked distance rows (float64, ``|a|^2 + |b|^2 - 2 a.b`` on centred data)."""
    Z = _flat(Z, "Z")
    n = len(Z)
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and the number of samples - 1 ({n - 1}); got k={k}.")
    mu = _mean(Z, _step(Z.shape[1]))
    full = np.asarray(Z, dtype=np.float64) - mu
    sq = np.einsum("ij,ij->i", full, full)
    out = np.empty((n, k), dtype=np.int64)
    step = max(1, budget // (8 * n))
    for s, e in _chunks(n, step):
        D = sq[s:e, None] + sq[None, :] - 2.0 * (full[s:e] @ full.T)
        D[np.arange(e - s), np.arange(s, e)] = np.inf
        part = np.argpartition(D, k - 1, axis=1)[:, :k]
        out[s:e] = part
    return out


def knn_overlap(nx: np.ndarray, ny: np.ndarray) -> np.ndarray:
    """Per-sample fraction of shared neighbours between two (N, k) neighbour sets."""
    if nx.shape != ny.shape:
        raise ValueError(f"neighbour sets must have the same shape; got {nx.shape} and {ny.shape}.")
    n, k = nx.shape
    both = np.concatenate([nx, ny], axis=1)
    both.sort(axis=1)
    return (both[:, 1:] == both[:, :-1]).sum(axis=1) / k


# --------------------------------------------------------------------------------------------
# Group bootstrap
# --------------------------------------------------------------------------------------------
def _onehot(g: np.ndarray, G: int) -> np.ndarray:
    O = np.zeros((len(g), G))
    O[np.arange(len(g)), g] = 1.0
    return O


def _groups(y, n_groups: int, seed: int) -> np.ndarray:
    """Group index per sample: each class shuffled (seeded) and dealt round-robin into groups, so
    every group has (nearly) the same class mix."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    g = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        m = np.flatnonzero(y == c)
        rng.shuffle(m)
        g[m] = (offset + np.arange(len(m))) % n_groups
        offset += len(m)
    return g


#: the bytes the per-group D x D products of one layer pair may take; above it (wide layers: 50 groups
#: of a 4,096 x 4,096 product would be 6.7 GB) the Gram of the group products is summed in sample
#: space instead, in chunks, and the Procrustes replicates (each a D x D sum and SVD) are skipped
GROUP_BUDGET = 512 * 2**20


class _GroupStats:
    """Per-group products of two centred layers (same samples) for group-bootstrap replicates.

    With S_g = X_g^T Y_g (the group's cross-product), a replicate needs the G x G Gram <S_g, S_h>
    and T[g, h, k] = sx_h^T S_g sy_k (sx, sy: group sums). When the G products fit in
    ``budget`` they are kept (Procrustes replicates need them); otherwise the Gram is summed in
    sample space, <S_g, S_h> = sum over i in g, j in h of (x_i . x_j)(y_i . y_j), over chunk pairs
    (memory flat in N and D), and T from the projections x_i . sx_h."""

    def __init__(self, a: LayerStats, b: LayerStats, g: np.ndarray, n_groups: int, budget: int = GROUP_BUDGET):
        G = self.G = n_groups
        self.n = np.bincount(g, minlength=G).astype(np.float64)
        self.stored = G * a.d * b.d * 8 <= budget
        self.a, self.b, self.g = a, b, g
        self.S = np.zeros((G, a.d, b.d)) if self.stored else None
        self.sx = np.zeros((G, a.d))
        self.sy = np.zeros((G, b.d))
        step = _step(a.d, b.d)
        for s, e in _chunks(a.n, step):
            xa, xb, gg = a.block(s, e), b.block(s, e), g[s:e]
            O = _onehot(gg, G)
            self.sx += O.T @ xa
            self.sy += O.T @ xb
            if self.stored:
                for h in np.unique(gg):
                    m = gg == h
                    self.S[h] += xa[m].T @ xb[m]
        if self.stored:
            flat = self.S.reshape(G, -1)
            self.gram = flat @ flat.T  # <S_g, S_h>
            # T[g, h, k] = sx_h^T S_g sy_k
            self.T = np.einsum("hd,gde,ke->ghk", self.sx, self.S, self.sy, optimize=True)
        else:
            self.gram, self.T = self._sample_space(step)
        self.rxy = np.bincount(g, weights=a.rows * b.rows, minlength=G)
        self.rx = np.bincount(g, weights=a.rows, minlength=G)
        self.ry = np.bincount(g, weights=b.rows, minlength=G)

    def _sample_space(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        a, b, g, G = self.a, self.b, self.g, self.G
        c = max(1, min(step, int(math.sqrt(_BUDGET / 24))))  # K, L and their product: c x c float64 each
        gram = np.zeros((G, G))
        T = np.zeros((G, G, G))
        spans = list(_chunks(a.n, c))
        for i, (s, e) in enumerate(spans):
            xa, xb, Oi = a.block(s, e), b.block(s, e), _onehot(g[s:e], G)
            T += np.einsum("ig,ih,ik->ghk", Oi, xa @ self.sx.T, xb @ self.sy.T, optimize=True)
            for s2, e2 in spans[i:]:
                ya, yb = (xa, xb) if s2 == s else (a.block(s2, e2), b.block(s2, e2))
                B = Oi.T @ ((xa @ ya.T) * (xb @ yb.T)) @ _onehot(g[s2:e2], G)
                gram += B if s2 == s else B + B.T
        return gram, T

    def centred_sum(self, v: np.ndarray) -> np.ndarray:
        """sum_g v_g S_g, centred by the replicate's mean (needs the stored products)."""
        n = float(v @ self.n)
        return np.tensordot(v, self.S, axes=1) - np.outer(v @ self.sx, v @ self.sy) / n

    def hsic_u(self, V: np.ndarray) -> np.ndarray:
        """Unbiased HSIC (times n(n-3)) of every replicate (rows of group multiplicities V).

        A replicate holds w_i = v_g copies of each sample of group g. Pairs of copies of one
        sample are left out of the U-statistic, as i = j is for the full sample (otherwise the
        copies' k(x_i, x_i) l(y_i, y_i) terms would inflate HSIC, most for wide layers):
        with centred data, n(n-3) HSIC_u = ||X^T W Y||^2 - sum w^2 |x|^2 |y|^2
        + (sum w^2 |x|^2)(sum w^2 |y|^2) / ((n-1)(n-2)) - 2/(n-2) sum w^3 |x|^2 |y|^2."""
        n = V @ self.n
        G = self.G
        V2, V3 = V ** 2, V ** 3
        main = np.sum((V @ self.gram) * V, axis=1)
        # centring of the replicate: C = sum v_g S_g - n mx my^T, mx = sum v_h sx_h / n
        VV = (V[:, :, None] * V[:, None, :]).reshape(len(V), G * G)
        cross = np.sum((V @ self.T.reshape(G, G * G)) * VV, axis=1) / n
        mx, my = (V @ self.sx) / n[:, None], (V @ self.sy) / n[:, None]
        mx2, my2 = np.sum(mx * mx, axis=1), np.sum(my * my, axis=1)
        c2 = main - 2.0 * cross + n ** 2 * mx2 * my2
        # sum w^2 |x_i - m|^2, exact; the products |x|^2 |y|^2 keep the full-sample centring
        rx = V2 @ self.rx - 2.0 * np.sum((V2 @ self.sx) * mx, axis=1) + mx2 * (V2 @ self.n)
        ry = V2 @ self.ry - 2.0 * np.sum((V2 @ self.sy) * my, axis=1) + my2 * (V2 @ self.n)
        return (c2 - V2 @ self.rxy + rx * ry / ((n - 1.0) * (n - 2.0))
                - 2.0 / (n - 2.0) * (V3 @ self.rxy))


def group_bootstrap(a: LayerStats, b: LayerStats, y, *, n_boot: int = 200, n_groups: int = 50, seed: int = 0,
                    procrustes_boot: int = 50, self_a: "_GroupStats | None" = None,
                    self_b: "_GroupStats | None" = None) -> dict:
    """Replicates of CKA (``n_boot``) and of the Procrustes distance (``procrustes_boot``, each one
    an SVD of a Dx x Dy matrix; none when the G products exceed ``GROUP_BUDGET``) of layers ``a``
    and ``b`` under a stratified group bootstrap (module docstring). Same ``y``, ``n_groups`` and ``seed`` -> the same groups and replicates, so
    replicates of two layer pairs measured on the same samples are paired."""
    n_groups = int(min(n_groups, a.n))
    g = _groups(y, n_groups, seed)
    rng = np.random.default_rng(seed + 1)
    V = np.stack([np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
                  for _ in range(int(n_boot))]).astype(np.float64)
    ab = _GroupStats(a, b, g, n_groups)
    aa = self_a or _GroupStats(a, a, g, n_groups)
    bb = self_b or _GroupStats(b, b, g, n_groups)
    hxx, hyy = aa.hsic_u(V), bb.hsic_u(V)
    with np.errstate(invalid="ignore", divide="ignore"):
        cka_reps = np.where((hxx > 0) & (hyy > 0), ab.hsic_u(V) / np.sqrt(np.abs(hxx * hyy)), np.nan)
    proc = []
    for v in V[:int(procrustes_boot) if ab.stored else 0]:  # wide layers: no Procrustes replicates
        C = ab.centred_sum(v)
        nx = float(v @ aa.rx) - float(np.sum(np.square(v @ aa.sx))) / float(v @ aa.n)
        ny = float(v @ bb.ry) - float(np.sum(np.square(v @ bb.sy))) / float(v @ bb.n)
        nuc = float(np.linalg.svd(C, compute_uv=False).sum()) / math.sqrt(nx * ny)
        proc.append(math.acos(min(1.0, max(-1.0, nuc))))
    return {"cka": cka_reps, "procrustes": np.asarray(proc), "groups": n_groups}


def similarity_matrices(layers_a: dict, layers_b: dict, *, k: int = 10, knn: bool = True) -> dict:
    """Layer x layer matrices between two runs on the same samples: ``{"cka": (p, q),
    "procrustes": (p, q), "knn_overlap": (p, q), "rows": names of a, "cols": names of b,
    "knn_per_sample": {(i, j): (N,) overlaps}}``. Each layer's self-products and neighbour sets
    are computed once; each pair costs one streamed cross-product."""
    na, nb = list(layers_a), list(layers_b)
    sa = {n: LayerStats(layers_a[n]) for n in na}
    sb = {n: LayerStats(layers_b[n]) for n in nb}
    N = {s.n for s in (*sa.values(), *sb.values())}
    if len(N) != 1:
        raise ValueError(f"every layer must hold the same samples; got row counts {sorted(N)}.")
    out = {m: np.full((len(na), len(nb)), np.nan) for m in SIM_MEASURES}
    per = {}
    kx = {n: knn_sets(layers_a[n], k) for n in na} if knn else {}
    ky = {n: knn_sets(layers_b[n], k) for n in nb} if knn else {}
    for i, x in enumerate(na):
        for j, z in enumerate(nb):
            c = _cross(sa[x], sb[z])
            out["cka"][i, j] = _cka_from(sa[x], sb[z], c)
            out["procrustes"][i, j] = _procrustes_from(sa[x], sb[z], c)
            if knn:
                per[(i, j)] = knn_overlap(kx[x], ky[z])
                out["knn_overlap"][i, j] = float(per[(i, j)].mean())
    return {**out, "rows": na, "cols": nb, "knn_per_sample": per, "stats_a": sa, "stats_b": sb}
