"""The matched backprop baseline: AL's input encoders, then a head shaped exactly like AL's
inference path (b_L, h_L, ..., h_1), trained end to end with cross-entropy.

head.0 matches AL's bridge b_L, head.j (j >= 1) matches decoder h_{L-j+1}, head.L gives logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .associated import Bridge, Dense
from .base import OneGroupNet

_HEAD_ACT = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class EndToEndNet(OneGroupNet):
    """What every backprop baseline shares: `blocks` (the encoders) then `head` (a list of layers),
    trained end to end by one cross-entropy; one parameter group. Subclasses build the two lists."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.blocks:
            x = f(x)
        for layer in self.head:
            x = layer(x)
        return x

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits = self(x)
        ce = F.cross_entropy(logits, y)
        return {"ce": ce, "loss": ce}, logits.detach()


class BPModel(EndToEndNet):
    method = "bp"

    def __init__(self, blocks: list[nn.Module], feat_shapes: list[tuple], num_classes: int, width: int,
                 head_act: str = "sigmoid", encoder_act: type[nn.Module] = nn.ReLU, bridge_pool: int = 0):
        super().__init__()
        L, n, C = len(blocks), width, num_classes
        act = _HEAD_ACT.get(head_act, encoder_act)
        self.num_classes = C
        self.blocks = nn.ModuleList(blocks)
        head = [Bridge(feat_shapes[-1], n, act(), act(), bridge_pool)]
        head += [Dense(n, n, act()) for _ in range(L - 1)]
        head += [Dense(n, C, None)]
        self.head = nn.ModuleList(head)
