"""Sweeps: one folder of experiments over a grid of TrainConfig values, methods and seeds.

    DIR/sweep.json                    the grid, the cells and every run's status (rewritten after each run)
    DIR/<cell>/<method>-seed<k>/      one run; <cell> names the swept keys' values, e.g. depth4-activation-sigmoid

Every cell is an ordinary experiment folder (experiment.py), so `alviz.experiment.find_runs(DIR)`
and `alviz analyze DIR` see a sweep as a folder of experiments. A run's config is, in this order:
the preset/config file's keys, its `per_method` section for the run's method, the cell's values,
then command-line flags (a key may not be both swept and given as a flag).

The whole sweep is planned before anything trains, so a bad value or a foreign folder is an error up
front. Finished runs are skipped and unfinished ones resumed from their last checkpoint: a sweep that
was interrupted (Ctrl-C, or killed) continues when the same command runs again, or with
`alviz sweep --resume --out DIR`, which reads the request back from DIR/sweep.json.

`train_spec` is also the path `alviz train` takes for a preset with a sweep section, or one whose
methods have their own settings (`per_method`). This module does not parse command lines, print
tables of results or analyse runs.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoint as ckpt
from . import config as cfgmod
from . import schema
from .config import FIELD_NAMES, TrainConfig
from .errors import UserError
from .experiment import DEFAULT_ROOT, Planned, experiment_name, plan, train_planned
from .presets import RESERVED, Spec, SweepSpec, check_grid, check_methods, check_seeds

FORMAT = "alviz-sweep/1"
SWEEP_FILE = "sweep.json"
# keys that may differ between the stored sweep and a request to continue it (how, not what, to train)
FREE_KEYS = cfgmod.HOW_KEYS
_HINTS = typing.get_type_hints(TrainConfig)


# --------------------------------------------------------------------------- parsing --grid

def _grid_keys() -> str:
    return ", ".join(k for k in FIELD_NAMES if k not in RESERVED)


def _kinds(key: str) -> tuple[list, bool]:
    tp = _HINTS[key]
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return [a for a in args if a is not type(None)], type(None) in args


def parse_value(key: str, text: str):
    """A command-line value for TrainConfig field `key`, parsed with the field's type."""
    if key not in FIELD_NAMES:
        raise UserError(f"--grid: unknown key {key!r}; valid keys: {_grid_keys()}")
    if key in RESERVED:
        hint = {"method": " (use --methods)", "seed": " (use --seeds)"}.get(key, "")
        raise UserError(f"--grid: {key!r} cannot be swept{hint}; valid keys: {_grid_keys()}")
    kinds, nullable = _kinds(key)
    t = text.strip()
    if nullable and t.lower() in ("none", "null"):
        return None
    names = []
    for kind in kinds:
        if typing.get_origin(kind) is list:
            raise UserError(f"--grid: {key} takes a list; sweep it in a config file's sweep section, "
                            f"e.g. `sweep: {{{key}: [[0.5], [0.4, 0.8]]}}`")
        if kind is bool:
            names.append("true/false")
            if t.lower() in ("true", "yes", "1", "false", "no", "0"):
                return t.lower() in ("true", "yes", "1")
        elif kind is int:
            names.append("an integer")
            if re.fullmatch(r"[+-]?\d+", t):
                return int(t)
        elif kind is float:
            names.append("a number")
            try:
                v = float(t)
            except ValueError:
                continue
            if math.isfinite(v):
                return v
        elif kind is str:
            if t:
                return t
            names.append("a non-empty name")
    if nullable:
        names.append("none")
    raise UserError(f"--grid {key}: {text!r} is not a valid value; {key} takes {' or '.join(names)}")


def parse_grid_args(items) -> dict[str, list]:
    """`["depth=2,4", "activation=sigmoid,relu"]` -> {"depth": [2, 4], "activation": ["sigmoid", "relu"]}."""
    grid: dict[str, list] = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not values.strip():
            raise UserError(f"--grid takes KEY=V1,V2,... (e.g. depth=2,4,6); received {item!r}")
        if key in grid:
            raise UserError(f"--grid {key} is given twice; list all its values once: {key}=V1,V2,...")
        grid[key] = [parse_value(key, v) for v in values.split(",")]
    return grid


# --------------------------------------------------------------------------- cells

def _fmt(v) -> str:
    if isinstance(v, float):
        return repr(v).replace("+", "")
    if isinstance(v, list):
        return "_".join(_fmt(x) for x in v)
    return str(v).lower() if isinstance(v, bool) or v is None else str(v)


def cell_name(values: dict) -> str:
    """`{"depth": 4, "activation": "sigmoid"}` -> "depth4-activation-sigmoid"; no swept key: "base"."""
    parts = []
    for k, v in values.items():
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        parts.append(f"{k}{_fmt(v)}" if numeric else f"{k}-{_fmt(v)}")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-.")
    return name or "base"


def grid_cells(grid: dict[str, list]) -> list[tuple[str, dict]]:
    """(name, values) of every cell, the product of the grid in its key order."""
    keys = list(grid)
    cells = [(cell_name(dict(zip(keys, vals))), dict(zip(keys, vals))) for vals in itertools.product(*grid.values())]
    seen: dict[str, dict] = {}
    for name, vals in cells:
        if name in seen:
            raise UserError(f"sweep cells {seen[name]} and {vals} get the same folder name {name!r}; "
                            "use values that differ in their letters or digits")
        seen[name] = vals
    return cells


# --------------------------------------------------------------------------- the request

@dataclass
class Sweep:
    """A resolved sweep request: what to train (configs per cell and method) and where."""

    out: Path
    spec: Spec
    overrides: dict
    grid: dict[str, list]
    methods: list[str]
    seeds: list[int]
    cells: list[tuple[str, dict]] = field(default_factory=list)

    def config(self, values: dict, method: str) -> TrainConfig:
        cfg = self.spec.for_method(method)
        return cfgmod.from_dict({**values, **self.overrides}, cfg, source=f"sweep cell {cell_name(values)}")

    @property
    def base(self) -> TrainConfig:
        return cfgmod.from_dict(self.overrides, self.spec.config, source="command line")

    def request(self) -> dict:
        """What the sweep trains, as stored in sweep.json (compared when a sweep is continued)."""
        base = {k: v for k, v in self.base.to_dict().items() if k not in ("method", "seed")}
        return json.loads(json.dumps({"base": base, "per_method": self.spec.per_method, "grid": self.grid,
                                      "methods": self.methods, "seeds": self.seeds}))


def make_sweep(spec: Spec, overrides: dict | None = None, grid: dict | None = None, methods=None, seeds=None,
               out=None) -> Sweep:
    """Combine a Spec (its sweep section, if any) with command-line flags, --grid, --methods and
    --seeds (each replaces the section's), check everything and name the folder."""
    overrides = dict(overrides or {})
    section = spec.sweep or SweepSpec()
    full = {**section.grid, **(grid or {})}
    both = [k for k in full if k in overrides]
    if both:
        k = both[0]
        raise UserError(f"{k} is swept ({', '.join(map(_fmt, full[k]))}) and also given as --{k.replace('_', '-')} "
                        f"{overrides[k]}; drop the flag (`alviz sweep --grid {k}=V1,V2` sweeps other values)")
    if "seed" in overrides and seeds is None:
        seeds = [overrides["seed"]]
    base = cfgmod.from_dict(overrides, spec.config, source="command line")
    full = check_grid(full, base, "sweep grid")
    methods = check_methods(list(methods or section.methods or ["al", "bp"]), "--methods")
    seeds = check_seeds(list(seeds or section.seeds or [base.seed]), "--seeds")
    if out is None:
        name = spec.name if spec.sweep is not None and spec.name else experiment_name(base) + "-sweep"
        out = DEFAULT_ROOT / re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    sw = Sweep(Path(out), spec, overrides, full, methods, seeds, grid_cells(full))
    from .models.backbones import MAX_DEPTH  # a depth the arch cannot have fails here, not mid-sweep

    for name, values in sw.cells:
        for m in methods:
            c = sw.config(values, m)
            if c.depth is not None and c.depth > MAX_DEPTH[c.arch]:
                raise UserError(f"sweep cell {name}: depth of {c.arch} must be between 1 and "
                                f"{MAX_DEPTH[c.arch]}; received {c.depth}")
    return sw


def read_sweep_file(out) -> dict:
    p = Path(out) / SWEEP_FILE
    if not (p.exists() or p.is_symlink()):
        raise UserError(f"{Path(out)} holds no {SWEEP_FILE}: it is not a sweep folder (start one with "
                        "`alviz sweep --grid KEY=V1,V2 --out DIR`)")
    data = ckpt.read_json(p, "JSON written by alviz sweep")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{p}: not an alviz sweep file (expected format {FORMAT!r})")
    schema.check(data, schema.SWEEP, p)
    return data


def sweep_from_file(out, overrides: dict | None = None) -> Sweep:
    """The sweep stored in `out`/sweep.json, to continue it; `overrides` may only change FREE_KEYS."""
    data = read_sweep_file(out)
    bad = sorted(set(overrides or {}) - FREE_KEYS)
    if bad:
        raise UserError(f"--resume without a grid continues the sweep stored in {out}; --{bad[0].replace('_', '-')} "
                        f"would change it (only {', '.join(sorted(FREE_KEYS))} may change)")
    base = {k: v for k, v in data["base"].items() if k in FIELD_NAMES}
    spec = Spec(cfgmod.from_dict(base, source=f"{out}/{SWEEP_FILE}"), data.get("per_method") or {},
                SweepSpec(data["grid"], data["methods"], data["seeds"]), data.get("description", ""),
                data.get("name"), f"{out}/{SWEEP_FILE}")
    return make_sweep(spec, overrides, None, data["methods"], data["seeds"], out)


# --------------------------------------------------------------------------- running

def _run_status(p: Planned) -> dict:
    """A run's state on disk: pending, unfinished (epoch k of n) or complete, with its test accuracy."""
    row = {"run": p.run_dir.name, "method": p.cfg.method, "seed": p.cfg.seed, "epochs": p.cfg.epochs,
           "epoch": 0, "status": "pending", "test_acc": None}
    if ckpt.is_run_dir(p.run_dir) and (p.run_dir / "meta.json").is_file():
        try:
            meta = ckpt.read_meta(p.run_dir)
        except UserError:
            return row
        hist = meta.get("history") or []
        row["epoch"] = int(meta.get("epoch", 0))
        row["test_acc"] = hist[-1].get("test_acc") if hist else None
        done = meta.get("status") == "complete" and row["epoch"] >= p.cfg.epochs
        row["status"] = "complete" if done else "unfinished"
    return row


def _same_request(stored: dict, new: dict) -> str | None:
    """None if `new` asks for the same sweep as `stored`, else the first thing that differs."""
    defaults = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("method", "seed")}
    a = {**defaults, **stored.get("base", {})}
    b = {**defaults, **new["base"]}
    for k in sorted(set(a) | set(b)):
        if k not in FREE_KEYS and k in FIELD_NAMES and a.get(k) != b.get(k):
            return f"{k} ({a.get(k)!r} stored, {b.get(k)!r} asked)"
    for k in ("grid", "methods", "seeds", "per_method"):  # the grid's key order names the cells
        if json.dumps(stored.get(k)) != json.dumps(new[k]):
            return f"{k} ({stored.get(k)!r} stored, {new[k]!r} asked)"
    return None


@dataclass
class SweepResult:
    out: Path
    status: str  # complete, failed (some runs diverged)
    cells: list[dict]
    trained: int
    skipped: int
    failed: list[str]


class SweepRunner:
    """Plans and trains one sweep; keeps DIR/sweep.json true after every run."""

    def __init__(self, sw: Sweep, *, force: bool = False, progress: bool = True, log=print, command: str | None = None):
        self.sw, self.force, self.progress, self.log, self.command = sw, force, progress, log, command
        self.failed: dict[str, str] = {}  # run path -> why (diverged)
        self.created = None

    # ---- checks and plan (nothing is trained or removed here)
    def check_folder(self) -> None:
        out = self.sw.out
        if (out / SWEEP_FILE).is_file():
            stored = read_sweep_file(out)
            diff = _same_request(stored, self.sw.request())
            if diff:
                raise UserError(f"{out} holds another sweep (different {diff}); choose another --out, or "
                                f"continue it with: alviz sweep --resume --out {out}")
            self.created = stored.get("created")
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out} exists and is not an alviz sweep (no {SWEEP_FILE}); choose another --out")

    def plan(self) -> list[tuple[int, str, Planned]]:
        todo = []
        for ci, (name, values) in enumerate(self.sw.cells):
            cell_dir = self.sw.out / name
            per_method = {}
            for m in self.sw.methods:
                for s in self.sw.seeds:
                    run = cell_dir / f"{m}-seed{s}"
                    if run.is_dir():
                        ckpt.recover(run)  # finish or drop a save a kill interrupted
                per_method[m] = plan(self.sw.config(values, m), [m], self.sw.seeds, cell_dir,
                                     resume=True, force=self.force)
            for si in range(len(self.sw.seeds)):  # the order of experiment.plan: seeds, then methods
                for m in self.sw.methods:
                    todo.append((ci, name, per_method[m][si]))
        return todo

    # ---- sweep.json
    def write(self, todo, status: str) -> list[dict]:
        cells = []
        for ci, (name, values) in enumerate(self.sw.cells):
            runs = []
            for _, _, p in (t for t in todo if t[0] == ci):
                row = _run_status(p)
                if str(p.run_dir) in self.failed and row["status"] != "complete":
                    row["status"] = "diverged"
                    row["error"] = self.failed[str(p.run_dir)]
                runs.append(row)
            done = sum(r["status"] == "complete" for r in runs)
            cstat = "complete" if done == len(runs) else ("pending" if all(r["status"] == "pending" for r in runs)
                                                         else "partial")
            cells.append({"name": name, "values": values, "status": cstat, "runs_done": done,
                          "runs": runs})
        base = self.sw.base
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.created = self.created or now
        data = {"format": FORMAT, "name": self.sw.spec.name, "preset": base.preset, "quick": base.quick,
                "description": self.sw.spec.description, "status": status, "created": self.created,
                "updated": now, "command": self.command, **self.sw.request(),
                "cells_total": len(cells), "cells_done": sum(c["status"] == "complete" for c in cells),
                "runs_total": len(todo), "runs_done": sum(c["runs_done"] for c in cells),
                "layout": "<cell>/<method>-seed<k>", "cells": cells}
        self.sw.out.mkdir(parents=True, exist_ok=True)
        ckpt.write_text_atomic(self.sw.out / SWEEP_FILE, json.dumps(data, indent=1) + "\n")
        return cells

    # ---- the loop
    def run(self) -> SweepResult:
        from .data import load_dataset
        from .train import Diverged, Interrupted

        sw, log = self.sw, self.log
        self.check_folder()
        todo = self.plan()
        n_cells, n_runs = len(sw.cells), len(todo)
        n_skip = sum(p.action == "skip" for _, _, p in todo)
        label = " [QUICK variant: a reduced setting, not the paper's]" if sw.base.quick else ""
        log(f"sweep {sw.out}: {n_cells} cell(s) x {len(sw.methods)} method(s) x {len(sw.seeds)} seed(s) = "
            f"{n_runs} run(s); {n_skip} finished, {n_runs - n_skip} to train{label}")
        cells = self.write(todo, "running")
        data, data_key = None, None
        trained = 0
        current = None
        try:
            for i, (ci, name, p) in enumerate(todo, start=1):
                current = p
                cells_done = sum(c["status"] == "complete" for c in cells)
                where = f"[cells done {cells_done}/{n_cells} | run {i}/{n_runs}] {name}/{p.run_dir.name}"
                if p.action == "skip":
                    log(f"{where}: finished earlier; skipped")
                    continue
                log(f"{where}: {'resuming' if p.action == 'resume' else 'training'} ({p.cfg.epochs} epoch(s))")
                key = (p.cfg.dataset, p.cfg.data_dir, p.cfg.test_fraction)
                if key != data_key:
                    data, data_key = None, None
                    data = load_dataset(p.cfg.dataset, data_dir=p.cfg.data_dir, test_fraction=p.cfg.test_fraction)
                    data_key = key
                try:  # a "train" run is emptied first: --force, or a folder a kill left before the first save
                    r = train_planned(p, data, progress=self.progress, log=log)
                    outcome = f"test acc {r.test_acc:.4f} ({r.seconds:.1f}s)"
                except Diverged as e:
                    self.failed[str(p.run_dir)] = str(e)
                    outcome = f"{e}; going on with the next run"
                trained += 1
                cells = self.write(todo, "running")
                cells_done = sum(c["status"] == "complete" for c in cells)
                log(f"[cells done {cells_done}/{n_cells} | run {i}/{n_runs}] {name}/{p.run_dir.name}: {outcome}")
        except (Interrupted, KeyboardInterrupt) as e:
            self.write(todo, "interrupted")
            where = f"{current.run_dir}" if current is not None else str(sw.out)
            raise Interrupted(f"sweep interrupted during {where}; finished runs and the last checkpoint are kept; "
                              f"continue with: alviz sweep --resume --out {sw.out} (or run the same command "
                              f"again)") from e
        except BaseException:
            self.write(todo, "failed")
            raise
        status = "failed" if self.failed else "complete"
        cells = self.write(todo, status)
        return SweepResult(sw.out, status, cells, trained, n_skip, sorted(self.failed))


def run_sweep(sw: Sweep, *, force: bool = False, progress: bool = True, log=print,
              command: str | None = None) -> SweepResult:
    """Train every run of `sw` that is not finished; see the module docstring."""
    return SweepRunner(sw, force=force, progress=progress, log=log, command=command).run()


def summarize(result: SweepResult) -> list[str]:
    """One line per cell and method: final test accuracy, mean and spread over seeds."""
    lines = []
    for c in result.cells:
        by_method: dict[str, list] = {}
        for r in c["runs"]:
            by_method.setdefault(r["method"], []).append(r)
        for m, runs in by_method.items():
            accs = [r["test_acc"] for r in runs if r["status"] == "complete" and r["test_acc"] is not None]
            if not accs:
                lines.append(f"{c['name']:<32} {m:>3}  no finished run")
                continue
            mean = sum(accs) / len(accs)
            sd = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0
            lines.append(f"{c['name']:<32} {m:>3}  test acc {mean:.4f} +- {sd:.4f} (sd over {len(accs)} seed(s))")
    return lines


# --------------------------------------------------------------------------- alviz train's other path

def train_spec(spec: Spec, overrides: dict, methods=None, seeds=None, out=None, *, resume=False, force=False,
               progress=True, log=print, command=None):
    """Train what a preset or config file asks for when a single config cannot say it: a sweep section
    (-> run_sweep into checkpoints/<name>/), or methods with their own settings (per_method ->
    one experiment folder, each method trained with its config). Returns a SweepResult or
    (experiment folder, [(Planned, train.Result | None)])."""
    if spec.sweep is not None:
        sw = make_sweep(spec, overrides, None, methods, seeds, out)
        return run_sweep(sw, force=force, progress=progress, log=log, command=command)
    from .experiment import train_experiment

    methods = list(methods or ("al", "bp", "bp-authors"))
    cfgs = {m: cfgmod.from_dict(overrides, spec.for_method(m), source="command line") for m in methods}
    base = cfgmod.from_dict(overrides, spec.config, source="command line")
    seeds = list(seeds or [base.seed])
    out = Path(out) if out else DEFAULT_ROOT / experiment_name(base)
    for m in methods:  # every method's plan is checked before anything trains
        plan(cfgs[m], [m], seeds, out, resume=resume, force=force)
    results = []
    for m in methods:
        _, r = train_experiment(cfgs[m], [m], seeds, out, resume=resume, force=force, progress=progress, log=log)
        results += r
    return out, results


__all__ = ["Sweep", "SweepResult", "make_sweep", "sweep_from_file", "run_sweep", "train_spec", "parse_grid_args",
           "parse_value", "cell_name", "grid_cells", "read_sweep_file", "summarize", "FORMAT", "SWEEP_FILE"]
