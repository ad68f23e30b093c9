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

from . import snapshots as snapshot_spec
from .errors import UserError, choice_error
from .safeio import describe, read_yaml
from .schema import MAX_SEED

METHODS = ("al", "bp", "bp-authors", "al-e2e", "scpl", "dgl")  # models/__init__.py builds each
ARCHS = ("mlp", "cnn", "vgg", "resnet20", "resnet32")
ACTIVATIONS = ("relu", "elu", "sigmoid", "tanh")
VARIANTS = ("paper", "tanh-ce", "iclr2022")  # iclr2022: the old name of tanh-ce (see docs/METHOD.md)
SCHEDULES = ("none", "step", "cosine", "authors")
OPTIMIZERS = ("adam", "sgd")
AUX_TYPES = ("mlp-sr", "mlp", "cnn", "linear")  # DGL auxiliary classifiers (models/dgl.py)
HEAD_ACTS = ("sigmoid", "tanh", "encoder")
ON_NAN = ("stop", "continue")
# the training recipe and the keys it sets (alviz/recipe.py; None in a config = the recipe's value)
RECIPES = ("alviz", "authors")
INITS = ("torch", "he-normal")
PREPROCESS = ("channel-zscore", "mean-image")
AUGMENT_OPS = ("crop-flip", "authors")
RESNET_BLOCKS = ("torchvision", "authors")
VGG_FORMS = ("alviz", "authors")
BN_STYLES = ("torch", "tf")
PADDINGS = ("torch", "tf")


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
    schedule: str | None = None  # "step": lr x gamma at each milestone fraction (per epoch); "cosine"; "none";
    # "authors": per step, x0.1 at 40/60/80 % and x0.5 at 90 % of all steps; None: the recipe's
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1  # step: the factor at each milestone; cosine: the final lr / lr
    weight_decay: float = 0.0
    optimizer: str = "adam"  # "adam", or "sgd" (with `momentum`; DGL's reference code)
    momentum: float = 0.9  # sgd only
    temperature: float = 0.1  # SCPL: temperature of the contrastive loss
    aux_type: str = "mlp-sr"  # DGL: auxiliary classifier, as in the reference's auxiliary-net study
    variant: str = "paper"  # AL variant: "paper" (sigmoid, MSE) or "tanh-ce" (tanh, CE first AE; old name iclr2022)
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
    # Adam on the CPU: torch's fused kernel (one pass per tensor); false: torch's reference arithmetic to the bit
    # (alviz.adam.InPlaceAdam; slower, the weights differ from the fused kernel's in the last bits). CUDA: always fused
    fused_adam: bool = True
    onednn_linear: bool = False  # CPU: nn.Linear products through torch's oneDNN instead of MKL (alviz.onednn)
    # CPU, local rules (al, scpl, dgl) with 2+ components and 2+ torch threads: the components train side by
    # side in threads of one process (alviz.concurrent); the result equals a 1-thread run's to the bit
    concurrent: bool = True
    # keep the weights of these epochs in RUN/snapshots/ (alviz.snapshots): "0,1,5", "every:N", "log" or
    # None. Each costs one model.safetensors on disk (default MLP: AL 6.9 MB, BP 4.0 MB; `log` keeps 7
    # of 20 epochs: 48 MB and 28 MB per run)
    snapshots: str | None = None
    # ---- the training recipe (alviz/recipe.py, docs/METHOD.md): `recipe` sets every key below that
    # is None; a key given explicitly wins over the recipe
    recipe: str = "alviz"  # "alviz" (alviz's own set-up) or "authors" (SamYWK/Associated_Learning's)
    init: str | None = None  # "torch" (PyTorch defaults) or "he-normal" (truncated He-normal kernels, zero biases)
    preprocess: str | None = None  # "channel-zscore" or "mean-image" (/255 minus the training mean image)
    augment_ops: str | None = None  # CIFAR training augmentation: "crop-flip" or "authors" (+ brightness, contrast)
    shuffle: bool | None = None  # reshuffle the training data every epoch (False: one fixed order)
    l2: float | None = None  # L2 scale (TF l2_regularizer) on the authors' scoped kernels only (recipe.l2_params)
    resnet_block: str | None = None  # "torchvision" or "authors" (block form, 1x1 shortcut without BN, conv biases)
    vgg_form: str | None = None  # "alviz" (conv+act, no BN) or "authors" (conv+BN+act, VGG-AL's BN statistics frozen)
    bn: str | None = None  # BatchNorm momentum/eps: "torch" (0.1 / 1e-5) or "tf" (decay 0.99 / 1e-3)
    padding: str | None = None  # conv padding at stride 2: "torch" (both sides) or "tf" ("same": bottom/right)
    adam_eps: str | None = None  # where Adam adds epsilon: "torch" or "tf" (before the bias correction)

    def validate(self) -> "TrainConfig":
        _check_choice("method", self.method, METHODS)
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("head_act", self.head_act, HEAD_ACTS)
        _check_choice("on_nan", self.on_nan, ON_NAN)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("aux_type", self.aux_type, AUX_TYPES)
        if not (self.temperature > 0 and self.temperature < float("inf")):
            raise UserError(f"temperature must be a positive number; received {self.temperature}")
        if not 0.0 <= self.momentum < 1.0:
            raise UserError(f"momentum must be in [0, 1); received {self.momentum}")
        _check_choice("recipe", self.recipe, RECIPES)
        for name, allowed in (("init", INITS), ("preprocess", PREPROCESS), ("augment_ops", AUGMENT_OPS),
                              ("resnet_block", RESNET_BLOCKS), ("vgg_form", VGG_FORMS), ("bn", BN_STYLES),
                              ("padding", PADDINGS), ("schedule", SCHEDULES), ("adam_eps", BN_STYLES)):
            v = getattr(self, name)
            if v is not None:
                _check_choice(name, v, allowed)
        if self.l2 is not None and not (0.0 <= self.l2 < float("inf")):
            raise UserError(f"l2 must be a number >= 0; received {self.l2}")
        if self.shuffle is not None and not isinstance(self.shuffle, bool):
            raise UserError(f"shuffle must be true or false; received {self.shuffle!r}")
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
        for name in ("channels_last", "compile", "fused_adam", "onednn_linear", "concurrent"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise UserError(f"{name} must be true or false; received {v!r}")
        snapshot_spec.epochs(self.snapshots, self.epochs)  # a bad spec is a UserError naming what is allowed
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# How to train, not what: keys that may differ between a stored run or sweep and a request to continue
# it (alviz.train's --resume, alviz.sweep's --resume); the stored config takes the new values.
HOW_KEYS = frozenset({"device", "amp", "on_nan", "data_dir", "channels_last", "compile", "fused_adam",
                      "onednn_linear", "concurrent"})
# Keys that may differ between a finished run and a new request without it being another run
# (alviz.experiment's plan): where it ran, and how its threads were used (`concurrent` gives a
# 1-thread run's result, and the thread count is not part of a run either).
SAME_RUN_KEYS = frozenset({"device", "amp", "on_nan", "data_dir", "concurrent"})

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
    if cfg.schedule == "cosine":  # from 1 to gamma, half a cosine over the epochs (SCPL's reference)
        q = 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
        return q + cfg.gamma * (1.0 - q)
    if cfg.schedule == "authors":  # per step in alviz.train; per epoch (at the epoch's start) elsewhere
        from .recipe import step_multiplier

        return step_multiplier(epoch, cfg.epochs)
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
    if "snapshots" in data:  # "log", "every:N", "0,1,5" or a YAML list of epochs, in one canonical text
        data = {**data, "snapshots": snapshot_spec.normalize(data["snapshots"])}
    for key, value in data.items():
        if not _type_ok(value, _HINTS[key]):
            raise UserError(f"{source}: {key} must be of type {_type_name(_HINTS[key])}; "
                            f"received {describe(value)} ({type(value).__name__})")
        if _HINTS[key] == float | None or _HINTS[key] is float:
            data = {**data, key: None if value is None else float(value)}
    if "milestones" in data:
        data = {**data, "milestones": [float(m) for m in data["milestones"]]}
    cfg = dataclasses.replace(base or TrainConfig(), **data)
    try:
        return cfg.validate()
    except UserError as e:  # name the file the value came from (flags need no name)
        msg = str(e)
        if source in ("config", "command line") or msg.startswith(source):
            raise
        raise UserError(f"{source}: {msg}") from None


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
