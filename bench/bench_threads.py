"""Component threads against the sequential loop (issue 19): the same AL epochs on 2 threads.

    python bench/bench_threads.py [--quick] [--reps R] [--images N] [--json PATH]

What `alviz train` does with 2+ threads for a local rule (alviz/concurrent.py: the components in
threads of their own, 1 torch thread each here) against the loop of one process it ran before
(`concurrent: false`: alviz.train.train_epoch, torch's 2 threads for every product), on the same
mnist5k images in the same order from the same initial weights. Cases: the quick start's AL (MLP,
n = 256, ReLU, batch 32) and the paper's MNIST MLP (n = 1,024, ELU, batch 32 and 256). Timings are
the wall clock of epochs over the first `--images` training images, interleaved way by way,
repetition 0 a warm-up; medians and ranges, and the ratio threads / sequential repetition by
repetition. Before timing, each case checks that one epoch of the component threads gives the
1-thread sequential epoch's weights to the bit (`same_as_one_thread`). No TensorFlow needed
(bench/bench_anchor.py times the authors' code beside these). Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import kept_threads, loadavg, spread, write_json  # noqa: E402

from alviz.concurrent import ComponentThreads  # noqa: E402
from alviz.config import TrainConfig  # noqa: E402
from alviz.data import fixed_order, load_dataset  # noqa: E402
from alviz.models import create_model, resolve_shape_defaults  # noqa: E402
from alviz.train import make_optimizer, train_epoch  # noqa: E402

CASES = {  # name: (TrainConfig fields, batch size)
    "quickstart-al": ({}, 32),
    "paper-mlp-32": ({"width": 1024, "depth": 2, "activation": "elu", "lr": 1e-4}, 32),
    "paper-mlp-256": ({"width": 1024, "depth": 2, "activation": "elu", "lr": 1e-4}, 256),
}
THREADS = 2


def _build(fields: dict, batch: int, shape):
    cfg = resolve_shape_defaults(TrainConfig(method="al", dataset="mnist5k", device="cpu", batch_size=batch, **fields))
    torch.manual_seed(0)
    model = create_model(cfg, shape, 10)
    model.train()
    return model, make_optimizer(model.param_groups(cfg.lr, cfg.lr_gh_factor), cfg, torch.device("cpu"))


def _same_as_one_thread(fields, batch, x, y, perm) -> bool:
    """One epoch of the threads (1 thread a group) against one of the sequential loop on 1 thread."""
    m1, o1 = _build(fields, batch, tuple(x.shape[1:]))
    m2, o2 = _build(fields, batch, tuple(x.shape[1:]))
    torch.set_num_threads(1)
    train_epoch(m1, o1, x, y, perm, batch_size=batch)
    torch.set_num_threads(THREADS)
    ComponentThreads(m2, o2, tuple(x.shape[1:]), batch, THREADS).train_epoch(x, y, perm, batch_size=batch)
    return all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def run(quick: bool = False, reps: int | None = None, images: int | None = None, cases=tuple(CASES),
        echo=None) -> dict:
    reps = reps or (1 if quick else 3)
    images = images or (256 if quick else 4000)  # whole epochs: the threads' fill and drain once an epoch
    cases = ("quickstart-al",) if quick else cases
    data = load_dataset("mnist5k")
    order = fixed_order(data.y_train)[:images]
    x, y = data.x_train, data.y_train
    shape = tuple(x.shape[1:])
    out = {"threads": THREADS, "images": images, "reps": reps, "torch": torch.__version__,
           "loadavg_start": loadavg(), "rows": []}
    with kept_threads(THREADS):
        for name in cases:
            fields, batch = CASES[name]
            same = _same_as_one_thread(fields, batch, x, y, order)  # ends on THREADS threads again
            m_seq, opt_seq = _build(fields, batch, shape)
            m_thr, opt_thr = _build(fields, batch, shape)
            workers = ComponentThreads(m_thr, opt_thr, shape, batch, THREADS)
            ways = {"sequential": lambda: train_epoch(m_seq, opt_seq, x, y, order, batch_size=batch),
                    "threads": lambda: workers.train_epoch(x, y, order, batch_size=batch)}
            times = {w: [] for w in ways}
            for rep in range(reps + 1):
                for w, f in ways.items():
                    t0 = time.perf_counter()
                    f()
                    if rep:
                        times[w].append(time.perf_counter() - t0)
            row = {"case": name, "batch": batch, "same_as_one_thread": same,
                   "groups": [list(p) for p in workers.parts],
                   **{w: spread(v) for w, v in times.items()},
                   "threads_vs_sequential": spread([a / b for a, b in zip(times["threads"], times["sequential"])])}
            out["rows"].append(row)
            if echo:
                echo(row)
    out["loadavg_end"] = loadavg()
    return out


def table(res: dict) -> str:
    lines = [f"AL epochs over {res['images']} mnist5k images, {res['threads']} threads, wall clock, median [range] of "
             f"{res['reps']} interleaved repetitions; load average {res['loadavg_start'][0]:.2f} -> "
             f"{res['loadavg_end'][0]:.2f}", "",
             "| case | batch | sequential s | component threads s | threads / sequential | groups | same as 1 thread |",
             "|---|---:|---:|---:|---:|---|---|"]
    for r in res["rows"]:
        s, t, q = r["sequential"], r["threads"], r["threads_vs_sequential"]
        lines.append(f"| {r['case']} | {r['batch']} | {s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}] | "
                     f"{t['median']:.3f} [{t['min']:.3f}-{t['max']:.3f}] | {q['median']:.2f} [{q['min']:.2f}-"
                     f"{q['max']:.2f}] | {r['groups']} | {'yes' if r['same_as_one_thread'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    res = run(a.quick, a.reps, a.images)
    print(table(res))
    if a.json:
        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
