"""Presets: named, plain YAML training configurations, and the reader shared with `--config` files.

The preset files live in `alviz/presets/*.yaml`: the paper's grid (MNIST MLP and CNN; CIFAR-10 and
CIFAR-100 MLP, CNN, VGG, ResNet-20, ResNet-32 with the authors' widths and optimiser), a `-quick`
variant of each (same model and optimiser, a small data set and a few epochs: a CPU check of the
pipeline, never the paper's result), and the sigmoid study (a sweep). A preset is an ordinary
config file: `alviz presets NAME > my.yaml` then `alviz train --config my.yaml` runs the same thing.

A file holds `TrainConfig` keys plus three optional sections, read the same way for presets and
for `--config` files:

    description: one line, shown by `alviz presets`
    per_method:              # keys that differ for one method (applied after the file's keys,
      bp: {lr: 1.0e-3}       # before command-line flags, which override everything)
    sweep:                   # makes the file a sweep: a grid over TrainConfig keys, and the
      depth: [2, 4, 6, 8]    # methods and seeds of every cell (see alviz/sweep.py)
      methods: [al, bp]
      seeds: [0, 1, 2]

This module reads and checks files and returns configs. It does not train, choose folders or run
sweeps (experiment.py and sweep.py do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import config as cfgmod
from .config import FIELD_NAMES, METHODS, TrainConfig
from .errors import UserError
from .safeio import describe
from .schema import MAX_SEED

PRESET_DIR = Path(__file__).with_name("presets")
SECTIONS = ("description", "per_method", "sweep")
# keys a per_method section or a sweep grid may not set: the method and seed are the run's own
# coordinates (a sweep's `methods` and `seeds`), preset and quick are labels
RESERVED = ("method", "seed", "preset", "quick")


@dataclass
class SweepSpec:
    """A sweep: `grid` maps TrainConfig keys to the values they take (cells = the product);
    `methods` and `seeds` (None: the command's, or al+bp and the config's seed) apply to every cell."""

    grid: dict[str, list] = field(default_factory=dict)
    methods: list[str] | None = None
    seeds: list[int] | None = None

    def to_dict(self) -> dict:
        return {"grid": {k: list(v) for k, v in self.grid.items()}, "methods": self.methods, "seeds": self.seeds}


@dataclass
class Spec:
    """What a preset or config file asks for: the base config plus its extra sections."""

    config: TrainConfig
    per_method: dict[str, dict] = field(default_factory=dict)
    sweep: SweepSpec | None = None
    description: str = ""
    name: str | None = None  # the preset's name, or the config file's stem
    source: str = "defaults"

    def for_method(self, method: str) -> TrainConfig:
        """The config of `method`'s runs: the base with `per_method[method]` applied (a sweep's cell
        values and command-line flags are applied after it, so they win)."""
        extra = self.per_method.get(method, {})
        return cfgmod.from_dict(extra, self.config.replace(method=method),
                                source=f"{self.source}: per_method.{method}")

    def differs(self, methods) -> bool:
        """Whether `methods` need configs that differ in more than the method (per_method)."""
        cfgs = [self.for_method(m).replace(method="al") for m in methods]
        return any(c != cfgs[0] for c in cfgs[1:])


# --------------------------------------------------------------------------- checking sections

def _reserved_error(key: str, where: str) -> UserError:
    hint = {"method": "methods", "seed": "seeds"}.get(key)
    tail = f"; list them under `{hint}`" if hint and where.endswith("sweep") else ""
    return UserError(f"{where}: {key!r} cannot be set here{tail}; allowed keys: "
                     f"{', '.join(k for k in FIELD_NAMES if k not in RESERVED)}")


def check_grid(grid: dict, base: TrainConfig, source: str) -> dict[str, list]:
    """Check a sweep grid {key: [values]} against TrainConfig and return it with values of the
    field's type (ints given for a float field become floats); raises UserError naming the problem."""
    if not isinstance(grid, dict):
        raise UserError(f"{source}: a sweep grid maps config keys to lists of values; received "
                        f"{type(grid).__name__}")
    out = {}
    for key, values in grid.items():
        if key not in FIELD_NAMES:
            raise UserError(f"{source}: unknown sweep key {key!r}; valid keys: "
                            f"{', '.join(k for k in FIELD_NAMES if k not in RESERVED)}, methods, seeds")
        if key in RESERVED:
            raise _reserved_error(key, source)
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: sweep key {key!r} needs a non-empty list of values; received {values!r}")
        typed = []
        for v in values:
            try:
                c = cfgmod.from_dict({key: v}, base, source=f"{source}: {key}")
            except UserError as e:
                msg = str(e)
                raise UserError(msg if msg.startswith(source) else f"{source}: {key}={v!r}: {msg}") from None
            typed.append(getattr(c, key))
        dups = sorted({repr(v) for v in typed if typed.count(v) > 1})
        if dups:
            raise UserError(f"{source}: sweep key {key!r} lists {', '.join(dups)} more than once")
        out[key] = typed
    return out


def check_methods(methods, source: str) -> list[str]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, list) or not methods:
        raise UserError(f"{source}: methods must be a non-empty list of {', '.join(METHODS)}; received {methods!r}")
    bad = [m for m in methods if m not in METHODS]
    if bad or len(set(methods)) != len(methods):
        raise UserError(f"{source}: methods must be distinct names out of {', '.join(METHODS)}; received {methods!r}")
    return list(methods)


def check_seeds(seeds, source: str) -> list[int]:
    """`seeds` if it is a non-empty list of distinct integers 0..MAX_SEED (checked before anything trains)."""
    ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                    and 0 <= s <= MAX_SEED for s in seeds)
    if not ok or len(set(seeds)) != len(seeds):
        dup = sorted({s for s in seeds if seeds.count(s) > 1}) if ok else []
        why = f" ({', '.join(map(str, dup))} more than once: each seed is one run)" if dup else ""
        raise UserError(f"{source}: seeds must be a non-empty list of distinct integers 0..{MAX_SEED}; received "
                        f"{describe(seeds)}{why}")
    return list(seeds)


def _check_sweep(section, base: TrainConfig, source: str) -> SweepSpec:
    where = f"{source}: sweep"
    if not isinstance(section, dict):
        raise UserError(f"{where}: expected a mapping like {{depth: [2, 4], methods: [al, bp], seeds: [0, 1]}}; "
                        f"received {type(section).__name__}")
    grid = {k: v for k, v in section.items() if k not in ("methods", "seeds")}
    methods = check_methods(section["methods"], f"{where}.methods") if "methods" in section else None
    seeds = check_seeds(section["seeds"], f"{where}.seeds") if "seeds" in section else None
    return SweepSpec(check_grid(grid, base, where), methods, seeds)


def _check_per_method(section, source: str) -> dict[str, dict]:
    where = f"{source}: per_method"
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise UserError(f"{where}: expected a mapping like {{bp: {{lr: 1.0e-3}}}}; received {section!r}")
    bad = [m for m in section if m not in METHODS]
    if bad:
        raise UserError(f"{where}: unknown method {bad[0]!r}; allowed: {', '.join(METHODS)}")
    for m, d in section.items():
        for k in d:
            if k in RESERVED:
                raise _reserved_error(k, f"{where}.{m}")
    return {m: dict(d) for m, d in section.items()}


def parse_spec(data: dict, base: Spec | None = None, *, source: str = "config", name: str | None = None) -> Spec:
    """Read a mapping (a YAML file's content) over `base`: TrainConfig keys override the base's,
    per_method sections merge per method, a sweep section replaces the base's."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of config keys, received {type(data).__name__}")
    base = base or Spec(TrainConfig())
    keys = {k: v for k, v in data.items() if k not in SECTIONS}
    unknown = sorted(set(keys) - set(FIELD_NAMES), key=str)
    if unknown:
        raise UserError(f"{source}: unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: "
                        f"{', '.join(FIELD_NAMES)}, and the sections {', '.join(SECTIONS)}")
    cfg = cfgmod.from_dict(keys, base.config, source=source)
    description = data.get("description", base.description)
    if not isinstance(description, str):
        raise UserError(f"{source}: description must be one line of text; received {description!r}")
    per_method = {m: dict(d) for m, d in base.per_method.items()}
    for m, d in _check_per_method(data.get("per_method") or {}, source).items():
        per_method.setdefault(m, {}).update(d)
    sweep = base.sweep
    if "sweep" in data:
        sweep = _check_sweep(data["sweep"], cfg, source)
    elif sweep is not None:
        sweep = SweepSpec(check_grid(sweep.grid, cfg, f"{source}: sweep"), sweep.methods, sweep.seeds)
    spec = Spec(cfg, per_method, sweep, " ".join(description.split()), name or base.name, source)
    for m in per_method:  # every method's config must be valid as a whole
        spec.for_method(m)
    return spec


# --------------------------------------------------------------------------- presets

def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    names = preset_names()
    if name not in names:
        raise UserError(f"unknown preset {name!r}; allowed: {', '.join(names)} (see `alviz presets`)")
    return PRESET_DIR / f"{name}.yaml"


def preset_text(name: str) -> str:
    """The preset's file, comments included: a starting point for your own config."""
    return preset_path(name).read_text(encoding="utf-8")


def load_spec(preset: str | None = None, config_file: str | os.PathLike | None = None) -> Spec:
    """The Spec of a preset and/or a config file (the file's keys override the preset's); neither:
    the defaults. A preset's runs carry its name in `config.preset`."""
    spec = Spec(TrainConfig())
    if preset:
        path = preset_path(preset)
        spec = parse_spec(cfgmod.load_yaml(path), source=f"preset {preset}", name=preset)
        spec.config = spec.config.replace(preset=preset)
    if config_file:
        spec = parse_spec(cfgmod.load_yaml(config_file), spec, source=str(config_file),
                          name=preset or Path(config_file).stem)
    return spec


def load_preset(name: str) -> TrainConfig:
    """The base TrainConfig of preset `name` (its per_method and sweep sections: `load_spec`)."""
    return load_spec(name).config


@dataclass
class PresetInfo:
    name: str
    description: str
    quick: bool
    sweep: bool
    dataset: str


def list_presets() -> list[PresetInfo]:
    out = []
    for name in preset_names():
        s = load_spec(name)
        out.append(PresetInfo(name, s.description, s.config.quick, s.sweep is not None, s.config.dataset))
    return out


__all__ = ["Spec", "SweepSpec", "PresetInfo", "load_spec", "load_preset", "list_presets", "preset_names",
           "preset_path", "preset_text", "parse_spec", "check_grid", "check_methods", "check_seeds", "PRESET_DIR",
           "RESERVED"]
