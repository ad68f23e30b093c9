"""A small stand-in for torchrun on 127.0.0.1, for tests and benchmarks: ``launch_local`` starts
``nprocs`` ranks of a command with the environment torchrun gives and collects their output.

What this is not: a launcher for real jobs (use torchrun), and it knows nothing of alviz's CLI:
a subprocess rank runs ``python -m MODULE ARGS`` and a forked rank calls the ``entry`` function
the caller passes (``alviz.cli.main`` in alviz's tests), so nothing here imports the CLI.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class RankOutput:
    rank: int
    returncode: int | None
    stdout: str
    stderr: str
    killed: str | None  # None (exited by itself), "timeout", or "after another rank exited"


def _forked_rank(entry: Callable[[list[str]], int], args: list[str], env: dict, threads: int, out_fd: int,
                 err_fd: int) -> None:
    """Body of a forked rank: the parent's modules are already imported, so it starts at once."""
    rc = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        os.environ.update(env)
        if threads:
            torch.set_num_threads(threads)
        rc = entry(list(args))
    except BaseException:  # noqa: BLE001 - a child reports everything and exits
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)


def launch_local(args: list[str], nprocs: int, *, threads: int = 1, env: dict | None = None,
                 timeout: float | None = None, grace: float | None = None, cwd=None,
                 fork: bool = False, entry: Callable[[list[str]], int] | None = None,
                 module: str = "alviz.cli") -> list[RankOutput]:
    """Run `alviz ARGS` as `nprocs` ranks on 127.0.0.1 with the environment torchrun gives (RANK,
    WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), `threads` CPU threads each,
    and wait for all of them; past `timeout` seconds every rank still running is killed, and with
    `grace`, so is every rank still running `grace` seconds after the first one exited. Each rank
    is a fresh `python -m MODULE` process (default `alviz.cli`), or with `fork=True` a fork of this
    process calling `entry(args)` (for alviz, `alviz.cli.main`; no import cost: what tests use;
    Linux only, and one thread per rank only: GNU OpenMP is not fork-safe, a forked rank using a
    thread team the parent had used deadlocks in its first matrix product). Unlike torchrun (which
    stops the others when one rank fails), without `grace` it lets every rank find out for itself: what a test
    of alviz's own failure handling needs."""
    if fork and threads != 1:
        raise ValueError(f"launch_local(fork=True) runs ranks of one thread only (OpenMP is not fork-safe); "
                         f"received threads={threads}; use fork=False")
    if fork and entry is None:
        raise ValueError("launch_local(fork=True) needs entry=, the function each forked rank calls with ARGS "
                         "(for alviz: alviz.cli.main)")
    port = free_port()
    extra = {**(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nprocs),
             "LOCAL_WORLD_SIZE": str(nprocs), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if Path("/sys/class/net/lo").exists() and "GLOO_SOCKET_IFNAME" not in os.environ:
        extra.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs, files = [], []
    ctx = None
    if fork:
        import multiprocessing

        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (seconds)
        ctx = multiprocessing.get_context("fork")
    for r in range(nprocs):
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        files.append((out, err))
        e = {**extra, "RANK": str(r), "LOCAL_RANK": str(r)}
        if fork:
            p = ctx.Process(target=_forked_rank, args=(entry, args, e, threads, out.fileno(), err.fileno()), daemon=True)
            p.start()
        else:
            p = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=err,
                                 env={**os.environ, **e}, cwd=cwd)
        procs.append(p)

    def poll(p):
        return p.exitcode if fork else p.poll()

    deadline = None if timeout is None else time.monotonic() + timeout
    killed: list[str | None] = [None] * nprocs
    first_exit = None
    while any(poll(p) is None for p in procs):
        now = time.monotonic()
        if first_exit is None and any(poll(p) is not None for p in procs):
            first_exit = now
        why = None
        if deadline is not None and now > deadline:
            why = "timeout"
        elif grace is not None and first_exit is not None and now > first_exit + grace:
            why = "after another rank exited"
        if why:
            for r, p in enumerate(procs):
                if poll(p) is None:
                    p.kill()
                    killed[r] = why
            for p in procs:
                (p.join if fork else p.wait)()
            break
        time.sleep(0.02)
    outs = []
    for r, (p, (fo, fe)) in enumerate(zip(procs, files)):
        fo.seek(0)
        fe.seek(0)
        outs.append(RankOutput(r, poll(p), fo.read().decode(errors="replace"),
                               fe.read().decode(errors="replace"), killed[r]))
        fo.close()
        fe.close()
    return outs
