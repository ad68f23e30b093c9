"""Distributed training: AL as a pipeline of components across ranks (``--pipeline``), and data
parallelism for AL and BP alike (``--ddp``, DistributedDataParallel).

One process per rank, launched by torchrun (env:// rendezvous: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); gloo on CPU, NCCL when every local rank has its own GPU. In both modes
rank 0 alone touches the disk: at the end of every epoch it gathers the weights (and the optimiser
state), evaluates with ``alviz.train.evaluate`` and writes an ordinary run directory with
``alviz.checkpoint`` (meta.json gains "parallel": {"mode", "world_size", ...}), so ``alviz
evaluate``, ``alviz.load`` and a single-process ``--resume`` read it like any run.

One file per job::

    group.py     the process group, transfers, rank 0's word, failures shared by both modes
    pipeline.py  AL's components as pipeline stages, micro-batches, partitioning
    stream.py    the micro-batch stream between neighbouring ranks (posted receives, packed sends)
    profile.py   where a rank's epoch goes (phases, CPU time), the benchmark's simulated compute
    schedule.py  the schedule as arithmetic: epoch time, ideal speed-up, fill bubble
    cost.py      each component's estimated cost, the partition by cost
    ddp.py       data-parallel training of AL and BP
    runs.py      ``train_parallel``: an experiment's runs inside one rank (called by the CLI)
    launch.py    ``launch_local``: a stand-in for torchrun on 127.0.0.1 for tests and benchmarks

What this is not: the single-process loop (``alviz.train``), model definitions, data sets,
argument parsing. Nothing here imports ``alviz.cli``: the CLI calls ``train_parallel``, and
``launch_local`` is handed the function a forked rank runs.
"""
from __future__ import annotations

from .ddp import train_ddp
from .group import DistContext, PeerFailed, init_distributed, shutdown
from .launch import RankOutput, free_port, launch_local
from .pipeline import micro_batch_plan, partition, train_pipeline
from .runs import MODES, train_parallel

__all__ = ["DistContext", "PeerFailed", "init_distributed", "shutdown", "partition", "micro_batch_plan",
           "train_pipeline", "train_ddp", "train_parallel", "launch_local", "free_port", "RankOutput", "MODES"]
