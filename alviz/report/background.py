"""Run one drawing job in a second process while this one goes on (``Background``).

An analysis ends with figures that are independent of each other and all Python-bound (matplotlib
holds the GIL), so threads cannot share them out; a spawned process can. ``Background(fn, *args)``
starts ``fn(*args, log=collect)`` in a fresh interpreter (the ``spawn`` start method: no forked
copy of this process's threads and locks) when the machine has at least two cores, and inline
otherwise; ``result()`` returns what ``fn`` returned and replays its log lines here. If the worker
process cannot be started or dies (not: ``fn`` raised), the job runs inline instead, so the
result never depends on where it ran. ``fn`` must be a module-level function and its arguments
plain data (they are pickled between this process and its own child, never read from a file).

What this is not: no pool, no scheduling of several jobs, no drawing.
"""
from __future__ import annotations

from .tsne import cores


def _run(fn, args, kwargs):
    lines: list[str] = []
    return fn(*args, **kwargs, log=lines.append), lines


class Background:
    def __init__(self, fn, *args, log=print, enabled: bool = True, **kwargs):
        self.fn, self.args, self.kwargs, self.log = fn, args, kwargs, log
        self.future = self.pool = None
        if not enabled or cores() < 2:
            return
        try:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self.future = self.pool.submit(_run, fn, args, kwargs)
        except (OSError, RuntimeError, ValueError, ImportError) as e:  # no second process here: inline
            self._drop(f"{type(e).__name__}: {e}")

    def _drop(self, why: str) -> None:
        self.log(f"drawing in a second process failed ({why[:120]}); drawing here instead")
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.future = self.pool = None

    def result(self):
        if self.future is not None:
            from concurrent.futures.process import BrokenProcessPool
            from pickle import PicklingError

            try:
                out, lines = self.future.result()
            except (BrokenProcessPool, PicklingError, OSError) as e:
                self._drop(f"{type(e).__name__}: {e}")
            else:
                self.pool.shutdown()
                for line in lines:
                    self.log(line)
                return out
        return self.fn(*self.args, **self.kwargs, log=self.log)
