"""Opt-in CPU kernels (`onednn_linear: true`): a model's `nn.Linear` products through the oneDNN
library bundled with torch (`torch.ops.mkldnn._linear_pointwise`, the kernel torch's own CPU
compiler uses for linear layers) instead of torch's BLAS (MKL in the pip wheels).

Why: on CPUs without AVX-512 (this project's AMD EPYC VM) MKL's sgemm runs the AL MLP's batch-32
shapes at a fraction of what oneDNN reaches, and TensorFlow with its oneDNN kernels took the
authors' MLP epoch at about half alviz's time (BENCHMARKS.md, issue 19). The forward product,
the input gradient and the weight gradient are all oneDNN calls; the bias gradient is a sum.

What it is not: bit-identical to the default. oneDNN sums in another order, so outputs and
gradients differ from torch's default in the last bits (tested within float32 tolerance); a run
with it is not the default's to the bit, so it is an opt-in. Only 2-D float32
inputs on the CPU take this path; anything else (another dtype or device, batched inputs, a torch
without oneDNN) falls back to `F.linear`. The parameters and state dict are unchanged: checkpoints
load either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b.T by oneDNN (a: (m, k), b: (n, k); strided views are read in place)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.contiguous()
        gx = _mm_t(g, w.t()) if ctx.needs_input_grad[0] else None  # g @ w
        gw = _mm_t(g.t(), x.t()) if ctx.needs_input_grad[1] else None  # g.T @ x
        gb = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _fits(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (x.dim() == 2 and x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
            and x.is_contiguous() and w.is_contiguous())


class OneDNNLinear(nn.Linear):
    """An `nn.Linear` whose 2-D float32 CPU products go through oneDNN (same parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fits(x, self.weight):
            return _LinearFn.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def route_linears(model: nn.Module) -> int:
    """Make every plain `nn.Linear` of `model` a `OneDNNLinear` in place; returns how many. Raises
    RuntimeError when this torch has no oneDNN."""
    if not available():
        raise RuntimeError("onednn_linear: this torch build has no oneDNN (torch.backends.mkldnn is unavailable)")
    n = 0
    for m in model.modules():
        if type(m) is nn.Linear:
            m.__class__ = OneDNNLinear
            n += 1
    return n
