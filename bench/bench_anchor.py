"""Issue 19 on one host and in one timing window: alviz's AL epoch against the authors' TensorFlow
code (bench/tf_anchor.py, run in its own Python environment), interleaved epoch by epoch.

    python bench/bench_anchor.py --tf-python /work/tfvenv/bin/python [--model mlp|cnn]
        [--threads 1,2] [--batch 32,256] [--reps 3] [--ways tf,alviz,alviz_exact] [--json PATH]

Data: mnist5k's training split as alviz makes it (4,000 images, alviz.data's seeded stratified
split); alviz trains on it preprocessed as `alviz train` does, in the authors' feed order
(`shuffle: false`: alviz.data.fixed_order), with the loop `alviz train` runs (with 2+ threads the
component threads of alviz.concurrent, else `alviz.train.train_epoch`); TensorFlow gets the same 4,000
raw images in the same order (tf_anchor.py scales and centres them as the authors do). The alviz ways
and their models come from bench/bench_step.py (`ALVIZ_WAYS`, `make_alviz`); `WAYS` adds the
sequential loop of one process (`alviz_seq`, `alviz_exact_seq`: `concurrent: false`).

One TensorFlow worker process per thread count (`tf_anchor.py --serve`) holds its graph and Session;
alviz runs in this process with `torch.set_num_threads`. Each repetition runs, for every thread
count and batch size, one epoch of every way in turn (tf, [tf_onednn,] alviz, alviz_exact, ...); repetition 0 is
a warm-up. `--images N` times only the batches of each epoch's first N images and scales them to
the whole epoch's steps (for the CNN, whose whole epochs would not fit a timing window). Timings
are the wall clock of epochs (CPU time beside it); medians and ranges over repetitions, and the
ratio of each alviz way to TF repetition by repetition. Optional (needs a TensorFlow environment);
the test suite does not run it. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import loadavg, spread, write_json  # noqa: E402
from bench.bench_step import ALVIZ_WAYS, MODELS, make_alviz  # noqa: E402

from alviz.data import fixed_order, load_dataset, load_raw  # noqa: E402
from alviz import concurrent  # noqa: E402
from alviz.train import train_epoch  # noqa: E402


# TensorFlow's ways: "tf" as installed (on a CPU without AVX-512, such as this VM's, TF 2.21 leaves its
# oneDNN kernels off and multiplies with Eigen), "tf_onednn" with oneDNN forced on
TF_WAYS = {"tf": {}, "tf_onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}}


class TFWorker:
    """bench/tf_anchor.py --serve in the TensorFlow environment: one epoch per request."""

    def __init__(self, python: str, model: str, threads: int, data: Path, env: dict | None = None):
        cmd = [python, str(ROOT / "bench" / "tf_anchor.py"), "--serve", "--model", model,
               "--threads", str(threads), "--data", str(data)]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env={**os.environ, **(env or {})})
        self.info = self._read()

    def _read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit(f"the TensorFlow worker ended (exit {self.p.wait()}); see its stderr above")
        return json.loads(line)

    def epoch(self, batch: int, steps: int = 0) -> dict:
        self.p.stdin.write(f"{batch} {steps or -1}\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


# alviz's ways: bench_step's, whose `alviz` is `alviz train`'s default (with 2+ threads the components train
# side by side in threads, alviz.concurrent), and the sequential loop of one process as it was before that
WAYS = {**ALVIZ_WAYS, "alviz_seq": {"concurrent": False}, "alviz_exact_seq": {"fused_adam": False, "concurrent": False}}


class AlvizWay:
    """One alviz way (of WAYS) training the case's model on the split with the loop `alviz train` picks
    for it at the current thread count (alviz.concurrent's threads where eligible, else train_epoch)."""

    def __init__(self, model: str, options: dict, x, y):
        self.cfg, self.model, self.opt = make_alviz(*MODELS[model], 32, **options)
        self.shape = tuple(x.shape[1:])
        self.x, self.y, self.perm = x, y, fixed_order(y)  # `shuffle: false`: the same order every epoch
        self.workers = {}

    def _loop(self, batch: int):
        t = torch.get_num_threads()
        if not concurrent.eligible(self.model, self.cfg, torch.device("cpu"), t):
            return lambda perm: train_epoch(self.model, self.opt, self.x, self.y, perm, batch_size=batch)
        if t not in self.workers:
            self.workers[t] = concurrent.ComponentThreads(self.model, self.opt, self.shape, batch, t)
        return lambda perm: self.workers[t].train_epoch(self.x, self.y, perm, batch_size=batch)

    def epoch(self, batch: int, steps: int = 0) -> dict:
        perm = self.perm[:steps * batch] if steps else self.perm
        loop = self._loop(batch)
        t0, c0 = time.perf_counter(), time.process_time()
        st = loop(perm)
        return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                "images": st.n, "loss": st.sums[-1] / max(st.n, 1)}


def run(tf_python: str, model: str, threads: list[int], batches: list[int], reps: int, ways: list[str],
        images: int = 0, echo=print) -> dict:
    """`images` > 0: time only the batches holding the first `images` images of each epoch and scale
    the times by the epoch's steps over those steps."""
    data = load_dataset("mnist5k")
    raw = load_raw("mnist5k")
    out = {"model": model, "threads": threads, "batches": batches, "reps": reps, "ways": ways, "images": images,
           "torch": torch.__version__, "loadavg_start": loadavg(), "start_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "timer": "wall clock of whole epochs, interleaved; repetition 0 a warm-up", "rows": []}
    old = torch.get_num_threads()
    workers: dict[tuple[str, int], TFWorker] = {}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "mnist5k_train.npz"
        order = fixed_order(data.y_train).numpy()  # alviz's feed order, the same for TensorFlow
        np.savez(npz, x=raw.x_train[order], y=raw.y_train[order])
        try:
            for w in ways:
                if w in TF_WAYS:
                    for t in threads:
                        workers[(w, t)] = TFWorker(tf_python, model, t, npz, TF_WAYS[w])
                    out[w] = workers[(w, threads[0])].info
            alviz = {w: AlvizWay(model, WAYS[w], data.x_train, data.y_train) for w in ways if w in WAYS}
            res = {(t, b, w): [] for t in threads for b in batches for w in ways}
            for rep in range(reps + 1):
                for t in threads:
                    torch.set_num_threads(t)
                    for b in batches:
                        for w in ways:
                            n_ep = math.ceil(len(data.y_train) / b)
                            steps = min(n_ep, math.ceil(images / b)) if images else 0
                            e = workers[(w, t)].epoch(b, steps) if w in TF_WAYS else alviz[w].epoch(b, steps)
                            if steps:  # scaled to the steps of a whole epoch
                                scale = n_ep / steps
                                e = {**e, "measured_wall_s": e["wall_s"], "wall_s": e["wall_s"] * scale,
                                     "cpu_s": e["cpu_s"] * scale}
                            echo(json.dumps({"rep": rep, "threads": t, "batch": b, "way": w, **e}))
                            if rep:
                                res[(t, b, w)].append(e)
        finally:
            for wk in workers.values():
                wk.close()
            torch.set_num_threads(old)
    for t in threads:
        for b in batches:
            row = {"threads": t, "batch": b}
            for w in ways:
                row[w] = {"wall_s": spread([e["wall_s"] for e in res[(t, b, w)]]),
                          "cpu_s": spread([e["cpu_s"] for e in res[(t, b, w)]])}
                for tw in TF_WAYS:
                    if w not in TF_WAYS and tw in ways:
                        row[w][f"vs_{tw}"] = spread([a["wall_s"] / f["wall_s"]
                                                       for a, f in zip(res[(t, b, w)], res[(t, b, tw)])])
            out["rows"].append(row)
    out["loadavg_end"] = loadavg()
    return out


def table(res: dict) -> str:
    ways = res["ways"]
    part = f" (the batches of its first {res['images']} images, scaled)" if res.get("images") else ""
    lines = [f"{res['model']}: s per epoch of 4,000 images{part}, wall clock, median [range] over {res['reps']} interleaved "
             f"repetitions (after a warm-up); started {res['start_utc']} UTC, load average {res['loadavg_start']} -> "
             f"{res['loadavg_end']}; torch {res['torch']}, TF {res.get('tf', {}).get('tensorflow', '-')}", "",
             ]
    pairs = [(w, tw) for tw in TF_WAYS if tw in ways for w in ways if w not in TF_WAYS]
    lines += ["| threads | batch | " + " | ".join(ways + [f"{w} / {tw}" for w, tw in pairs]) + " |",
              "|---:|---:|" + "---:|" * (len(ways) + len(pairs))]
    for r in res["rows"]:
        cells = [f"{r[w]['wall_s']['median']:.2f} [{r[w]['wall_s']['min']:.2f}-{r[w]['wall_s']['max']:.2f}]" for w in ways]
        ratios = [f"{r[w]['vs_' + tw]['median']:.2f} [{r[w]['vs_' + tw]['min']:.2f}-{r[w]['vs_' + tw]['max']:.2f}]"
                  for w, tw in pairs]
        lines.append(f"| {r['threads']} | {r['batch']} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tf-python", default=os.environ.get("TF_PYTHON", "/work/tfvenv/bin/python"),
                   help="the Python of an environment with TensorFlow [$TF_PYTHON or /work/tfvenv/bin/python]")
    p.add_argument("--model", choices=sorted(MODELS), default="mlp")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", default="32,256")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions after the warm-up [3]")
    p.add_argument("--ways", default="tf," + ",".join(WAYS),
                   help=f"comma-separated, of {', '.join([*TF_WAYS, *WAYS])} [tf and alviz's]")
    p.add_argument("--images", type=int, default=0,
                   help="time only the batches of the first N images of each epoch, scaled to a whole epoch "
                        "(0: whole epochs) [0]")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    ways = [w.strip() for w in a.ways.split(",") if w.strip()]
    bad = [w for w in ways if w not in TF_WAYS and w not in WAYS]
    if bad or not ways:
        p.error(f"--ways: allowed: {', '.join([*TF_WAYS, *WAYS])}; received {a.ways!r}")
    res = run(a.tf_python, a.model, _ints(a.threads), _ints(a.batch), a.reps, ways, a.images)
    print(table(res))
    write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
