"""Time a CIFAR-10 training epoch of resnet20 and vgg, AL and BP, fp32 / bf16 autocast / channels-last.

    python bench/gpu_epoch.py [--json PATH] [--steps 200] [--warmup 20] [--batch-size 128]
                              [--archs resnet20,vgg] [--methods al,bp] [--variants fp32,amp,amp_cl]
                              [--compile] [--device cuda]
    python bench/gpu_epoch.py --device cpu --steps 3      # a smoke run on a machine without a GPU

One short, prepared script for a lent GPU (an H100: estimated 2-4 minutes for the default grid). The data
are synthetic, of CIFAR-10's shape: 50,000 random uint8 images 3x32x32 and labels 0..9, scaled and
standardised per channel like the real set, kept on the GPU and augmented there (pad-4 crop and
flip), as `alviz.train.train` does. Each configuration builds the model and optimiser the way
`train()` does, runs `--warmup` steps (cuDNN autotuning, compilation), then times `--steps` steps
of `alviz.train.train_epoch` (the loop `train()` runs) between two synchronisations, and
EXTRAPOLATES an epoch: step time x ceil(50,000 / batch). The table says so. Evaluation and the
per-epoch checkpoint are not timed.

The share of time the GPU is busy comes from the profiler: after the timed steps,
`--profile-steps` more steps run under `torch.profiler` (CPU and CUDA activity), and the union of
the kernels' intervals over the window from the first host operation to the last kernel's end is
the "kernel busy" share (`busy_fraction`; the issue's goal: at least 80 % for resnet20 at batch
128). "AL / BP" is AL's step time over BP's for the same arch and variant (goal: at most 2).
GPU utilisation is also sampled every 0.1 s during the timed steps by a background thread
(`torch.cuda.utilization()`, else `nvidia-smi --query-gpu=utilization.gpu`); it is the share of
time a kernel was running, not of the GPU's arithmetic. Host synchronisations per step are
counted in a separate, untimed pass of 60 steps with `torch.cuda.set_sync_debug_mode('warn')`
(the loop should show 4: the on_nan flag read at step 50 and at the last step, and the two
reads of the epoch's loss sums and accuracy at its end).

Needs only torch, numpy and alviz (no openTSNE, mlxtend or torchvision).
"""
from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import write_json  # noqa: E402

from alviz.config import TrainConfig  # noqa: E402
from alviz.models import create_model, resolve_shape_defaults  # noqa: E402
from alviz.train import (compile_losses, make_optimizer, resolve_device, train_epoch,  # noqa: E402
                         use_channels_last)

VARIANTS = {"fp32": {"amp": False, "channels_last": False},
            "amp": {"amp": True, "channels_last": False},
            "amp_cl": {"amp": True, "channels_last": True},
            "cl": {"amp": False, "channels_last": True}}
CIFAR_TRAIN = 50_000


class UtilSampler:
    """Samples GPU utilisation (%) in a background thread while running (a `with` block)."""

    def __init__(self, device: torch.device, every: float = 0.1):
        self.device, self.every, self.samples = device, every, []
        self.source = None
        self._stop = threading.Event()
        self._thread = None
        if device.type != "cuda":
            return
        try:
            torch.cuda.utilization(device)
            self.source = "torch.cuda.utilization"
        except Exception:  # noqa: BLE001 - pynvml missing or the driver refuses
            if shutil.which("nvidia-smi"):
                self.source = "nvidia-smi"

    def _read(self):
        if self.source == "torch.cuda.utilization":
            return float(torch.cuda.utilization(self.device))
        idx = self.device.index or 0
        r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                            "-i", str(idx)], capture_output=True, text=True, timeout=5)
        return float(r.stdout.strip().splitlines()[0])

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.append(self._read())
            except Exception:  # noqa: BLE001
                pass
            self._stop.wait(self.every)

    def __enter__(self):
        if self.source:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def mean(self):
        return statistics.fmean(self.samples) if self.samples else None


def busy_fraction(intervals, start: float, end: float) -> float:
    """Share of [start, end] covered by the union of `intervals` ((begin, finish) pairs, any order,
    overlapping or not; clipped to the window): the time at least one kernel was running."""
    if not end > start:
        raise ValueError(f"busy_fraction: the window must have end > start; received [{start}, {end}]")
    covered, reach = 0.0, start
    for b, f in sorted((max(b, start), min(f, end)) for b, f in intervals):
        if f <= reach:
            continue
        covered += f - max(b, reach)
        reach = f
    return covered / (end - start)


def profile_busy(fn, device: torch.device) -> dict | None:
    """Run `fn` under torch.profiler (CPU and CUDA activity) and return the share of the profiled
    window during which a GPU kernel ran: the window is from the first host operation's start to
    the last kernel's end; kernels are the profiler's CUDA-side events. None off CUDA, or when the
    profiler recorded no kernel (a build without CUPTI)."""
    if device.type != "cuda":
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        _sync(device)
    events = prof.events()
    kernels = [(e.time_range.start, e.time_range.end) for e in events if e.device_type == DeviceType.CUDA]
    host = [e.time_range.start for e in events if e.device_type == DeviceType.CPU]
    if not kernels or not host:
        return None
    start, end = min(host), max(f for _, f in kernels)
    return {"busy": busy_fraction(kernels, start, end), "kernels": len(kernels), "window_ms": (end - start) / 1e3}


def synthetic_cifar(n: int, device: torch.device, seed: int = 0):
    """Random uint8 images (n, 3, 32, 32) and labels, standardised per channel; on `device`."""
    g = torch.Generator().manual_seed(seed)
    x8 = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = x8.to(device).float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / std, y.to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_syncs(device, fn) -> int | None:
    """Host synchronisations `fn` causes (torch.cuda.set_sync_debug_mode('warn')); None off CUDA."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum(1 for w in caught if "synchroniz" in str(w.message).lower())


def time_config(arch, method, variant, args, x, y, device) -> dict:
    flags = VARIANTS[variant]
    cfg = resolve_shape_defaults(TrainConfig(method=method, arch=arch, dataset="cifar10", batch_size=args.batch_size,
                                             width=args.width, device=str(device), compile=args.compile,
                                             **flags))
    torch.manual_seed(0)
    model = create_model(cfg, (3, 32, 32), 10).to(device)
    cl = use_channels_last(cfg, device, (3, 32, 32))
    xs = x
    if cl:
        model = model.to(memory_format=torch.channels_last)
        xs = x.contiguous(memory_format=torch.channels_last)
    opt = make_optimizer(model.param_groups(cfg.lr, cfg.lr_gh_factor), cfg, device)
    losses_fn = compile_losses(model) if cfg.compile else model.losses
    model.train()
    bs, n = cfg.batch_size, len(y)
    g = torch.Generator().manual_seed(1)
    aug = torch.Generator(device=device).manual_seed(2)

    def perm(steps):
        return torch.randint(0, n, (steps * bs,), generator=g).to(device)

    def go(steps):
        return train_epoch(model, opt, xs, y, perm(steps), batch_size=bs, losses_fn=losses_fn, aug_gen=aug,
                           amp=cfg.amp, on_nan="stop", channels_last=cl)

    t0 = time.perf_counter()
    go(args.warmup)
    _sync(device)
    warm_s = time.perf_counter() - t0
    syncs = count_syncs(device, lambda: go(60))
    p = perm(args.steps)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with UtilSampler(device) as util:
        t0 = time.perf_counter()
        st = train_epoch(model, opt, xs, y, p, batch_size=bs, losses_fn=losses_fn, aug_gen=aug,
                         amp=cfg.amp, on_nan="stop", channels_last=cl)
        _sync(device)
        dt = time.perf_counter() - t0
    step_s = dt / args.steps
    epoch_steps = math.ceil(CIFAR_TRAIN / bs)
    busy = profile_busy(lambda: go(args.profile_steps), device) if args.profile_steps > 0 else None
    return {"arch": arch, "method": method, "variant": variant, "width": cfg.width, "amp": cfg.amp, "channels_last": cl,
            "compile": cfg.compile, "batch": bs, "steps_timed": args.steps, "warmup_steps": args.warmup,
            "warmup_s": warm_s, "step_ms": step_s * 1e3, "samples_per_s": bs / step_s,
            "epoch_s_extrapolated": step_s * epoch_steps, "epoch_steps": epoch_steps,
            "gpu_util_pct": util.mean(), "util_samples": len(util.samples), "util_source": util.source,
            "gpu_busy_profiler": busy, "profile_steps": args.profile_steps,
            "syncs_in_60_steps": syncs,
            "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "params": sum(q.numel() for q in model.parameters()),
            "final_loss": st.sums[-1] / max(st.n, 1) if st.sums else None}


def table(res: dict) -> str:
    lines = [f"CIFAR-10-shaped synthetic data, {res['n_train']} training images on {res['device_name']}, "
             f"batch {res['batch']}, torch {res['torch']}. Epoch times are EXTRAPOLATED from "
             f"{res['steps']} timed steps after {res['warmup']} warm-up steps (x ceil(50000/batch)); "
             "evaluation and checkpoint writing not included.", "",
             "| arch | method | variant | step ms | images/s | epoch s (extrap.) | vs fp32 | AL / BP | GPU util % | "
             "kernel busy % (profiler) | syncs / 60 steps | peak GiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {(r["arch"], r["method"]): r["step_ms"] for r in res["runs"] if r.get("variant") == "fp32"}
    bp = {(r["arch"], r["variant"], r.get("compile")): r["step_ms"] for r in res["runs"]
          if r.get("method") == "bp" and "error" not in r}
    for r in res["runs"]:
        if "error" in r:
            lines.append(f"| {r['arch']} | {r['method'].upper()} | {r['variant']} | failed: {r['error']} |||||||||")
            continue
        b = base.get((r["arch"], r["method"]))
        key = (r["arch"], r["variant"], r.get("compile"))
        busy = 100 * r["gpu_busy_profiler"]["busy"] if r.get("gpu_busy_profiler") else None
        f = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
        lines.append(f"| {r['arch']} | {r['method'].upper()} | {r['variant']}{'+compile' if r['compile'] else ''} | "
                     f"{r['step_ms']:.2f} | {r['samples_per_s']:.0f} | {r['epoch_s_extrapolated']:.1f} | "
                     f"{f(b / r['step_ms'] if b else None, '.2f')}x | "
                     f"{f(r['step_ms'] / bp[key] if r['method'] != 'bp' and key in bp else None, '.2f')} | "
                     f"{f(r['gpu_util_pct'], '.0f')} | {f(busy, '.0f')} | "
                     f"{f(r['syncs_in_60_steps'], 'd')} | {f(r['peak_mem_gib'], '.2f')} |")
    lines.append(f"\nTotal run time {res['seconds']:.0f} s.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu [auto]")
    p.add_argument("--steps", type=int, default=200, help="timed steps per configuration [200]")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first [20]")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--width", type=int, default=None, help="AL label-path width n [the arch's default]")
    p.add_argument("--archs", default="resnet20,vgg")
    p.add_argument("--methods", default="al,bp")
    p.add_argument("--variants", default="fp32,amp,amp_cl", help=f"of: {', '.join(VARIANTS)}")
    p.add_argument("--compile", action="store_true", help="torch.compile the losses (slow first steps)")
    p.add_argument("--profile-steps", type=int, default=30,
                   help="steps run under torch.profiler after the timed ones, for the share of time a kernel ran "
                        "(CUDA only; 0: none) [30]")
    p.add_argument("--n-train", type=int, default=CIFAR_TRAIN, help="synthetic images held on the device [50000]")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default) [0]")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    archs = [a for a in args.archs.split(",") if a]
    methods = [m for m in args.methods.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    for name, vals, allowed in (("archs", archs, ("resnet20", "resnet32", "vgg", "cnn")), ("methods", methods, ("al", "bp")),
                                ("variants", variants, tuple(VARIANTS))):
        bad = [v for v in vals if v not in allowed]
        if bad or not vals:
            p.error(f"--{name}: received {', '.join(bad) or 'nothing'}; allowed: {', '.join(allowed)}")
    for name in ("steps", "warmup", "batch_size", "n_train", "width"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer; received {getattr(args, name)}")
    if args.profile_steps < 0:
        p.error(f"--profile-steps must be 0 (no profile) or a positive integer; received {args.profile_steps}")
    from alviz.errors import UserError

    try:
        device = resolve_device(args.device)
    except UserError as e:
        p.error(str(e))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as alviz.train.train sets it on CUDA
    t_all = time.perf_counter()
    x, y = synthetic_cifar(args.n_train, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = {"device": str(device), "device_name": name, "torch": torch.__version__, "batch": args.batch_size,
           "steps": args.steps, "warmup": args.warmup, "n_train": args.n_train, "extrapolated": True,
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
           "runs": []}
    for arch in archs:
        for method in methods:
            for variant in variants:
                t0 = time.perf_counter()
                try:
                    r = time_config(arch, method, variant, args, x, y, device)
                except Exception as e:  # noqa: BLE001 - report and go on with the grid
                    r = {"arch": arch, "method": method, "variant": variant,
                         "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]}
                r["config_seconds"] = time.perf_counter() - t0
                res["runs"].append(r)
                print(f"{arch} {method} {variant}: " + (f"{r['step_ms']:.2f} ms/step, util {r['gpu_util_pct']}"
                                                         if "error" not in r else r["error"]), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    res["seconds"] = time.perf_counter() - t_all
    print(table(res))
    write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
