"""Forward hooks in a ``with`` block: ``capture(model, layers)`` registers them and always removes
them (also when the forward raises). Each hook stores a detached copy of its module's output,
moved off the GPU, so a later in-place op cannot change it::

    with alviz.capture(model, ["block1", "bridge2"]) as acts:
        model(x)
    acts["block1"]        # CPU tensor: output of the last call of that module

How AL's off-path layers are captured: ``model(x)`` runs f_1..f_L, b_L and h_L..h_1 once each,
so it computes every on-path layer exactly once. The early-exit bridges b_k (k < L) are not on
that path; when one is requested, ``capture`` adds a hook on block k that evaluates
``model.bridges[k-1]`` on the live output s_k right there (on the device, before any pooling),
and the bridge's own hook stores it. One ``model(x)`` therefore fills every requested layer; we
do not call ``model.exits(x)``, which would run each decoder once per exit. The same holds for
every off-path head of the other rules (SCPL's projections, DGL's auxiliary classifiers k < L):
the catalogue gives each its ``source`` block.

Pooling of convolutional maps (``pool``): ``gap`` averages each channel of a 4-D map over its
spatial positions, one value per channel. It keeps files small (CNN block 1 on MNIST: 32 values
instead of 25,088 per sample) and makes layers of different spatial size comparable in the
distance measures, which would otherwise be dominated by the layers with most positions.
``flatten`` keeps every value. Vectors are stored as they are.

What this is not: no files (``writer``), no choice of samples (``runs``); it never changes a
model's weights.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import choice_error
from .layers import layer_catalogue, select_layers


POOLS = ("gap", "flatten")


def _pool_cast(t: torch.Tensor, pool: str | None, dtype: torch.dtype | None) -> tuple[torch.Tensor, bool]:
    """`t` detached, pooled and cast as asked, on its own device; and whether the result is a
    fresh tensor (True) or may still share memory with `t` (False)."""
    t = t.detach()
    fresh = False
    if pool is not None and t.dim() != 2:
        if pool == "gap" and t.dim() == 4:
            t = t.mean(dim=(2, 3))
            fresh = True
        else:
            t = t.flatten(1)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
        fresh = True
    return t, fresh


def _store(t: torch.Tensor, pool: str | None, dtype: torch.dtype | None, non_blocking: bool) -> torch.Tensor:
    """A detached copy of `t` on the CPU, pooled and cast as asked (the work is done on `t`'s
    device, so a GPU ships only the pooled, cast values)."""
    t, fresh = _pool_cast(t, pool, dtype)
    if t.device.type != "cpu":
        return t.to("cpu", non_blocking=non_blocking)  # always a new tensor
    return t if fresh else t.clone()


@contextmanager
def capture(model: nn.Module, layers: Iterable[str] | str | None = None, *, pool: str | None = None,
            dtype: torch.dtype | None = None, non_blocking: bool = False,
            sink: Callable[[str, torch.Tensor], None] | None = None) -> Iterator[dict]:
    """Forward hooks on `layers` (names from `layer_catalogue`; None: all) for the `with` block.

    Yields a dict name -> CPU tensor holding the output of that module's most recent call (after
    one ``model(x)``: that forward's output). The hooks are removed when the block ends, raising
    or not. `pool`: None keeps the output's shape; "gap" or "flatten" make it (batch, features)
    (see the module docstring). `dtype` casts on the model's device. `non_blocking`: GPU copies are
    asynchronous; the caller must synchronise (``torch.cuda.synchronize()``) before reading.
    For AL's early-exit bridges see the module docstring: one ``model(x)`` computes them too.

    `sink(name, tensor)`: instead of storing a copy, each hook hands its module's output, pooled
    and cast, still on the model's device and possibly sharing the module's memory, to `sink`,
    which must copy what it keeps before returning (a later in-place op may change it); the
    yielded dict then stays empty. `extract_arrays` uses this to copy rows straight into its files'
    staging buffers on the CPU.
    """
    if pool is not None and pool not in POOLS:
        raise choice_error("pool", pool, POOLS)
    targets = select_layers(model, layers)
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name):
        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                raise TypeError(f"layer {name!r} returned a {type(output).__name__}, not a tensor")
            if sink is not None:
                sink(name, _pool_cast(output, pool, dtype)[0])
            else:
                acts[name] = _store(output, pool, dtype, non_blocking)
        return hook

    def head_runner(head):
        def hook(module, inputs, output):
            with torch.no_grad():
                head(output)  # its own hook stores head(s_k)
        return hook

    try:
        for e in targets:
            handles.append(e.module.register_forward_hook(hook_for(e.name)))
        for e in targets:  # off-path heads (AL's early-exit bridges, SCPL's projections, DGL's exits)
            if e.source:
                handles.append(model.blocks[e.source - 1].register_forward_hook(head_runner(e.module)))
        yield acts
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def describe_layers(model: nn.Module, input_shape) -> list[dict]:
    """The catalogue as dicts, with each layer's output shape per sample (a forward pass of zeros)
    and the number of values stored per sample under each pooling."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        with capture(model) as acts:
            model(torch.zeros((2,) + tuple(input_shape), device=dev))
    finally:
        model.train(was)
    rows = []
    for e in layer_catalogue(model):
        shape = list(acts[e.name].shape[1:])
        flat = int(np.prod(shape))
        rows.append({**e.to_dict(), "shape": shape,
                     "stored": {"gap": shape[0] if len(shape) == 3 else flat, "flatten": flat}})
    return rows
