"""Benchmark linear CKA (alviz.similarity) and the bootstrap (alviz.resample / alviz.similarity).

    python bench/bench_similarity.py [--quick] [--sizes 10000x1024,50000x1024,...] [--reps 3] [--json PATH]

Measures, side by side in one run, on float32 activations (two layers X, Y of N samples, D features):
1. unbiased linear CKA: alviz (feature space, one pass over row chunks, float32 chunk products for
   these float32 layers, float64 sums) against the reference, Kornblith et al.'s published
   ``feature_space_linear_cka(debiased=True)`` (numpy, the whole float64 centred copies at once;
   the same formula as thingsvision's and pytorch-cka's linear CKA). The two are interleaved (A, B, A, B, ...) ``--reps`` times; medians, min-max
   spread and the values (they must agree) are reported;
2. peak memory of each, in a fresh subprocess per size (tracemalloc peak of the call);
3. the bootstrap: 200 group-bootstrap replicates of CKA for one layer pair, and the 200-replicate
   stratified bootstrap of every separability measure of one layer (``resample.layer_report``)
   against ``metrics.layer_measures`` (the point values alone).

Sizes default to N = 10,000 and 50,000 with D = 1,024 and 4,096 (--quick: 2,000 x 256). Timings are
wall-clock on whatever else the machine runs: the load average is recorded next to them. Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alviz import similarity as S  # noqa: E402


def reference_cka(features_x, features_y):
    """Kornblith et al. (2019), feature_space_linear_cka(debiased=True), as published."""
    features_x = features_x - np.mean(features_x, 0, keepdims=True)
    features_y = features_y - np.mean(features_y, 0, keepdims=True)
    dot = np.linalg.norm(features_x.T.dot(features_y)) ** 2
    nx = np.linalg.norm(features_x.T.dot(features_x))
    ny = np.linalg.norm(features_y.T.dot(features_y))
    n = features_x.shape[0]
    rx = np.einsum("ij,ij->i", features_x, features_x)
    ry = np.einsum("ij,ij->i", features_y, features_y)
    sx, sy = np.sum(rx), np.sum(ry)

    def helper(xty, a, b, na, nb):
        return xty - n / (n - 2.) * a.dot(b) + na * nb / ((n - 1) * (n - 2))

    dot = helper(dot, rx, ry, sx, sy)
    nx = np.sqrt(helper(nx ** 2, rx, rx, sx, sx))
    ny = np.sqrt(helper(ny ** 2, ry, ry, sy, sy))
    return dot / (nx * ny)


def _data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    X = rng.standard_normal((n, d), dtype=np.float32)
    X[np.arange(n), y] += 3.0
    Y = (0.5 * X + rng.standard_normal((n, d), dtype=np.float32)).astype(np.float32)
    return X, Y, y


def _peak(which: str, n: int, d: int) -> float:
    """tracemalloc peak (MiB) of one CKA call in a fresh process."""
    code = (f"import sys, tracemalloc; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r});"
            f"import bench_similarity as B; X, Y, _ = B._data({n}, {d}); tracemalloc.start();"
            f"(B.S.cka(X, Y) if {which!r} == 'alviz' else B.reference_cka(X.astype('float64'), Y.astype('float64')));"
            f"print(tracemalloc.get_traced_memory()[1] / 2**20)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, sizes=None, reps: int = 3, boot_max_n: int = 10_000) -> dict:
    sizes = sizes or ([(2000, 256)] if quick else [(10000, 1024), (10000, 4096), (50000, 1024), (50000, 4096)])
    out = {"load_before": os.getloadavg()[0], "cka": [], "bootstrap": []}
    for n, d in sizes:
        X, Y, y = _data(n, d)
        t_a, t_r, va, vr = [], [], None, None
        for _ in range(reps):
            t = time.perf_counter()
            va = S.cka(X, Y)
            t_a.append(time.perf_counter() - t)
            t = time.perf_counter()
            vr = reference_cka(X.astype(np.float64), Y.astype(np.float64))  # the reference works in float64
            t_r.append(time.perf_counter() - t)
        row = {"n": n, "d": d, "alviz_s": statistics.median(t_a), "alviz_spread": [min(t_a), max(t_a)],
               "reference_s": statistics.median(t_r), "reference_spread": [min(t_r), max(t_r)],
               "alviz_value": va, "reference_value": float(vr), "abs_diff": abs(va - float(vr)),
               "load": os.getloadavg()[0]}
        try:
            row["alviz_peak_mib"] = _peak("alviz", n, d)
            row["reference_peak_mib"] = _peak("reference", n, d)
        except (subprocess.CalledProcessError, MemoryError) as e:  # noqa: PERF203
            row["peak_error"] = str(e)[:200]
        out["cka"].append(row)
        print(json.dumps(row), flush=True)
        if n > boot_max_n:  # the wide-layer bootstrap sums an N x N Gram in chunks: minutes at 50,000
            del X, Y
            continue
        # bootstrap: group bootstrap of CKA (200 replicates) for this layer pair
        a, b = S.LayerStats(X), S.LayerStats(Y)
        t = time.perf_counter()
        reps_ = S.group_bootstrap(a, b, y, n_boot=200, procrustes_boot=0)
        t_boot = time.perf_counter() - t
        out["bootstrap"].append({"n": n, "d": d, "what": "CKA, 200 group-bootstrap replicates (50 groups)",
                                 "seconds": t_boot, "interval": [float(np.nanquantile(reps_["cka"], 0.025)),
                                                                 float(np.nanquantile(reps_["cka"], 0.975))]})
        print(json.dumps(out["bootstrap"][-1]), flush=True)
        del X, Y, a, b
    # every separability measure of one layer with 200 replicates, against the point values alone
    from alviz.metrics import layer_measures
    from alviz.resample import layer_report
    from alviz.uncertainty import bootstrap_counts

    n, d = (1000, 64) if quick else (1000, 256)
    X, _, y = _data(n, d)
    Xtr, _, ytr = _data(2000, d, seed=1)
    W = bootstrap_counts(y, 200)
    t_plain, t_boot = [], []
    for _ in range(reps):
        t = time.perf_counter()
        layer_measures(X, y, Xtr, ytr)
        t_plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        layer_report(X, y, Xtr, ytr, W=W)
        t_boot.append(time.perf_counter() - t)
    out["bootstrap"].append({"n": n, "d": d, "what": "every measure of one layer: values only vs values + 200 "
                             "replicates + per class", "values_s": statistics.median(t_plain),
                             "values_spread": [min(t_plain), max(t_plain)], "with_bootstrap_s": statistics.median(t_boot),
                             "with_bootstrap_spread": [min(t_boot), max(t_boot)], "load": os.getloadavg()[0]})
    print(json.dumps(out["bootstrap"][-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default=None, help="comma-separated NxD, e.g. 10000x1024,50000x4096")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--boot-max-n", type=int, default=10_000, help="bootstrap only sizes with N up to this [10000]")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")] if a.sizes else None
    res = run(a.quick, sizes, a.reps, a.boot_max_n)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
