"""Data-parallel training for AL and BP alike (``--ddp``, DistributedDataParallel): every rank holds
the whole model, each global batch is cut into world_size contiguous shards, and gradients are
averaged so that the update is the global batch's mean gradient.

What this is not: no process group plumbing (``group``), no pipeline (``pipeline``).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data import Data, augment_batch
from ..errors import UserError
from ..models import create_model, resolve_shape_defaults
from ..train import (Result, _autocast, add_eval_columns, epoch_order, evaluate, lr_multiplier, make_optimizer,
                     resolve_data, run_meta, save_epoch, set_lrs)
from .group import (NO_BAD, Comm, DistContext, adam_state_tensors, agree_on_rank0, epoch_loop, fault_injector,
                    init_distributed, is_comm_error, lost_contact, nonfinite_column, progress_bar, run_result,
                    start_run, stop_if_diverged)


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
    comm = Comm(ctx)
    rank, K = ctx.rank, ctx.world_size
    run = Path(run_dir)
    device = ctx.device
    cfg, start_epoch, history, resumed = start_run(cfg, run, resume, ctx, comm)
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
            agree_on_rank0(comm, err, [])
            for p in (p for g in opt.param_groups for p in g["params"]):
                for tns in adam_state_tensors(opt, p, create=True):
                    comm.broadcast_into(tns, 0)
        # DDP broadcasts rank 0's weights and buffers when it wraps the model
        ddp = nn.parallel.DistributedDataParallel(_LossModule(model),
                                                  device_ids=[device.index] if device.type == "cuda" else None)
    except Exception as e:
        if is_comm_error(e) and not isinstance(e, UserError):
            raise lost_contact(ctx, "while setting up", run, e) from None
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
    fail = fault_injector(rank)
    bar = progress_bar(ctx, progress, (cfg.epochs - start_epoch) * steps, "step", f"{cfg.method} {cfg.arch} ddp x{K}")
    t_start = time.perf_counter()
    model.train()
    count = 0
    epoch, step = start_epoch, -1
    with epoch_loop(ctx, run, history, bar, lambda: (epoch, f"step {step + 1}")):
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
                    bad = torch.full((len(keys),), NO_BAD, dtype=torch.long, device=device)
                vec = torch.stack([losses[k].detach() for k in keys]).double()
                if n_local:
                    sums += vec * n_local
                    correct += (scores.argmax(1) == ys).sum()
                    bad = torch.where((bad == NO_BAD) & ~torch.isfinite(vec), step, bad)
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
            stop_if_diverged(cfg, keys, bad_all, epoch, "step", run)
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
            nonfinite_column(row, keys, bad_all)
            history.append(row)
            save_epoch(run, model, opt, cfg, meta, history, bar, log, ev["acc"], train_seconds, f", ddp x{K}")
    return run_result(ctx, run, history, t_start)
