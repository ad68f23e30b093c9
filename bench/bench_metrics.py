"""Benchmark alviz.metrics.class_distance_stats and alviz.embed.tsne.

    python bench/bench_metrics.py [--quick] [--json PATH]

Measures, side by side in one run:
1. time of ``class_distance_stats`` (float64 and float32 tile precision) against the per-class
   sklearn ``pairwise_distances`` approach (intra: distances within each class; inter: class
   vs rest), on float32 activations (N=10,000, D=1,024, 10 classes; --quick: 3,000 x 256),
   medians of >= 3 repetitions after one warm-up, and their agreement;
2. peak memory of ``class_distance_stats`` in a fresh subprocess per size: tracemalloc peak
   of the allocations made during the call, and the process's peak RSS (VmHWM, input and
   interpreter included), at N = 5,000 / 10,000 / 20,000 with D = 1,024 and at N = 20,000,
   D = 4,096 (--quick: 5,000 x 1,024 only);
3. time of ``tsne`` on 2,000 points of D = 256 (--quick: 500), with 1 thread and all threads.

Timings are wall-clock on whatever else the machine is running: the load average is recorded
next to them. Not a test: nothing here asserts except the agreement check, which is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import write_json  # noqa: E402

from alviz.embed import tsne  # noqa: E402
from alviz.metrics import class_distance_stats  # noqa: E402


def sklearn_class_distances(Z, y):
    """Reference: per-class sklearn pairwise_distances (within class, and class vs rest)."""
    from sklearn.metrics import pairwise_distances

    classes = np.unique(y)
    intra, inter = [], []
    for c in classes:
        m = y == c
        Zc, Zr = Z[m], Z[~m]
        n = len(Zc)
        intra.append(pairwise_distances(Zc).sum(dtype=np.float64) / (n * (n - 1)))
        inter.append(pairwise_distances(Zc, Zr).sum(dtype=np.float64) / (n * len(Zr)))
    return np.array(intra), np.array(inter)


def _timeit(fn, reps):
    fn()  # warm-up
    times = []
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def _data(n, d, n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    centers = rng.normal(size=(n_classes, d)).astype(np.float32)
    Z = rng.standard_normal((n, d), dtype=np.float32)
    Z += 0.5 * centers[y]
    return Z, y


_CHILD = r"""
import json, sys, time, tracemalloc
sys.path.insert(0, {root!r})
import numpy as np
from alviz.metrics import class_distance_stats

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
n, d = {n}, {d}
rng = np.random.default_rng(0)
y = rng.integers(0, 10, n)
Z = rng.standard_normal((n, d), dtype=np.float32)
rss_before = status("VmRSS:")
tracemalloc.start()
t = time.perf_counter()
st = class_distance_stats(Z, y)
elapsed = time.perf_counter() - t
_, traced_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps(dict(n=n, d=d, seconds=elapsed, input_bytes=Z.nbytes, rss_before=rss_before,
                      traced_peak=traced_peak, peak_rss=status("VmHWM:"), ratio=st["ratio"])))
"""


def memory_run(n, d):
    code = _CHILD.format(root=str(ROOT), n=n, d=d)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    """Run the benchmark; return a JSON-serialisable dict of the figures."""
    mb = 2.0**20
    out: dict = {
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "loadavg_start": os.getloadavg()},
    }

    # 1. speed vs sklearn ------------------------------------------------------------------
    n, d = (3000, 256) if quick else (10_000, 1024)
    reps = 3
    Z, y = _data(n, d)
    t_ours, all_ours, st = _timeit(lambda: class_distance_stats(Z, y), reps)
    t_o32, all_o32, st32 = _timeit(lambda: class_distance_stats(Z, y, precision="float32"),
                                   reps)
    t_sk, all_sk, (sk_intra, sk_inter) = _timeit(lambda: sklearn_class_distances(Z, y), reps)
    Z64 = Z.astype(np.float64)
    t_sk64, all_sk64, _ = _timeit(lambda: sklearn_class_distances(Z64, y), reps)
    Z64 = None  # free it (a del would hide the name from the lambdas above)
    rel = lambda a, b: float(np.max(np.abs(a - b) / np.abs(b)))  # noqa: E731
    out["speed"] = {
        "n": n, "d": d, "classes": 10, "reps": reps, "input_dtype": "float32",
        "alviz_float64_s": t_ours, "alviz_float32_s": t_o32,
        "sklearn_float32_input_s": t_sk, "sklearn_float64_input_s": t_sk64,
        "all_times_s": {"alviz_float64": all_ours, "alviz_float32": all_o32,
                        "sklearn_float32_input": all_sk, "sklearn_float64_input": all_sk64},
        "speedup_vs_sklearn_float32_input": t_sk / t_ours,
        "speedup_vs_sklearn_float64_input": t_sk64 / t_ours,
        "max_rel_diff_intra": rel(st["intra"], sk_intra),
        "max_rel_diff_inter": rel(st["inter"], sk_inter),
        "max_rel_diff_intra_float32_precision": rel(st32["intra"], sk_intra),
        "agree_1e-6": bool(rel(st["intra"], sk_intra) < 1e-6
                           and rel(st["inter"], sk_inter) < 1e-6),
    }
    Z = None  # free it

    # 2. memory (fresh subprocess per size) ------------------------------------------------
    sizes = [(5000, 1024)] if quick else [(5000, 1024), (10_000, 1024), (20_000, 1024),
                                          (20_000, 4096)]
    out["memory"] = []
    for n_m, d_m in sizes:
        r = memory_run(n_m, d_m)
        r.update(input_mb=r["input_bytes"] / mb, traced_peak_mb=r["traced_peak"] / mb,
                 peak_rss_mb=r["peak_rss"] / mb, rss_before_mb=r["rss_before"] / mb,
                 n_by_n_float64_mb=n_m * n_m * 8 / mb)
        out["memory"].append(r)

    # 3. t-SNE ------------------------------------------------------------------------------
    n_t = 500 if quick else 2000
    Zt, _ = _data(n_t, 256, seed=1)
    tsne(Zt[:100], n_jobs=1, n_iter=10)  # warm-up (imports)
    out["tsne"] = {"n": n_t, "d": 256}
    for n_jobs in (1, -1):
        t = time.perf_counter()
        emb = tsne(Zt, seed=0, n_jobs=n_jobs)
        out["tsne"][f"seconds_n_jobs_{n_jobs}"] = time.perf_counter() - t
        out["tsne"][f"finite_n_jobs_{n_jobs}"] = bool(np.isfinite(emb).all())
    out["machine"]["loadavg_end"] = os.getloadavg()
    return out


def print_table(res: dict) -> None:
    s = res["speed"]
    print(f"class_distance_stats vs sklearn, N={s['n']}, D={s['d']}, {s['classes']} classes, "
          f"float32 input, median of {s['reps']} after warm-up")
    for key, label in [("alviz_float64_s", "alviz (float64 tiles, default)"),
                       ("alviz_float32_s", "alviz (float32 tiles)"),
                       ("sklearn_float32_input_s", "sklearn pairwise_distances (float32 in)"),
                       ("sklearn_float64_input_s", "sklearn pairwise_distances (float64 in)")]:
        print(f"  {label:<42s} {s[key]:8.2f} s")
    print(f"  speedup vs sklearn: {s['speedup_vs_sklearn_float32_input']:.2f}x (float32 in), "
          f"{s['speedup_vs_sklearn_float64_input']:.2f}x (float64 in)")
    print(f"  max rel diff vs sklearn: intra {s['max_rel_diff_intra']:.1e}, inter "
          f"{s['max_rel_diff_inter']:.1e} (float32 tiles: intra "
          f"{s['max_rel_diff_intra_float32_precision']:.1e})")
    print("\npeak memory of class_distance_stats (float32 input, fresh process)")
    print(f"  {'N':>6s} {'D':>5s} {'input MB':>9s} {'call peak MB':>13s} {'peak RSS MB':>12s} "
          f"{'NxN f64 MB':>11s} {'time s':>7s}")
    for r in res["memory"]:
        print(f"  {r['n']:>6d} {r['d']:>5d} {r['input_mb']:>9.0f} {r['traced_peak_mb']:>13.0f} "
              f"{r['peak_rss_mb']:>12.0f} {r['n_by_n_float64_mb']:>11.0f} {r['seconds']:>7.1f}")
    t = res["tsne"]
    print(f"\ntsne, N={t['n']}, D={t['d']} (PCA to 50): {t['seconds_n_jobs_1']:.1f} s with "
          f"n_jobs=1, {t['seconds_n_jobs_-1']:.1f} s with n_jobs=-1")
    m = res["machine"]
    print(f"\n{m['cpus']} CPUs; load average at start {m['loadavg_start'][0]:.2f}, "
          f"at end {m['loadavg_end'][0]:.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    res = run(quick=args.quick)
    print_table(res)
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
