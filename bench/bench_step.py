"""Benchmark AL's training step against a plain PyTorch loop of the same model (issue 19), at the
paper's batch 32 and at 256, for the paper's MNIST MLP (2 components, n = 1,024, ELU) and MNIST
CNN (4 components of two 3x3 convolutions, n = 256, ELU).

    python bench/bench_step.py [--quick] [--threads N] [--reps R] [--json PATH]

Three ways to take the same step (forward, local losses, backward, Adam update) on the same data:

- `plain`: what a researcher writes by hand: the same layers as plain `nn.Sequential`s holding the
  same initial weights, the losses written out, and `torch.optim.Adam` with its defaults (on the
  CPU the single-tensor loop), one optimiser per path like the authors' code (f/b at lr, g/h at 2 lr).
- `alviz`: `ALModel.losses` + backward + `alviz.train.make_optimizer` (torch's fused CPU Adam, one
  pass per tensor): what `alviz train` runs by default.
- `alviz_exact`: the same with `fused_adam: false` (the reference's Adam arithmetic in place,
  alviz.adam: the plain loop's weights to the bit, a pass per operation).
- `alviz_onednn`: the default with `onednn_linear: true` (the Linear products through torch's
  oneDNN instead of MKL, alviz.onednn; an opt-in: its largest weight difference from `alviz` after
  one step from the same weights is recorded as `onednn_vs_alviz_max_weight_diff`).

Before timing, one step of `plain` and `alviz_exact` from the same weights and batch is checked to
give the same loss and the same weights (recorded as `same_step`), and the default's largest weight
difference from the plain step is recorded (`fused_vs_plain_max_weight_diff`: the fused Adam's
rounding). Timings are CPU time of this process,
interleaved repetition by repetition (plain, alviz, alviz_exact, plain, ...), each repetition the
mean of a few steps; the median and the range over repetitions are reported. An "epoch" is the step
time x the steps of 4,000 images (the issue's anchor: the authors' TensorFlow code took about 7.3 s
an epoch for the MLP and 20 s for the CNN at batch 32 with 2 threads on the issue's host; quoted,
not measured here: bench/bench_anchor.py times that code beside alviz on the same host).

Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import kept_threads, write_json  # noqa: E402

from alviz.config import TrainConfig  # noqa: E402
from alviz.models import create_model, resolve_shape_defaults  # noqa: E402
from alviz.train import cpu_kernels, make_optimizer  # noqa: E402

TF_ANCHOR_S = {"mlp": 7.3, "cnn": 20.0}  # the authors' TF code, s per epoch of 4,000 images, batch 32, 2 threads
EPOCH_IMAGES = 4000


def _cfg(arch: str, width: int | None, depth: int | None, batch: int, **options) -> TrainConfig:
    """The case's AL config; `options`: TrainConfig fields set on top (e.g. fused_adam=True)."""
    return resolve_shape_defaults(TrainConfig(method="al", arch=arch, width=width, depth=depth, activation="elu",
                                              lr=1e-4, batch_size=batch, device="cpu", **options))


class _Plain:
    """AL written out by hand in plain PyTorch: a copy of an ALModel's layers (the same weights), the
    losses inline, two Adam optimisers with torch's defaults."""

    def __init__(self, model, lr: float):
        import copy

        self.f = [copy.deepcopy(m) for m in model.blocks]
        self.b = [copy.deepcopy(m) for m in model.bridges]
        self.g = [copy.deepcopy(m) for m in model.label_encoders]
        self.h = [copy.deepcopy(m) for m in model.decoders]
        fb = [p for m in self.f + self.b for p in m.parameters()]
        gh = [p for m in self.g + self.h for p in m.parameters()]
        self.opt_fb = torch.optim.Adam(fb, lr=lr)
        self.opt_gh = torch.optim.Adam(gh, lr=2 * lr)
        self.C = model.num_classes

    def loss(self, x, y):
        s, t = x, F.one_hot(y, self.C).float()
        total = 0.0
        for f, b, g, h in zip(self.f, self.b, self.g, self.h):
            s_new = f(s.detach())
            t_new = g(t.detach())
            total = total + F.mse_loss(b(s_new), t_new.detach()) + F.mse_loss(h(t_new), t.detach())
            s, t = s_new, t_new
        return total

    def step(self, x, y):
        loss = self.loss(x, y)
        self.opt_fb.zero_grad(set_to_none=True)
        self.opt_gh.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_fb.step()
        self.opt_gh.step()
        return loss

    def state(self):
        return [p.detach() for m in self.f + self.b + self.g + self.h for p in m.parameters()]


def _alviz_step(model, opt):
    def step(x, y):
        losses, _ = model.losses(x, y)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        return losses["loss"]
    return step


def _alviz_state(model):
    return [p.detach() for part in (model.blocks, model.bridges, model.label_encoders, model.decoders)
            for p in part.parameters()]


# way -> its TrainConfig options: the default (fused Adam), the reference Adam arithmetic, the default
# with the Linear products through oneDNN
ALVIZ_WAYS = {"alviz": {}, "alviz_exact": {"fused_adam": False}, "alviz_onednn": {"onednn_linear": True}}


def make_alviz(arch, width, depth, batch, **options):
    """An AL model of the case (seed 0, in training mode) and the optimiser `alviz train` makes for it;
    `options`: TrainConfig fields (a way of ALVIZ_WAYS)."""
    c = _cfg(arch, width, depth, batch, **options)
    torch.manual_seed(0)
    m = cpu_kernels(create_model(c, (1, 28, 28), 10), c, torch.device("cpu"))
    m.train()
    return c, m, make_optimizer(m.param_groups(c.lr, c.lr_gh_factor), c, torch.device("cpu"))


def _build(arch, width, depth, batch):
    cfg = _cfg(arch, width, depth, batch)
    torch.manual_seed(0)
    base = create_model(cfg, (1, 28, 28), 10)
    out = {}
    plain = _Plain(base, cfg.lr)
    out["plain"] = (plain.step, plain.state)
    for name, options in ALVIZ_WAYS.items():
        _, m, opt = make_alviz(arch, width, depth, batch, **options)
        out[name] = (_alviz_step(m, opt), lambda m=m: _alviz_state(m))
    return cfg, out


def bench_case(arch, width, depth, batch, reps, steps_per_rep) -> dict:
    cfg, fns = _build(arch, width, depth, batch)
    g = torch.Generator().manual_seed(0)
    n_batches = 8
    xs = torch.rand((n_batches, batch, 1, 28, 28), generator=g)
    ys = torch.randint(0, 10, (n_batches, batch), generator=g)
    # correctness: one step of plain and alviz_exact from the same weights on the same batch
    l_plain = fns["plain"][0](xs[0], ys[0])
    l_exact = fns["alviz_exact"][0](xs[0], ys[0])
    for name in ALVIZ_WAYS:
        if name != "alviz_exact":
            fns[name][0](xs[0], ys[0])
    same_loss = bool(torch.equal(l_plain.detach(), l_exact.detach()))
    same_weights = all(torch.equal(a, b) for a, b in zip(fns["plain"][1](), fns["alviz_exact"][1]()))

    def _diff(u, v):  # the largest weight difference between two ways after the step
        return max(float((a - b).abs().max()) for a, b in zip(fns[u][1](), fns[v][1]()))

    diffs = {"onednn_vs_alviz_max_weight_diff": _diff("alviz_onednn", "alviz"),
             "fused_vs_plain_max_weight_diff": _diff("alviz", "plain")}
    times = {k: [] for k in fns}
    k_step = 1
    for rep in range(reps + 1):  # repetition 0 is a warm-up
        for name, (step, _) in fns.items():
            c0 = time.process_time()
            for i in range(steps_per_rep):
                j = k_step % n_batches
                step(xs[j], ys[j])
                k_step += 1
            if rep:
                times[name].append((time.process_time() - c0) / steps_per_rep)
    steps_epoch = math.ceil(EPOCH_IMAGES / batch)
    row = {"arch": arch, "width": cfg.width, "depth": cfg.depth, "batch": batch, "reps": reps,
           "steps_per_rep": steps_per_rep, "same_step": {"loss": same_loss, "weights": same_weights},
           **diffs,
           "params": sum(t.numel() for t in fns["alviz"][1]())}
    for name, ts in times.items():
        med = statistics.median(ts)
        row[name] = {"step_cpu_s": med, "min_s": min(ts), "max_s": max(ts), "all_s": ts,
                     "epoch_s": med * steps_epoch}
    for name in ALVIZ_WAYS:
        ratios = [a / p for a, p in zip(times[name], times["plain"])]
        row[f"{name}_vs_plain"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return row


CASES = ("mlp32", "mlp256", "cnn32", "cnn256")
MODELS = {"mlp": ("mlp", 1024, 2), "cnn": ("cnn", None, 4)}  # the paper's MNIST MLP and CNN: arch, width, depth


def run(quick: bool = False, threads: int | None = 1, reps: int | None = None, cases=CASES, echo=None) -> dict:
    """`cases`: of CASES (model and batch); `echo`: called with each case's row as it is done."""
    with kept_threads(threads):
        return _run(quick, reps, cases, echo)


def _run(quick, reps, cases, echo) -> dict:
    r = reps or 7
    plan = {"mlp32": (*MODELS["mlp"], 32, r, 8), "mlp256": (*MODELS["mlp"], 256, r, 2),
            "cnn32": (*MODELS["cnn"], 32, max(3, r // 2), 3), "cnn256": (*MODELS["cnn"], 256, 3, 1)}
    cases = [("mlp", 64, 2, 32, 2, 3)] if quick else [plan[c] for c in cases]
    out = {"quick": quick, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "timer": "process CPU time, interleaved, median over repetitions (range beside it)",
           "tf_anchor_s_per_epoch": TF_ANCHOR_S, "epoch_images": EPOCH_IMAGES,
           "loadavg_start": list(os.getloadavg()), "cases": []}
    for arch, width, depth, batch, rr, spr in cases:
        out["cases"].append(bench_case(arch, width, depth, batch, rr, spr))
        if echo is not None:
            echo(out["cases"][-1])
    out["loadavg_end"] = list(os.getloadavg())
    return out


def table(res: dict) -> str:
    lines = [f"AL step on the CPU against a plain PyTorch loop of the same model: {res['threads']} thread(s), "
             f"torch {res['torch']}, CPU time, medians [range] over interleaved repetitions; epoch = step x "
             f"steps of {res['epoch_images']} images. Load average {res['loadavg_start'][0]:.1f} at the start, "
             f"{res['loadavg_end'][0]:.1f} at the end.", "",
             "| model | batch | exact: same step (loss, weights) | plain ms | alviz ms | alviz / plain | exact Adam ms "
             "| exact / plain | oneDNN ms | oneDNN / plain | epoch s: plain, alviz, exact, oneDNN "
             "| authors' TF s/epoch (b32, 2 threads; the issue's figure from another host) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in res["cases"]:
        p, a, f, o = r["plain"], r["alviz"], r["alviz_exact"], r["alviz_onednn"]
        ra, rf, ro = r["alviz_vs_plain"], r["alviz_exact_vs_plain"], r["alviz_onednn_vs_plain"]
        tf = res["tf_anchor_s_per_epoch"].get(r["arch"]) if r["batch"] == 32 and r["width"] in (1024, 256) else None
        lines.append(
            f"| {r['arch']} n={r['width']} depth {r['depth']} | {r['batch']} | "
            f"{'yes' if r['same_step']['loss'] else 'NO'}, {'yes' if r['same_step']['weights'] else 'NO'} | "
            f"{p['step_cpu_s'] * 1e3:.1f} [{p['min_s'] * 1e3:.0f}-{p['max_s'] * 1e3:.0f}] | "
            f"{a['step_cpu_s'] * 1e3:.1f} [{a['min_s'] * 1e3:.0f}-{a['max_s'] * 1e3:.0f}] | "
            f"{ra['median']:.2f} [{ra['min']:.2f}-{ra['max']:.2f}] | "
            f"{f['step_cpu_s'] * 1e3:.1f} [{f['min_s'] * 1e3:.0f}-{f['max_s'] * 1e3:.0f}] | "
            f"{rf['median']:.2f} [{rf['min']:.2f}-{rf['max']:.2f}] | "
            f"{o['step_cpu_s'] * 1e3:.1f} [{o['min_s'] * 1e3:.0f}-{o['max_s'] * 1e3:.0f}] | "
            f"{ro['median']:.2f} [{ro['min']:.2f}-{ro['max']:.2f}] | "
            f"{p['epoch_s']:.1f}, {a['epoch_s']:.1f}, {f['epoch_s']:.1f}, {o['epoch_s']:.1f} | {tf if tf else '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny MLP, 2 repetitions: seconds")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default) [1]")
    p.add_argument("--reps", type=int, default=None, help="repetitions of the MLP cases [7]")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} [all]")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or any(c not in CASES for c in cases):
        p.error(f"--cases: allowed: {', '.join(CASES)}; received {args.cases!r}")
    res = run(quick=args.quick, threads=args.threads or None, reps=args.reps, cases=cases,
              echo=lambda row: print(json.dumps(row), flush=True))
    print(table(res))
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
