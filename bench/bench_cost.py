"""The cost model against the clock (issue 19: "partition by measured cost, not by count").

    python bench/bench_cost.py [--quick] [--reps R] [--threads N] [--cases NAME,...] [--json PATH]

alviz splits a local rule's components into contiguous groups, one per pipeline rank or component
thread, by an estimate of each component's cost (alviz/parallel/cost.py: FLOPs of its losses'
forward and backward, plus its Adam update priced per parameter). This times what the estimate
stands for: for each component, in the stage protocol's order on one mini-batch, its
`stage_losses` forward, the backward of its losses and its own fused Adam step (the CPU default),
with `--threads` torch threads (1 by default: a component thread's or a 1-thread rank's), and
sets the measured shares beside the estimated ones and the partition the clock would choose beside
the cost model's, for 2 to L groups. Cases: the paper's MNIST MLP (n = 1,024) and CNN at batch 32
and 256, and resnet20 and VGG on CIFAR-10-shaped random data at batch 32 (the presets the
multi-GPU projection in docs/PARALLEL.md uses). Repetition 0 is a warm-up; each component's time
is the median over the others. What a partition costs is the heaviest group's share: `slowdown`
is the measured heaviest group under the cost model's partition over the measured heaviest group
under the clock's own (1.00: the estimate loses nothing). Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import kept_threads, loadavg, write_json  # noqa: E402

from alviz.config import TrainConfig  # noqa: E402
from alviz.models import component_params, create_model, resolve_shape_defaults  # noqa: E402
from alviz.parallel.cost import component_costs, partition_by_cost  # noqa: E402

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
CASES = {  # name: (TrainConfig fields or a preset's name, input shape, batch)
    "paper-mlp-32": ({"arch": "mlp", "width": 1024, "depth": 2, "activation": "elu"}, MNIST, 32),
    "paper-mlp-256": ({"arch": "mlp", "width": 1024, "depth": 2, "activation": "elu"}, MNIST, 256),
    "paper-cnn-32": ({"arch": "cnn", "depth": 4, "activation": "elu"}, MNIST, 32),
    "paper-cnn-256": ({"arch": "cnn", "depth": 4, "activation": "elu"}, MNIST, 256),
    "resnet20-32": ("cifar10-resnet20", CIFAR, 32),
    "vgg-32": ("cifar10-vgg", CIFAR, 32),
}
QUICK = {"quick-mlp": ({"arch": "mlp", "width": 64, "depth": 3}, MNIST, 16)}


def _model(spec, shape, batch):
    if isinstance(spec, str):
        from alviz.presets import load_preset

        cfg = load_preset(spec).replace(method="al", batch_size=batch, device="cpu")
    else:
        cfg = TrainConfig(method="al", batch_size=batch, device="cpu", **spec)
    cfg = resolve_shape_defaults(cfg)
    torch.manual_seed(0)
    model = create_model(cfg, shape, 10)
    model.train()
    return cfg, model


def measure(model, shape, batch: int, reps: int) -> list[float]:
    """Median seconds of each component's training step (forward, backward, its own fused Adam) on
    one random mini-batch, the components taken in the stage protocol's order."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch,) + tuple(shape), generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    opts = [torch.optim.Adam(component_params(model, [i]), lr=1e-4, fused=True) for i in range(model.depth)]
    times: list[list[float]] = [[] for _ in range(model.depth)]
    for rep in range(reps + 1):
        carry = model.initial_carry(x, y)
        for i in range(model.depth):
            t0 = time.perf_counter()
            carry, losses = model.stage_losses(i, carry, y)
            sum(losses[1:], losses[0]).backward()
            opts[i].step()
            opts[i].zero_grad(set_to_none=True)
            carry = tuple(c.detach() for c in carry)
            if rep:
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _heaviest(costs, groups) -> float:
    return max(sum(costs[i] for i in g) for g in groups)


def compare(estimated, measured) -> dict:
    """Shares and, for 2..L groups, the two partitions and what the cost model's costs in measured time."""
    se, sm = sum(estimated), sum(measured)
    out = {"estimated_share": [e / se for e in estimated], "measured_share": [m / sm for m in measured],
           "measured_s": list(measured), "partitions": []}
    for k in range(2, len(measured) + 1):
        by_model, by_clock = partition_by_cost(estimated, k), partition_by_cost(measured, k)
        out["partitions"].append({
            "groups": k, "cost_model": [list(g) for g in by_model], "clock": [list(g) for g in by_clock],
            "same": by_model == by_clock,
            "slowdown": _heaviest(measured, by_model) / _heaviest(measured, by_clock),
            "speedup_bound": sm / _heaviest(measured, by_model)})
    return out


def run(quick: bool = False, reps: int | None = None, threads: int | None = 1, cases=None, echo=None) -> dict:
    table_of = QUICK if quick else CASES
    names = list(table_of) if quick or not cases else list(cases)
    reps = reps or (2 if quick else 5)
    out = {"threads": threads or torch.get_num_threads(), "reps": reps, "torch": torch.__version__,
           "loadavg_start": loadavg(), "rows": []}
    with kept_threads(threads):
        for name in names:
            spec, shape, batch = table_of[name]
            cfg, model = _model(spec, shape, batch)
            est = component_costs(model, shape, batch)
            row = {"case": name, "arch": cfg.arch, "batch": batch, "depth": model.depth,
                   "estimated_gflop": [e / 1e9 for e in est], **compare(est, measure(model, shape, batch, reps))}
            out["rows"].append(row)
            if echo:
                echo(row)
    out["loadavg_end"] = loadavg()
    return out


def table(res: dict) -> str:
    def pct(v):
        return " / ".join(f"{100 * x:.0f}" for x in v)

    lines = [f"Each component's training step (forward, backward, fused Adam) timed against the cost model: "
             f"{res['threads']} torch thread(s), median of {res['reps']} repetitions; load average "
             f"{res['loadavg_start'][0]:.2f} -> {res['loadavg_end'][0]:.2f}", "",
             "| case | estimated share, % | measured share, % | measured ms | groups: cost model's partition "
             "(same as the clock's?; measured slowdown) |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        parts = "; ".join(
            f"{p['groups']}: {' | '.join(','.join(str(i + 1) for i in g) for g in p['cost_model'])} "
            f"({'same' if p['same'] else 'clock: ' + ' | '.join(','.join(str(i + 1) for i in g) for g in p['clock'])}"
            f"; {p['slowdown']:.2f})" for p in r["partitions"])
        lines.append(f"| {r['case']} | {pct(r['estimated_share'])} | {pct(r['measured_share'])} | "
                     f"{' / '.join(f'{1e3 * s:.1f}' for s in r['measured_s'])} | {parts} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny MLP, 2 repetitions: seconds")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions after the warm-up [5]")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default) [1]")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} [all]")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    if not cases or any(c not in CASES for c in cases):
        p.error(f"--cases: allowed: {', '.join(CASES)}; received {a.cases!r}")
    if a.reps is not None and a.reps < 1:
        p.error(f"--reps must be at least 1; received {a.reps}")
    res = run(quick=a.quick, reps=a.reps, threads=a.threads or None, cases=cases)
    print(table(res))
    write_json(a.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
