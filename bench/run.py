"""The benchmark suite's one entry point: run every benchmark in bench/, print tables, write JSON.

    python bench/run.py [--quick] [--json PATH] [--only NAME[,NAME...]] [--threads N]

Benchmarks are the files bench/bench_<name>.py that exist; each exposes `run(quick) -> dict` (and,
optionally, `table(result) -> str` or `print_table(result)`). Each is imported by path and run in
this process, one after the other; one that is missing or raises is skipped with a note in the
table and in the JSON, and the others still run. The JSON holds the machine (CPU model, cores,
torch version and threads, load average before and after), the command, and each benchmark's
figures and run time. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
NAMES = ("train", "step", "threads", "cost", "metrics", "extract", "compare", "analyze", "script", "parallel", "snapshots",
         "viewer")


def machine() -> dict:
    """CPU model (from /proc/cpuinfo), cores, Python, torch and its threads, load average."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu_model": model or platform.processor() or "unknown", "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "loadavg": list(os.getloadavg())}
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    cuda=torch.cuda.is_available())
    except ImportError:
        info["torch"] = None
    return info


def load_bench(name: str, bench_dir: Path = BENCH_DIR):
    """Import bench/bench_<name>.py by path; None if the file does not exist."""
    path = bench_dir / f"bench_{name}.py"
    if not path.is_file():
        return None
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location(f"alviz_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def render(mod, res: dict) -> str:
    """A benchmark's own table if it has one, else its scalar figures, one per line."""
    if hasattr(mod, "table"):
        return mod.table(res)
    if hasattr(mod, "print_table"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            mod.print_table(res)
        return buf.getvalue().rstrip()
    return "\n".join(f"  {k}: {v}" for k, v in _flat(res) if isinstance(v, (int, float, bool, str)))


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], d


def run_suite(names, quick: bool, threads: int | None, bench_dir: Path = BENCH_DIR, echo=print) -> dict:
    out = {"command": " ".join(["python", "bench/run.py"] + sys.argv[1:]), "quick": quick,
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), "benchmarks": {}, "notes": []}
    for name in names:
        mod = None
        t0 = time.perf_counter()
        try:
            mod = load_bench(name, bench_dir)
            if mod is None:
                note = f"{name}: skipped, bench/bench_{name}.py does not exist"
                out["benchmarks"][name] = {"status": "missing", "note": note}
                out["notes"].append(note)
                echo(f"\n## {name}\n\n{note}")
                continue
            if not hasattr(mod, "run"):
                raise AttributeError(f"bench_{name}.py has no run(quick) function")
            kwargs = {"threads": threads} if name in ("train", "step") else {}
            res = mod.run(quick=quick, **kwargs)
            seconds = time.perf_counter() - t0
            out["benchmarks"][name] = {"status": "ok", "seconds": seconds, "result": res}
            try:
                text = render(mod, res)
            except Exception as e:  # a broken table must not lose the figures
                text = f"(no table: {type(e).__name__}: {e})"
            echo(f"\n## {name} ({seconds:.0f} s)\n\n{text}")
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not stop the suite
            note = f"{name}: failed, {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            out["benchmarks"][name] = {"status": "failed", "note": note, "seconds": time.perf_counter() - t0,
                                       "traceback": traceback.format_exc(limit=5)}
            out["notes"].append(note)
            echo(f"\n## {name}\n\n{note}")
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repetitions: seconds, for a smoke run")
    p.add_argument("--json", type=Path, default=None, help="write all figures to this file")
    p.add_argument("--only", default=None, help=f"comma-separated benchmark names, of: {', '.join(NAMES)}")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the training and step benchmarks (0: torch's default) [1]")
    p.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = list(NAMES)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in NAMES]
        if unknown or not names:
            p.error(f"--only: unknown benchmark {', '.join(map(repr, unknown)) or repr(args.only)}; "
                    f"allowed: {', '.join(NAMES)}")
    if args.threads < 0:
        p.error(f"--threads must be 0 (torch's default) or a positive number; received {args.threads}")
    m = machine()
    print(f"# alviz benchmarks{' (quick)' if args.quick else ''}\n\n{m['cpu_model']}, {m['cores']} cores, "
          f"torch {m.get('torch')}, load average {m['loadavg'][0]:.2f}")
    res = run_suite(names, args.quick, args.threads or None, args.bench_dir)
    if res["notes"]:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in res["notes"]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
