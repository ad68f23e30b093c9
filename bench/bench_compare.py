"""alviz timed beside what a user would call instead (issue 19), one run each.

    python bench/bench_compare.py [--quick] [--json PATH] [--reps R]

1. extraction: the default AL MLP (2 components, n = 256, freshly initialised) on N synthetic
   28x28 images, its on-path layers (block1, block2, bridge2, decoder2, decoder1; what a plain
   forward pass computes), batch 256, float32, torch's default thread count. Each way runs in a
   fresh process (so its peak resident memory, VmHWM, is its own), repetitions alternating the
   order: `alviz` (`alviz.extract.extract_arrays`: hooks copying rows into preallocated .npy
   files); `hooks_npy` (forward hooks that `np.save` one file per layer per batch, concatenated
   and saved once at the end: thingsvision's low-memory mode); `torchvision_fx`
   (`torchvision.models.feature_extraction.create_feature_extractor` on the same nodes, outputs
   kept in lists and concatenated at the end); and `forward` (plain `model(x)` with nothing
   kept: the floor). Reported: the extraction's wall and CPU seconds (median, range) and the
   process's peak RSS above what it held before extracting, at N and 4N samples (flat memory:
   the same peak at both). --quick runs each way once in this process, without the 4N run.
2. separability and similarity: `alviz.metrics.silhouette` against
   `sklearn.metrics.silhouette_score` on the same points (alviz's subsample cap set above N, so
   both see every point); `alviz.metrics.class_distance_stats` (mean intra- and inter-class
   Euclidean distance) against the same means from `sklearn.metrics.pairwise_distances`
   (`handwritten_analysis.class_distances`); `alviz.similarity.cka` against Kornblith et al.'s
   feature-space debiased linear CKA written out in numpy (`reference_cka`): the values and the
   time ratio.
3. t-SNE: `alviz.embed.tsne` (validation, PCA to 50, openTSNE, copy) against openTSNE called
   directly on the same PCA-reduced points with the same settings (perplexity 30, 500
   iterations, PCA initialisation, seed 0, one thread): the embeddings must be identical, the
   overhead at most 5 %. Both end to end (alternating, noisy: seconds of t-SNE each) and as
   alviz's own work: the wall time of its call less the library calls inside it (`_own_work`).

Timings are wall clock with the process's CPU time beside it, on whatever else the machine runs:
the load average is recorded. The whole `analyze` against a hand-written script is
bench/bench_script.py's job. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import write_json  # noqa: E402
from bench.handwritten_analysis import class_distances  # noqa: E402

WAYS = ("forward", "alviz", "hooks_npy", "torchvision_fx")
LAYERS = ("block1", "block2", "bridge2", "decoder2", "decoder1")  # the AL MLP's on-path layers


# --------------------------------------------------------------------------- 1: extraction (worker side)

def _rss_hwm_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc/self/status."""
    cur = hwm = float("nan")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return cur, hwm


def _model():
    import torch

    from alviz.config import TrainConfig
    from alviz.models import create_model, resolve_shape_defaults

    torch.manual_seed(0)
    m = create_model(resolve_shape_defaults(TrainConfig(method="al", device="cpu")), (1, 28, 28), 10)
    return m.eval()


def _modules(model) -> dict:
    from alviz.extract import layer_catalogue

    return {e.name: e.module for e in layer_catalogue(model) if e.name in LAYERS}


def _way_forward(model, x, bs, out: Path):
    import torch

    with torch.no_grad():
        for i in range(0, len(x), bs):
            model(x[i:i + bs])


def _way_alviz(model, x, bs, out: Path):
    from alviz.extract import extract_arrays

    extract_arrays(model, x, np.arange(len(x)), list(LAYERS), out, batch_size=bs, device="cpu")


def _way_hooks_npy(model, x, bs, out: Path):
    import torch

    mods = _modules(model)
    batch_no = [0]
    parts = out / "parts"
    parts.mkdir()

    def hook(name):
        def f(_m, _i, o):
            np.save(parts / f"{name}_{batch_no[0]:06d}.npy", o.detach().flatten(1).numpy())
        return f

    handles = [mods[n].register_forward_hook(hook(n)) for n in LAYERS]
    try:
        with torch.no_grad():
            for i in range(0, len(x), bs):
                model(x[i:i + bs])
                batch_no[0] += 1
    finally:
        for h in handles:
            h.remove()
    for n in LAYERS:
        files = sorted(parts.glob(f"{n}_*.npy"))
        np.save(out / f"{n}.npy", np.concatenate([np.load(f) for f in files]))
    shutil.rmtree(parts)


def _way_torchvision_fx(model, x, bs, out: Path):
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    # node names of the same modules in torch.fx's graph of model.forward
    nodes = {"blocks.0": "block1", "blocks.1": "block2", "bridges.1": "bridge2", "decoders.1": "decoder2",
             "decoders.0": "decoder1"}
    fx = create_feature_extractor(model, return_nodes=nodes)
    kept = {n: [] for n in LAYERS}
    with torch.no_grad():
        for i in range(0, len(x), bs):
            for n, t in fx(x[i:i + bs]).items():
                kept[n].append(t.flatten(1))
    for n in LAYERS:
        np.save(out / f"{n}.npy", torch.cat(kept[n]).numpy())


def worker(way: str, n: int, bs: int) -> dict:
    import torch

    import alviz.extract  # noqa: F401 - imports outside the timing (a user's session has them)
    import torchvision.models.feature_extraction  # noqa: F401

    model = _model()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, 1, 28, 28), generator=g)
    out = Path(tempfile.mkdtemp(prefix="alviz-cmp-"))
    try:
        _way_forward(model, x[:bs], bs, out)  # warm-up: the first batch allocates
        rss0, _ = _rss_hwm_mb()
        c0, w0 = time.process_time(), time.perf_counter()
        globals()[f"_way_{way}"](model, x, bs, out)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        _, hwm = _rss_hwm_mb()
        check = {}
        if way != "forward":
            check = {k: float(np.load(out / f"{k}.npy", mmap_mode="r")[:, :4].astype(np.float64).sum())
                     for k in LAYERS}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"way": way, "n": n, "wall_s": wall, "cpu_s": cpu, "peak_above_start_mb": hwm - rss0,
            "peak_rss_mb": hwm, "checksums": check, "threads": torch.get_num_threads()}


def _spawn(way: str, n: int, bs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, __file__, "--worker", way, str(n), str(bs)], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"worker {way} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_extraction(quick: bool, reps: int) -> dict:
    n = 512 if quick else 10_000
    bs = 256
    # --quick: every way in this process, once, no 4N run (checks the code, not the memory figures)
    spawn = worker if quick else _spawn
    runs = {w: [] for w in WAYS}
    for r in range(reps):
        for w in (WAYS if r % 2 == 0 else WAYS[::-1]):
            runs[w].append(spawn(w, n, bs))
    big = {w: runs[w][0] for w in WAYS} if quick else {w: _spawn(w, 4 * n, bs) for w in WAYS}
    out = {"n": n, "n_big": 4 * n, "batch": bs, "layers": list(LAYERS), "reps": reps, "ways": {}}
    ref = runs["alviz"][0]["checksums"]
    fwd = statistics.median(r["cpu_s"] for r in runs["forward"])
    fwd_w = statistics.median(r["wall_s"] for r in runs["forward"])
    for w, rs in runs.items():
        wall = [r["wall_s"] for r in rs]
        cpu = [r["cpu_s"] for r in rs]
        out["ways"][w] = {
            "wall_s": statistics.median(wall), "wall_min_s": min(wall), "wall_max_s": max(wall),
            "cpu_s": statistics.median(cpu), "cpu_min_s": min(cpu), "cpu_max_s": max(cpu),
            "vs_forward_cpu": statistics.median(cpu) / fwd, "vs_forward_wall": statistics.median(wall) / fwd_w,
            "peak_above_start_mb": statistics.median(r["peak_above_start_mb"] for r in rs),
            "peak_above_start_mb_big": big[w]["peak_above_start_mb"],
            "same_values_as_alviz": (all(abs(rs[0]["checksums"][k] - ref[k]) <= 1e-6 * max(1.0, abs(ref[k]))
                                         for k in ref) if w != "forward" else None),
            "threads": rs[0]["threads"]}
    return out


# --------------------------------------------------------------------------- 2: separability measures

def _timed(fn, reps: int) -> tuple[float, list[float], object]:
    val = fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        val = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts, val


def _points(n: int, d: int, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, d)) * 2
    Z = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    return Z, y


def bench_measures(quick: bool, reps: int) -> dict:
    from sklearn.metrics import silhouette_score

    from alviz.metrics import class_distance_stats, silhouette
    from alviz.similarity import cka

    n, d = (400, 32) if quick else (2000, 256)
    Z, y = _points(n, d)
    out = {"n": n, "d": d, "reps": reps}

    t_a, ts_a, v_a = _timed(lambda: silhouette(Z, y, max_samples=n + 1), reps)
    t_s, ts_s, v_s = _timed(lambda: silhouette_score(Z.astype(np.float64), y, metric="euclidean"), reps)
    out["silhouette"] = {"alviz_s": t_a, "sklearn_s": t_s, "ratio": t_a / t_s, "alviz": v_a, "sklearn": float(v_s),
                         "abs_diff": abs(v_a - float(v_s)), "alviz_all_s": ts_a, "sklearn_all_s": ts_s}

    t_a, ts_a, st = _timed(lambda: class_distance_stats(Z, y), reps)
    t_s, ts_s, (intra, inter) = _timed(lambda: class_distances(Z, y), reps)
    a_intra, a_inter = _intra_inter(st)
    out["class_distances"] = {"alviz_s": t_a, "sklearn_s": t_s, "ratio": t_a / t_s,
                              "alviz": [a_intra, a_inter], "sklearn": [intra, inter],
                              "max_rel_diff": max(abs(a_intra - intra) / intra, abs(a_inter - inter) / inter),
                              "alviz_all_s": ts_a, "sklearn_all_s": ts_s}

    # CKA between a layer and a noisy linear map of it (a value well inside (0, 1))
    rng = np.random.default_rng(2)
    Y = (np.tanh(Z @ rng.normal(size=(d, d // 2)).astype(np.float32) / np.sqrt(d))
         + 0.5 * rng.normal(size=(n, d // 2))).astype(np.float32)
    t_a, ts_a, v_a = _timed(lambda: cka(Z, Y), reps)
    t_s, ts_s, v_s = _timed(lambda: reference_cka(Z.astype(np.float64), Y.astype(np.float64)), reps)
    out["cka"] = {"alviz_s": t_a, "reference_s": t_s, "ratio": t_a / t_s, "alviz": float(v_a), "reference": float(v_s),
                  "abs_diff": abs(float(v_a) - float(v_s)), "alviz_all_s": ts_a, "reference_all_s": ts_s,
                  "d_y": int(Y.shape[1])}
    return out


def reference_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA with the debiased HSIC, in feature space, as Kornblith et al. (2019) give it
    (their notebook's ``feature_space_linear_cka(debiased=True)``), written out in numpy: centre
    both, HSIC_u(A, B) = ||A^T B||_F^2 - n/(n-2) r_A.r_B + (sum r_A)(sum r_B)/((n-1)(n-2)) with
    r the rows' squared norms; CKA = HSIC_u(X, Y) / sqrt(HSIC_u(X, X) HSIC_u(Y, Y))."""
    X = X - X.mean(0, keepdims=True)
    Y = Y - Y.mean(0, keepdims=True)
    n = len(X)

    def hsic(A, B):
        ra, rb = np.einsum("ij,ij->i", A, A), np.einsum("ij,ij->i", B, B)
        return np.linalg.norm(A.T @ B) ** 2 - n / (n - 2.0) * ra.dot(rb) + ra.sum() * rb.sum() / ((n - 1) * (n - 2))

    return float(hsic(X, Y) / np.sqrt(hsic(X, X) * hsic(Y, Y)))


def _intra_inter(st) -> tuple[float, float]:
    """Mean intra- and inter-class distance from class_distance_stats' result (dict or object)."""
    get = st.get if isinstance(st, dict) else (lambda k: getattr(st, k))
    return float(get("intra_mean")), float(get("inter_mean"))


# --------------------------------------------------------------------------- 3: t-SNE

def bench_tsne(quick: bool, reps: int) -> dict:
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    from alviz.embed import tsne

    n, d = (150, 64) if quick else (2000, 256)
    iters = 100 if quick else 500
    Z, _ = _points(n, d, seed=1)

    def direct():
        X = PCA(n_components=50, random_state=0).fit_transform(Z.astype(np.float64))
        return np.asarray(TSNE(n_components=2, perplexity=30.0, n_iter=iters, initialization="pca", random_state=0,
                               n_jobs=1).fit(np.ascontiguousarray(X)))

    def ours():
        return tsne(Z, perplexity=30.0, seed=0, n_jobs=1, n_iter=iters)

    a_ts, d_ts = [], []
    ya = yd = None
    for r in range(reps + 1):  # repetition 0: warm-up; order alternates
        for name in (("alviz", "direct") if r % 2 == 0 else ("direct", "alviz")):
            t = time.perf_counter()
            if name == "alviz":
                ya = ours()
            else:
                yd = direct()
            if r:
                (a_ts if name == "alviz" else d_ts).append(time.perf_counter() - t)
    ta, td = statistics.median(a_ts), statistics.median(d_ts)
    ratios = [a / b for a, b in zip(a_ts, d_ts)]
    return {"n": n, "d": d, "n_iter": iters, "reps": reps, "alviz_s": ta, "opentsne_s": td, "overhead": ta / td - 1.0,
            "overhead_per_rep": [x - 1.0 for x in ratios], "identical": bool(np.array_equal(ya, yd)),
            "alviz_all_s": a_ts, "opentsne_all_s": d_ts, "own_work": _own_work(ours, reps)}


def _own_work(fn, reps: int) -> dict:
    """alviz's own work in `fn` (an alviz.embed.tsne call): its wall time less the time spent in
    the two library calls it shares with the direct way (sklearn's PCA.fit_transform and
    openTSNE's TSNE.fit, timed by wrapping them), as a fraction of those calls; medians of
    `reps` calls. Unlike the end-to-end ratio this does not depend on the machine's noise in the
    seconds of t-SNE both ways spend alike."""
    from openTSNE import TSNE
    from sklearn.decomposition import PCA

    inner, depth = [0.0], [0]
    originals = {(TSNE, "fit"): TSNE.fit, (PCA, "fit_transform"): PCA.fit_transform}

    def timed(f):  # only the outermost call counts (openTSNE's PCA initialisation calls sklearn's PCA)
        def g(*a, **k):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                depth[0] -= 1
                if not depth[0]:
                    inner[0] += time.perf_counter() - t
        return g

    own, frac = [], []
    try:
        for (cls, name), f in originals.items():
            setattr(cls, name, timed(f))
        for _ in range(reps):
            inner[0] = 0.0
            t = time.perf_counter()
            fn()
            total = time.perf_counter() - t
            own.append(total - inner[0])
            frac.append((total - inner[0]) / inner[0])
    finally:
        for (cls, name), f in originals.items():
            setattr(cls, name, f)
    return {"own_s": statistics.median(own), "fraction": statistics.median(frac), "fraction_max": max(frac),
            "reps": reps}


# --------------------------------------------------------------------------- entry points

def run(quick: bool = False, reps: int | None = None) -> dict:
    reps = reps or (2 if quick else 5)
    out = {"quick": quick, "reps": reps, "loadavg_start": list(os.getloadavg())}
    out["extraction"] = bench_extraction(quick, 1 if quick else reps)
    out["measures"] = bench_measures(quick, reps)
    out["tsne"] = bench_tsne(quick, max(1, reps - 2) if not quick else 1)
    out["loadavg_end"] = list(os.getloadavg())
    return out


def table(res: dict) -> str:
    e = res["extraction"]
    lines = [f"Extraction of the default AL MLP's on-path layers, {e['n']} samples (and {e['n_big']}), batch "
             f"{e['batch']}, torch's default threads ({e['ways']['alviz']['threads']}), each way in a fresh process, "
             f"medians [range] of {e['reps']} alternating repetitions:", "",
             "| way | wall s | CPU s | CPU / forward | same values | peak RSS above start, MB: N / 4N |",
             "|---|---:|---:|---:|---|---:|"]
    for w, v in e["ways"].items():
        same = {None: "-", True: "yes", False: "NO"}[v["same_values_as_alviz"]]
        lines.append(f"| {w} | {v['wall_s']:.3f} [{v['wall_min_s']:.3f}-{v['wall_max_s']:.3f}] | "
                     f"{v['cpu_s']:.3f} [{v['cpu_min_s']:.3f}-{v['cpu_max_s']:.3f}] | {v['vs_forward_cpu']:.2f} | "
                     f"{same} | {v['peak_above_start_mb']:.0f} / {v['peak_above_start_mb_big']:.0f} |")
    m = res["measures"]
    s, c = m["silhouette"], m["class_distances"]
    lines += ["", f"Measures on {m['n']} points x {m['d']} dims (10 classes), medians of {m['reps']}:", "",
              "| measure | alviz s | library s | alviz / library | values (alviz; library) |", "|---|---:|---:|---:|---|",
              f"| silhouette vs sklearn silhouette_score | {s['alviz_s']:.3f} | {s['sklearn_s']:.3f} | {s['ratio']:.2f} | "
              f"{s['alviz']:.6f}; {s['sklearn']:.6f} (diff {s['abs_diff']:.1e}) |",
              f"| mean intra/inter-class distance vs sklearn pairwise_distances | {c['alviz_s']:.3f} | {c['sklearn_s']:.3f} "
              f"| {c['ratio']:.2f} | {c['alviz'][0]:.4f}/{c['alviz'][1]:.4f}; {c['sklearn'][0]:.4f}/{c['sklearn'][1]:.4f} "
              f"(max rel diff {c['max_rel_diff']:.1e}) |"]
    k = m.get("cka")
    if k:
        lines.append(f"| linear CKA (debiased) vs Kornblith et al.'s feature-space formula in numpy, against a "
                     f"{k['d_y']}-wide layer | {k['alviz_s']:.3f} | {k['reference_s']:.3f} | {k['ratio']:.2f} | "
                     f"{k['alviz']:.6f}; {k['reference']:.6f} (diff {k['abs_diff']:.1e}) |")
    t = res["tsne"]
    lines += ["", f"t-SNE of {t['n']} points x {t['d']} dims (PCA to 50, perplexity 30, {t['n_iter']} iterations, 1 thread): "
              f"alviz.embed.tsne {t['alviz_s']:.2f} s, openTSNE directly {t['opentsne_s']:.2f} s, overhead "
              f"{t['overhead']:+.1%} (per repetition: {', '.join(f'{x:+.1%}' for x in t['overhead_per_rep'])}); "
              f"embeddings identical: {'yes' if t['identical'] else 'NO'}. alviz's own work around the library "
              f"calls: {t['own_work']['own_s'] * 1e3:.1f} ms, {t['own_work']['fraction']:.2%} of them (at most "
              f"{t['own_work']['fraction_max']:.2%} in {t['own_work']['reps']} calls).",
              f"Load average {res['loadavg_start'][0]:.1f} at the start, {res['loadavg_end'][0]:.1f} at the end."]
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repetitions")
    p.add_argument("--reps", type=int, default=None, help="repetitions [5; --quick 2]")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    res = run(quick=args.quick, reps=args.reps)
    print(table(res))
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
