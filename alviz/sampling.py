"""Seeded, class-stratified sampling of rows: which samples an extraction, a measure or a t-SNE
panel uses.

What this is: one pure-array function, used by ``alviz.extract`` (the held-out samples every run
shares), ``alviz.metrics`` (the silhouette's subsample) and ``alviz.embed`` / ``alviz.report``
(the t-SNE points). It sits below all of them so that none imports another for it.

What this is not: no data loading, no splitting into train and test (``alviz.data``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["stratified_sample"]


def stratified_sample(y, n: int, *, seed: int = 0) -> np.ndarray:
    """Seeded stratified sample of ``n`` row indices of ``y``, returned sorted.

    Each class gets a share proportional to its frequency (largest-remainder rounding, never
    more than the class holds). When ``n >= C`` (number of classes) every class gets at least
    one sample; when ``n < C`` the ``n`` largest classes (ties: smaller label first) get one
    each. When ``n >= len(y)`` all indices are returned. Same ``seed`` -> same indices.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of labels; got shape {y.shape}.")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive number of samples; got {n}.")
    total = len(y)
    if n >= total:
        return np.arange(total)
    classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    y_idx = y_idx.reshape(-1)
    n_classes = len(classes)
    quota = n * counts / total
    alloc = np.floor(quota).astype(np.int64)
    if n >= n_classes:
        alloc = np.maximum(alloc, 1)
        # the forced ones may overshoot: take back from the class that loses the smallest
        # fraction of its quota (in practice the largest classes)
        while alloc.sum() > n:
            after = np.where(alloc > 1, (alloc - 1 - quota) / quota, -np.inf)
            alloc[int(np.argmax(after))] -= 1
    # fill up by largest remainder among classes that still have unsampled points
    while alloc.sum() < n:
        rem = np.where(alloc < counts, quota - alloc, -np.inf)
        if n < n_classes:  # fewer slots than classes: prefer larger classes
            rem = np.where(alloc < counts, quota - alloc - alloc * n_classes, -np.inf)
        alloc[int(np.argmax(rem))] += 1
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(n_classes):
        if alloc[c] == 0:
            continue
        members = np.flatnonzero(y_idx == c)
        picked.append(rng.choice(members, size=int(alloc[c]), replace=False))
    return np.sort(np.concatenate(picked))
