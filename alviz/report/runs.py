"""Finding what to analyse: run and experiment folders from the paths a user gives, a name for
each experiment's report folder, and each run's config, metadata and per-epoch history.

What this is not: no activations, no measures (``measure``); reading a run's files goes through
``alviz.checkpoint``'s validated readers.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .files import slug
from .options import DEFAULT_ROOT


@dataclass
class RunInfo:
    path: Path
    name: str
    experiment: str
    method: str
    seed: int
    config: dict
    meta: dict
    history: list = field(default_factory=list)


def collect_runs(paths=None, *, root=DEFAULT_ROOT) -> dict[Path, list[Path]]:
    """Experiments to analyse: ``{experiment folder: [run folders]}`` from run, experiment or
    folder-of-experiments paths (``alviz.experiment.find_runs``); no paths: everything under
    ``root``. A path with no run below it is a ``UserError``."""
    from ..experiment import find_runs

    if not paths:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"no runs found: {root}/ does not exist; train some with `alviz train`, "
                            f"or name runs or experiments: alviz analyze PATH...")
        paths = [root]
    groups: dict[Path, list[Path]] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"not a run or experiment directory: {p} does not exist")
        runs = find_runs(p)
        if not runs:
            raise UserError(f"no alviz runs found in {p} (a run folder holds config.yaml and meta.json); "
                            f"train some with `alviz train --out {p}`")
        for r in runs:
            groups.setdefault(r.parent.resolve(), [])
            if r.resolve() not in [q.resolve() for q in groups[r.parent.resolve()]]:
                groups[r.parent.resolve()].append(r)
    return groups


def experiment_names(groups) -> dict[Path, str]:
    names: dict[Path, str] = {}
    used: set[str] = set()
    for exp in groups:
        name = slug(exp.name)
        if sweep_of(exp) is not None:  # a sweep's cell: <sweep>-<cell>, beside the sweep's study
            name = slug(f"{exp.parent.name}-{exp.name}")
        if name in used:
            name = slug(f"{exp.parent.name}-{exp.name}")
        while name in used:
            name += "_"
        used.add(name)
        names[exp] = name
    return names


def sweep_of(exp: Path) -> Path | None:
    """The sweep folder (holding sweep.json) an experiment folder is a cell of, if any."""
    return exp.parent if (exp.parent / "sweep.json").is_file() else None


def _history(run: Path, meta: dict) -> list[dict]:
    hist = meta.get("history")
    if isinstance(hist, list) and hist:
        return hist
    p = run / "summary.csv"
    if p.is_file():
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        out = []
        for r in rows:
            d = {}
            for k, v in r.items():
                try:
                    d[k] = float(v) if v not in ("", None) else None
                except ValueError:
                    d[k] = v
            out.append(d)
        return out
    return []


def read_run(run: Path, experiment: str) -> RunInfo:
    from .. import checkpoint as ckpt

    ckpt.check_run_dir(run)
    cfg = ckpt.read_config(run)
    meta = ckpt.read_meta(run)
    from ..models import resolve_shape_defaults

    cfg = resolve_shape_defaults(cfg)
    return RunInfo(path=run, name=run.name, experiment=experiment, method=cfg.method, seed=cfg.seed,
                   config=cfg.to_dict(), meta=meta, history=_history(run, meta))


def method_order(m: str) -> tuple:
    from ..plots import METHOD_ORDER

    return (METHOD_ORDER.get(m, len(METHOD_ORDER)), m)
