"""Similarity between the layers of two networks on the same samples: linear CKA (unbiased and
biased), orthogonal Procrustes distance and mutual k-NN overlap, as layer x layer matrices, with
bootstrap replicates for uncertainty.

What this is: numpy functions on activations ``X`` (N, Dx) and ``Y`` (N, Dy) whose rows are the
same samples in the same order (memmaps welcome: every pass reads row chunks, float64 sums).

Linear CKA is computed in feature space, never with an N x N Gram matrix, in ONE pass over the
rows (row chunks of at most 64 MiB in float64, or as many rows as features for wide layers; no
float64 copy of a whole layer; memory O(D^2), not O(N)).
The unbiased HSIC is a U-statistic, unchanged by a shift of either layer, so no centring pass is
needed: each layer is shifted by the mean of its first 1,024 rows (for floating-point accuracy only,
u_i = x_i - c), each chunk becomes ``A = [U | 1 | a]`` with ``a_i = |u_i|^2``, and one product per
chunk and pair of layers, ``A^T B``, gives ``U^T V``, the column sums ``s_u = U^T 1``, ``s_v``
and ``U^T b``, ``V^T a`` (BLAS's symmetric product when A is B); ``a.b`` and ``sum a`` are summed
apart. Everything is summed over chunks in float64; float32 activations are multiplied in float32
BLAS, faster than float64 (the CKA agreed with the float64 computation to about 1e-9 in a check at
N = D = 1,500; tested against the Gram reference to 1e-7). With ``K~ = U U^T`` and ``L~ = V V^T``
less their diagonals (Song et al. 2012)::

    n(n-3) HSIC_u = tr(K~ L~) + (1 K~ 1)(1 L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1 K~ L~ 1
    tr(K~ L~)  = ||U^T V||_F^2 - a.b            1 K~ 1 = |s_u|^2 - sum a
    1 K~ L~ 1  = s_u^T (U^T V) s_v - s_u.(U^T b) - s_v.(V^T a) + a.b
    HSIC_b     ~ ||X_c^T Y_c||_F^2 with X_c^T Y_c = U^T V - s_u s_v^T / n   (biased, Gretton 2005)
    CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))

(for centred data, s = 0, this is Kornblith et al.'s ``feature_space_linear_cka(debiased=True)``;
the common factor 1/(n(n-3)) cancels). The biased estimator is
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
and recombines them (for CKA from the G x G Gram of the group products: O(G^2) per replicate; the
group sums take one more pass over both layers, centred, in float64; for Procrustes one D x D sum
and one SVD per replicate, only where the products are kept). For sums of per-sample products this has
the sample bootstrap's variance to first order. A replicate's unbiased HSIC leaves out the pairs
of copies of one sample (as the estimator leaves out i = j; counting them would inflate CKA, the
biased estimator's pitfall again), and its sum of |x_i|^2 |y_i|^2 uses the full-sample centring
(an O(1/n) change of a term that is itself O(1/n)). The k-NN overlap's replicates are exact
bootstrap means of its per-sample overlaps (the neighbour sets stay those of the full sample).

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
_SHIFT_ROWS = 1024  # a layer's shift: the mean of its first rows (for floating-point accuracy only)


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


def _step(*dims: int) -> int:
    """Rows per chunk: a float64 chunk of every layer read together within ``_BUDGET`` bytes."""
    return max(1, _BUDGET // (8 * max(1, sum(dims))))


def _cka_step(*dims: int) -> int:
    """Rows per chunk of the CKA pass: ``_step``, or as many rows as the layers have features when
    that is more, so that adding each chunk's (D + 2) x (D + 2) products to the float64 sums costs
    little beside computing them (wide layers: chunks of about the size of those sums)."""
    return max(_step(*dims), sum(dims))


def _chunks(n: int, step: int):
    for s in range(0, n, step):
        yield s, min(n, s + step)


def _finite(blk: np.ndarray, s: int) -> None:
    bad = ~np.isfinite(blk).all(axis=1)
    if bad.any():
        i = s + int(np.argmax(bad))
        raise ValueError(f"activations must be finite; found NaN or inf in row {i}.")


def _mean(Z, step: int) -> np.ndarray:
    tot = np.zeros(Z.shape[1])
    for s, e in _chunks(len(Z), step):
        blk = np.asarray(Z[s:e], dtype=np.float64)
        _finite(blk, s)
        tot += blk.sum(axis=0)
    return tot / len(Z)


def _tdot(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A.T @ B`` in the blocks' common precision (float32 blocks: float32 BLAS; ``A is B``:
    BLAS's symmetric product, half the work); the caller adds it to a float64 sum."""
    if A.dtype != B.dtype:
        A, B = A.astype(np.float64), B.astype(np.float64)
    return A.T @ B


class LayerStats:
    """One layer's products in one pass over its rows, about a shift ``c`` (the mean of its first
    1,024 rows, for floating-point accuracy only). Each chunk becomes ``A = [U | 1 | a]`` with
    ``u_i = x_i - c`` and ``a_i = |u_i|^2`` (float32 when the input is float32 or float16, else
    float64) and ``M = sum A^T A`` (float64) holds ``U^T U``, ``s = U^T 1``, ``q = U^T a`` and n;
    ``sum a`` and ``a.a`` are summed in float64. ``finish()`` derives the centred Gram
    ``X_c^T X_c = U^T U - s s^T / n``, HSIC_u and HSIC_b of the layer with itself."""

    def __init__(self, Z, defer: bool = False):
        Z = _flat(Z, "Z")
        if len(Z) < MIN_SAMPLES:
            raise ValueError(f"linear CKA needs at least {MIN_SAMPLES} samples; got {len(Z)}.")
        self.Z, self.n, self.d = Z, len(Z), Z.shape[1]
        self.dtype = np.float32 if Z.dtype.kind == "f" and Z.dtype.itemsize <= 4 else np.float64
        step = _cka_step(self.d)
        first = np.asarray(Z[:_SHIFT_ROWS], dtype=np.float64)
        _finite(first, 0)
        self.shift = first.mean(axis=0).astype(self.dtype)
        self.M = np.zeros((self.d + 2, self.d + 2))
        self.a_sum = self.a_sq = 0.0
        if defer:  # the caller streams the chunks through add() and calls finish()
            return
        for s, e in _chunks(self.n, step):
            self.add(*self.chunk(s, e))
        self.finish()

    def chunk(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """``A = [U | 1 | a]`` of rows s..e-1 (this layer's precision) and ``a`` in float64."""
        A = np.empty((e - s, self.d + 2), dtype=self.dtype)
        U = A[:, :self.d]
        np.subtract(self.Z[s:e], self.shift, out=U)
        a = np.einsum("ij,ij->i", U, U, dtype=np.float64)
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(f"activations must be finite; found NaN or inf in row {s + int(np.argmax(bad))}.")
        A[:, self.d] = 1.0
        A[:, self.d + 1] = a
        return A, a

    def add(self, A: np.ndarray, a: np.ndarray) -> None:
        self.M += _tdot(A, A)
        self.a_sum += float(a.sum())
        self.a_sq += float(a @ a)

    def finish(self) -> None:
        d, M = self.d, self.M
        self.sum = M[:d, d]
        self.mean = self.shift.astype(np.float64) + self.sum / self.n
        self.gram = M[:d, :d] - np.outer(self.sum, self.sum) / self.n   # centred X^T X
        self.trace = self.a_sum - float(self.sum @ self.sum) / self.n  # sum of |x_i - mean|^2
        self.hsic_u = _hsic_u(self, self, M, self.a_sq)
        self.hsic_b = float(np.sum(self.gram * self.gram))

    def centred(self, s: int, e: int) -> np.ndarray:
        """Rows s..e-1 less the mean, float64 (after ``finish``)."""
        return np.asarray(self.Z[s:e], dtype=np.float64) - self.mean


def _hsic_u(a: LayerStats, b: LayerStats, M: np.ndarray, ab: float) -> float:
    """n(n-3) HSIC_u of Song et al. (2012) in feature space on shifted data (it does not change
    when either layer is shifted), from ``M = [U | 1 | a]^T [V | 1 | b]`` and ``ab = a.b``."""
    n, p, q = a.n, a.d, b.d
    UV, su, sv = M[:p, :q], a.sum, b.sum
    tr = float(np.sum(UV * UV)) - ab                                          # tr(K~ L~): zero diagonals
    k1, l1 = float(su @ su) - a.a_sum, float(sv @ sv) - b.a_sum               # 1 K~ 1, 1 L~ 1
    kl = float(su @ UV @ sv) - float(su @ M[:p, q + 1]) - float(M[p + 1, :q] @ sv) + ab  # 1 K~ L~ 1
    return tr + k1 * l1 / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * kl


class _Cross:
    """The products of two layers' chunks: ``M = sum A^T B`` and ``a.b`` (float64)."""

    def __init__(self, a: LayerStats, b: LayerStats):
        if a.n != b.n:
            raise ValueError(f"the two layers must hold the same samples; got {a.n} and {b.n} rows.")
        self.a, self.b = a, b
        self.M, self.ab = np.zeros((a.d + 2, b.d + 2)), 0.0

    def add(self, A: np.ndarray, ra: np.ndarray, B: np.ndarray, rb: np.ndarray) -> None:
        self.M += _tdot(A, B)
        self.ab += float(ra @ rb)

    def centred(self) -> np.ndarray:
        """X_c^T Y_c."""
        return self.M[:self.a.d, :self.b.d] - np.outer(self.a.sum, self.b.sum) / self.a.n


def _cross(a: LayerStats, b: LayerStats) -> _Cross:
    c = _Cross(a, b)
    for s, e in _chunks(a.n, _cka_step(a.d, b.d)):
        c.add(*a.chunk(s, e), *b.chunk(s, e))
    return c


def _cka_from(c: _Cross, debiased: bool = True) -> float:
    a, b = c.a, c.b
    if not debiased:
        den = math.sqrt(a.hsic_b * b.hsic_b)
        if den <= 0:
            raise ValueError("CKA is undefined when a layer is constant over the samples.")
        C = c.centred()
        return float(np.sum(C * C)) / den
    if a.hsic_u <= 0 or b.hsic_u <= 0:
        raise ValueError(f"the unbiased CKA is undefined here: HSIC_u of a layer with itself is not positive "
                         f"({a.hsic_u:.3g}, {b.hsic_u:.3g}) with n = {a.n} samples; a constant layer, or too "
                         "few samples for the features' spread: use more samples")
    return _hsic_u(a, b, c.M, c.ab) / math.sqrt(a.hsic_u * b.hsic_u)


def _procrustes_from(c: _Cross) -> float:
    na, nb = c.a.trace, c.b.trace
    if na <= 0 or nb <= 0:
        raise ValueError("the Procrustes distance is undefined when a layer is constant over the samples.")
    nuc = float(np.linalg.svd(c.centred(), compute_uv=False).sum()) / math.sqrt(na * nb)
    return float(math.acos(min(1.0, max(-1.0, nuc))))


def _pair(X, Y) -> _Cross:
    """Both layers' products and their cross-products in one pass over the rows."""
    X, Y = _check(X, Y)
    a, b = LayerStats(X, defer=True), LayerStats(Y, defer=True)
    c = _Cross(a, b)
    for s, e in _chunks(a.n, _cka_step(a.d, b.d)):
        (A, ra), (B, rb) = a.chunk(s, e), b.chunk(s, e)
        a.add(A, ra)
        b.add(B, rb)
        c.add(A, ra, B, rb)
    a.finish()
    b.finish()
    return c


def cka(X, Y, *, debiased: bool = True) -> float:
    """Linear CKA of X and Y (rows: the same samples) in feature space; unbiased by default."""
    return _cka_from(_pair(X, Y), debiased)


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
    return _procrustes_from(_pair(X, Y))


def knn_sets(Z, k: int = 10, budget: int | None = None) -> np.ndarray:
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
    step = max(1, (budget or _BUDGET) // (8 * n))
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
        self.rxy, self.rx, self.ry = np.zeros(G), np.zeros(G), np.zeros(G)
        step = _step(a.d, b.d)
        for s, e in _chunks(a.n, step):
            xa, gg = a.centred(s, e), g[s:e]
            xb = xa if b is a else b.centred(s, e)  # a layer with itself (the CKA denominators)
            O = _onehot(gg, G)
            self.sx += O.T @ xa
            self.sy += O.T @ xb
            ra, rb = np.einsum("ij,ij->i", xa, xa), np.einsum("ij,ij->i", xb, xb)  # |x_i - mean|^2
            self.rxy += O.T @ (ra * rb)
            self.rx += O.T @ ra
            self.ry += O.T @ rb
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

    def _sample_space(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        a, b, g, G = self.a, self.b, self.g, self.G
        c = max(1, min(step, int(math.sqrt(_BUDGET / 24))))  # K, L and their product: c x c float64 each
        gram = np.zeros((G, G))
        T = np.zeros((G, G, G))
        spans = list(_chunks(a.n, c))
        for i, (s, e) in enumerate(spans):
            xa, Oi = a.centred(s, e), _onehot(g[s:e], G)
            xb = xa if b is a else b.centred(s, e)
            T += np.einsum("ig,ih,ik->ghk", Oi, xa @ self.sx.T, xb @ self.sy.T, optimize=True)
            for s2, e2 in spans[i:]:
                ya = xa if s2 == s else a.centred(s2, e2)
                K = xa @ ya.T
                if b is a:  # a layer with itself: L is K
                    L = K
                else:
                    L = xb @ (xb if s2 == s else b.centred(s2, e2)).T
                B = Oi.T @ (K * L) @ _onehot(g[s2:e2], G)
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
    and ``b`` under a stratified group bootstrap (module docstring). Same ``y``, ``n_groups`` and
    ``seed`` -> the same groups and replicates, so
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
            out["cka"][i, j] = _cka_from(c)
            out["procrustes"][i, j] = _procrustes_from(c)
            if knn:
                per[(i, j)] = knn_overlap(kx[x], ky[z])
                out["knn_overlap"][i, j] = float(per[(i, j)].mean())
    return {**out, "rows": na, "cols": nb, "knn_per_sample": per, "stats_a": sa, "stats_b": sb}
