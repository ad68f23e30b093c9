"""Adam with torch's multi-tensor ("foreach") arithmetic, taken in place on the CPU (`fused_adam: false`).

torch's foreach Adam computes, for every parameter, sqrt(v) into a new tensor, divides it by
sqrt(1 - beta2^t), adds eps and takes `p.addcdiv_(m, that, -lr / (1 - beta1^t))`. The new tensor is
parameter-sized and fresh every step (the paper's n = 1,024 MLP: 100 MB a step), and writing fresh
memory pays page faults: on the 2-core VM of BENCHMARKS.md `sqrt` was a third of an AL step.
`InPlaceAdam` takes the same operations on the same values in the same order into one buffer per
parameter that it keeps between steps, so its weights and its state equal torch's foreach Adam's to
the bit (tests/test_adam.py, against torch's foreach and single-tensor Adam), only sooner. The buffers
are not optimiser state: `state_dict()` and checkpoints are torch's Adam's.

The in-place path covers what alviz trains with: CPU, real floating-point parameters, `foreach`
(not fused, not capturable, not differentiable), no amsgrad, no maximize, coupled weight decay and
float hyper-parameters. Any other group is stepped by torch's own `Adam.step` (on CUDA alviz uses the
fused kernel, which this file never touches). What this is not: a new optimiser, or alviz's default
on the CPU: that is torch's fused kernel, one pass per tensor and faster, whose update rounds
differently in the last bit of a few weights a step (alviz.train.make_optimizer). This is the way to
the reference's weights to the bit, the price a pass per operation.
"""
from __future__ import annotations

import torch


def _scalar_dtype() -> torch.dtype:
    """The dtype torch's Adam gives `state["step"]` off the fused/capturable paths."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class InPlaceAdam(torch.optim.Adam):
    """torch.optim.Adam; on the CPU its foreach step runs in place (see the module docstring)."""

    def __init__(self, params, *args, **kw):
        super().__init__(params, *args, **kw)
        self._sqrt_bufs: dict[torch.Tensor, torch.Tensor] = {}

    @staticmethod
    def _in_place(group) -> bool:
        return (bool(group.get("foreach")) and not group.get("fused") and not group.get("capturable")
                and not group.get("differentiable") and not group.get("amsgrad") and not group.get("maximize")
                and not group.get("decoupled_weight_decay", False)
                and all(_number(group[k]) for k in ("lr", "eps", "weight_decay"))
                and all(_number(b) for b in group["betas"])
                and all(p.device.type == "cpu" and p.is_floating_point() for p in group["params"]))

    @torch.no_grad()
    def step(self, closure=None):
        if not all(self._in_place(g) for g in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")
            state = self.state[p]
            if len(state) == 0:  # torch's lazy initialisation, the same tensors
                state["step"] = torch.tensor(0.0, dtype=_scalar_dtype(), device="cpu")
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
        if weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        del grads
        for p, m, v, t in zip(params, exp_avgs, exp_avg_sqs, steps):
            t = t.item()
            step_size = (lr / (1 - beta1 ** t)) * -1
            denom = self._sqrt_bufs.get(p)
            if denom is None or denom.shape != v.shape or denom.dtype != v.dtype or denom.stride() != v.stride():
                denom = self._sqrt_bufs[p] = torch.empty_like(v, memory_format=torch.preserve_format)
            torch.sqrt(v, out=denom)
            denom.div_((1 - beta2 ** t) ** 0.5)
            denom.add_(eps)
            p.addcdiv_(m, denom, value=step_size)


__all__ = ["InPlaceAdam"]
