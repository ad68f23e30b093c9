"""What the pipeline and DDP share: joining the process group torchrun describes, point-to-point
and collective transfers (gloo gets CPU tensors, NCCL device tensors), rank 0's word on how a run
starts, the frame of a parallel epoch loop (progress bar, one-line failures: Ctrl-C, a lost rank,
a fault injected by a test, a diverged loss; the Result rank 0 returns).

What this is not: no training loop (``pipeline``, ``ddp``), no launching of processes
(``launch``).
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..errors import UserError
from ..models import resolve_shape_defaults
from ..train import Diverged, Interrupted, Result, _check_resume_config, resolve_device


DEFAULT_TIMEOUT_S = 600.0
NO_BAD = 2**62  # "no non-finite loss yet" in the per-loss first-bad-unit vectors


class PeerFailed(UserError):
    """Another rank died, hung past the timeout, or stopped; this rank gives up instead of waiting."""

    exit_code = 4


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _rank_device(spec: str, local_rank: int) -> torch.device:
    """'auto'/'cuda' -> cuda:(local_rank mod #GPUs) when CUDA is there; 'cpu'; 'cuda:N' for every rank."""
    if spec in ("auto", "cuda"):
        if spec == "auto" and not torch.cuda.is_available():
            return torch.device("cpu")
        resolve_device(spec)  # checks that CUDA exists
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    return resolve_device(spec)


def init_distributed(device_spec: str = "auto") -> DistContext:
    """Join the process group that torchrun described in the environment (idempotent)."""
    env = os.environ
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise UserError("--pipeline and --ddp run one process per rank and must be started by torchrun, e.g. "
                        "`torchrun --nproc-per-node 2 -m alviz.cli train --method al --pipeline`; "
                        f"the environment lacks {', '.join(missing)}")
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers; received "
                        f"{env.get('RANK')!r}, {env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}, "
                        f"{env.get('LOCAL_WORLD_SIZE')!r}") from None
    raw_timeout = env.get("ALVIZ_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        timeout = float(raw_timeout)
        if not timeout > 0:
            raise ValueError
    except ValueError:
        raise UserError(f"ALVIZ_DIST_TIMEOUT must be a positive number of seconds; received {raw_timeout!r}") from None
    device = _rank_device(device_spec, local_rank)
    backend = env.get("ALVIZ_DIST_BACKEND")
    if backend is None:
        own_gpu = device_spec in ("auto", "cuda") and torch.cuda.device_count() >= local_world
        backend = "nccl" if device.type == "cuda" and own_gpu else "gloo"
    if backend not in ("gloo", "nccl"):
        raise UserError(f"unknown ALVIZ_DIST_BACKEND {backend!r}; allowed: gloo, nccl")
    if backend == "nccl" and device.type != "cuda":
        raise UserError("ALVIZ_DIST_BACKEND=nccl needs CUDA devices; received --device " + device_spec)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as e:
            raise PeerFailed(f"rank {rank} of {world}: could not join the process group at "
                             f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} ({first_line(e)})") from None
    return DistContext(rank, world, local_rank, device, backend, timeout)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:300]


def is_comm_error(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in msg for w in ("gloo", "nccl", "connection", "timed out",
                                                                 "timeout", "peer", "socket", "broken pipe"))


def epoch_failure(e: BaseException, ctx: DistContext, run: Path, epoch: int, kept: int, where) -> None:
    """Raise the one-line error of a parallel loop stopped in `epoch` (0-based) by `e`: Ctrl-C, or
    lost contact with another rank (`where()`: the micro-batch or step); return for anything else,
    which the caller re-raises as it is."""
    if isinstance(e, KeyboardInterrupt):
        raise Interrupted(f"interrupted during epoch {epoch + 1}; the checkpoint of epoch {kept} in "
                          f"{run} is kept; continue it by running the same command with --resume") from None
    if isinstance(e, Exception) and is_comm_error(e) and not isinstance(e, UserError):
        raise lost_contact(ctx, f"in epoch {epoch + 1}, {where()}", run, e) from None


@contextmanager
def epoch_loop(ctx: DistContext, run: Path, history: list, bar, where):
    """Around a parallel run's epoch loop: Ctrl-C and lost contact with another rank become
    one-line errors (`where()` -> (0-based epoch, "micro-batch 9"): where the loop stood), and the
    progress bar is closed however the loop ends."""
    try:
        yield
    except BaseException as e:
        epoch, unit = where()
        epoch_failure(e, ctx, run, epoch, len(history), lambda: unit)
        raise
    finally:
        if bar is not None:
            bar.close()


def progress_bar(ctx: DistContext, progress: bool, total: int, unit: str, desc: str):
    """Rank 0's tqdm bar over the run's micro-batches or steps (None on other ranks or without progress)."""
    if not (progress and ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, leave=False, dynamic_ncols=True, desc=desc)


def run_result(ctx: DistContext, run: Path, history: list, t_start: float) -> Result | None:
    """What a parallel run returns: the Result on rank 0, None on the others."""
    return Result.from_history(run, history, time.perf_counter() - t_start) if ctx.is_main else None


def stop_if_diverged(cfg: TrainConfig, keys: list[str], bad_all: torch.Tensor, epoch: int, unit: str,
                     run: Path) -> None:
    """on_nan: stop: raise Diverged naming the losses that first became NaN/inf (`bad_all`: each
    loss's first bad micro-batch or step, NO_BAD where none; `unit`: "micro-batch" or "step")."""
    if cfg.on_nan != "stop" or not bool((bad_all < NO_BAD).any()):
        return
    first = int(bad_all.min())
    which = [k for k, b in zip(keys, bad_all.tolist()) if b == first and k != "loss"]
    raise Diverged(f"loss {', '.join(which) or 'loss'} became NaN/inf at epoch {epoch + 1}, {unit} {first + 1}; "
                   f"the last good checkpoint in {run} is kept (lower --lr, or --on-nan continue)")


def nonfinite_column(row: dict, keys: list[str], bad_all: torch.Tensor) -> None:
    """`nonfinite_losses`: the losses that became NaN/inf this epoch (--on-nan continue)."""
    if bool((bad_all < NO_BAD).any()):
        row["nonfinite_losses"] = ",".join(k for k, b in zip(keys, bad_all.tolist()) if b < NO_BAD)


def lost_contact(ctx: DistContext, where: str, run: Path, e: BaseException) -> PeerFailed:
    return PeerFailed(f"rank {ctx.rank} of {ctx.world_size}: lost contact with another rank {where} "
                      f"({first_line(e)}); another rank died or hung (timeout {ctx.timeout_s:g}s, "
                      f"ALVIZ_DIST_TIMEOUT); the last whole checkpoint in {run} is kept")


class Comm:
    """Point-to-point and collective transfers; gloo gets CPU tensors, NCCL device tensors."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self.wire = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
        self.wait_s = 0.0

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        if t.device == self.wire and not t.requires_grad and t.is_contiguous():
            return t  # the pipeline's packed micro-batches: no per-message copies or views
        return t.detach().to(self.wire).contiguous()

    def isend(self, t: torch.Tensor, dst: int):
        x = self._out(t)
        return dist.isend(x, dst), x  # keep x alive until the send completes

    def irecv_into(self, buf: torch.Tensor, src: int):
        """A posted receive into `buf` (on `self.wire`); wait on the returned work."""
        return dist.irecv(buf, src)

    def wait(self, work) -> None:
        t0 = time.perf_counter()
        work.wait()
        self.wait_s += time.perf_counter() - t0

    def send(self, t: torch.Tensor, dst: int) -> None:
        dist.send(self._out(t), dst)

    def recv_into(self, t: torch.Tensor, src: int) -> None:
        buf = torch.empty(t.shape, dtype=t.dtype, device=self.wire)
        dist.recv(buf, src)
        with torch.no_grad():
            t.copy_(buf)

    def broadcast_into(self, t: torch.Tensor, src: int = 0) -> None:
        buf = self._out(t).clone()
        dist.broadcast(buf, src)
        with torch.no_grad():
            t.copy_(buf)

    def all_reduce(self, t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        buf = self._out(t).clone()
        dist.all_reduce(buf, op)
        return buf.cpu()


def agree_on_rank0(comm: Comm, err: BaseException | None, codes: list[int]) -> list[int]:
    """Rank 0 tells every rank `codes` (ints) or that it failed; the others stop without waiting."""
    buf = torch.tensor([1 if err is not None else 0, *codes], dtype=torch.long)
    comm.broadcast_into(buf, 0)
    if err is not None:
        raise err
    if int(buf[0]):
        raise PeerFailed(f"rank {comm.ctx.rank}: rank 0 stopped with an error (see its message); nothing was trained")
    return [int(v) for v in buf[1:]]


def fault_injector(rank: int):
    """ALVIZ_TEST_FAIL=RANK:N[:exit|hang]: that rank dies (or hangs) when it reaches unit N (a
    micro-batch in the pipeline, a step in DDP, counted from the start). For testing failure handling."""
    spec = os.environ.get("ALVIZ_TEST_FAIL")
    if not spec:
        return None
    parts = spec.split(":")
    try:
        who, at = int(parts[0]), int(parts[1])
        mode = parts[2] if len(parts) > 2 else "exit"
        if mode not in ("exit", "hang"):
            raise ValueError
    except (ValueError, IndexError):
        raise UserError(f"ALVIZ_TEST_FAIL must look like RANK:N or RANK:N:exit|hang; received {spec!r}") from None
    if who != rank:
        return None

    def check(count: int) -> None:
        if count == at:
            print(f"alviz: rank {rank}: injected failure ({mode}) at unit {at} (ALVIZ_TEST_FAIL)",
                  file=sys.stderr, flush=True)
            if mode == "hang":
                time.sleep(3600)
            os._exit(17)

    return check


def adam_state_tensors(opt: torch.optim.Optimizer, p: torch.Tensor, create: bool) -> list[torch.Tensor]:
    """[step, exp_avg, exp_avg_sq] of parameter `p` (created as zeros when asked)."""
    st = opt.state[p]
    if not st:
        if not create:
            raise RuntimeError("a parameter has no optimiser state after an epoch of training")
        on_device = opt.defaults.get("fused") or opt.defaults.get("capturable")  # their step lives with p
        st["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return [st["step"], st["exp_avg"], st["exp_avg_sq"]]


def start_run(cfg: TrainConfig, run: Path, resume: bool, ctx: DistContext, comm: Comm):
    """Rank 0 checks the run directory (and reads a resumed run); every rank learns the start epoch.
    Returns (cfg, start_epoch, history, existing)."""
    err, start, history, existing = None, 0, [], False
    if ctx.is_main:
        try:
            existing = ckpt.is_run_dir(run)
            if existing and not resume:
                raise UserError(f"{run} already holds a run; continue it with --resume, or choose another --out")
            if resume and existing:
                ckpt.check_run_dir(run)
                cfg = _check_resume_config(resolve_shape_defaults(ckpt.read_config(run)), cfg, run)
                meta = ckpt.read_meta(run)
                start = int(meta["epoch"])
                history = list(meta.get("history", []))[:start]
        except UserError as e:
            err = e
    (start,) = agree_on_rank0(comm, err, [start])
    return cfg, start, history, bool(start)
