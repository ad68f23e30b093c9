"""Every separability measure of one layer with its sampling uncertainty and its per-class view:
``layer_report(Z_test, y_test, Z_train, y_train, W)`` returns the values of
``alviz.metrics.layer_measures``, bootstrap replicates of each under the stratified multiplicities
``W`` (``alviz.uncertainty.bootstrap_counts``; B x N), per-class values and the probe's and k-NN's
per-sample predictions (for confusion matrices and paired tests).

How each measure is bootstrapped (what is resampled: the held-out samples, class-wise):

- ``intra``, ``inter``, ``ratio`` (O(N^2) pair sums): first-order (linearised) bootstrap from the
  exact per-sample per-class distance sums ``R[i, c] = sum_{j in c} d(i, j)`` (one extra reduction
  in the exact tile pass): a replicate's pair sum between classes a and b is
  ``sum_{i in a} w_i R[i, b] + sum_{j in b} w_j R[j, a] - S_ab``, the linear term of
  ``sum_ij w_i w_j d_ij`` around w = 1. Costs B x N x C, no second pass.
- ``fisher_ratio``, ``centroid_ratio``, ``nc1``: recomputed exactly on each replicate from its
  weighted class sums (B x N x D in all; nc1's pseudo-inverse from the replicate's class means).
- ``silhouette``: bootstrap mean of the per-sample silhouettes on the measure's own stratified
  subsample (the neighbours' distances stay those of the subsample).
- ``knn_acc``, ``probe_acc``: exact bootstrap means of per-sample correctness (the classifiers,
  fitted on training activations, are not refitted: the interval is the held-out sampling
  error). Exact binomial intervals come from ``uncertainty.clopper_pearson``.

Two runs measured on the same samples with the same seed get the same ``W``, so their replicates
are paired and ``uncertainty.paired_verdict`` compares them.

What this is not: no files, no torch, no choice of samples; the measures themselves are defined in
``alviz.metrics``.
"""
from __future__ import annotations

import math

import numpy as np

from . import metrics as M

__all__ = ["PER_CLASS", "layer_report"]

#: measures reported per class too
PER_CLASS = ("intra", "inter", "ratio", "knn_acc", "probe_acc")


def _weighted_class_sums(Z, y_idx, C, W, step):
    """(B, C, D) weighted class sums, (B, C) weighted class sums of |z|^2 (float64, centred data)."""
    B = len(W)
    D = Z.shape[1]
    mu = M._global_mean(Z)
    sums = np.zeros((B, C, D))
    sq = np.zeros((B, C))
    for s in range(0, len(Z), step):
        blk = M._chunk_f64(Z, s, s + step, mu)
        yi = y_idx[s:s + step]
        w = W[:, s:s + step].astype(np.float64)
        n2 = np.einsum("ij,ij->i", blk, blk)
        for c in np.unique(yi):
            m = yi == c
            sums[:, c] += w[:, m] @ blk[m]
            sq[:, c] += w[:, m] @ n2[m]
    return mu, sums, sq


def _boot_distance(st, y_idx, counts, W):
    """Linearised replicates of intra, inter, ratio (macro means) and per-class intra/inter."""
    R = st["rows"]
    C = len(counts)
    N = len(y_idx)
    S = np.zeros((C, C))
    T = np.zeros((len(W), C, C))
    for a in range(C):
        m = y_idx == a
        T[:, a, :] = W[:, m].astype(np.float64) @ R[m]
        S[a] = R[m].sum(axis=0)
    Sw = T + T.transpose(0, 2, 1) - S[None]
    cf = counts.astype(np.float64)
    within = np.einsum("rcc->rc", Sw)
    with np.errstate(invalid="ignore", divide="ignore"):
        intra = np.where(counts > 1, within / (cf * (cf - 1)), np.nan)
        inter = (Sw.sum(axis=2) - within) / (cf * (N - cf))
    intra_m = np.nanmean(intra, axis=1) if np.any(counts > 1) else np.full(len(W), np.nan)
    inter_m = inter.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"intra": intra_m, "inter": inter_m, "ratio": inter_m / intra_m,
                "class_intra": intra, "class_inter": inter, "class_ratio": inter / intra}


def _boot_moments(Z, y_idx, counts, W):
    """Exact replicates of fisher_ratio, centroid_ratio and nc1, all replicates at once: the
    replicate class means differ from the full-sample ones by delta (B x C x D); distances to the
    replicate centroids and the projections onto each replicate's Sigma_B^+ come from one matrix
    product per row chunk with the residuals e_i = z_i - mu_{y_i}."""
    from scipy.spatial.distance import pdist

    C, B = len(counts), len(W)
    cf = counts.astype(np.float64)
    N = cf.sum()
    step = M._row_chunk(len(Z), Z.shape[1])
    mu, sums, sq = _weighted_class_sums(Z, y_idx, C, W, step)
    _, sums1, _ = _weighted_class_sums(Z, y_idx, C, np.ones((1, len(Z))), step)
    full = sums1[0] / cf[:, None]  # full-sample class means (centred by mu)
    means = sums / cf[None, :, None]  # class sizes are fixed by the stratified resampling
    tr_w = np.maximum(sq.sum(1) - np.einsum("rcd,rcd->r", sums, means), 0.0)
    gm = sums.sum(1) / N
    dev = means - gm[:, None, :]
    tr_b = np.einsum("c,rcd,rcd->r", cf, dev, dev)
    with np.errstate(invalid="ignore", divide="ignore"):
        fisher = np.where(tr_w > 0, tr_b / tr_w, np.where(tr_b > 0, np.inf, np.nan))
    # nc1: P_r = V_r S_r^-1 from the SVD of M_r = (mu_rc - mu_rG) / sqrt(C), small values dropped
    _, s, vt = np.linalg.svd(dev / math.sqrt(C), full_matrices=False)  # (B, C), (B, C, D)
    tol = max(C, Z.shape[1]) * np.finfo(np.float64).eps * s[:, :1]
    inv = np.where((s > tol) & (s[:, :1] > 0), 1.0 / np.where(s > 0, s, 1.0), 0.0)
    P = np.transpose(vt, (0, 2, 1)) * inv[:, None, :]  # (B, D, C)
    delta = means - full[None]  # (B, C, D)
    dP = np.einsum("bcd,bdk->bck", delta, P)
    Pm = np.transpose(P, (1, 0, 2)).reshape(Z.shape[1], B * C)
    dnorm = np.einsum("bcd,bcd->bc", delta, delta)
    dist = np.zeros((B, C))
    tot = np.zeros(B)
    rows = max(1, min(step, (32 << 20) // max(1, 8 * B * C)))
    for a in range(0, len(Z), rows):
        blk = M._chunk_f64(Z, a, a + rows, mu)
        yi = y_idx[a:a + rows]
        E = blk - full[yi]
        w = W[:, a:a + rows].astype(np.float64)
        proj = (E @ Pm).reshape(len(E), B, C) - np.transpose(dP[:, yi, :], (1, 0, 2))
        tot += np.einsum("bn,nbk,nbk->b", w, proj, proj)
        e2 = np.einsum("ij,ij->i", E, E)
        for c in np.unique(yi):
            m = yi == c
            ed = E[m] @ delta[:, c, :].T  # (n_c, B)
            d = np.sqrt(np.maximum(e2[m][:, None] - 2.0 * ed + dnorm[None, :, c], 0.0))
            dist[:, c] += np.einsum("bn,nb->b", w[:, m], d)
    within = np.mean(dist / cf[None], axis=1)
    between = np.array([pdist(m_).mean() for m_ in means]) if C > 1 else np.full(B, np.nan)
    cent = np.array([M._safe_div(b_, w_) for b_, w_ in zip(between, within)])
    nc = np.where(s[:, 0] > 0, tot / N / C, np.nan)
    return {"fisher_ratio": fisher, "centroid_ratio": cent, "nc1": nc}


def _silhouette(Z, y, W_of, seed, max_samples):
    from sklearn.metrics import silhouette_samples

    from .sampling import stratified_sample

    idx = stratified_sample(y, max_samples, seed=seed)
    Zs, ys = np.asarray(Z[idx], dtype=np.float64), y[idx]
    n_labels = len(np.unique(ys))
    if n_labels < 2 or n_labels > len(ys) - 1:
        return float("nan"), None
    s = silhouette_samples(Zs, ys, metric="euclidean")
    Ws = W_of(ys)
    return float(s.mean()), (Ws @ s) / Ws.sum(1)


def layer_report(Z_test, y_test, Z_train=None, y_train=None, *, W: np.ndarray, seed: int = 0,
                 silhouette_samples: int = 2000, knn_k: int = 5, max_train: int | None = 5000,
                 boot_seed: int = 0) -> dict:
    """Values, replicates, per-class values and per-sample predictions of one layer.

    Returns ``{"values": {measure: float} (as metrics.layer_measures), "reps": {measure: (B,)},
    "classes": (C,) labels, "per_class": {measure: (C,)}, "class_reps": {measure: (B, C)},
    "knn_pred": (N,) or None, "probe_pred": (N,) or None}``. ``W`` (B x N) are the stratified
    multiplicities of the held-out samples; the silhouette's subsample gets its own, seeded by
    ``boot_seed``."""
    from .uncertainty import bootstrap_counts

    Z_test, y_test, classes, y_idx, counts = M._validate(Z_test, y_test, name_Z="Z_test", name_y="y_test")
    if W.shape != (W.shape[0], len(y_test)):
        raise ValueError(f"W must have one column per held-out sample ({len(y_test)}); got shape {W.shape}.")
    st = M.class_distance_stats(Z_test, y_test, row_sums=True)
    values = {"intra": st["intra_mean"], "inter": st["inter_mean"], "ratio": st["ratio"],
              "centroid_ratio": M.centroid_ratio(Z_test, y_test),
              "fisher_ratio": M.fisher_trace_ratio(Z_test, y_test), "nc1": M.nc1(Z_test, y_test)}
    dist = _boot_distance(st, y_idx, counts, W)
    reps = {k: dist[k] for k in ("intra", "inter", "ratio")}
    reps.update(_boot_moments(Z_test, y_idx, counts, W))
    values["silhouette"], reps["silhouette"] = _silhouette(
        Z_test, y_test, lambda ys: bootstrap_counts(ys, len(W), seed=boot_seed + 7, dtype=np.float64),
        seed, silhouette_samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = {"intra": st["intra"], "inter": st["inter"], "ratio": st["inter"] / st["intra"]}
    class_reps = {"intra": dist["class_intra"], "inter": dist["class_inter"], "ratio": dist["class_ratio"]}
    preds = {"knn_pred": None, "probe_pred": None}
    Wf = W.astype(np.float64)
    onehot = (y_idx[:, None] == np.arange(len(classes))[None]).astype(np.float64)
    n_train = 0 if y_train is None else len(y_train) if max_train is None else min(len(y_train), max_train)
    k = max(1, min(knn_k, n_train))  # as metrics.layer_measures: k clipped to the training samples
    for name, fn, kw in (("knn_acc", M.knn_predict, {"k": k}), ("probe_acc", M.probe_predict, {})):
        pred = None
        if Z_train is not None:
            pred = fn(Z_train, y_train, Z_test, y_test, seed=seed, max_train=max_train, **kw)
        if pred is None:
            values[name] = float("nan")
            reps[name] = np.full(len(W), np.nan)
            per_class[name] = np.full(len(classes), np.nan)
            class_reps[name] = np.full((len(W), len(classes)), np.nan)
            continue
        ok = (np.asarray(pred) == y_test).astype(np.float64)
        values[name] = float(ok.mean())
        reps[name] = (Wf @ ok) / Wf.sum(1)
        per_class[name] = (onehot.T @ ok) / counts
        class_reps[name] = (Wf @ (onehot * ok[:, None])) / counts[None]
        preds[name.replace("_acc", "_pred")] = np.asarray(pred)
    if reps["silhouette"] is None:
        reps["silhouette"] = np.full(len(W), np.nan)
    return {"values": values, "reps": reps, "classes": classes, "counts": counts, "per_class": per_class,
            "class_reps": class_reps, **preds}
