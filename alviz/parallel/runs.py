"""``alviz train --pipeline|--ddp`` inside one torchrun rank: the experiment's runs planned on rank 0
(same planning and folder layout as ``alviz.experiment.train_experiment``) and trained one after
another by all ranks.

What this is not: no training loop (``pipeline``, ``ddp``), no argument parsing (``alviz.cli``
calls ``train_parallel``).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch.distributed as dist

from ..config import TrainConfig
from ..data import load_dataset
from ..errors import UserError
from ..experiment import DEFAULT_ROOT, Planned, experiment_name, plan, run_name
from ..models import LOCAL_METHODS, resolve_shape_defaults
from .ddp import train_ddp
from .group import Comm, agree_on_rank0, init_distributed, shutdown
from .pipeline import partition, train_pipeline


MODES = ("pipeline", "ddp")
_ACTIONS = ("train", "resume", "skip")


def train_parallel(cfg: TrainConfig, methods=("al",), seeds=(0,), out=None, *, mode: str, micro_batches: int = 1,
                   resume: bool = False, force: bool = False, progress: bool = True, log=print):
    """`alviz train --pipeline|--ddp` inside one torchrun rank: the experiment's runs, one after another,
    each trained by all ranks. Returns (experiment folder, [(Planned, Result|None)]) on rank 0 and
    (None, []) on the others. Same planning and folder layout as alviz.experiment.train_experiment."""
    if mode not in MODES:
        raise UserError(f"unknown parallel mode {mode!r}; allowed: {', '.join(MODES)}")
    methods = tuple(methods)
    if mode == "pipeline" and (len(methods) != 1 or methods[0] not in LOCAL_METHODS):
        raise UserError(f"--pipeline trains one local rule ({', '.join(LOCAL_METHODS)}; BP's and al-e2e's gradient "
                        f"crosses components, so they cannot be cut into independent stages); received --method "
                        f"{'both' if len(methods) > 1 else methods[0]}; use --method al, scpl or dgl, or --ddp")
    if micro_batches != 1 and mode != "pipeline":
        raise UserError(f"--micro-batches applies to --pipeline only; received {micro_batches} with --ddp")
    if micro_batches < 1 or micro_batches > cfg.batch_size:
        raise UserError(f"--micro-batches must be between 1 and the batch size {cfg.batch_size}; received {micro_batches}")
    if mode == "pipeline":
        partition(resolve_shape_defaults(cfg).depth, int(os.environ.get("WORLD_SIZE", "1") or 1))
    ctx = init_distributed(cfg.device)
    comm = Comm(ctx)
    try:
        out = Path(out) if out else DEFAULT_ROOT / experiment_name(cfg)
        err, todo = None, []
        if ctx.is_main:
            try:
                todo = plan(cfg, methods, seeds, out, resume=resume, force=force)
            except UserError as e:
                err = e
        codes = agree_on_rank0(comm, err, [_ACTIONS.index(p.action) for p in todo] if ctx.is_main
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
