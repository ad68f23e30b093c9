"""t-SNE helpers for hidden-layer activations: sampling, embedding, aligning panels.

What this is: pure-array functions.

- ``stratified_sample(y, n, seed=...)``: seeded, class-proportional row indices (sorted).
- ``tsne(Z, ...)``: a 2-D openTSNE embedding (PCA initialisation, perplexity 30 by default,
  seeded). Inputs wider than ``pca_dims`` (50) are first reduced with a seeded PCA to 50
  dimensions, standard practice that keeps the neighbourhood structure and makes 2,000 points
  run in a few seconds on 2 cores. Features are not standardised: the embedding sees the same
  Euclidean geometry the distance measures in ``alviz.metrics`` use.
- ``procrustes_align(Y, ref)``: rotate/reflect (and translate, optionally scale) one embedding
  onto another of the same points, so panels of several layers or runs can be compared.
- ``tsne(Z, init=Y_ref)``: start from another embedding of the same points (rescaled to
  openTSNE's recommended tiny spread) instead of PCA, so a class lands where it sits in ``Y_ref``.
- ``centroid_shift(Y, ref, labels)``: how far each class's centroid lies from its place in a
  reference embedding, in units of the reference's radius (0: same place; about 1: across).
- ``neighbours(Z, k)``: each row's k nearest other rows (Euclidean, after the same PCA t-SNE uses).

What this is not: no plotting, no file I/O, no torch, no choice of which layer or split to
embed, and no quantitative measure (t-SNE distances are not meaningful as numbers; use
``alviz.metrics`` for that).
"""
from __future__ import annotations

import warnings

import numpy as np

from .sampling import stratified_sample  # re-exported: alviz.embed.stratified_sample keeps working

__all__ = ["stratified_sample", "tsne", "procrustes_align", "centroid_shift", "neighbours"]


def tsne(Z, *, perplexity: float = 30.0, seed: int = 0, n_jobs: int = -1, n_iter: int = 500,
         pca_dims: int | None = 50, verbose: bool = False, init=None,
         exaggeration_iter: int = 250) -> np.ndarray:
    """2-D t-SNE embedding of the rows of ``Z`` with openTSNE; returns an (N, 2) float array.

    Settings: ``openTSNE.TSNE(perplexity, n_iter, initialization="pca", random_state=seed,
    n_jobs, early_exaggeration_iter=exaggeration_iter)`` with openTSNE's defaults otherwise
    (early exaggeration 12, learning rate N/12, exact neighbours below 1,000 points). The
    defaults, 250 exaggerated then 500 plain iterations, are openTSNE's; a panel started from a
    neighbouring layout (``init``) converges in fewer (the report uses 125 + 250 there;
    ``bench/bench_tsne_schedule.py`` measures what that changes).

    Preprocessing: if ``Z`` has more than ``pca_dims`` columns (default 50; None disables it)
    it is centred and reduced to ``pca_dims`` principal components (sklearn PCA, seeded) first.
    No per-feature standardisation.

    Small inputs: t-SNE needs about ``3 * perplexity`` neighbours per point. If
    ``N - 1 < 3 * perplexity`` the perplexity is lowered to ``(N - 1) / 3`` and a
    ``UserWarning`` says so. Fewer than 4 points raise ``ValueError``.

    Initialisation: ``init`` (N, 2), e.g. an earlier embedding of the same points, replaces the PCA
    initialisation; it is rescaled to a standard deviation of 1e-4 (openTSNE's advice for a given
    initialisation), so the layout it starts from is kept while the optimisation runs as usual:
    groups that stay together stay where they were.

    Determinism: the same input, ``seed`` and ``n_jobs`` give an identical output.

    Threads: ``n_jobs=-1`` uses every core. openTSNE's threads synchronise every iteration, so
    on a CPU shared with other busy processes ``n_jobs=1`` can be many times faster (measured
    on 2 shared cores: 0.25 s with 1 thread vs 15 s with 2 for 200 points).
    """
    from openTSNE import TSNE

    Z = np.asarray(Z)
    if Z.ndim != 2:
        raise ValueError(f"Z must be a 2-D array (n_samples, n_features); got shape {Z.shape}.")
    if Z.dtype.kind not in "fiub":
        raise ValueError(f"Z must hold real numbers; got dtype {Z.dtype}.")
    n = len(Z)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points; got {n}.")
    X = np.asarray(Z, dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError("Z must contain only finite values; got NaN or inf.")
    if perplexity <= 0:
        raise ValueError(f"perplexity must be positive; got {perplexity}.")
    for what, v, low in (("n_iter", n_iter, 1), ("exaggeration_iter", exaggeration_iter, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{what} must be an integer >= {low}; got {v!r}.")
    if n - 1 < 3 * perplexity:
        new = (n - 1) / 3.0
        warnings.warn(f"perplexity {perplexity:g} is too large for {n} points (needs "
                      f"N - 1 >= 3 * perplexity); using perplexity {new:.3g} instead.",
                      UserWarning, stacklevel=2)
        perplexity = new
    if pca_dims is not None and X.shape[1] > pca_dims:
        from sklearn.decomposition import PCA

        k = int(min(pca_dims, n))
        X = PCA(n_components=k, random_state=seed).fit_transform(X)
    start = "pca"
    if init is not None:
        start = np.asarray(init, dtype=np.float64)
        if start.shape != (n, 2) or not np.isfinite(start).all():
            raise ValueError(f"init must be a finite ({n}, 2) array; got shape {start.shape}.")
        start = (start - start.mean(axis=0)) / max(float(start[:, 0].std()), 1e-12) * 1e-4
    model = TSNE(n_components=2, perplexity=perplexity, n_iter=int(n_iter), initialization=start,
                 early_exaggeration_iter=int(exaggeration_iter), random_state=seed, n_jobs=n_jobs,
                 verbose=verbose)
    emb = model.fit(np.ascontiguousarray(X))
    return np.asarray(emb, dtype=np.float64).copy()


def procrustes_align(Y, ref, *, scale: bool = False, reflection: bool = True) -> np.ndarray:
    """Map embedding ``Y`` onto ``ref`` (same points, same order) by orthogonal Procrustes.

    Finds the translation, orthogonal matrix R (rotation, or rotation + reflection when
    ``reflection`` is True; t-SNE is invariant to both) and, if ``scale``, a uniform factor
    s > 0 minimising ``||s (Y - mean(Y)) R + mean(ref) - ref||_F``; returns the mapped ``Y``.
    Uses ``scipy.linalg.orthogonal_procrustes``.
    """
    from scipy.linalg import orthogonal_procrustes

    Y = np.asarray(Y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if Y.ndim != 2 or Y.shape != ref.shape:
        raise ValueError(f"Y and ref must be 2-D arrays of the same shape (same points, same "
                         f"order); got {Y.shape} and {ref.shape}.")
    A = Y - Y.mean(axis=0)
    B = ref - ref.mean(axis=0)
    R, sv_sum = orthogonal_procrustes(A, B)
    if not reflection and np.linalg.det(R) < 0:
        U, sv, Vt = np.linalg.svd(A.T @ B)
        U[:, -1] *= -1.0
        R = U @ Vt
        sv_sum = sv[:-1].sum() - sv[-1]
    s = 1.0
    if scale:
        norm = float(np.sum(A * A))
        s = float(sv_sum) / norm if norm > 0 else 1.0
    return s * (A @ R) + ref.mean(axis=0)


def centroid_shift(Y, ref, labels) -> float:
    """Mean over classes of the distance between a class's centroid in ``Y`` and in ``ref``
    (same points, same order, already aligned), divided by the RMS distance of ``ref``'s points
    to its centre: 0 when every class sits where it sits in ``ref``; about 1 when classes sit a
    panel's radius away."""
    Y = np.asarray(Y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    labels = np.asarray(labels)
    if Y.shape != ref.shape or Y.ndim != 2 or len(labels) != len(Y):
        raise ValueError(f"Y, ref and labels must describe the same points; got {Y.shape}, {ref.shape}, "
                         f"{labels.shape}.")
    radius = float(np.sqrt(((ref - ref.mean(axis=0)) ** 2).sum(axis=1).mean()))
    d = [np.linalg.norm(Y[labels == c].mean(axis=0) - ref[labels == c].mean(axis=0)) for c in np.unique(labels)]
    return float(np.mean(d) / radius) if radius > 0 else 0.0


def neighbours(Z, k: int, *, pca_dims: int | None = 50, seed: int = 0) -> np.ndarray:
    """(N, min(k, N - 1)) int32 indices of each row's nearest other rows by Euclidean distance,
    nearest first; rows wider than ``pca_dims`` are first reduced by the same seeded PCA as
    ``tsne`` (so the neighbours are those t-SNE sees)."""
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(Z, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"Z must be a 2-D array of at least 2 rows; got shape {X.shape}.")
    if pca_dims is not None and X.shape[1] > pca_dims:
        from sklearn.decomposition import PCA

        X = PCA(n_components=int(min(pca_dims, len(X))), random_state=seed).fit_transform(X)
    k = int(min(k, len(X) - 1))
    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)
    out = np.empty((len(X), k), dtype=np.int32)
    for i, row in enumerate(idx):  # drop the point itself (not always first when duplicates tie)
        out[i] = [j for j in row if j != i][:k]
    return out
