"""What each AL component costs per training step, and the pipeline's partition by that cost.

A component's cost is an estimate of one training step's work: the FLOPs of its local losses'
forward and backward for one mini-batch (matrix products and convolutions, counted by
`torch.utils.flop_counter.FlopCounterMode` on one sample and scaled by the batch size), plus its
Adam update priced at `ADAM_FLOPS_PER_PARAM` FLOPs a parameter (the update is memory-bound: on
the 2-core VM of BENCHMARKS.md one update of 33 M parameters took about as long as 10 GFLOP of
matrix products, about 300 FLOPs a parameter). In the default MLP the first component, with its
784-wide input, is the heaviest; in the CNN and VGG the first bridges, which flatten a whole
feature map, dominate.

`partition_by_cost` cuts the components into contiguous groups, one per rank, minimising the cost
of the heaviest group (the pipeline's speed is that of its slowest stage). With equal costs it
gives the same groups as `pipeline.partition` (by count).

What this is not: no training, no process group; the arithmetic of a run does not depend on the
partition (every rank computes the same thing whoever owns a component).
"""
from __future__ import annotations

import torch

from ..errors import UserError

ADAM_FLOPS_PER_PARAM = 300.0


def _params(model, i: int) -> int:
    return sum(p.numel() for m in model.component_modules(i) for p in m.parameters())


def component_costs(model, input_shape, batch_size: int) -> list[float]:
    """Estimated cost (FLOP-equivalents) of one training step of each component of a model with
    local losses (AL, SCPL, DGL: the pipeline's stage protocol).
    The model is only read: a sample's forward and backward run on copies of nothing, and the
    gradients they leave are cleared."""
    from torch.utils.flop_counter import FlopCounterMode

    if batch_size < 1:
        raise UserError(f"batch_size must be a positive integer; received {batch_size}")
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no batch-norm statistics are updated by the probe
    s = torch.zeros((1,) + tuple(input_shape), device=dev)
    y = torch.zeros(1, dtype=torch.long, device=dev)
    carry = model.initial_carry(s, y)
    costs = []
    try:
        for i in range(model.depth):
            with FlopCounterMode(display=False) as fc:
                carry, losses = model.stage_losses(i, carry, y)
                sum(losses[1:], losses[0]).backward()
            carry = tuple(c.detach() for c in carry)
            costs.append(float(fc.get_total_flops()) * batch_size + ADAM_FLOPS_PER_PARAM * _params(model, i))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return costs


def partition_by_cost(costs, world_size: int) -> list[range]:
    """Contiguous groups of components, one per rank, that minimise the heaviest group's total cost;
    among those, the most even (least sum of squared group costs; then the earliest cuts), and where
    the even split by count (`pipeline.partition`) is among them, that split. Exact, by two dynamic
    programmes over the cut points: the least bottleneck B, then the least sum of squares with
    every group at most B."""
    costs = [float(c) for c in costs]
    L, K = len(costs), int(world_size)
    if K < 1:
        raise UserError(f"the pipeline needs at least 1 rank; received {K}")
    if K > L:
        raise UserError(f"--pipeline over {K} ranks needs at least {K} components; received depth {L} "
                        "(raise --depth or start fewer ranks)")
    if any(not c >= 0 for c in costs):
        raise UserError(f"component costs must be non-negative numbers; received {costs}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)

    def seg(i, j):
        return prefix[j] - prefix[i]

    def solve(value, combine, allowed):
        """best[k][j] over k groups of [0, j); returns the cut points of best[K][L]."""
        inf = float("inf")
        best = [[inf] * (L + 1) for _ in range(K + 1)]
        cut = [[0] * (L + 1) for _ in range(K + 1)]
        best[0][0] = 0.0
        for k in range(1, K + 1):
            for j in range(k, L - (K - k) + 1):
                for i in range(k - 1, j):
                    if best[k - 1][i] == inf or not allowed(i, j):
                        continue
                    v = combine(best[k - 1][i], value(i, j))
                    if v < best[k][j]:
                        best[k][j], cut[k][j] = v, i
        bounds, j = [L], L
        for k in range(K, 0, -1):
            j = cut[k][j]
            bounds.append(j)
        return best[K][L], [range(a, b) for a, b in zip(bounds[::-1], bounds[::-1][1:])]

    bottleneck, _ = solve(seg, max, lambda i, j: True)
    even = [range(r * L // K, (r + 1) * L // K) for r in range(K)]
    if max(seg(g.start, g.stop) for g in even) <= bottleneck:
        return even
    _, groups = solve(lambda i, j: seg(i, j) ** 2, lambda a, b: a + b, lambda i, j: seg(i, j) <= bottleneck)
    return groups
