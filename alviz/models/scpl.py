"""SCPL, supervised contrastive parallel learning (`--method scpl`), after the public code of
github minyaho/SCPL (model/loss_fn.py, model/VGG.py, model/vision_multi.py).

For component i = 1..L:

    s_i  = f_i(sg(s_{i-1}))                      s_0 = x
    z_i  = normalize(p_i(s_i))                   p_i: Flatten, Linear(D -> 512), ReLU, Linear(512 -> 1024)
    cl_i = SCPL's supervised contrastive loss of z_i with temperature tau (below)    trains f_i, p_i
    ce   = cross-entropy of head(sg(s_L))        head: Flatten, Linear(D -> 2500), Sigmoid, Linear(2500 -> C)

The head belongs to the last component (SCPL's code steps it with block L's optimiser); the
detach before it means its cross-entropy trains the head only, as in the reference. Inference:
head(f_L(...f_1(x))); the projection heads are used only by the losses (SCPL has no early exits).

The contrastive loss, as `_contrastive_loss` in the reference: with logits_ij = z_i . z_j / tau,
positives P(i) = {j != i : y_j = y_i},

    loss = mean_i  - [ sum_{j in P(i)} ( logits_ij - log sum_{a != i} exp(logits_ia) ) ] / (|P(i)| + 1)

The divisor counts i itself (the reference divides by the row sum of the label-equality mask, whose
diagonal is 1), and an anchor without positives contributes 0. `scpl_loss` computes exactly that;
tests/test_rules.py checks it against a loop over pairs and a hand-computed value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import OneGroupNet

PROJ_HIDDEN = 512  # the reference's projection MLP ("m"): Linear(D, 512), ReLU, Linear(512, 1024)
PROJ_OUT = 1024
HEAD_HIDDEN = 2500  # the reference's VGG predictor: Linear(D, 2500), Sigmoid, Linear(2500, C)


def scpl_loss(z: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """SCPL's supervised contrastive loss of projections `z` (N, d), labels `y` (N,) (see the module
    docstring). `z` is L2-normalised here, as in the reference."""
    z = F.normalize(z, dim=1)
    n = len(y)
    same = (y[:, None] == y[None, :]).to(z.dtype)
    not_self = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    logits = z @ z.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # stability only: cancels below
    log_denom = torch.log((torch.exp(logits) * not_self).sum(1, keepdim=True))
    log_prob = logits - log_denom
    per_anchor = (not_self * same * log_prob).sum(1) / same.sum(1)
    return -per_anchor.mean()


def _flat_dim(shape, pool: int) -> tuple[list[nn.Module], int]:
    """[AdaptiveAvgPool2d(pool)] when asked for a larger conv map, and the flattened size."""
    if pool and len(shape) == 3 and (shape[1] > pool or shape[2] > pool):
        return [nn.AdaptiveAvgPool2d(pool)], shape[0] * pool * pool
    return [], math.prod(shape)


class Projection(nn.Sequential):
    """p_i: [AdaptiveAvgPool2d(pool)], Flatten, Linear(D -> 512), ReLU, Linear(512 -> 1024)."""

    def __init__(self, in_shape: tuple, pool: int = 0):
        pre, d = _flat_dim(in_shape, pool)
        super().__init__(*pre, nn.Flatten(), nn.Linear(d, PROJ_HIDDEN), nn.ReLU(), nn.Linear(PROJ_HIDDEN, PROJ_OUT))


class SCPLModel(OneGroupNet):
    method = "scpl"
    local = True

    def __init__(self, blocks: list[nn.Module], feat_shapes: list[tuple], num_classes: int,
                 temperature: float = 0.1, bridge_pool: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.feat_shapes = [tuple(s) for s in feat_shapes]
        self.blocks = nn.ModuleList(blocks)
        self.projections = nn.ModuleList(Projection(s, bridge_pool) for s in feat_shapes)
        pre, d = _flat_dim(feat_shapes[-1], bridge_pool)
        # head.0: the hidden layer (head1 in the layer map), head.1: the logits (head2)
        self.head = nn.ModuleList([nn.Sequential(*pre, nn.Flatten(), nn.Linear(d, HEAD_HIDDEN), nn.Sigmoid()),
                                   nn.Linear(HEAD_HIDDEN, num_classes)])

    def classify(self, s: torch.Tensor) -> torch.Tensor:
        for layer in self.head:
            s = layer(s)
        return s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.blocks:
            x = f(x)
        return self.classify(x)

    # ---- the stage protocol (alviz.parallel's --pipeline): only s flows forward

    def component_modules(self, i: int) -> list[nn.Module]:
        mods = [self.blocks[i], self.projections[i]]
        return mods + [self.head] if i == self.depth - 1 else mods

    def component_param_groups(self, comps, lr: float, gh_factor: float = 2.0) -> list[dict]:
        return [{"params": [p for i in comps for m in self.component_modules(i) for p in m.parameters()],
                 "lr": lr, "name": "all"}]

    def component_loss_keys(self, i: int) -> list[str]:
        return [f"cl{i + 1}"] + (["ce"] if i == self.depth - 1 else [])

    def initial_carry(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,)

    def carry_shapes(self, i: int, feat_shapes) -> list[tuple]:
        return [tuple(feat_shapes[i])]

    def stage_losses(self, i: int, carry, y: torch.Tensor):
        s = self.blocks[i](carry[0].detach())
        out = [scpl_loss(self.projections[i](s), y, self.temperature)]
        if i == self.depth - 1:
            out.append(F.cross_entropy(self.classify(s.detach()), y))
        return (s,), out

    def score_snapshot(self, i: int):
        """The scores read only the head, the last component's: nothing of component i is needed."""
        return None

    def last_stage(self, carry, y: torch.Tensor, snapshots=None):
        """The last component's `stage_losses` and the batch's class scores head(s_L)."""
        carry, out = self.stage_losses(self.depth - 1, carry, y)
        with torch.no_grad():
            scores = self.classify(carry[0].detach())
        return carry, out, scores

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """`cl{i}` per component, `ce` of the head, their sum under `loss`; the batch's class scores."""
        carry = self.initial_carry(x, y)
        out: dict[str, torch.Tensor] = {}
        for i in range(self.depth - 1):
            carry, ls = self.stage_losses(i, carry, y)
            out.update(zip(self.component_loss_keys(i), ls))
        _, ls, scores = self.last_stage(carry, y)
        out.update(zip(self.component_loss_keys(self.depth - 1), ls))
        out["loss"] = sum(out.values())
        return out, scores
