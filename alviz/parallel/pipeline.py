"""A local learning rule as a pipeline of components across ranks (``--pipeline``): AL, SCPL, DGL.

Rank r owns a contiguous group of components (for AL f_i, b_i, g_i, h_i; for SCPL f_i and its
projection, the head with the last; for DGL f_i and its auxiliary classifier: whatever the model's
`component_modules(i)` names). The epoch is a stream of micro-batches; rank 0 reads (x, y), every
rank runs its components (`model.stage_losses`), sends what they hand on (AL: s and t; SCPL, DGL:
s) with y to rank r+1 with a non-blocking send before its own backward pass, and keeps the
receives of its next micro-batches posted while it computes (WINDOW of them, as many sends in
flight); it steps its own optimiser when the last micro-batch of a mini-batch is done. Nothing
flows backwards. The result is the same arithmetic as single-process training (see
docs/PARALLEL.md for why, and the tests that check it). At the end of every epoch rank 0 gathers
the weights and optimiser state and writes an ordinary run directory.

What this is not: no process group plumbing (``group``), no message buffers (``stream``), no profile
or schedule arithmetic (``profile``, ``schedule``), no data parallelism (``ddp``).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data import Data, augment_batch
from ..errors import UserError
from ..models import LOCAL_METHODS, component_params, create_model, resolve_shape_defaults
from ..models.backbones import output_shapes
from ..train import (Result, _autocast, add_eval_columns, epoch_order, evaluate, lr_multiplier, make_optimizer,
                     resolve_data, run_meta, save_epoch, set_lrs)
from .cost import component_costs, partition_by_cost
from .group import (NO_BAD, Comm, DistContext, adam_state_tensors, epoch_loop, fault_injector, init_distributed,
                    is_comm_error, lost_contact, nonfinite_column, progress_bar, run_result, start_run,
                    stop_if_diverged)
from .profile import EpochProfile
from .stream import Inbox, Outbox


# benchmark hook (ALVIZ_SIM_STAGE_MS): the share of a component's simulated step spent before the
# micro-batch is handed on (the forward pass, about 1/3 of forward + backward)
SIM_FORWARD_SHARE = 1.0 / 3.0
# micro-batches a rank has receives posted for ahead of the one it computes, and sends it may have
# in flight: room for a neighbour that is late by a few micro-batches before anyone waits (gloo
# moves a message only once its receive is posted)
WINDOW = 4


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


def _component_tensors(model, comps, opt, create_state: bool) -> list[torch.Tensor]:
    """Everything that defines components `comps`, in a fixed order every rank agrees on: the state-dict
    tensors (weights and buffers), then each parameter's Adam state."""
    out = []
    for i in comps:
        for mod in model.component_modules(i):
            out += list(mod.state_dict(keep_vars=True).values())
    for p in component_params(model, comps):
        out += adam_state_tensors(opt, p, create_state)
    return out


def train_pipeline(cfg: TrainConfig, run_dir, ctx: DistContext | None = None, *, micro_batches: int = 1,
                   resume: bool = False, data: Data | None = None, progress: bool = True, log=print) -> Result | None:
    """Train one run of a local rule as a pipeline over the ranks of the process group; rank 0 returns
    the Result, the others None. Every rank must call it with the same arguments."""
    cfg = resolve_shape_defaults(cfg).validate()
    if cfg.method not in LOCAL_METHODS:
        raise UserError(f"--pipeline trains the local rules only ({', '.join(LOCAL_METHODS)}: no gradient crosses "
                        f"a component); received method {cfg.method!r}; use --ddp for it")
    if cfg.optimizer != "adam":
        raise UserError(f"--pipeline moves Adam's state between ranks; received optimizer {cfg.optimizer!r}; "
                        "train it without --pipeline, or with optimizer: adam")
    if micro_batches < 1 or micro_batches > cfg.batch_size:
        raise UserError(f"--micro-batches must be between 1 and the batch size {cfg.batch_size}; received {micro_batches}")
    ctx = ctx or init_distributed(cfg.device)
    comm = Comm(ctx)
    rank, K = ctx.rank, ctx.world_size
    partition(cfg.depth, K)  # checks that every rank gets a component
    run = Path(run_dir)
    device = ctx.device
    cfg, start_epoch, history, resumed = start_run(cfg, run, resume, ctx, comm)
    data, augment = resolve_data(cfg, data)

    # every rank builds the whole model from the seed (the same initial weights as single-process AL),
    # then trains only its own components; rank 0 keeps the whole model for evaluation and checkpoints
    torch.manual_seed(cfg.seed)
    model = create_model(cfg, data.input_shape, data.num_classes)
    feat = output_shapes(list(model.blocks), tuple(data.input_shape))  # s_i's shape per component
    # stages by estimated cost, not count (every rank computes the same estimate on the CPU); under
    # the benchmark's simulated compute every component costs the same, so by count
    sim_s = float(os.environ.get("ALVIZ_SIM_STAGE_MS", "0")) / 1000.0
    costs = component_costs(model, tuple(data.input_shape), cfg.batch_size)
    parts = partition(cfg.depth, K) if sim_s else partition_by_cost(costs, K)
    mine = parts[rank]
    if ctx.is_main:
        model.to(device)
    else:
        for i in mine:
            for mod in model.component_modules(i):
                mod.to(device)
    model.train()
    groups = model.component_param_groups(mine, cfg.lr, cfg.lr_gh_factor)  # AL: f/b at lr, g/h at lr x factor
    own_params = [p for g in groups for p in g["params"]]
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
        if is_comm_error(e):
            raise lost_contact(ctx, "while restoring the run", run, e) from None
        raise

    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
    meta = run_meta(cfg, data, augment, device)
    meta["parallel"] = {"mode": "pipeline", "world_size": K, "backend": ctx.backend, "micro_batches": micro_batches,
                        "components": [[i + 1 for i in p] for p in parts],
                        "partition": "count (ALVIZ_SIM_STAGE_MS: equal simulated costs)" if sim_s else "cost",
                        "component_cost_gflop": [round(c / 1e9, 3) for c in costs],
                        "train_acc": "end-of-epoch model on the training set (a pipeline has no running accuracy)"}

    L, n = cfg.depth, len(data.y_train)
    units = micro_batch_plan(n, cfg.batch_size, micro_batches)
    sizes = [hi - lo for lo, hi, _ in units]
    weights = [(hi - lo) / _mini_batch_len(lo, n, cfg.batch_size) for lo, hi, _ in units]  # means -> batch mean
    # what component mine[0] receives: the previous component's carry (AL: s and t), flattened, then y
    in_shapes = model.carry_shapes(mine[0] - 1, feat) if rank > 0 else []
    keys = [k for i in range(L) for k in model.component_loss_keys(i)]
    k_lo = sum(len(model.component_loss_keys(j)) for j in range(mine[0]))  # our losses' place among keys
    nk = len(keys)
    x_tr = data.x_train.to(device) if rank == 0 else None
    y_tr = data.y_train.to(device) if rank == 0 else None
    fail = fault_injector(rank)
    amp = _autocast(device, cfg.amp)  # one context, entered once per micro-batch
    bar = progress_bar(ctx, progress, (cfg.epochs - start_epoch) * len(units), "mb",
                       f"{cfg.method} {cfg.arch} pipeline x{K}")
    t_start = time.perf_counter()
    count = 0
    epoch, u = start_epoch, -1
    with epoch_loop(ctx, run, history, bar, lambda: (epoch, f"micro-batch {u + 1}")):
        for epoch in range(start_epoch, cfg.epochs):
            mult = lr_multiplier(cfg, epoch)
            set_lrs(opt, base_lrs, mult)
            perm = aug_gen = None
            if rank == 0:
                perm, aug_gen = epoch_order(cfg.seed, epoch, n, device, augment)
            dist.barrier()
            comm.wait_s = 0.0
            profile = EpochProfile(simulated=bool(sim_s))  # where the epoch goes besides computing
            phase, simulate = profile.phase, profile.simulate
            profile.start()
            inbox = Inbox(comm, rank - 1, sizes, in_shapes, device, WINDOW, phase) if rank else None
            outbox = Outbox(comm, rank + 1, WINDOW, phase) if rank < K - 1 else None
            vecs = []  # each micro-batch's own losses, summed at the end of the epoch
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
                    carry = model.initial_carry(s, yb)
                    ycol = yb.to(torch.float32)[:, None]
                    if last:
                        xb_step = None
                else:
                    carry, ycol, yb = inbox.get()  # waits for it (recv_wait), posts the one WINDOW ahead
                local = []
                with amp:
                    for i in mine:
                        carry, ls = model.stage_losses(i, carry, yb)
                        local += ls
                sim_unit = sim_s * len(mine) * (hi - lo) / cfg.batch_size
                if sim_unit:  # a third of a step's compute is the forward pass, before the hand-on
                    simulate(sim_unit * SIM_FORWARD_SHARE)
                if outbox is not None:  # hand the micro-batch on before our own backward: the next rank starts now
                    outbox.send(carry, ycol)  # packing and posting (pack_send), then at most WINDOW in flight
                (sum(local[1:], local[0]) * weights[u]).backward()
                if sim_unit:  # and two thirds the backward pass and update, after it
                    simulate(sim_unit * (1.0 - SIM_FORWARD_SHARE))
                if last:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                vecs.append(torch.stack([v.detach() for v in local]))
                count += 1
                if fail is not None:
                    fail(count)
                if bar is not None:
                    bar.update(1)
            if outbox is not None:
                outbox.drain()
            sums, bad = _loss_totals(vecs, sizes, k_lo, nk)
            mine_prof = profile.vector()  # [wall, CPU main, CPU other threads, *phases]
            busy = torch.zeros(K, dtype=torch.float64)
            busy[rank] = mine_prof[0] - comm.wait_s
            prof = torch.zeros(K, len(mine_prof), dtype=torch.float64)  # per rank: where its epoch went
            prof[rank] = mine_prof
            stats = comm.all_reduce(torch.cat([sums, busy, prof.flatten()]))
            bad_all = comm.all_reduce(bad, dist.ReduceOp.MIN)
            sums_all, busy = stats[:nk], stats[nk:nk + K]
            prof = stats[nk + K:].reshape(K, len(mine_prof))
            train_seconds = float(prof[:, 0].max())
            stop_if_diverged(cfg, keys, bad_all, epoch, "micro-batch", run)
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
            for p in own_params:
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
            nonfinite_column(row, keys, bad_all)
            for r in range(K):
                row[f"busy_seconds_rank{r}"] = float(busy[r])
            row.update(EpochProfile.columns(prof, profile.names))  # compute, CPU, packing + posting sends, waits
            row["pipeline_idle_fraction"] = 1.0 - float(busy.sum()) / (K * train_seconds) if train_seconds > 0 else 0.0
            history.append(row)
            _set_lrs(full_opt, cfg, mult)
            save_epoch(run, model, full_opt, cfg, meta, history, bar, log, ev["acc"], train_seconds,
                       f", pipeline x{K}")
    return run_result(ctx, run, history, t_start)


def _loss_totals(vecs: list[torch.Tensor], sizes: list[int], k_lo: int, nk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From a rank's per-micro-batch loss vectors (its own losses, keys k_lo..): the epoch's loss sums
    weighted by micro-batch size, and each loss's first non-finite micro-batch (NO_BAD: none), as
    float64 and long vectors over all `nk` keys (zero and NO_BAD at the other ranks' places), on the CPU."""
    v = torch.stack(vecs).double().cpu()  # (micro-batches, own losses): one copy from the device an epoch
    sums = torch.zeros(nk, dtype=torch.float64)
    sums[k_lo:k_lo + v.shape[1]] = (v * torch.tensor(sizes, dtype=torch.float64)[:, None]).sum(0)
    nonfinite = ~torch.isfinite(v)
    bad = torch.full((nk,), NO_BAD, dtype=torch.long)
    bad[k_lo:k_lo + v.shape[1]] = torch.where(nonfinite.any(0), nonfinite.long().argmax(0), NO_BAD)
    return sums, bad


def _mini_batch_len(lo: int, n: int, bs: int) -> int:
    start = lo - lo % bs
    return min(bs, n - start)


def _set_lrs(opt: torch.optim.Optimizer, cfg: TrainConfig, mult: float) -> None:
    """The whole-model optimiser's groups at this epoch's rates (f/b at lr, g/h at lr x lr_gh_factor)."""
    for g in opt.param_groups:
        base = cfg.lr * (cfg.lr_gh_factor if g.get("name") == "g/h" else 1.0)
        g["lr"] = base * mult


def _pipeline_restore(model, opt, full_opt, run: Path, parts, ctx: DistContext, comm: Comm, start_epoch: int):
    """--resume: rank 0 reads the run's weights and optimiser state and sends each rank its components."""
    mine = parts[ctx.rank]
    if ctx.is_main:
        ckpt.load_weights(model, run)
        got = ckpt.optimizer_from_file(full_opt, run / "train_state.safetensors")
        if got != start_epoch:
            raise UserError(f"{run}: train_state is at epoch {got} but meta.json at {start_epoch}")
        for p in component_params(model, mine):
            opt.state[p] = full_opt.state[p]
        for r in range(1, ctx.world_size):
            for tns in _component_tensors(model, parts[r], full_opt, create_state=False):
                comm.send(tns, r)
    else:
        for tns in _component_tensors(model, mine, opt, create_state=True):
            comm.recv_into(tns, 0)
