"""Benchmark alviz.extract: extraction overhead over a plain forward pass, and memory vs samples.

    python bench/bench_extract.py [--quick] [--json PATH] [--threads N] [--breakdown] [--device cuda]

Measures, side by side in one run:
1. speed (CPU): the inner loop of ``extract_run`` (``alviz.extract.extract_arrays``: hooks,
   pooling, copies, writes into the preallocated .npy files) against a plain ``model(x)`` loop
   over the same batches from the same batch generator (``alviz.extract.writer._batches``), batch
   size 256, on mnist5k (all 5,000 samples for the MLP, 1,000 for the CNN, whose forward pass is
   35x slower: the ratio does not depend on the count; --quick: 512 for the MLP, 128 for the CNN,
   2 repetitions; `--device cuda`: the model on the GPU, batches copied to it, every layer's
   activations copied back to the host, the way `alviz extract --device cuda` works), for the
   default MLP (2 components, n = 256) and the CNN (4 components,
   n = 256, bridge_pool = 4), AL and BP, freshly initialised (timing does not depend on the
   weights), 1 torch thread by default (--threads). The plain loop moves its output to the CPU
   (a no-op on CPU, kept so both loops include the host copies that apply). The extraction's
   output folder is made before and removed after each timed call (extract_run's hashing,
   manifest and fsync are outside the inner loop). Variants:
   - BP, every layer                    vs plain model(x)
   - AL, on-path layers only            vs plain model(x)
   - AL, every layer                    vs plain model(x) (the early-exit bridges b_k, k < L, are
     extra arithmetic model(x) never does) and vs "reference": AL's forward computing every
     bridge by hand, i.e. the same arithmetic without hooks, copies or files.
   Repetitions alternate the loops' order; medians of wall time and of the process's CPU time
   are compared (on a shared machine the CPU time is the steadier of the two).
2. memory: peak RSS (VmHWM from /proc/self/status; getrusage's ru_maxrss would inherit the
   parent's peak across fork+exec) of a fresh process that runs ``extract_run`` on a synthetic
   npz (20 features, 5 classes) with max_samples = 10,000 and 100,000 (--quick: 1,000 and
   10,000), AL MLP of width 256 (a 1-epoch blobs run), one torch thread: with alviz's writer
   (file writes at row offsets) and, for contrast, with a writer that stores through the
   shared mapping (every written page then stays in the process's resident set).

3. ``--breakdown`` (only this): where the AL MLP's extraction time over the plain forward pass goes
   (the forward with hooks that do nothing, with hooks copying rows into reused buffers, the whole
   extraction, and the same bytes written to files without a model; see ``breakdown``).

Timings are taken on whatever else the machine runs: the load average is recorded next to them.
Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
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

import torch  # noqa: E402

from alviz.config import TrainConfig  # noqa: E402
from alviz.data import load_dataset  # noqa: E402
from alviz.extract import extract_arrays, layer_catalogue  # noqa: E402
from alviz.extract.writer import _batches  # noqa: E402
from alviz.models import create_model  # noqa: E402


def _plain(model, x, idx, bs, extra_bridges=False, device="cpu"):
    with torch.no_grad():
        for xb in _batches(x, idx, bs):
            xb = xb.to(device)
            if not extra_bridges:
                model(xb).cpu()
                continue
            # AL's forward with every bridge b_k(s_k): the arithmetic of extracting all layers
            s = xb
            for k, f in enumerate(model.blocks):
                s = f(s)
                b = model.bridges[k](s)
            model.decode(b, len(model.blocks)).cpu()


class _Extract:
    """extract_arrays into a fresh folder, made before and removed after the timed call."""

    def __init__(self, model, x, idx, bs, names, pool="gap", dtype="float32", device="cpu"):
        self.args = (model, x, idx, names)
        self.kw = dict(pool=pool, dtype=dtype, batch_size=bs, device=device)
        self.tmp = None

    def setup(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="alviz-bench-"))

    def __call__(self):
        model, x, idx, names = self.args
        extract_arrays(model, x, idx, names, self.tmp, **self.kw)

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _once(fn) -> tuple[float, float]:
    if hasattr(fn, "setup"):
        fn.setup()
    _sync()
    t, c = time.perf_counter(), time.process_time()
    fn()
    _sync()
    t, c = time.perf_counter() - t, time.process_time() - c
    if hasattr(fn, "teardown"):
        fn.teardown()
    return t, c


def _alternate(fns: dict, reps: int) -> tuple[dict, dict]:
    """Wall and CPU seconds of each function, repetitions alternating their order."""
    for fn in fns.values():  # warm-up
        _once(fn)
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for r in range(reps):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t, c = _once(fns[k])
            wall[k].append(t)
            cpu[k].append(c)
    return wall, cpu


def speed(quick: bool, archs=("mlp", "cnn"), reps: int | None = None, n: int | None = None,
          device: str = "cpu") -> list[dict]:
    """Extraction inner loop vs plain forward (see the module docstring), on `device`."""
    data = load_dataset("mnist5k")
    x, y, _ = data.split("all")
    default_n = {"mlp": 512 if quick else len(y), "cnn": 128 if quick else 1000}
    bs, reps = 256, reps or (2 if quick else 7)
    rows = []
    for arch, extra in [(a, {"bridge_pool": 4} if a == "cnn" else {}) for a in archs]:
        idx = np.arange(min(n or default_n[arch], len(y)))
        for method in ("bp", "al"):
            torch.manual_seed(0)
            model = create_model(TrainConfig(method=method, arch=arch, **extra), data.input_shape,
                                 data.num_classes).eval().to(device)
            cat = layer_catalogue(model)
            variants = [("all layers", [e.name for e in cat])]
            if method == "al":
                variants.insert(0, ("on-path layers", [e.name for e in cat if e.on_path]))
            for label, names in variants:
                fns = {"plain": lambda: _plain(model, x, idx, bs, device=device),
                       "extract": _Extract(model, x, idx, bs, names, device=device)}
                if method == "al" and label == "all layers":
                    fns["reference"] = lambda: _plain(model, x, idx, bs, extra_bridges=True, device=device)
                wall, cpu = _alternate(fns, reps)
                med = {k: statistics.median(v) for k, v in wall.items()}
                cmed = {k: statistics.median(v) for k, v in cpu.items()}
                row = {"arch": arch, "method": method, "device": str(device), "layers": label, "n_layers": len(names),
                       "n": len(idx),
                       "batch_size": bs, "reps": reps, "median_s": med, "median_cpu_s": cmed,
                       "all_s": wall, "all_cpu_s": cpu,
                       "ratio_vs_plain": med["extract"] / med["plain"],
                       "cpu_ratio_vs_plain": cmed["extract"] / cmed["plain"]}
                if "reference" in med:
                    row["ratio_vs_reference"] = med["extract"] / med["reference"]
                    row["cpu_ratio_vs_reference"] = cmed["extract"] / cmed["reference"]
                rows.append(row)
    return rows


def breakdown(n: int | None = None, reps: int = 9) -> dict:
    """Where extraction's time over a plain forward pass goes, for the default AL MLP's on-path
    layers on mnist5k (all 5,000 samples; batch 256), each loop over the same batches, repetitions
    alternating: `plain` (model(x)); `hooks` (the same forward with alviz's hooks calling a sink
    that does nothing: hook dispatch and the detach/pool/cast check); `copy` (the hooks copy each
    batch's rows into a reused staging buffer per layer: alviz's copy, no files); `extract`
    (``extract_arrays``: copies, preallocated .npy files, writes); `write` (no model: the same
    bytes written into fresh preallocated files with alviz's writer, from buffers already filled).
    CPU seconds of the process, medians and ranges (wall-clock medians beside them)."""
    from alviz.extract import capture
    from alviz.extract.writer import _NpyWriter

    data = load_dataset("mnist5k")
    x, _, _ = data.split("all")
    idx = np.arange(min(n or len(x), len(x)))
    bs = 256
    torch.manual_seed(0)
    model = create_model(TrainConfig(method="al"), data.input_shape, data.num_classes).eval()
    names = [e.name for e in layer_catalogue(model) if e.on_path]
    stage = {}

    def hooked(sink):
        def f():
            with torch.no_grad(), capture(model, names, pool="gap", dtype=torch.float32, sink=sink):
                for xb in _batches(x, idx, bs):
                    model(xb)
        return f

    def copy_sink(name, a):
        buf = stage.get(name)
        if buf is None:
            buf = stage[name] = torch.empty((bs,) + tuple(a.shape[1:]))
        buf[:len(a)].copy_(a)

    hooked(copy_sink)()  # fills `stage`: the row shapes for `write`
    rows = {k: np.ascontiguousarray(v.numpy()) for k, v in stage.items()}

    class _Write:
        def setup(self):
            self.tmp = Path(tempfile.mkdtemp(prefix="alviz-bench-"))

        def __call__(self):
            ws = [_NpyWriter(self.tmp / f"{k}.npy", len(idx), r.shape[1:], r.dtype, batch_rows=bs)
                  for k, r in rows.items()]
            for start in range(0, len(idx), bs):
                for w, r in zip(ws, rows.values()):
                    w.write(start, r[:min(bs, len(idx) - start)])
            for w in ws:
                w.close()

        def teardown(self):
            shutil.rmtree(self.tmp, ignore_errors=True)

    fns = {"plain": lambda: _plain(model, x, idx, bs), "hooks": hooked(lambda name, a: None),
           "copy": hooked(copy_sink), "extract": _Extract(model, x, idx, bs, names), "write": _Write()}
    wall, cpu = _alternate(fns, reps)
    out = {"n": len(idx), "batch_size": bs, "layers": names, "reps": reps, "threads": torch.get_num_threads(),
           "bytes": int(sum(r[:1].nbytes for r in rows.values()) * len(idx)), "loadavg_start": os.getloadavg()}
    out["cpu_s"] = {k: statistics.median(v) for k, v in cpu.items()}
    out["cpu_range_s"] = {k: [min(v), max(v)] for k, v in cpu.items()}
    out["all_cpu_s"] = cpu
    out["wall_s"] = {k: statistics.median(v) for k, v in wall.items()}
    out["loadavg_end"] = os.getloadavg()
    return out


def print_breakdown(b: dict) -> None:
    p = b["cpu_s"]["plain"]
    print(f"\nwhere extraction's time goes: AL MLP on-path layers ({', '.join(b['layers'])}), {b['n']} samples, "
          f"batch {b['batch_size']}, {b['bytes'] / 2**20:.1f} MiB written, torch threads {b['threads']}; CPU s, "
          f"medians [range] of {b['reps']}")
    for k, v in b["cpu_s"].items():
        lo, hi = b["cpu_range_s"][k]
        print(f"  {k:<8s} {v:7.4f} [{lo:.4f}-{hi:.4f}]  {v / p:5.3f} of plain   (wall {b['wall_s'][k]:.4f} s, "
              f"{b['wall_s'][k] / b['wall_s']['plain']:.3f})")
    print(f"  load average {b['loadavg_start'][0]:.2f} -> {b['loadavg_end'][0]:.2f}")


_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)  # memory, not time, is measured here; one thread avoids waits on a busy machine
import alviz.extract as X
import alviz.extract.writer as XW
if {through_mapping}:  # the alternative alviz avoids: stores through the shared mapping
    from numpy.lib.format import open_memmap

    class MapWriter:  # the interface of alviz.extract.writer._NpyWriter
        def __init__(self, path, n, row_shape, dtype, batch_rows=1):
            self.mm = open_memmap(path, mode="w+", dtype=dtype, shape=(n,) + tuple(row_shape))
            self.row_shape = tuple(row_shape)

        def rows(self, start, count):  # the hooks copy straight into the mapping
            return torch.from_numpy(self.mm[start:start + count])

        def write(self, start, arr):
            self.mm[start:start + len(arr)] = arr

        def close(self, flush=True):
            self.mm.flush()
            del self.mm

    XW._NpyWriter = MapWriter

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

t = time.perf_counter()
out = X.extract_run({run!r}, dataset={dataset!r}, split="test", max_samples={n}, batch_size=256,
                    log=lambda *a: None)
elapsed = time.perf_counter() - t
size = sum(p.stat().st_size for p in out.iterdir())
print(json.dumps(dict(n={n}, seconds=elapsed, bytes_written=size, peak_rss=status("VmHWM:"))))
"""


def memory(quick: bool, work: Path) -> dict:
    from alviz.train import train

    sizes = (1_000, 10_000) if quick else (10_000, 100_000)
    n_test = int(sizes[1] * 1.2)
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5, size=(5, 20)).astype(np.float32)
    y = rng.integers(0, 5, n_test + 1000)
    x = (centers[y] + rng.normal(size=(len(y), 20))).astype(np.float32)
    npz = work / "synthetic.npz"
    np.savez(npz, x=x[:1000], y=y[:1000], x_test=x[1000:], y_test=y[1000:])
    run = work / "al-seed0"
    train(TrainConfig(method="al", dataset="blobs", epochs=1, width=256, schedule="none", device="cpu"), run,
          progress=False, log=lambda *a: None)
    rows = []
    writers = ("file writes", "through mapping")
    for writer in writers:
        for n in sizes:
            code = _CHILD.format(root=str(ROOT), run=str(run), dataset=f"npz:{npz}", n=n,
                                 through_mapping=writer == "through mapping")
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r["writer"] = writer
            rows.append(r)
            shutil.rmtree(run / "activations", ignore_errors=True)
    mb = 2.0 ** 20
    for r in rows:
        r["peak_rss_mb"] = r["peak_rss"] / mb
        r["written_mb"] = r["bytes_written"] / mb
    out = {"sizes": list(sizes), "npz_test_samples": n_test, "runs": rows}
    for writer in writers:
        a, b = [r for r in rows if r["writer"] == writer]
        out[f"growth_{writer.replace(' ', '_')}"] = b["peak_rss"] / a["peak_rss"] - 1
    return out


def run(quick: bool = False, archs=("mlp", "cnn"), reps: int | None = None, memory_part: bool = True,
        n: int | None = None, device: str = "cpu") -> dict:
    """Run the benchmark; return a JSON-serialisable dict of the figures."""
    out = {"quick": quick,
           "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform(), "python": platform.python_version(),
                       "torch": torch.__version__, "loadavg_start": os.getloadavg()}}
    out["speed"] = speed(quick, archs, reps, n, device) if archs else []
    if memory_part:
        work = Path(tempfile.mkdtemp(prefix="alviz-bench-mem-"))
        try:
            out["memory"] = memory(quick, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out["machine"]["loadavg_end"] = os.getloadavg()
    return out


def print_table(res: dict) -> None:
    device = res["speed"][0].get("device", "cpu") if res["speed"] else "cpu"
    print("extraction inner loop (extract_arrays: hooks, gap pooling, float32 .npy files) vs plain model(x), "
          f"{device}, same batches;\nmedians: wall seconds [CPU seconds of the process]")
    print(f"  {'arch':<4s} {'meth':<4s} {'layers':<15s} {'n':>5s} {'plain':>15s} {'extract':>15s} "
          f"{'ratio':>11s}   {'reference, ratio vs it':>26s}")
    for r in res["speed"]:
        m, c = r["median_s"], r["median_cpu_s"]
        ref = ""
        if "reference" in m:
            ref = (f"{m['reference']:6.3f} [{c['reference']:6.3f}] {r['ratio_vs_reference']:4.2f} "
                   f"[{r['cpu_ratio_vs_reference']:4.2f}]")
        print(f"  {r['arch']:<4s} {r['method']:<4s} {r['layers']:<15s} {r['n']:>5d} {m['plain']:6.3f} "
              f"[{c['plain']:6.3f}] {m['extract']:6.3f} [{c['extract']:6.3f}] {r['ratio_vs_plain']:4.2f} "
              f"[{r['cpu_ratio_vs_plain']:4.2f}]   {ref}")
    mem = res.get("memory")
    if mem is not None:
        _print_memory(mem)
    m = res["machine"]
    print(f"\n{m['cpus']} CPUs, torch threads {m['torch_threads']}; load average at start "
          f"{m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}")


def _print_memory(mem: dict) -> None:
    print("\npeak RSS (VmHWM) of extract_run in a fresh process (AL MLP n=256, synthetic npz, all layers)")
    print(f"  {'samples':>8s} {'writer':>16s} {'written MB':>11s} {'peak RSS MB':>12s} {'time s':>7s}")
    for r in mem["runs"]:
        print(f"  {r['n']:>8d} {r['writer']:>16s} {r['written_mb']:>11.0f} {r['peak_rss_mb']:>12.0f} "
              f"{r['seconds']:>7.1f}")
    print(f"  growth {mem['sizes'][0]} -> {mem['sizes'][1]} samples: {100 * mem['growth_file_writes']:.1f}% "
          f"(alviz: file writes), {100 * mem['growth_through_mapping']:.1f}% (stores through the mapping)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, finishes in seconds")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the speed part (default 1: the machine is shared; 0: torch's default)")
    p.add_argument("--archs", default="mlp,cnn", help="speed part for these archs (comma-separated; '' skips it)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 7; --quick 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory part")
    p.add_argument("--breakdown", action="store_true",
                   help="only the breakdown of the AL MLP's extraction (hooks, copies, writes; see breakdown())")
    p.add_argument("--n", type=int, default=None,
                   help="samples for the speed part (default: MLP 5,000, CNN 1,000; --quick 512 and 128)")
    p.add_argument("--device", default="cpu",
                   help="the speed part's device: cpu, cuda or cuda:N (the memory part stays on the CPU) [cpu]")
    a = p.parse_args(argv)
    if a.device != "cpu":
        from alviz.errors import UserError
        from alviz.train import resolve_device

        try:
            a.device = str(resolve_device(a.device))
        except UserError as e:
            p.error(f"--device: {e}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.breakdown:
        b = breakdown(a.n, a.reps or 9)
        print_breakdown(b)
        if a.json:
            Path(a.json).write_text(json.dumps(b, indent=1))
        return 0
    archs = tuple(x for x in a.archs.split(",") if x)
    res = run(a.quick, archs, a.reps, not a.no_memory, a.n, a.device)
    print_table(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
