"""Training configuration: one dataclass with defaults, loaded from and saved to YAML.

YAML files and CLI flags only override the defaults; unknown keys and values of the wrong type
are `UserError`s that name the valid keys. This module does not build models or read data.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from .errors import UserError, choice_error
from .safeio import describe, read_yaml
from .schema import MAX_SEED

METHODS = ("al", "bp")
ARCHS = ("mlp", "cnn", "vgg", "resnet20", "resnet32")
ACTIVATIONS = ("relu", "elu", "sigmoid", "tanh")
VARIANTS = ("paper", "iclr2022")
SCHEDULES = ("none", "step")
HEAD_ACTS = ("sigmoid", "tanh", "encoder")
ON_NAN = ("stop", "continue")


@dataclass
class TrainConfig:
    """Everything that defines one training run (one method, arch, data set, activation, seed)."""

    method: str = "al"
    arch: str = "mlp"
    dataset: str = "mnist5k"
    activation: str = "relu"
    depth: int | None = None  # number of components; None: the arch's default
    width: int | None = None  # n, width of AL's label path (and the MLP's hidden layers)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    lr_gh_factor: float = 2.0  # AL: label-path (g/h) learning rate = lr * this
    schedule: str = "step"  # "step": lr x gamma at each milestone fraction of training; or "none"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    weight_decay: float = 0.0
    variant: str = "paper"  # AL variant: "paper" (sigmoid, MSE) or "iclr2022" (tanh, CE first AE)
    head_act: str = "sigmoid"  # BP head activation: like AL's inference path, or "encoder"
    bridge_pool: int = 0  # 0: bridges flatten conv maps (authors); k: adaptive-avg-pool to k x k first
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    augment: bool | None = None  # None: the data set's default (CIFAR: pad+crop+flip)
    test_fraction: float = 0.2  # for data sets without an official test split
    data_dir: str = "data"
    on_nan: str = "stop"
    preset: str | None = None  # name of the preset this config came from, if any
    quick: bool = False  # a reduced "quick" variant of a paper preset (fewer epochs / less data)
    channels_last: bool = False  # CUDA, conv models: channels-last memory format for weights and inputs
    compile: bool = False  # torch.compile the model's losses (first steps are slower: compilation)

    def validate(self) -> "TrainConfig":
        _check_choice("method", self.method, METHODS)
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("head_act", self.head_act, HEAD_ACTS)
        _check_choice("on_nan", self.on_nan, ON_NAN)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer; received {getattr(self, name)}")
        for name in ("depth", "width"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UserError(f"{name} must be a positive integer; received {v}")
        if self.bridge_pool < 0:
            raise UserError(f"bridge_pool must be 0 (flatten) or a positive size; received {self.bridge_pool}")
        for name, (allowed, ok) in _NUMBERS.items():
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)
                    and abs(v) <= FLOAT32_MAX):
                big = " (beyond float32, which training computes in)" if isinstance(v, float) and \
                    math.isfinite(v) and abs(v) > FLOAT32_MAX else ""
                raise UserError(f"{name} must be {allowed}; received {v!r}{big}")
        if any(not (isinstance(m, (int, float)) and 0.0 < m <= 1.0) for m in self.milestones):
            raise UserError(f"milestones are fractions of training in (0, 1]; received {describe(self.milestones)}")
        check_seed(self.seed, "seed")
        for name in ("channels_last", "compile"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise UserError(f"{name} must be true or false; received {v!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


FLOAT32_MAX = 3.4028234663852886e38
# float keys: what is allowed (for the message) and the test; NaN and inf are never allowed
_NUMBERS = {
    "lr": ("a positive number", lambda v: v > 0),
    "lr_gh_factor": ("a positive number (AL's label-path learning rate is lr x lr_gh_factor)", lambda v: v > 0),
    "gamma": ("a positive number (the step schedule multiplies lr by gamma at each milestone)", lambda v: v > 0),
    "weight_decay": ("a number >= 0", lambda v: v >= 0),
    "test_fraction": ("between 0 and 1", lambda v: 0.0 < v < 1.0),
}


def check_seed(seed, what: str = "seed") -> int:
    """`seed` if it is an integer in 0..MAX_SEED (what every generator alviz seeds accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{what} must be an integer between 0 and {MAX_SEED}; received {describe(seed)}")
    return seed


def lr_multiplier(cfg: "TrainConfig", epoch: int) -> float:
    """The step schedule as a pure function of the epoch (so resuming needs no scheduler state)."""
    if cfg.schedule == "none":
        return 1.0
    passed = sum(1 for m in cfg.milestones if epoch >= int(round(m * cfg.epochs)))
    return cfg.gamma ** passed


def schedule_change(stored: "TrainConfig", cfg: "TrainConfig", done: int) -> str | None:
    """Why continuing a run trained `done` epochs under `stored` as `cfg` (other epochs) would not
    give what a fresh run of `cfg` gives (the step schedule's milestones are fractions of the
    epochs, so the epochs already trained would have had another learning rate); None if it would."""
    for e in range(min(done, cfg.epochs)):
        if lr_multiplier(stored, e) != lr_multiplier(cfg, e):
            return (f"with epochs {cfg.epochs} (not {stored.epochs}) epoch {e + 1} has learning-rate factor "
                    f"{lr_multiplier(cfg, e):g}, not the {lr_multiplier(stored, e):g} it was trained with")
    return None


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise choice_error(name, value, allowed)


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    return isinstance(value, tp)


_HINTS = typing.get_type_hints(TrainConfig)
FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


def from_dict(data: dict, base: TrainConfig | None = None, *, source: str = "config") -> TrainConfig:
    """Override `base` (or the defaults) with `data`; unknown keys or wrong types are errors."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of config keys, received {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELD_NAMES))
    if unknown:
        raise UserError(f"{source}: unknown config key(s) {', '.join(map(repr, unknown))}; "
                        f"valid keys: {', '.join(FIELD_NAMES)}")
    for key, value in data.items():
        if not _type_ok(value, _HINTS[key]):
            raise UserError(f"{source}: {key} must be of type {_type_name(_HINTS[key])}; "
                            f"received {describe(value)} ({type(value).__name__})")
        if _HINTS[key] == float | None or _HINTS[key] is float:
            data = {**data, key: None if value is None else float(value)}
    if "milestones" in data:
        data = {**data, "milestones": [float(m) for m in data["milestones"]]}
    cfg = dataclasses.replace(base or TrainConfig(), **data)
    return cfg.validate()


def _type_name(tp) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping safely and boundedly (alviz.safeio: yaml.safe_load, no Python objects
    are ever constructed; size, nesting and aliases capped; regular files only)."""
    p = Path(path)
    try:
        data = read_yaml(p, "a YAML mapping of config keys")
    except FileNotFoundError:
        raise UserError(f"config file not found: {p}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config keys, received {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike, base: TrainConfig | None = None) -> TrainConfig:
    try:
        return from_dict(load_yaml(path), base, source=str(path))
    except UserError as e:  # name the file in every message (validate() does not know it)
        msg = str(e)
        raise UserError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
