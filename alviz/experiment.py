"""Experiments: a folder of runs that are compared (methods x seeds of one configuration).

    checkpoints/<experiment>/<method>-seed<k>/   one run each (see checkpoint.py)

`train_experiment` trains the missing runs, skips finished ones with the same config, resumes
interrupted ones when asked, and never overwrites a run unless `force`. `find_runs` lists the runs
under a path. This module does not parse arguments or print tables.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint as ckpt
from . import locks
from .config import SAME_RUN_KEYS, TrainConfig
from .errors import UserError
from .models import resolve_shape_defaults

DEFAULT_ROOT = Path("checkpoints")


def experiment_name(cfg: TrainConfig) -> str:
    ds = cfg.dataset
    if ds.startswith("npz:"):
        ds = "npz-" + Path(ds[4:]).stem
    name = cfg.preset or f"{cfg.arch}-{ds}-{cfg.activation}"
    if cfg.preset is None and cfg.depth and cfg.arch == "mlp" and cfg.depth != 2:
        name += f"-d{cfg.depth}"
    if cfg.preset is None and cfg.recipe != "alviz":
        name += f"-{cfg.recipe}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


@dataclass
class Planned:
    cfg: TrainConfig
    run_dir: Path
    action: str  # "train", "resume", "skip"


def _same(a: TrainConfig, b: TrainConfig) -> bool:
    da, db = resolve_shape_defaults(a).to_dict(), resolve_shape_defaults(b).to_dict()
    return all(da[k] == db[k] for k in da if k not in SAME_RUN_KEYS)


def plan(cfg: TrainConfig, methods, seeds, out: Path, *, resume=False, force=False) -> list[Planned]:
    """Decide for each (method, seed) whether to train, resume or skip; raise before touching disk."""
    todo = []
    for seed in seeds:
        for method in methods:
            c = cfg.replace(method=method, seed=seed).validate()
            run = out / run_name(method, seed)
            if force or not run.exists():
                todo.append(Planned(c, run, "train"))
                continue
            locks.check_no_writer(run)  # another process training this run: say so now
            ckpt.recover(run)  # a crash during a save: finish it or drop it (also a first save)
            if not ckpt.is_run_dir(run):
                if any(q.name != locks.WRITER_LOCK for q in run.iterdir()):
                    raise UserError(f"{run} exists and is not an alviz run; choose another --out")
                todo.append(Planned(c, run, "train"))
                continue
            stored = ckpt.read_config(run)
            meta = ckpt.read_meta(run) if (run / "meta.json").is_file() else {"status": "running", "epoch": 0}
            if not _same(stored.replace(epochs=c.epochs), c):
                raise UserError(f"{run} holds a run with a different configuration; choose another --out, "
                                f"or --force to replace it")
            done = meta.get("status") == "complete" and meta.get("epoch", 0) >= c.epochs
            if done and stored.epochs == c.epochs:
                todo.append(Planned(c, run, "skip"))
            elif resume:
                todo.append(Planned(c, run, "resume"))
            else:
                raise UserError(f"{run} holds an unfinished run (epoch {meta.get('epoch', 0)} of {c.epochs}); "
                                "continue it with --resume, or --force to start again")
    return todo


def train_experiment(cfg: TrainConfig, methods=("al", "bp"), seeds=(0,), out=None, *, resume=False,
                     force=False, progress=True, log=print):
    """Train every (method, seed) run of one configuration into one experiment folder."""
    from .data import load_dataset

    out = ckpt.check_writable_dir(Path(out) if out else DEFAULT_ROOT / experiment_name(cfg))
    todo = plan(cfg, methods, seeds, out, resume=resume, force=force)
    data = None
    results = []
    for p in todo:
        if p.action == "skip":
            log(f"{p.run_dir}: already trained; skipped (--force retrains)")
            results.append((p, None))
            continue
        if data is None:
            data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, test_fraction=cfg.test_fraction)
        results.append((p, train_planned(p, data, progress=progress, log=log)))
    return out, results


def train_planned(p: Planned, data, *, progress=True, log=print):
    """Train or resume the planned run `p` holding its writer lock; a run planned as "train" (a new
    one, or one --force replaces) is emptied first, under the lock."""
    from .train import train

    with locks.run_writer(p.run_dir):
        if p.action == "train":
            for q in p.run_dir.iterdir():
                if q.name == locks.WRITER_LOCK:
                    continue
                if q.is_dir() and not q.is_symlink():
                    shutil.rmtree(q)
                else:
                    q.unlink()
        return train(p.cfg, p.run_dir, resume=p.action == "resume", data=data, progress=progress, log=log)


def find_runs(path) -> list[Path]:
    """Run directories at or below `path` (a run, an experiment, or a folder of experiments)."""
    p = Path(path)
    if ckpt.is_run_dir(p):
        return [p]
    if not p.is_dir():
        raise UserError(f"not a run or experiment directory: {p}")
    return sorted(q.parent for q in p.rglob("config.yaml") if ckpt.is_run_dir(q.parent))
