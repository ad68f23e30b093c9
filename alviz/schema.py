"""Schemas: the whole structure of each kind of JSON file alviz writes and reads back, checked.

A schema is a tree of nodes (`Int`, `Num`, `Str`, `Bool`, `Null`, `List`, `Map`, `Dict`, `Any`,
`Either`); `check(value, node, where)` walks a parsed file against it and raises one `UserError`
naming the file, the key path, the value received (bounded: `safeio.describe`) and what is allowed:

    meta.json: history[0] is 1; allowed: a mapping of names to numbers, text or null

The kinds of file (meta.json, activation manifest, sweep.json, measures cache) are at the bottom;
checks across fields that a tree cannot say (a mean per input feature) live with the code that
reads the file. This module reads no files and knows nothing of torch.
"""

from __future__ import annotations

import math
import re

from .errors import UserError
from .safeio import describe

METHODS = ("al", "bp", "bp-authors", "al-e2e", "scpl", "dgl")  # = config.METHODS (config imports this module; a test keeps them equal)

MAX_CLASSES = 10_000  # a class label beyond MAX_CLASSES - 1 is refused (a model of a million classes is a typo)
MAX_SEED = 2**32 - 1  # every generator alviz seeds (torch, numpy, openTSNE) accepts 0..2**32-1


class Node:
    text = "anything"

    def check(self, v, path: str, where) -> None:  # pragma: no cover - overridden
        pass

    def fail(self, v, path: str, where):
        raise UserError(f"{where}: {path or 'the file'} is {describe(v)}; allowed: {self.text}")


class Any(Node):
    pass


class Null(Node):
    text = "null"

    def check(self, v, path, where):
        if v is not None:
            self.fail(v, path, where)


class Bool(Node):
    text = "true or false"

    def check(self, v, path, where):
        if not isinstance(v, bool):
            self.fail(v, path, where)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Int(Node):
    def __init__(self, lo: int | None = None, hi: int | None = None, text: str | None = None):
        self.lo, self.hi = lo, hi
        self.text = text or ("an integer" + (f" >= {lo}" if lo is not None else "")
                             + (f" <= {hi}" if hi is not None else ""))

    def check(self, v, path, where):
        if not _is_int(v) or (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            self.fail(v, path, where)


class Num(Node):
    """A number (int or float); `finite` refuses NaN and inf; `positive`: > 0; `lo`: >= lo."""

    def __init__(self, *, finite: bool = True, positive: bool = False, lo: float | None = None, text=None):
        self.finite, self.positive, self.lo = finite, positive, lo
        self.text = text or ("a " + ("positive " if positive else "") + ("finite " if finite else "") + "number"
                             + (f" >= {lo}" if lo is not None else ""))

    def check(self, v, path, where):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            self.fail(v, path, where)
        f = float(v)
        if (self.finite and not math.isfinite(f)) or (self.positive and not f > 0) \
                or (self.lo is not None and not f >= self.lo):
            self.fail(v, path, where)


class Str(Node):
    def __init__(self, choices=None, pattern: str | None = None, text: str | None = None):
        self.choices, self.pattern = choices, pattern
        self.text = text or (", ".join(map(repr, choices)) if choices else "text")

    def check(self, v, path, where):
        if not isinstance(v, str) or (self.choices is not None and v not in self.choices) \
                or (self.pattern is not None and not re.fullmatch(self.pattern, v)):
            self.fail(v, path, where)


class Either(Node):
    def __init__(self, *options: Node, text: str | None = None):
        self.options = options
        self.text = text or " or ".join(o.text for o in options)

    def check(self, v, path, where):
        for o in self.options:
            try:
                o.check(v, path, where)
                return
            except UserError:
                continue
        self.fail(v, path, where)


def Opt(node: Node) -> Node:
    """`node` or null."""
    return Either(node, Null(), text=f"null or {node.text}")


class List(Node):
    def __init__(self, item: Node, lo: int = 0, hi: int | None = None, text: str | None = None):
        self.item, self.lo, self.hi = item, lo, hi
        self.text = text or f"a list of {item.text}"

    def check(self, v, path, where):
        if not isinstance(v, list) or len(v) < self.lo or (self.hi is not None and len(v) > self.hi):
            self.fail(v, path, where)
        for i, x in enumerate(v):
            self.item.check(x, f"{path}[{i}]", where)


class Dict(Node):
    """A mapping of any text keys to values of one kind."""

    def __init__(self, value: Node, text: str | None = None):
        self.value = value
        self.text = text or f"a mapping of names to {value.text}"

    def check(self, v, path, where):
        if not isinstance(v, dict):
            self.fail(v, path, where)
        for k, x in v.items():
            self.value.check(x, f"{path}.{k}" if path else str(k), where)


class Map(Node):
    """A mapping with known keys: `required` must be there, `optional` may be; other keys pass."""

    def __init__(self, required: dict, optional: dict | None = None, text: str | None = None):
        self.required, self.optional = required, optional or {}
        self.text = text or "a mapping with " + ", ".join(required)

    def check(self, v, path, where):
        if not isinstance(v, dict):
            self.fail(v, path, where)
        for k, node in self.required.items():
            sub = f"{path}.{k}" if path else k
            if k not in v:
                raise UserError(f"{where}: missing key {sub!r}")
            node.check(v[k], sub, where)
        for k, node in self.optional.items():
            if k in v:
                node.check(v[k], f"{path}.{k}" if path else k, where)


def check(value, node: Node, where, path: str = "") -> None:
    """Raise a UserError unless `value` fits `node` (see the module docstring); `path` names the
    value inside its file (e.g. "preprocess.std")."""
    node.check(value, path, where)


# --------------------------------------------------------------------------- the kinds of file

SHA256 = Str(pattern="[0-9a-f]{64}", text="64 hex digits (a sha256)")
COUNT = Int(0, text="a non-negative integer")
SEED = Int(0, MAX_SEED, text=f"an integer 0..{MAX_SEED}")
CLASSES = Int(1, MAX_CLASSES, text=f"a positive integer (at most {MAX_CLASSES})")
SHAPE = List(Int(1), 1, 3, text="a list of 1 to 3 positive integers")
CLASS_NAMES = Opt(List(Str(), 1, MAX_CLASSES))
# one row per epoch: numbers (a loss may be NaN under on_nan: continue), names, flags
HISTORY_ROW = Dict(Either(Num(finite=False), Str(), Bool(), Null()), text="a mapping of names to numbers, text or null")

META = Map(
    {"format": Str(("alviz-run/1",)), "input_shape": SHAPE, "num_classes": CLASSES, "epoch": COUNT,
     "preprocess": Map({}, text="a mapping (image, input_shape, mean, std, pixel_max, per_image_standardize)")},
    {"history": List(HISTORY_ROW), "class_names": CLASS_NAMES, "status": Str(("running", "complete")),
     "weights_sha256": SHA256, "data_sha256": SHA256, "n_train": COUNT, "n_test": COUNT,
     "method": Str(METHODS), "dataset": Str(), "augment": Bool()})

_LAYER = Map({"name": Str(pattern=r"[A-Za-z_][A-Za-z0-9_]{0,63}", text="a layer name"), "file": Str(),
              "shape": List(COUNT, 1, 5, text="a list of 1 to 5 sizes")},
             {"role": Str(), "position": Num(), "on_path": Bool(), "match": Str(), "output_shape": List(COUNT)})
MANIFEST = Map(
    {"format": Str(("alviz-activations/1",)), "dtype": Str(("float32", "float16")), "pool": Str(("gap", "flatten")),
     "n_samples": COUNT, "labels_file": Str(), "ids_file": Str(), "layers": List(_LAYER, 0, 4096)},
    {"num_classes": CLASSES, "class_names": CLASS_NAMES, "checkpoint_sha256": SHA256, "data_sha256": Opt(SHA256),
     "split": Str(("train", "test", "all")), "max_samples": Opt(Int(1)), "method": Str(METHODS),
     "seed": SEED, "epoch": Opt(COUNT), "dataset": Str(), "dataset_name": Str()})

_RUN_ROW = Map({"run": Str(), "method": Str(METHODS), "seed": SEED, "status": Str()},
               {"epoch": COUNT, "epochs": COUNT, "test_acc": Opt(Num(finite=False)), "error": Str()})
SWEEP = Map(
    {"format": Str(("alviz-sweep/1",)), "base": Dict(Any(), text="a mapping of config keys"),
     "grid": Dict(List(Any(), 1), text="a mapping of config keys to non-empty lists"),
     "methods": List(Str(METHODS), 1, len(METHODS)), "seeds": List(SEED, 1)},
    {"per_method": Opt(Dict(Dict(Any()), text="a mapping of methods to config keys")),
     "cells": List(Map({"name": Str()}, {"runs": List(_RUN_ROW)})), "description": Opt(Str()), "name": Opt(Str()),
     "created": Opt(Str())})

# the measures cache of one layer: measure -> number (null where a measure is undefined)
MEASURES_CACHE = Dict(Either(Num(finite=False), Null()), text="a mapping of measures to numbers or null")


__all__ = ["check", "Node", "Any", "Null", "Bool", "Int", "Num", "Str", "Either", "Opt", "List", "Dict", "Map",
           "META", "MANIFEST", "SWEEP", "MEASURES_CACHE", "HISTORY_ROW", "MAX_CLASSES", "MAX_SEED", "SHA256"]
