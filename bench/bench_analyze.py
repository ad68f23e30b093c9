"""Benchmark `alviz analyze` end to end, and openTSNE's thread count for the report's t-SNE.

    python bench/bench_analyze.py [--quick] [--exp PATH] [--json PATH]

Measures, in one run:
1. ``alviz analyze EXP`` as a user runs it (a subprocess of the CLI), cold: on a copy of the
   experiment's runs without their activation folders and into a fresh report folder, so
   extraction, measures, t-SNE and figures are all done; then warm: the same command again
   (activations, measures and t-SNE panels come from the caches). Wall-clock and CPU seconds
   (user + system of the child process: less sensitive to other load), plus the
   phase timings the report records in metrics.json (extract, measures and t-SNE side by side,
   figures).
2. openTSNE on 2,000 points (a stratified sample of a hidden layer's training activations;
   --quick: 200) with ``n_jobs=1`` and ``n_jobs=-1``, the choice behind ``--tsne-jobs 1``.

EXP: ``--exp PATH``, or else the default experiment is trained first into a temporary folder
(``alviz train --out TMP/exp``: MLP AL + BP on the embedded mnist5k, about 25 s on 2 idle
cores). ``--quick``: a blobs experiment (2 runs, 1 epoch) instead, 100 t-SNE points per panel; it
finishes in well under a minute and checks that the script works, not the targets.

Targets (issue 4): analyze on the default experiment under 90 s on a 2-core CPU; one t-SNE
panel of 2,000 points under 10 s. Timings are wall-clock on whatever else the machine runs: the
load average is recorded beside them. Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import loadavg, run_timed  # noqa: E402

ALVIZ = [sys.executable, "-m", "alviz"]


def _copy_without_activations(exp: Path, dest: Path) -> Path:
    shutil.copytree(exp, dest, ignore=shutil.ignore_patterns("activations", ".staging"))
    return dest


def _train(tmp: Path, quick: bool) -> tuple[Path, float]:
    exp = tmp / "exp"
    cmd = ALVIZ + ["train", "--out", str(exp), "--quiet"]
    if quick:
        cmd += ["--dataset", "blobs", "--epochs", "1", "--width", "16"]
    dt, _ = run_timed(cmd)
    return exp, dt


def bench_analyze(exp: Path, tmp: Path, quick: bool) -> dict:
    cold = _copy_without_activations(exp, tmp / "cold" / exp.name)
    out = tmp / "reports"
    args = ALVIZ + ["analyze", str(cold), "--out", str(out), "--device", "cpu"]
    if quick:
        args += ["--tsne-samples", "100"]
    res = {"command": " ".join(["alviz"] + args[len(ALVIZ):]), "load_before": loadavg()}
    res["cold_s"], res["cold_cpu_s"] = run_timed(args)
    meta = json.loads((out / cold.name / "metrics.json").read_text())
    res["cold_phases_s"] = meta.get("timing_s")
    res["n_runs"] = len(meta["runs"])
    res["tsne_points"] = (meta.get("tsne") or {}).get("n")
    res["warm_s"], res["warm_cpu_s"] = run_timed(args)
    res["warm_phases_s"] = json.loads((out / cold.name / "metrics.json").read_text()).get("timing_s")
    res["load_after"] = loadavg()
    return res


def bench_tsne(exp: Path, n: int) -> dict:
    from alviz.embed import stratified_sample, tsne
    from alviz.experiment import find_runs
    from alviz.extract import extract_run, load_activations

    run = find_runs(exp)[0]
    acts = load_activations(extract_run(run, split="train", max_samples=5000, log=lambda *a: None))
    name = next(e["name"] for e in acts.manifest["layers"] if e["role"] == "encoder")
    idx = stratified_sample(acts.labels, n, seed=0)
    Z = np.asarray(acts.layers[name][idx], dtype=np.float32)
    tsne(Z[:100], n_jobs=1, n_iter=10)  # warm-up: imports, numba/cython caches
    out = {"n": int(len(Z)), "d": int(Z.shape[1]), "layer": f"{run.name}/{name}", "load_before": loadavg()}
    for n_jobs in (1, -1):
        t, c = time.perf_counter(), time.process_time()
        tsne(Z, seed=0, n_jobs=n_jobs)
        out[f"seconds_n_jobs_{n_jobs}"] = round(time.perf_counter() - t, 2)
        out[f"cpu_seconds_n_jobs_{n_jobs}"] = round(time.process_time() - c, 2)
    out["load_after"] = loadavg()
    return out


def run(quick: bool = False, exp: str | os.PathLike | None = None) -> dict:
    """Run the benchmark; returns a JSON-able dict of timings (see the module docstring)."""
    res: dict = {"quick": quick, "python": platform.python_version(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="alviz-bench-") as d:
        tmp = Path(d)
        if exp is None:
            exp_path, res["train_s"] = _train(tmp, quick)
        else:
            exp_path = Path(exp)
        res["experiment"] = str(exp_path)
        res["analyze"] = bench_analyze(exp_path, tmp, quick)
        res["tsne"] = bench_tsne(tmp / "cold" / exp_path.name, 200 if quick else 2000)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="blobs experiment, small t-SNE (seconds)")
    ap.add_argument("--exp", default=None, help="experiment to analyse [train the default one]")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    res = run(a.quick, a.exp)
    an, ts = res["analyze"], res["tsne"]
    if "train_s" in res:
        print(f"train ({'blobs' if a.quick else 'default'} experiment): {res['train_s']:.1f} s")
    print(f"{an['command']}  ({an['n_runs']} runs, {an['tsne_points']} t-SNE points per panel)")
    print(f"  cold: {an['cold_s']:.1f} s wall, {an['cold_cpu_s']:.1f} s CPU; phases (wall) {an['cold_phases_s']}")
    print(f"  warm: {an['warm_s']:.1f} s wall, {an['warm_cpu_s']:.1f} s CPU; phases (wall) {an['warm_phases_s']}")
    print(f"  load average before {an['load_before']}, after {an['load_after']}")
    print(f"t-SNE {ts['n']} points x {ts['d']} ({ts['layer']}): n_jobs=1 {ts['seconds_n_jobs_1']:.1f} s "
          f"({ts['cpu_seconds_n_jobs_1']:.1f} s CPU), n_jobs=-1 {ts['seconds_n_jobs_-1']:.1f} s "
          f"({ts['cpu_seconds_n_jobs_-1']:.1f} s CPU)  (load {ts['load_before']} -> {ts['load_after']})")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
