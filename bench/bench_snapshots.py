"""Benchmark snapshots (`alviz train --snapshots`): what they add to training, and `alviz analyze`
of an experiment that keeps them.

    python bench/bench_snapshots.py [--quick] [--rounds N] [--exp PATH] [--json PATH]

Measures, in one run:
1. ``save``: the cost a snapshot adds to an epoch's checkpoint, in this process: the default job's
   AL and BP models, ``checkpoint.save_checkpoint`` with and without the epoch's snapshot,
   interleaved (``reps`` each), wall and CPU seconds; and rebuilding the initialisation
   (``train.initial_state``, done once per run for epoch 0). With the training time of the
   default job this gives the overhead of ``log`` (7 snapshots of 20 epochs) without the noise of
   whole training runs.
2. ``train``: the default job end to end (``alviz train``: AL, matched BP and the authors' BP, seed
   0), with and without ``--snapshots log``, the two side by side with one thread each (so both
   meet the same machine at the same time), for ``--rounds`` pairs; wall and CPU seconds of each
   run (``os.wait4``), the ratio per pair.
3. ``analyze``: ``alviz analyze`` of the default experiment with ``log`` snapshots, cold (a copy
   without activation folders, a fresh report folder), then warm; wall, CPU, the phases the report
   records. EXP: ``--exp PATH`` (an experiment trained with --snapshots log), else the one the
   ``train`` step made last.

Targets (issue 15): ``log`` snapshots add under 5 % to the default job's training time;
``alviz analyze`` of the default experiment with ``log`` snapshots in under 3 minutes on 2 cores.
The machine's load average is recorded beside every timing. ``--quick``: blobs, 1 epoch, one
round, small t-SNE: checks the script, not the targets. Not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import loadavg, run_concurrently, run_timed  # noqa: E402

ALVIZ = [sys.executable, "-m", "alviz"]


def _spread(values: list[float]) -> dict:
    v = sorted(values)
    return {"median": round(statistics.median(v), 4), "min": round(v[0], 4), "max": round(v[-1], 4), "n": len(v)}


def bench_save(tmp: Path, reps: int, quick: bool) -> dict:
    """save_checkpoint with and without the epoch's snapshot, interleaved, per method."""
    import torch

    from alviz import checkpoint as ckpt
    from alviz.config import TrainConfig
    from alviz.models import create_model, resolve_shape_defaults
    from alviz.train import initial_state, make_optimizer

    out = {}
    shape, n_cls = ((20,), 5) if quick else ((784,), 10)
    for method in ("al", "bp"):
        cfg = resolve_shape_defaults(TrainConfig(method=method, device="cpu", snapshots="log",
                                                 **({"width": 16} if quick else {})))
        torch.manual_seed(0)
        model = create_model(cfg, shape, n_cls)
        opt = make_optimizer(model.param_groups(cfg.lr, cfg.lr_gh_factor), cfg, torch.device("cpu"))
        x = torch.randn(8, *shape)
        y = torch.arange(8) % n_cls
        model.losses(x, y)[0]["loss"].backward()
        opt.step()  # optimiser state exists, as after any epoch
        meta = {"input_shape": list(shape), "num_classes": n_cls, "preprocess": {}}
        times = {"without": [], "with": []}
        cpu = {"without": [], "with": []}
        for r in range(reps):
            for kind in ("without", "with"):
                run = tmp / f"save-{method}-{kind}"
                snaps = {r + 1: None} if kind == "with" else None
                t, c = time.perf_counter(), time.process_time()
                ckpt.save_checkpoint(run, model, opt, cfg, {**meta, "epoch": r + 1}, [], snapshots=snaps)
                times[kind].append(time.perf_counter() - t)
                cpu[kind].append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        initial_state(cfg, shape, n_cls)
        init_s, init_cpu = time.perf_counter() - t, time.process_time() - c
        n_params = sum(p.numel() for p in model.state_dict().values())
        out[method] = {
            "snapshot_MB": round((n_params * 4) / 1e6, 2),
            "save_without_s": _spread(times["without"]), "save_with_s": _spread(times["with"]),
            "save_without_cpu_s": _spread(cpu["without"]), "save_with_cpu_s": _spread(cpu["with"]),
            "extra_per_snapshot_s": round(statistics.median(times["with"]) - statistics.median(times["without"]), 4),
            "extra_per_snapshot_cpu_s": round(statistics.median(cpu["with"]) - statistics.median(cpu["without"]), 4),
            "initial_state_s": round(init_s, 4), "initial_state_cpu_s": round(init_cpu, 4),
        }
    out["load"] = loadavg()
    return out


def _train_cmd(out: Path, snapshots: bool, quick: bool) -> list[str]:
    cmd = ALVIZ + ["train", "--out", str(out), "--quiet", "--threads", "1", "--device", "cpu"]
    if quick:
        cmd += ["--dataset", "blobs", "--epochs", "2", "--width", "16"]
    return cmd + (["--snapshots", "log"] if snapshots else [])


def bench_train(tmp: Path, rounds: int, quick: bool) -> tuple[dict, Path]:
    pairs = []
    last = None
    for r in range(rounds):
        pair = {"load_before": loadavg()}
        outs = {kind: tmp / f"train-{r}-{kind}" for kind in ("without", "with")}
        # side by side, one thread each: both settings meet the same machine at the same time
        timed = run_concurrently([_train_cmd(outs[k], k == "with", quick) for k in ("without", "with")])
        for kind, (wall, cpu) in zip(("without", "with"), timed):
            pair[f"{kind}_s"], pair[f"{kind}_cpu_s"] = round(wall, 2), round(cpu, 2)
        last = outs["with"]
        pair["ratio_wall"] = round(pair["with_s"] / pair["without_s"], 4)
        pair["ratio_cpu"] = round(pair["with_cpu_s"] / pair["without_cpu_s"], 4)
        pair["load_after"] = loadavg()
        pairs.append(pair)
    return {"pairs": pairs, "ratio_wall": _spread([p["ratio_wall"] for p in pairs]),
            "ratio_cpu": _spread([p["ratio_cpu"] for p in pairs])}, last


def bench_analyze(exp: Path, tmp: Path, quick: bool) -> dict:
    cold = tmp / "cold" / exp.name
    shutil.copytree(exp, cold, ignore=shutil.ignore_patterns("activations", ".staging"))
    out = tmp / "reports"
    args = ALVIZ + ["analyze", str(cold), "--out", str(out), "--device", "cpu"]
    if quick:
        args += ["--tsne-samples", "60"]
    res = {"command": " ".join(["alviz"] + args[len(ALVIZ):]), "load_before": loadavg()}
    res["cold_s"], res["cold_cpu_s"] = run_timed(args)
    meta = json.loads((out / cold.name / "metrics.json").read_text())
    res["cold_phases_s"] = meta.get("timing_s")
    res["snapshots"] = (meta.get("dynamics") or {}).get("snapshots")
    res["warm_s"], res["warm_cpu_s"] = run_timed(args)
    res["load_after"] = loadavg()
    return res


def run(quick: bool = False, rounds: int | None = None, exp=None, only=("save", "train", "analyze")) -> dict:
    res: dict = {"quick": quick, "python": platform.python_version(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="alviz-bench-snap-") as d:
        tmp = Path(d)
        if "save" in only:
            res["save"] = bench_save(tmp, 3 if quick else 15, quick)
        trained = None
        if "train" in only:
            res["train"], trained = bench_train(tmp, rounds or (1 if quick else 3), quick)
        if "analyze" in only and (exp or trained):
            res["analyze"] = bench_analyze(Path(exp) if exp else trained, tmp, quick)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved training pairs [3; --quick 1]")
    ap.add_argument("--exp", default=None, help="experiment with log snapshots to analyse [the one trained here]")
    ap.add_argument("--only", default="save,train,analyze", help="comma-separated: save, train, analyze")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = run(a.quick, a.rounds, a.exp, tuple(a.only.split(",")))
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
