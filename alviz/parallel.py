"""Distributed training: AL as a pipeline of components across ranks (`--pipeline`), and data
parallelism for AL and BP alike (`--ddp`, DistributedDataParallel).

One process per rank, launched by torchrun (env:// rendezvous: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); gloo on CPU, NCCL when every local rank has its own GPU.

Pipeline: rank r owns a contiguous group of components (f_i, b_i, g_i, h_i for i in its group).
The epoch is a stream of micro-batches; rank 0 reads (x, y), every rank runs its components, sends
(s, t, y) of each micro-batch to rank r+1 with a non-blocking send and receives the next micro-batch
ahead while it computes; it steps its own optimiser when the last micro-batch of a mini-batch is
done. Nothing flows backwards. The result is the same arithmetic as single-process AL (see
docs/PARALLEL.md for why, and the tests that check it).

Both modes: rank 0 alone touches the disk. At the end of every epoch it gathers the weights (and
the optimiser state), evaluates with alviz.train.evaluate and writes an ordinary run directory with
alviz.checkpoint.save_checkpoint (meta.json gains "parallel": {"mode", "world_size", ...}), so
`alviz evaluate`, `alviz.load` and a single-process `--resume` read it like any run.

Not here: the single-process loop (alviz.train), model definitions, data sets, argument parsing.
`launch_local` is a small stand-in for torchrun on 127.0.0.1 for tests and benchmarks, not a
launcher for real jobs.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import Data, augment_batch, load_dataset
from .errors import UserError
from .experiment import DEFAULT_ROOT, Planned, experiment_name, plan, run_name
from .models import create_model, resolve_shape_defaults
from .models.backbones import output_shapes
from .train import (Diverged, Interrupted, Result, _autocast, _check_resume_config, add_eval_columns, epoch_order,
                    evaluate, lr_multiplier, make_optimizer, resolve_data, resolve_device, run_meta, save_epoch,
                    set_lrs)

MODES = ("pipeline", "ddp")
DEFAULT_TIMEOUT_S = 600.0
_PARTS = ("blocks", "bridges", "label_encoders", "decoders")  # f_i, b_i, g_i, h_i
_NO_BAD = 2**62  # "no non-finite loss yet" in the per-loss first-bad-unit vectors


class PeerFailed(UserError):
    """Another rank died, hung past the timeout, or stopped; this rank gives up instead of waiting."""

    exit_code = 4


# --------------------------------------------------------------------------- process group

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
                             f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} ({_first_line(e)})") from None
    return DistContext(rank, world, local_rank, device, backend, timeout)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:300]


def _is_comm_error(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in msg for w in ("gloo", "nccl", "connection", "timed out",
                                                                 "timeout", "peer", "socket", "broken pipe"))


def _epoch_failure(e: BaseException, ctx: DistContext, run: Path, epoch: int, kept: int, where) -> None:
    """Raise the one-line error of a parallel loop stopped in `epoch` (0-based) by `e`: Ctrl-C, or
    lost contact with another rank (`where()`: the micro-batch or step); return for anything else,
    which the caller re-raises as it is."""
    if isinstance(e, KeyboardInterrupt):
        raise Interrupted(f"interrupted during epoch {epoch + 1}; the checkpoint of epoch {kept} in "
                          f"{run} is kept; continue it by running the same command with --resume") from None
    if isinstance(e, Exception) and _is_comm_error(e) and not isinstance(e, UserError):
        raise _lost(ctx, f"in epoch {epoch + 1}, {where()}", run, e) from None


def _nonfinite_column(row: dict, keys: list[str], bad_all: torch.Tensor) -> None:
    """`nonfinite_losses`: the losses that became NaN/inf this epoch (--on-nan continue)."""
    if bool((bad_all < _NO_BAD).any()):
        row["nonfinite_losses"] = ",".join(k for k, b in zip(keys, bad_all.tolist()) if b < _NO_BAD)


def _lost(ctx: DistContext, where: str, run: Path, e: BaseException) -> PeerFailed:
    return PeerFailed(f"rank {ctx.rank} of {ctx.world_size}: lost contact with another rank {where} "
                      f"({_first_line(e)}); another rank died or hung (timeout {ctx.timeout_s:g}s, "
                      f"ALVIZ_DIST_TIMEOUT); the last whole checkpoint in {run} is kept")


class _Comm:
    """Point-to-point and collective transfers; gloo gets CPU tensors, NCCL device tensors."""

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self.wire = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
        self.wait_s = 0.0

    def _out(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(self.wire).contiguous()

    def isend(self, t: torch.Tensor, dst: int):
        x = self._out(t)
        return dist.isend(x, dst), x  # keep x alive until the send completes

    def irecv(self, shape, dtype, src: int):
        buf = torch.empty(shape, dtype=dtype, device=self.wire)
        return dist.irecv(buf, src), buf

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


def _agree_on_rank0(comm: _Comm, err: BaseException | None, codes: list[int]) -> list[int]:
    """Rank 0 tells every rank `codes` (ints) or that it failed; the others stop without waiting."""
    buf = torch.tensor([1 if err is not None else 0, *codes], dtype=torch.long)
    comm.broadcast_into(buf, 0)
    if err is not None:
        raise err
    if int(buf[0]):
        raise PeerFailed(f"rank {comm.ctx.rank}: rank 0 stopped with an error (see its message); nothing was trained")
    return [int(v) for v in buf[1:]]


# --------------------------------------------------------------------------- fault injection (tests)

def _fault_injector(rank: int):
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


# --------------------------------------------------------------------------- shared helpers

def _adam_state_tensors(opt: torch.optim.Optimizer, p: torch.Tensor, create: bool) -> list[torch.Tensor]:
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


def _start_run(cfg: TrainConfig, run: Path, resume: bool, ctx: DistContext, comm: _Comm):
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
    (start,) = _agree_on_rank0(comm, err, [start])
    return cfg, start, history, bool(start)


# --------------------------------------------------------------------------- pipeline

def partition(depth: int, world_size: int) -> list[range]:
    """Contiguous, as-even-as-possible groups of components, one per rank."""
    if world_size > depth:
        raise UserError(f"--pipeline over {world_size} ranks needs at least {world_size} components; received "
                        f"depth {depth} (raise --depth or start fewer ranks)")
    return [range(r * depth // world_size, (r + 1) * depth // world_size) for r in range(world_size)]


def micro_batch_plan(n: int, batch_size: int, micro_batches: int) -> list[tuple[int, int, bool]]:
    """The epoch's micro-batches as (lo, hi, last_of_its_mini_batch) positions in the epoch's permutation:
    every mini-batch of `batch_size` is cut into `micro_batches` near-equal contiguous pieces."""
    out = []
    for step in range(math.ceil(n / batch_size)):
        a, b = step * batch_size, min(n, (step + 1) * batch_size)
        m = min(micro_batches, b - a)
        cuts = [a + (b - a) * k // m for k in range(m + 1)]
        out += [(cuts[k], cuts[k + 1], k == m - 1) for k in range(m)]
    return out


def _component_params(model, comps) -> tuple[list, list]:
    fb, gh = [], []
    for i in comps:
        fb += [*model.blocks[i].parameters(), *model.bridges[i].parameters()]
        gh += [*model.label_encoders[i].parameters(), *model.decoders[i].parameters()]
    return fb, gh


def _component_tensors(model, comps, opt, create_state: bool) -> list[torch.Tensor]:
    """Everything that defines components `comps`, in a fixed order every rank agrees on: the state-dict
    tensors (weights and buffers), then each parameter's Adam state."""
    out = []
    for i in comps:
        for part in _PARTS:
            out += list(getattr(model, part)[i].state_dict(keep_vars=True).values())
    fb, gh = _component_params(model, comps)
    for p in fb + gh:
        out += _adam_state_tensors(opt, p, create_state)
    return out


def train_pipeline(cfg: TrainConfig, run_dir, ctx: DistContext | None = None, *, micro_batches: int = 1,
                   resume: bool = False, data: Data | None = None, progress: bool = True, log=print) -> Result | None:
    """Train one AL run as a pipeline over the ranks of the process group; rank 0 returns the Result,
    the others None. Every rank must call it with the same arguments."""
    cfg = resolve_shape_defaults(cfg).validate()
    if cfg.method != "al":
        raise UserError(f"--pipeline trains AL only (BP's gradient crosses components); received method "
                        f"{cfg.method!r}; use --ddp for bp")
    if micro_batches < 1 or micro_batches > cfg.batch_size:
        raise UserError(f"--micro-batches must be between 1 and the batch size {cfg.batch_size}; received {micro_batches}")
    ctx = ctx or init_distributed(cfg.device)
    comm = _Comm(ctx)
    rank, K = ctx.rank, ctx.world_size
    parts = partition(cfg.depth, K)
    mine = parts[rank]
    run = Path(run_dir)
    device = ctx.device
    cfg, start_epoch, history, resumed = _start_run(cfg, run, resume, ctx, comm)
    data, augment = resolve_data(cfg, data)

    # every rank builds the whole model from the seed (the same initial weights as single-process AL),
    # then trains only its own components; rank 0 keeps the whole model for evaluation and checkpoints
    torch.manual_seed(cfg.seed)
    model = create_model(cfg, data.input_shape, data.num_classes)
    feat = output_shapes(list(model.blocks), tuple(data.input_shape))  # s_i's shape per component
    if ctx.is_main:
        model.to(device)
    else:
        for i in mine:
            for part in _PARTS:
                getattr(model, part)[i].to(device)
    model.train()
    fb, gh = _component_params(model, mine)
    groups = [{"params": fb, "lr": cfg.lr, "name": "f/b"}, {"params": gh, "lr": cfg.lr * cfg.lr_gh_factor, "name": "g/h"}]
    base_lrs = [g["lr"] for g in groups]
    opt = make_optimizer(groups, cfg, device)  # alviz.train's Adam (fused on CUDA)
    full_opt = None
    if ctx.is_main:  # the whole model's optimiser, in alviz.train's layout: only ever written to disk
        full_opt = make_optimizer(model.param_groups(cfg.lr, cfg.lr_gh_factor), cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as alviz.train

    try:
        if resumed:
            _pipeline_restore(model, opt, full_opt, run, parts, ctx, comm, start_epoch)
        if start_epoch >= cfg.epochs:
            if ctx.is_main:
                log(f"{run}: already trained for {start_epoch} epoch(s); nothing to do")
                return Result.from_history(run, history, 0.0)
            return None
    except Exception as e:
        if _is_comm_error(e):
            raise _lost(ctx, "while restoring the run", run, e) from None
        raise

    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
    meta = run_meta(cfg, data, augment, device)
    meta["parallel"] = {"mode": "pipeline", "world_size": K, "backend": ctx.backend, "micro_batches": micro_batches,
                        "components": [[i + 1 for i in p] for p in parts],
                        "train_acc": "end-of-epoch model on the training set (a pipeline has no running accuracy)"}

    L, n, C = cfg.depth, len(data.y_train), data.num_classes
    units = micro_batch_plan(n, cfg.batch_size, micro_batches)
    d_in = math.prod(feat[mine[0] - 1]) if rank > 0 else 0
    width = cfg.width
    x_tr = data.x_train.to(device) if rank == 0 else None
    y_tr = data.y_train.to(device) if rank == 0 else None
    fail = _fault_injector(rank)
    sim_s = float(os.environ.get("ALVIZ_SIM_STAGE_MS", "0")) / 1000.0  # benchmark hook: simulated compute
    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=(cfg.epochs - start_epoch) * len(units), unit="mb", leave=False, dynamic_ncols=True,
                   desc=f"al {cfg.arch} pipeline x{K}")
    t_start = time.perf_counter()
    count = 0
    epoch, u = start_epoch, -1
    try:
        for epoch in range(start_epoch, cfg.epochs):
            mult = lr_multiplier(cfg, epoch)
            set_lrs(opt, base_lrs, mult)
            perm = aug_gen = None
            if rank == 0:
                perm, aug_gen = epoch_order(cfg.seed, epoch, n, device, augment)
            sums = torch.zeros(2 * L, dtype=torch.float64, device=device)
            bad = torch.full((2 * L,), _NO_BAD, dtype=torch.long, device=device)
            dist.barrier()
            comm.wait_s = 0.0
            t0 = time.perf_counter()
            sends: deque = deque()
            pending = comm.irecv((units[0][1] - units[0][0], d_in + width + 1), torch.float32, rank - 1) if rank else None
            xb_step = None
            for u, (lo, hi, last) in enumerate(units):
                if rank == 0:
                    if augment:  # augment the whole mini-batch as alviz.train does, then cut it
                        if xb_step is None:
                            step_lo = lo
                            xb_step = augment_batch(x_tr[perm[lo:lo + _mini_batch_len(lo, n, cfg.batch_size)]], aug_gen)
                        s = xb_step[lo - step_lo:hi - step_lo]
                    else:
                        s = x_tr[perm[lo:hi]]
                    yb = y_tr[perm[lo:hi]]
                    t = F.one_hot(yb, C).to(s.dtype)
                    if last:
                        xb_step = None
                else:
                    work, buf = pending
                    comm.wait(work)
                    if u + 1 < len(units):  # receive ahead: the next micro-batch arrives while we compute
                        nlo, nhi, _ = units[u + 1]
                        pending = comm.irecv((nhi - nlo, d_in + width + 1), torch.float32, rank - 1)
                    buf = buf.to(device, non_blocking=True)
                    s = buf[:, :d_in].reshape(hi - lo, *feat[mine[0] - 1])
                    t = buf[:, d_in:d_in + width]
                    yb = buf[:, -1].round().long()
                local = []
                with _autocast(device, cfg.amp):
                    for i in mine:
                        s, t, assoc, ae = model.component_losses(i, s, t, yb)
                        local += [assoc, ae]
                if sim_s:
                    time.sleep(sim_s * len(mine) * (hi - lo) / cfg.batch_size)
                if rank < K - 1:  # hand the micro-batch on before our own backward: the next rank starts now
                    packed = torch.cat([s.detach().flatten(1).float(), t.detach().float(),
                                        yb.to(torch.float32)[:, None]], 1)
                    sends.append(comm.isend(packed, rank + 1))
                    while len(sends) > 2:
                        comm.wait(sends.popleft()[0])
                w = (hi - lo) / _mini_batch_len(lo, n, cfg.batch_size)  # micro-batch means -> mini-batch mean
                (sum(local[1:], local[0]) * w).backward()
                if last:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                vec = torch.stack([v.detach() for v in local]).double()
                lo_k = 2 * mine[0]
                sums[lo_k:lo_k + len(local)] += vec * (hi - lo)
                seg = bad[lo_k:lo_k + len(local)]
                bad[lo_k:lo_k + len(local)] = torch.where((seg == _NO_BAD) & ~torch.isfinite(vec), u, seg)
                count += 1
                if fail is not None:
                    fail(count)
                if bar is not None:
                    bar.update(1)
            while sends:
                comm.wait(sends.popleft()[0])
            own_seconds = time.perf_counter() - t0
            busy = torch.zeros(K, dtype=torch.float64)
            busy[rank] = own_seconds - comm.wait_s
            wall = torch.zeros(K, dtype=torch.float64)
            wall[rank] = own_seconds
            stats = comm.all_reduce(torch.cat([sums.cpu(), busy, wall]))
            bad_all = comm.all_reduce(bad.cpu(), dist.ReduceOp.MIN)
            sums_all, busy, wall = stats[:2 * L], stats[2 * L:2 * L + K], stats[2 * L + K:]
            train_seconds = float(wall.max())
            keys = [f"{kind}{i + 1}" for i in range(L) for kind in ("assoc", "ae")]
            if cfg.on_nan == "stop" and bool((bad_all < _NO_BAD).any()):
                first = int(bad_all.min())
                which = [k for k, b in zip(keys, bad_all.tolist()) if b == first]
                raise Diverged(f"loss {', '.join(which)} became NaN/inf at epoch {epoch + 1}, micro-batch {first + 1}; "
                               f"the last good checkpoint in {run} is kept (lower --lr, or --on-nan continue)")
            # rank 0 gathers the other ranks' components (weights and optimiser state)
            for r in range(1, K):
                if ctx.is_main:
                    for tns in _component_tensors(model, parts[r], full_opt, create_state=True):
                        comm.recv_into(tns, r)
                elif r == rank:
                    for tns in _component_tensors(model, mine, opt, create_state=False):
                        comm.send(tns, 0)
            if not ctx.is_main:
                continue
            for p in fb + gh:
                full_opt.state[p] = opt.state[p]
            t_ev = time.perf_counter()
            ev = evaluate(model, data.x_test, data.y_test, device=device, amp=cfg.amp)
            tr = evaluate(model, data.x_train, data.y_train, device=device, amp=cfg.amp)
            model.train()
            row = {"epoch": epoch + 1, "seconds": train_seconds, "lr": cfg.lr * mult}
            for k, v in zip(keys, (sums_all / n).tolist()):
                row[f"loss_{k}"] = v
            row["train_loss"] = float(sums_all.sum() / n)
            row["train_acc"] = tr["acc"]
            add_eval_columns(row, ev, time.perf_counter() - t_ev)
            _nonfinite_column(row, keys, bad_all)
            for r in range(K):
                row[f"busy_seconds_rank{r}"] = float(busy[r])
            row["pipeline_idle_fraction"] = 1.0 - float(busy.sum()) / (K * train_seconds) if train_seconds > 0 else 0.0
            history.append(row)
            _set_lrs(full_opt, cfg, mult)
            save_epoch(run, model, full_opt, cfg, meta, history, bar, log, ev["acc"], train_seconds,
                       f", pipeline x{K}")
    except BaseException as e:
        _epoch_failure(e, ctx, run, epoch, len(history), lambda: f"micro-batch {u + 1}")
        raise
    finally:
        if bar is not None:
            bar.close()
    if not ctx.is_main:
        return None
    return Result.from_history(run, history, time.perf_counter() - t_start)


def _mini_batch_len(lo: int, n: int, bs: int) -> int:
    start = lo - lo % bs
    return min(bs, n - start)


def _set_lrs(opt: torch.optim.Optimizer, cfg: TrainConfig, mult: float) -> None:
    """The whole-model optimiser's groups at this epoch's rates (f/b at lr, g/h at lr x lr_gh_factor)."""
    for g in opt.param_groups:
        base = cfg.lr * (cfg.lr_gh_factor if g.get("name") == "g/h" else 1.0)
        g["lr"] = base * mult


def _pipeline_restore(model, opt, full_opt, run: Path, parts, ctx: DistContext, comm: _Comm, start_epoch: int):
    """--resume: rank 0 reads the run's weights and optimiser state and sends each rank its components."""
    mine = parts[ctx.rank]
    if ctx.is_main:
        ckpt.load_weights(model, run)
        got = ckpt.optimizer_from_file(full_opt, run / "train_state.safetensors")
        if got != start_epoch:
            raise UserError(f"{run}: train_state is at epoch {got} but meta.json at {start_epoch}")
        fb, gh = _component_params(model, mine)
        for p in fb + gh:
            opt.state[p] = full_opt.state[p]
        for r in range(1, ctx.world_size):
            for tns in _component_tensors(model, parts[r], full_opt, create_state=False):
                comm.send(tns, r)
    else:
        for tns in _component_tensors(model, mine, opt, create_state=True):
            comm.recv_into(tns, 0)


# --------------------------------------------------------------------------- DDP

class _LossModule(nn.Module):
    """DDP syncs gradients of what runs inside forward(): route `model.losses` through it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y):
        return self.model.losses(x, y)


def train_ddp(cfg: TrainConfig, run_dir, ctx: DistContext | None = None, *, resume: bool = False,
              data: Data | None = None, progress: bool = True, log=print) -> Result | None:
    """Train one AL or BP run data-parallel: every rank holds the whole model, each global batch of
    `batch_size` is cut into world_size contiguous shards, gradients are averaged (weighted so the
    update is the global batch's mean gradient). Rank 0 returns the Result, the others None."""
    cfg = resolve_shape_defaults(cfg).validate()
    ctx = ctx or init_distributed(cfg.device)
    comm = _Comm(ctx)
    rank, K = ctx.rank, ctx.world_size
    run = Path(run_dir)
    device = ctx.device
    cfg, start_epoch, history, resumed = _start_run(cfg, run, resume, ctx, comm)
    data, augment = resolve_data(cfg, data)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg, data.input_shape, data.num_classes).to(device)
    groups = model.param_groups(cfg.lr, cfg.lr_gh_factor)
    base_lrs = [g["lr"] for g in groups]
    opt = make_optimizer(groups, cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        if resumed:
            err = None
            if ctx.is_main:
                try:
                    ckpt.load_weights(model, run)
                    got = ckpt.optimizer_from_file(opt, run / "train_state.safetensors")
                    if got != start_epoch:
                        raise UserError(f"{run}: train_state is at epoch {got} but meta.json at {start_epoch}")
                except UserError as e:
                    err = e
            _agree_on_rank0(comm, err, [])
            for p in (p for g in opt.param_groups for p in g["params"]):
                for tns in _adam_state_tensors(opt, p, create=True):
                    comm.broadcast_into(tns, 0)
        # DDP broadcasts rank 0's weights and buffers when it wraps the model
        ddp = nn.parallel.DistributedDataParallel(_LossModule(model),
                                                  device_ids=[device.index] if device.type == "cuda" else None)
    except Exception as e:
        if _is_comm_error(e) and not isinstance(e, UserError):
            raise _lost(ctx, "while setting up", run, e) from None
        raise
    if start_epoch >= cfg.epochs:
        if ctx.is_main:
            log(f"{run}: already trained for {start_epoch} epoch(s); nothing to do")
            return Result.from_history(run, history, 0.0)
        return None
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
    meta = run_meta(cfg, data, augment, device)
    meta["parallel"] = {"mode": "ddp", "world_size": K, "backend": ctx.backend,
                        "shards": "each batch cut into world_size contiguous shards; same global batch"}

    x_tr, y_tr = data.x_train.to(device), data.y_train.to(device)
    n, bs = len(y_tr), cfg.batch_size
    steps = math.ceil(n / bs)
    fail = _fault_injector(rank)
    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=(cfg.epochs - start_epoch) * steps, unit="step", leave=False, dynamic_ncols=True,
                   desc=f"{cfg.method} {cfg.arch} ddp x{K}")
    t_start = time.perf_counter()
    model.train()
    count = 0
    epoch, step = start_epoch, -1
    try:
        for epoch in range(start_epoch, cfg.epochs):
            mult = lr_multiplier(cfg, epoch)
            set_lrs(opt, base_lrs, mult)
            perm, aug_gen = epoch_order(cfg.seed, epoch, n, device, augment)
            keys, sums, bad = None, None, None
            correct = torch.zeros((), dtype=torch.float64, device=device)
            dist.barrier()
            t0 = time.perf_counter()
            for step in range(steps):
                idx = perm[step * bs:(step + 1) * bs]
                xb, yb = x_tr[idx], y_tr[idx]
                if augment:  # the whole global batch, exactly as alviz.train; then this rank's shard
                    xb = augment_batch(xb, aug_gen)
                shard = torch.arange(len(idx), device=device).tensor_split(K)[rank]
                n_local = len(shard)
                if n_local == 0:  # fewer samples than ranks in the last batch: a zero-weight stand-in
                    shard = torch.zeros(1, dtype=torch.long, device=device)
                xs, ys = xb[shard], yb[shard]
                with _autocast(device, cfg.amp):
                    losses, scores = ddp(xs, ys)
                opt.zero_grad(set_to_none=True)
                (losses["loss"] * (n_local * K / len(idx))).backward()
                opt.step()
                if keys is None:
                    keys = [k for k in losses if k != "loss"] + ["loss"]
                    sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
                    bad = torch.full((len(keys),), _NO_BAD, dtype=torch.long, device=device)
                vec = torch.stack([losses[k].detach() for k in keys]).double()
                if n_local:
                    sums += vec * n_local
                    correct += (scores.argmax(1) == ys).sum()
                    bad = torch.where((bad == _NO_BAD) & ~torch.isfinite(vec), step, bad)
                count += 1
                if fail is not None:
                    fail(count)
                if bar is not None:
                    bar.update(1)
            own_seconds = time.perf_counter() - t0
            stats = comm.all_reduce(torch.cat([sums.cpu(), correct.cpu()[None]]))
            wall = comm.all_reduce(torch.tensor([own_seconds], dtype=torch.float64), dist.ReduceOp.MAX)
            bad_all = comm.all_reduce(bad.cpu(), dist.ReduceOp.MIN)
            train_seconds = float(wall[0])
            if cfg.on_nan == "stop" and bool((bad_all < _NO_BAD).any()):
                first = int(bad_all.min())
                which = [k for k, b in zip(keys, bad_all.tolist()) if b == first and k != "loss"]
                raise Diverged(f"loss {', '.join(which) or 'loss'} became NaN/inf at epoch {epoch + 1}, step "
                               f"{first + 1}; the last good checkpoint in {run} is kept (lower --lr, or --on-nan continue)")
            if not ctx.is_main:
                continue
            t_ev = time.perf_counter()
            ev = evaluate(model, data.x_test, data.y_test, device=device, amp=cfg.amp)
            model.train()
            row = {"epoch": epoch + 1, "seconds": train_seconds, "lr": cfg.lr * mult}
            for k, v in zip(keys, (stats[:-1] / n).tolist()):
                row["train_loss" if k == "loss" else f"loss_{k}"] = v
            row["train_acc"] = float(stats[-1]) / n
            add_eval_columns(row, ev, time.perf_counter() - t_ev)
            _nonfinite_column(row, keys, bad_all)
            history.append(row)
            save_epoch(run, model, opt, cfg, meta, history, bar, log, ev["acc"], train_seconds, f", ddp x{K}")
    except BaseException as e:
        _epoch_failure(e, ctx, run, epoch, len(history), lambda: f"step {step + 1}")
        raise
    finally:
        if bar is not None:
            bar.close()
    if not ctx.is_main:
        return None
    return Result.from_history(run, history, time.perf_counter() - t_start)


# --------------------------------------------------------------------------- experiments

_ACTIONS = ("train", "resume", "skip")


def train_parallel(cfg: TrainConfig, methods=("al",), seeds=(0,), out=None, *, mode: str, micro_batches: int = 1,
                   resume: bool = False, force: bool = False, progress: bool = True, log=print):
    """`alviz train --pipeline|--ddp` inside one torchrun rank: the experiment's runs, one after another,
    each trained by all ranks. Returns (experiment folder, [(Planned, Result|None)]) on rank 0 and
    (None, []) on the others. Same planning and folder layout as alviz.experiment.train_experiment."""
    if mode not in MODES:
        raise UserError(f"unknown parallel mode {mode!r}; allowed: {', '.join(MODES)}")
    methods = tuple(methods)
    if mode == "pipeline" and methods != ("al",):
        raise UserError(f"--pipeline trains AL only (BP's gradient crosses components, so it cannot be cut into "
                        f"independent stages); received --method {'both' if len(methods) > 1 else methods[0]}; "
                        "use --method al, or --ddp for bp")
    if micro_batches != 1 and mode != "pipeline":
        raise UserError(f"--micro-batches applies to --pipeline only; received {micro_batches} with --ddp")
    if micro_batches < 1 or micro_batches > cfg.batch_size:
        raise UserError(f"--micro-batches must be between 1 and the batch size {cfg.batch_size}; received {micro_batches}")
    if mode == "pipeline":
        partition(resolve_shape_defaults(cfg).depth, int(os.environ.get("WORLD_SIZE", "1") or 1))
    ctx = init_distributed(cfg.device)
    comm = _Comm(ctx)
    try:
        out = Path(out) if out else DEFAULT_ROOT / experiment_name(cfg)
        err, todo = None, []
        if ctx.is_main:
            try:
                todo = plan(cfg, methods, seeds, out, resume=resume, force=force)
            except UserError as e:
                err = e
        codes = _agree_on_rank0(comm, err, [_ACTIONS.index(p.action) for p in todo] if ctx.is_main
                                else [0] * (len(seeds) * len(methods)))
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction)
        results = []
        k = 0
        for seed in seeds:
            for method in methods:
                c = cfg.replace(method=method, seed=seed).validate()
                p = Planned(c, out / run_name(method, seed), _ACTIONS[codes[k]])
                k += 1
                if p.action == "skip":
                    if ctx.is_main:
                        log(f"{p.run_dir}: already trained; skipped (--force retrains)")
                    results.append((p, None))
                    continue
                if ctx.is_main and p.action == "train" and p.run_dir.exists():
                    shutil.rmtree(p.run_dir)
                if mode == "pipeline":
                    r = train_pipeline(c, p.run_dir, ctx, micro_batches=micro_batches, resume=p.action == "resume",
                                       data=data, progress=progress, log=log)
                else:
                    r = train_ddp(c, p.run_dir, ctx, resume=p.action == "resume", data=data, progress=progress, log=log)
                results.append((p, r))
        # leave together: a rank that tears its process group down and exits while another still
        # works can abort (std::terminate in a C++ destructor), seen under torchrun with gloo
        dist.barrier()
        if not ctx.is_main:
            return None, []
        return out, results
    finally:
        shutdown()


# --------------------------------------------------------------------------- local launcher (tests, benchmarks)

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


def _forked_rank(args: list[str], env: dict, threads: int, out_fd: int, err_fd: int) -> None:
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
        from .cli import main

        rc = main(list(args))
    except BaseException:  # noqa: BLE001 - a child reports everything and exits
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)


def launch_local(args: list[str], nprocs: int, *, threads: int = 1, env: dict | None = None,
                 timeout: float | None = None, grace: float | None = None, cwd=None,
                 fork: bool = False) -> list[RankOutput]:
    """Run `alviz ARGS` as `nprocs` ranks on 127.0.0.1 with the environment torchrun gives (RANK,
    WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), `threads` CPU threads each,
    and wait for all of them; past `timeout` seconds every rank still running is killed, and with
    `grace`, so is every rank still running `grace` seconds after the first one exited. Each rank
    is a fresh `python -m alviz.cli` process, or with `fork=True` a fork of this process calling
    `alviz.cli.main` (no import cost: what tests use; Linux only, and one thread per rank only: GNU
    OpenMP is not fork-safe, a forked rank using a thread team the parent had used deadlocks in its
    first matrix product). Unlike torchrun (which stops the
    others when one rank fails), without `grace` it lets every rank find out for itself: what a test
    of alviz's own failure handling needs."""
    if fork and threads != 1:
        raise ValueError(f"launch_local(fork=True) runs ranks of one thread only (OpenMP is not fork-safe); "
                         f"received threads={threads}; use fork=False")
    port = free_port()
    extra = {**(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nprocs),
             "LOCAL_WORLD_SIZE": str(nprocs), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if Path("/sys/class/net/lo").exists() and "GLOO_SOCKET_IFNAME" not in os.environ:
        extra.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs, files = [], []
    ctx = None
    if fork:
        import multiprocessing

        from . import cli  # noqa: F401  - import once here rather than in every rank

        torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch._dynamo (seconds)
        ctx = multiprocessing.get_context("fork")
    for r in range(nprocs):
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        files.append((out, err))
        e = {**extra, "RANK": str(r), "LOCAL_RANK": str(r)}
        if fork:
            p = ctx.Process(target=_forked_rank, args=(args, e, threads, out.fileno(), err.fileno()), daemon=True)
            p.start()
        else:
            p = subprocess.Popen([sys.executable, "-m", "alviz.cli", *args], stdout=out, stderr=err,
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


__all__ = ["DistContext", "PeerFailed", "init_distributed", "shutdown", "partition", "micro_batch_plan",
           "train_pipeline", "train_ddp", "train_parallel", "launch_local", "free_port", "RankOutput", "MODES"]
