"""Where a pipeline rank's epoch goes: timed phases, CPU time, and the benchmark's simulated compute.

A rank times the phases that are not its own compute (`EpochProfile.PHASES`: waiting for the
previous rank's micro-batch, packing and posting a send, waiting for sends to complete; under
ALVIZ_SIM_STAGE_MS the simulated compute as slept) and its CPU time: the main thread's (its
compute, packing and Python; waiting costs none) and the other threads' (gloo's I/O threads
moving the messages). `columns` turns the ranks' all-reduced figures into summary.csv columns;
`rank{r}_compute_s` is the rest of the epoch's wall time (forward, backward, update,
bookkeeping), so a compute much longer than the main thread's CPU time is a rank waiting for a
core (more ranks than cores), not work.

What this is not: no training, no transfers (``pipeline.py`` records, ``group.Comm`` moves).
"""
from __future__ import annotations

import time

import torch


class EpochProfile:
    """One rank's profile of one epoch: `start()`, add to `phase[name]`, then `vector()`."""

    PHASES = ("recv_wait", "pack_send", "send_wait")

    def __init__(self, simulated: bool = False):
        self.names = self.PHASES + (("simulated",) if simulated else ())
        self.phase = dict.fromkeys(self.names, 0.0)
        self.simulate = SimulatedCompute(self.phase)
        self._t0 = self._cpu0 = self._main0 = 0.0

    def start(self) -> None:
        self._t0, self._cpu0, self._main0 = time.perf_counter(), time.process_time(), time.thread_time()

    def vector(self) -> torch.Tensor:
        """float64 [wall, main-thread CPU, other threads' CPU, *phases] since `start()`."""
        wall = time.perf_counter() - self._t0
        cpu, main = time.process_time() - self._cpu0, time.thread_time() - self._main0
        return torch.tensor([wall, main, max(0.0, cpu - main), *self.phase.values()], dtype=torch.float64)

    @classmethod
    def columns(cls, prof: torch.Tensor, names) -> dict[str, float]:
        """summary.csv columns from the ranks' vectors (`prof`: K rows of `vector()`; `names`: the
        phases recorded): per rank r `rank{r}_{phase}_s`, `rank{r}_compute_s` (wall time less the
        phases), `rank{r}_cpu_s` (main thread) and `rank{r}_io_cpu_s` (other threads)."""
        row = {}
        for r, v in enumerate(prof.tolist()):
            wall, main, other, phases = v[0], v[1], v[2], v[3:]
            for name, s in zip(names, phases):
                row[f"rank{r}_{name}_s"] = s
            row[f"rank{r}_compute_s"] = wall - sum(phases)
            row[f"rank{r}_cpu_s"] = main
            row[f"rank{r}_io_cpu_s"] = other
        return row


class SimulatedCompute:
    """The benchmark hook's compute (ALVIZ_SIM_STAGE_MS) as sleeps that add up to what is simulated:
    a sleep that wakes late (on a loaded machine the scheduler adds milliseconds to each) shortens
    the next, so an epoch's simulated compute is the simulated amount, not that plus the machine's
    wake-up latency. The time slept is added to `phase["simulated"]`."""

    def __init__(self, phase: dict):
        self.phase, self.owed = phase, 0.0

    def __call__(self, seconds: float) -> None:
        self.owed += seconds
        if self.owed > 0:
            t = time.perf_counter()
            time.sleep(self.owed)
            slept = time.perf_counter() - t
            self.owed -= slept
            self.phase["simulated"] += slept
