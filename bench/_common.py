"""What every benchmark script in bench/ shares: the machine's load average beside a timing, torch's
thread count set for a run and put back, the spread of repeated timings, and writing a result as
JSON where --json asks. Not a benchmark itself, and nothing here times anything."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded (empty where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


@contextlib.contextmanager
def kept_threads(n: int | None = None):
    """Inside: torch's thread count set to `n` (None or 0: left as it is); after: what it was before."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spread(vals: list[float]) -> dict:
    """Median, min, max and every value of repeated timings (or ratios)."""
    import statistics

    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "all": list(vals)}


def write_json(path, res: dict, indent: int = 2) -> None:
    """Write `res` to `path` (folders made; nothing written when `path` is None) and say so."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=indent, default=str))
    print(f"\nwrote {path}")


ROOT = Path(__file__).resolve().parents[1]


def run_timed(cmd: list[str], cwd=None) -> tuple[float, float]:
    """Run a command with this checkout first on PYTHONPATH; returns (wall seconds, CPU seconds
    user + system of the child). A failing command ends the benchmark with its stderr's tail."""
    import subprocess
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t, c0 = time.perf_counter(), os.times()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    c1, dt = os.times(), time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return dt, (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)


def run_concurrently(cmds: list[list[str]]) -> list[tuple[float, float]]:
    """Start every command at once (each should limit its own threads) and wait for all: per
    command (wall seconds from the common start to its end, its own CPU seconds user + system, from
    `os.wait4`). For A/B pairs that should meet the same machine: on an idle 2-core CPU, two
    1-thread runs side by side see the same conditions and take half the time of running in turn."""
    import subprocess
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for c in cmds]
    out: dict[int, tuple[float, float]] = {}
    while len(out) < len(procs):
        pid, status, ru = os.wait4(-1, 0)
        for i, p in enumerate(procs):
            if p.pid == pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                out[i] = (time.perf_counter() - t0, ru.ru_utime + ru.ru_stime)
    for p, c in zip(procs, cmds):
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(c)}\n{p.stderr.read().decode()[-2000:]}")
    return [out[i] for i in range(len(procs))]
