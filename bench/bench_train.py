"""Benchmark alviz's training step and loop on the CPU: achieved FLOP/s, AL against BP, loop overhead.

    python bench/bench_train.py [--quick] [--threads N] [--json PATH]

Every figure is a ratio of timings taken side by side in one run, interleaved repetition by
repetition (A, B, C, A, B, C, ...) so that a change in the machine's load hits both sides; each is
the median of at least 5 repetitions (--quick: 3) after a warm-up. Times are CPU time of this
process (`time.process_time`), which other processes on a shared machine disturb far less than
wall-clock time; wall-clock medians are recorded next to them. Default: 1 torch thread (on two
shared cores, torch's 2 OpenMP threads wait on each other and wall time becomes meaningless);
`--threads` changes it.

1. `flops`: a training step (forward, backward, Adam update; `model.losses`, `backward`,
   `opt.step`, exactly as `alviz.train.train_epoch` runs them) of AL and BP for the default MLP
   (784 -> 256 -> 256, bridges 256 -> 1280 -> 256), the paper's MNIST MLP (width 1024) and the
   default CNN, at batch 256 (and the default batch 64 for the default MLP). FLOPs are counted
   by `torch.utils.flop_counter.FlopCounterMode` over one forward + backward: matrix products and
   convolutions only, as executed (gradients that are not needed, e.g. of a detached input, are
   not computed and not counted; the no-grad scoring pass is); Adam's and the activations'
   element-wise work count zero FLOPs but take time. Achieved FLOP/s is set against the FLOP/s
   of a plain matrix product (B x K) @ (K x N) with K x N the largest Linear weight of the AL
   model, timed in the same repetitions. The main columns take the reference Adam arithmetic
   (`fused_adam: false`, a pass per operation); a column with fused Adam (alviz's CPU default, one
   pass per tensor) shows what the update costs.
2. `al_vs_bp`: AL's step time over BP's on the same backbone, next to the ratio of their
   FLOP counts (and of their parameter counts, which set Adam's cost).
3. `epoch_overhead`: one epoch of mnist5k with the default config (MLP, batch 64) through
   `alviz.train.train_epoch` (the loop `train()` runs, with a tqdm bar writing to memory) against
   the same steps with nothing else (batches sliced beforehand, outside the timing), and against a
   copy of the loop as it was before this benchmark (commit 996ce12: per-step stack/double/
   isfinite/where bookkeeping, `x[idx]` indexing, a flag read every step on the CPU). The whole
   `train()` call per epoch (set-up, evaluation of the test split, checkpoint write) is reported
   beside it.

Not a test: nothing here asserts. The goals of issue 7 are reported as met or not.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import write_json  # noqa: E402

from alviz.config import TrainConfig  # noqa: E402
from alviz.models import create_model, resolve_shape_defaults  # noqa: E402
from alviz import checkpoint as ckpt  # noqa: E402
from alviz.train import evaluate, make_optimizer, train, train_epoch  # noqa: E402

GOALS = {"mlp_b256_vs_matmul_min": 0.5, "al_bp_ratio_tolerance": 0.15, "loop_overhead_max": 0.05}


# --------------------------------------------------------------------------- timing helpers

def _clock():
    return time.process_time(), time.perf_counter()


def _interleaved(fns: dict, reps: int, target_s: float) -> dict:
    """Median CPU and wall seconds per call of each fn, measured interleaved. A warm-up call of each
    fn also sets how many calls one repetition makes (enough for ~target_s of CPU time)."""
    inner = {}
    for name, fn in fns.items():
        fn()  # warm-up
        inner[name] = 1
        if target_s > 0:
            c0, _ = _clock()
            fn()
            one = max(time.process_time() - c0, 1e-6)
            inner[name] = max(1, min(50, int(round(target_s / one))))
    cpu = {k: [] for k in fns}
    wall = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            c0, w0 = _clock()
            for _ in range(inner[name]):
                fn()
            c1, w1 = _clock()
            cpu[name].append((c1 - c0) / inner[name])
            wall[name].append((w1 - w0) / inner[name])
    return {k: {"cpu_s": statistics.median(cpu[k]), "wall_s": statistics.median(wall[k]),
                "cpu_all_s": cpu[k], "calls_per_rep": inner[k]} for k in fns}


def _flops_of_step(model, x, y) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        losses, _ = model.losses(x, y)
        losses["loss"].backward()
    model.zero_grad(set_to_none=True)
    return int(fc.get_total_flops())


def _largest_linear(model) -> tuple[int, int]:
    best = max((m for m in model.modules() if isinstance(m, torch.nn.Linear)),
               key=lambda m: m.weight.numel())
    return best.in_features, best.out_features


# --------------------------------------------------------------------------- 1 + 2: FLOP/s, AL vs BP

def _step_fn(model, opt, x, y):
    def step():
        losses, _ = model.losses(x, y)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
    return step


def bench_flops(quick: bool, reps: int) -> list[dict]:
    if quick:
        cases = [("mlp", None, 64)]
    else:
        cases = [("mlp", None, 256), ("mlp", None, 64), ("mlp", 1024, 256), ("cnn", None, 256)]
    shape = (1, 28, 28)
    out = []
    for arch, width, batch in cases:
        g = torch.Generator().manual_seed(0)
        x = torch.randn((batch,) + shape, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        fns, info = {}, {}
        for method in ("al", "bp"):
            cfg = resolve_shape_defaults(TrainConfig(method=method, arch=arch, width=width, device="cpu"))
            for fused in (False, True):
                torch.manual_seed(0)
                model = create_model(cfg, shape, 10)
                opt = make_optimizer(model.param_groups(cfg.lr, cfg.lr_gh_factor), cfg.replace(fused_adam=fused),
                                     torch.device("cpu"))
                key = f"{method}{'_fused' if fused else ''}"
                fns[key] = _step_fn(model, opt, x, y)
                if not fused:
                    info[method] = {"flops": _flops_of_step(model, x, y),
                                    "params": sum(p.numel() for p in model.parameters()),
                                    "linear": _largest_linear(model), "width": cfg.width}
        k, n = info["al"]["linear"]
        a = torch.randn(batch, k, generator=g)
        b = torch.randn(k, n, generator=g)
        fns["matmul"] = lambda a=a, b=b: torch.mm(a, b)
        t = _interleaved(fns, reps, target_s=0.05 if quick else 0.25)
        mm_flops = 2 * batch * k * n
        mm_rate = mm_flops / t["matmul"]["cpu_s"]
        row = {"arch": arch, "width": info["al"]["width"], "batch": batch,
               "matmul": {"shape": [batch, k, n], "flops": mm_flops, "gflops_per_s": mm_rate / 1e9,
                          **t["matmul"]}}
        for method in ("al", "bp"):
            fl = info[method]["flops"]
            rate = fl / t[method]["cpu_s"]
            rate_f = fl / t[f"{method}_fused"]["cpu_s"]
            row[method] = {"flops": fl, "params": info[method]["params"],
                           "step_cpu_s": t[method]["cpu_s"], "step_wall_s": t[method]["wall_s"],
                           "step_cpu_all_s": t[method]["cpu_all_s"],
                           "gflops_per_s": rate / 1e9, "vs_matmul": rate / mm_rate,
                           "fused_adam_step_cpu_s": t[f"{method}_fused"]["cpu_s"],
                           "fused_adam_vs_matmul": rate_f / mm_rate}
        pred = info["al"]["flops"] / info["bp"]["flops"]
        meas = t["al"]["cpu_s"] / t["bp"]["cpu_s"]
        row["al_vs_bp"] = {"measured_time_ratio": meas, "predicted_flop_ratio": pred,
                           "param_ratio": info["al"]["params"] / info["bp"]["params"],
                           "deviation": meas / pred - 1.0,
                           "measured_time_ratio_wall": t["al"]["wall_s"] / t["bp"]["wall_s"],
                           "measured_time_ratio_fused_adam": t["al_fused"]["cpu_s"] / t["bp_fused"]["cpu_s"]}
        out.append(row)
    return out


# --------------------------------------------------------------------------- 3: loop overhead

def _legacy_epoch(model, opt, x_tr, y_tr, perm, bs, bar):
    """The inner loop of alviz/train.py as it was at commit 996ce12 (CPU path, no augmentation):
    kept here only to measure the change side by side."""
    n, device = len(perm), x_tr.device
    steps = math.ceil(n / bs)
    keys, sums, bad = None, None, None
    correct = torch.zeros((), dtype=torch.long, device=device)
    for step in range(steps):
        idx = perm[step * bs:(step + 1) * bs]
        xb, yb = x_tr[idx], y_tr[idx]
        with torch.autocast("cpu", enabled=False):
            losses, scores = model.losses(xb, yb)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if keys is None:
            keys = [k for k in losses if k != "loss"] + ["loss"]
            sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
            bad = torch.full((len(keys),), -1, dtype=torch.long, device=device)
        vec = torch.stack([losses[k].detach() for k in keys]).double()
        sums += vec * len(yb)
        correct += (scores.argmax(1) == yb).sum()
        bad = torch.where((bad < 0) & ~torch.isfinite(vec), step, bad)
        if bool((bad >= 0).any()):
            raise RuntimeError("non-finite loss")
        bar.update(1)
    return (sums / n).tolist(), correct.item()


def _bar(total):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", leave=False, dynamic_ncols=True, file=io.StringIO())


def bench_epoch_overhead(quick: bool, reps: int) -> dict:
    from alviz.data import Data, load_dataset

    if quick:  # random data of mnist5k's shape (loading mnist5k takes longer than the whole quick run)
        g = torch.Generator().manual_seed(0)
        xs = torch.randn(256, 1, 28, 28, generator=g)
        ys = torch.randint(0, 10, (256,), generator=g)
        data = Data("random-28x28", xs[:192], ys[:192], xs[192:], ys[192:], torch.arange(192).numpy(),
                    torch.arange(192, 256).numpy(), 10, (1, 28, 28), {}, False)
    else:
        data = load_dataset("mnist5k")
    out = {"dataset": data.name, "n_train": len(data.y_train), "n_test": len(data.y_test), "methods": {}}
    for method in ("al", "bp"):
        cfg = resolve_shape_defaults(TrainConfig(method=method, device="cpu", epochs=1, schedule="none"))
        torch.manual_seed(0)
        model = create_model(cfg, data.input_shape, data.num_classes)
        opt = make_optimizer(model.param_groups(cfg.lr, cfg.lr_gh_factor), cfg, torch.device("cpu"))
        model.train()
        x, y = data.x_train, data.y_train
        n, bs = len(y), cfg.batch_size
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        steps = math.ceil(n / bs)
        batches = [(x[perm[i * bs:(i + 1) * bs]], y[perm[i * bs:(i + 1) * bs]]) for i in range(steps)]

        def pure():
            for xb, yb in batches:
                losses, _ = model.losses(xb, yb)
                opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                opt.step()

        def loop():
            bar = _bar(steps)
            train_epoch(model, opt, x, y, perm, batch_size=bs, bar=bar)
            bar.close()

        def legacy():
            bar = _bar(steps)
            _legacy_epoch(model, opt, x, y, perm, bs, bar)
            bar.close()

        tmp = tempfile.TemporaryDirectory()
        count = [0]

        def whole():  # the full train() call for one epoch: set-up, loop, evaluation, checkpoint
            count[0] += 1
            with contextlib.redirect_stderr(io.StringIO()):
                train(cfg, Path(tmp.name) / f"r{count[0]}", data=data, progress=True, log=lambda *a: None)

        def evaluate_test():  # what train() does after each epoch's loop
            evaluate(model, data.x_test, data.y_test, device=torch.device("cpu"))

        def checkpoint():  # and then this: one journaled, fsynced checkpoint write
            count[0] += 1
            meta = {"epoch": 1, "status": "complete"}
            ckpt.save_checkpoint(Path(tmp.name) / f"c{count[0]}", model, opt, cfg, meta, [])

        try:
            t = _interleaved({"pure": pure, "loop": loop, "legacy": legacy, "whole": whole,
                              "evaluate": evaluate_test, "checkpoint": checkpoint}, reps, target_s=0.0)
        finally:
            tmp.cleanup()
        p = t["pure"]["cpu_s"]
        out["methods"][method] = {
            "steps": steps, "batch": bs,
            "pure_steps_cpu_s": p, "loop_cpu_s": t["loop"]["cpu_s"], "legacy_loop_cpu_s": t["legacy"]["cpu_s"],
            "whole_train_call_cpu_s": t["whole"]["cpu_s"],
            "pure_steps_wall_s": t["pure"]["wall_s"], "loop_wall_s": t["loop"]["wall_s"],
            "legacy_loop_wall_s": t["legacy"]["wall_s"], "whole_train_call_wall_s": t["whole"]["wall_s"],
            # share of the loop's epoch time spent outside the model's steps
            "loop_overhead": 1.0 - p / t["loop"]["cpu_s"],
            "legacy_loop_overhead": 1.0 - p / t["legacy"]["cpu_s"],
            "whole_call_overhead": 1.0 - p / t["whole"]["cpu_s"],
            "whole_call_overhead_wall": 1.0 - t["pure"]["wall_s"] / t["whole"]["wall_s"],
            "evaluate_cpu_s": t["evaluate"]["cpu_s"], "evaluate_wall_s": t["evaluate"]["wall_s"],
            "checkpoint_cpu_s": t["checkpoint"]["cpu_s"], "checkpoint_wall_s": t["checkpoint"]["wall_s"],
            "loop_overhead_wall": 1.0 - t["pure"]["wall_s"] / t["loop"]["wall_s"],
            "legacy_loop_overhead_wall": 1.0 - t["pure"]["wall_s"] / t["legacy"]["wall_s"],
        }
    return out


# --------------------------------------------------------------------------- entry points

def run(quick: bool = False, threads: int | None = 1) -> dict:
    """Run the benchmark; return a JSON-serialisable dict of the figures (see the module docstring)."""
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    reps = 3 if quick else 5
    try:
        out = {"quick": quick, "reps": reps, "threads": torch.get_num_threads(), "torch": torch.__version__,
               "timer": "process CPU time (time.process_time); wall-clock medians beside it",
               "flop_count": "torch.utils.flop_counter.FlopCounterMode, one forward+backward: matmul/conv only",
               "loadavg_start": list(os.getloadavg()), "goals": GOALS}
        out["flops"] = bench_flops(quick, reps)
        out["epoch_overhead"] = bench_epoch_overhead(quick, reps)
        out["loadavg_end"] = list(os.getloadavg())
        out["summary"] = summarise(out)
    finally:
        torch.set_num_threads(old_threads)
    return out


def summarise(res: dict) -> dict:
    """The issue's goals, each with its figure and met / not met."""
    s = {}
    for row in res["flops"]:
        tag = f"{row['arch']}{row['width']}_b{row['batch']}"
        for m in ("al", "bp"):
            s[f"{tag}_{m}_vs_matmul"] = row[m]["vs_matmul"]
        s[f"{tag}_al_bp_deviation"] = row["al_vs_bp"]["deviation"]
    default = [r for r in res["flops"] if r["arch"] == "mlp" and r["width"] == 256]
    b256 = [r for r in default if r["batch"] == 256]
    s["goal_mlp_step_half_of_matmul"] = (all(r[m]["vs_matmul"] >= GOALS["mlp_b256_vs_matmul_min"]
                                             for r in b256 for m in ("al", "bp")) if b256 else None)
    s["goal_al_bp_within_15pct"] = {f"{r['arch']}{r['width']}_b{r['batch']}":
                                    abs(r["al_vs_bp"]["deviation"]) <= GOALS["al_bp_ratio_tolerance"]
                                    for r in res["flops"]}
    eo = res["epoch_overhead"]["methods"]
    s["goal_loop_overhead_under_5pct"] = all(v["loop_overhead"] < GOALS["loop_overhead_max"] for v in eo.values())
    return s


def table(res: dict) -> str:
    """The figures as markdown tables."""
    lines = [f"Training on the CPU: {res['threads']} torch thread(s), torch {res['torch']}, medians of "
             f"{res['reps']} interleaved repetitions after a warm-up, CPU time of the process; FLOPs from "
             f"FlopCounterMode (matmul/conv, forward+backward).", "",
             "| model | batch | method | GFLOP/step | step ms | GFLOP/s | matmul GFLOP/s | step / matmul rate "
             "| same, fused Adam |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["flops"]:
        for m in ("al", "bp"):
            v = r[m]
            lines.append(f"| {r['arch']} w{r['width']} | {r['batch']} | {m.upper()} | {v['flops'] / 1e9:.3f} | "
                         f"{v['step_cpu_s'] * 1e3:.1f} | {v['gflops_per_s']:.1f} | {r['matmul']['gflops_per_s']:.1f} "
                         f"({'x'.join(map(str, r['matmul']['shape']))}) | {v['vs_matmul']:.2f} | "
                         f"{v['fused_adam_vs_matmul']:.2f} |")
    lines += ["", "| model | batch | AL/BP time (measured) | AL/BP FLOPs (predicted) | deviation | "
              "AL/BP params | within 15% |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["flops"]:
        a = r["al_vs_bp"]
        lines.append(f"| {r['arch']} w{r['width']} | {r['batch']} | {a['measured_time_ratio']:.2f} | "
                     f"{a['predicted_flop_ratio']:.2f} | {a['deviation']:+.1%} | {a['param_ratio']:.2f} | "
                     f"{'yes' if abs(a['deviation']) <= GOALS['al_bp_ratio_tolerance'] else 'no'} |")
    eo = res["epoch_overhead"]
    lines += ["", f"One epoch of {eo['dataset']} ({eo['n_train']} samples), default config (MLP, batch 64); "
              "overhead = share of the time spent outside the model's steps:", "",
              "| method | pure steps s | loop s (now) | overhead (now) | loop s (before, 996ce12) | "
              "overhead (before) | whole train() call s | of which evaluation s | checkpoint s "
              "(CPU / wall) | overhead of the call (CPU / wall) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m, v in eo["methods"].items():
        lines.append(f"| {m.upper()} | {v['pure_steps_cpu_s']:.3f} | {v['loop_cpu_s']:.3f} | {v['loop_overhead']:.1%} | "
                     f"{v['legacy_loop_cpu_s']:.3f} | {v['legacy_loop_overhead']:.1%} | "
                     f"{v['whole_train_call_cpu_s']:.3f} | {v['evaluate_cpu_s']:.3f} | "
                     f"{v['checkpoint_cpu_s']:.3f} / {v['checkpoint_wall_s']:.3f} | "
                     f"{v['whole_call_overhead']:.1%} / {v['whole_call_overhead_wall']:.1%} |")
    lines.append("(The whole call builds the model, runs the loop, evaluates the test split and writes a "
                 "checkpoint; wall times on a shared machine include waiting for the CPU.)")
    s = res["summary"]
    met = {True: "met", False: "not met", None: "not measured (--quick has no batch-256 case)"}
    lines += ["", "Goals: default MLP step at batch 256 >= 0.5 of the matmul rate: "
              f"{met[s['goal_mlp_step_half_of_matmul']]}; AL/BP time within 15% of the "
              f"FLOP ratio: " + ", ".join(f"{k} {'met' if v else 'not met'}"
                                          for k, v in s["goal_al_bp_within_15pct"].items())
              + f"; loop overhead < 5%: {'met' if s['goal_loop_overhead_under_5pct'] else 'not met'}. "
              f"Load average {res['loadavg_start'][0]:.2f} at the start, {res['loadavg_end'][0]:.2f} at the end."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions: seconds")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default) [1]")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    res = run(quick=args.quick, threads=args.threads or None)
    print(table(res))
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
