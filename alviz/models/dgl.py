"""DGL, decoupled greedy learning (`--method dgl`; Belilovsky, Eickenberg & Oyallon, ICML 2020),
after the public code of github eugenium/DGL (auxiliary_nets_study/models.py and cifar_dgl.py).

For component i = 1..L:

    s_i  = f_i(sg(s_{i-1}))          s_0 = x
    ce_i = cross-entropy(a_i(s_i), y)        trains f_i and its auxiliary classifier a_i only

Inference goes through the last auxiliary classifier, a_L(f_L(...f_1(x))); every a_k gives an early
exit, `exits(x)[k-1] = a_k(s_k)`.

The auxiliary classifiers follow the reference's `auxillary_classifier2` (`aux_type`):

    mlp-sr (the reference's default)  AdaptiveAvgPool2d(ceil(H/4)), 3 x [Conv1x1 (no bias), BN, ReLU],
                                      AdaptiveAvgPool2d(2), Flatten, 3 x [Linear(4C -> 4C), BN, ReLU],
                                      Linear(4C -> classes)
    mlp                               the same without the 1x1 convolutions
    cnn                               2 x [Conv3x3 (no bias), BN, ReLU], AdaptiveAvgPool2d(2), BN,
                                      Flatten, Linear(4C -> classes)

    linear                            [AdaptiveAvgPool2d(2)], Flatten, Linear(-> classes): the local-loss
                                      repository's 'pred' loss (Nokland & Eidnes 2019), for its presets

and the last component's classifier is, whatever `aux_type` (but linear), the reference's final one:
AdaptiveAvgPool2d(ceil(H/4)), AdaptiveAvgPool2d(2), Flatten, 2 x [Linear(4C -> 4C), BN, ReLU],
Linear(4C -> classes). On a vector s (the MLP backbone) there is no map to pool: a 1x1 or 3x3
convolution of a 1x1 map is a Linear(D -> D), the pools are left out and the MLP is D wide
(docs/METHOD.md lists this).

Each classifier is a `nn.Sequential` of stages (`reduce`: pooling and convolutions; `mlp{j}`: one
hidden layer; `out`: the logits), so the layer map can name the last classifier's hidden layers.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import OneGroupNet

AUX_TYPES = ("mlp-sr", "mlp", "cnn", "linear")
_AUX = {"mlp-sr": (3, 3, False), "mlp": (0, 3, False), "cnn": (2, 0, True)}  # n_lin, mlp_layers, cnn
_LAST = (0, 2, False)


def _reduce_conv(c: int, h: int, n_lin: int, cnn: bool, mlp: bool) -> nn.Sequential:
    mods: list[nn.Module] = []
    if not cnn:
        mods.append(nn.AdaptiveAvgPool2d(math.ceil(h / 4)))
    for _ in range(n_lin):
        k = 3 if cnn else 1
        mods += [nn.Conv2d(c, c, k, 1, k // 2, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
    mods.append(nn.AdaptiveAvgPool2d(2))
    if not mlp:
        mods.append(nn.BatchNorm2d(c))
    mods.append(nn.Flatten())
    return nn.Sequential(*mods)


def _reduce_vec(d: int, n_lin: int, mlp: bool) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(n_lin):
        mods += [nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU()]
    if not mlp:
        mods.append(nn.BatchNorm1d(d))
    return nn.Sequential(*mods)


class AuxClassifier(nn.Sequential):
    """a_i: `reduce`, `mlp1`..`mlp{m}`, `out` (see the module docstring)."""

    def __init__(self, in_shape: tuple, num_classes: int, n_lin: int = 0, mlp_layers: int = 0, cnn: bool = False,
                 linear: bool = False):
        mlp = mlp_layers > 0
        if linear:  # the local-loss repository's 'pred' decoder: one linear map of the (pooled) output
            conv = len(in_shape) == 3
            reduce = nn.Sequential(*([nn.AdaptiveAvgPool2d(2)] if conv else []), nn.Flatten())
            d = 4 * in_shape[0] if conv else math.prod(in_shape)
        elif len(in_shape) == 3:
            c, h, _ = in_shape
            reduce, d = _reduce_conv(c, h, n_lin, cnn, mlp), 4 * c
        else:
            d = math.prod(in_shape)
            reduce = _reduce_vec(d, n_lin, mlp)
        stages: list[tuple[str, nn.Module]] = [("reduce", reduce)]
        for j in range(mlp_layers):
            stages.append((f"mlp{j + 1}", nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU())))
        stages.append(("out", nn.Linear(d, num_classes)))
        super().__init__(OrderedDict(stages))


class DGLModel(OneGroupNet):
    method = "dgl"
    local = True

    def __init__(self, blocks: list[nn.Module], feat_shapes: list[tuple], num_classes: int, aux_type: str = "mlp-sr"):
        super().__init__()
        L = len(blocks)
        self.num_classes = num_classes
        self.aux_type = aux_type
        self.blocks = nn.ModuleList(blocks)
        self.aux = nn.ModuleList(
            AuxClassifier(tuple(s), num_classes, linear=True) if aux_type == "linear" else
            AuxClassifier(tuple(s), num_classes, *(_LAST if i == L - 1 else _AUX[aux_type]))
            for i, s in enumerate(feat_shapes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f in self.blocks:
            x = f(x)
        return self.aux[-1](x)

    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Class scores of the auxiliary classifier at every depth k = 1..L: a_k(s_k)."""
        out = []
        for f, a in zip(self.blocks, self.aux):
            x = f(x)
            out.append(a(x))
        return out

    # ---- the stage protocol (alviz.parallel's --pipeline): only s flows forward

    def component_modules(self, i: int) -> list[nn.Module]:
        return [self.blocks[i], self.aux[i]]

    def component_param_groups(self, comps, lr: float, gh_factor: float = 2.0) -> list[dict]:
        return [{"params": [p for i in comps for m in self.component_modules(i) for p in m.parameters()],
                 "lr": lr, "name": "all"}]

    def component_loss_keys(self, i: int) -> list[str]:
        return [f"ce{i + 1}"]

    def initial_carry(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,)

    def carry_shapes(self, i: int, feat_shapes) -> list[tuple]:
        return [tuple(feat_shapes[i])]

    def _stage(self, i: int, s_prev: torch.Tensor, y: torch.Tensor):
        s = self.blocks[i](s_prev.detach())
        logits = self.aux[i](s)
        return s, logits, F.cross_entropy(logits, y)

    def stage_losses(self, i: int, carry, y: torch.Tensor):
        s, _, ce = self._stage(i, carry[0], y)
        return (s,), [ce]

    def score_snapshot(self, i: int):
        """The scores are the last auxiliary classifier's: nothing of component i is needed."""
        return None

    def last_stage(self, carry, y: torch.Tensor, snapshots=None):
        """The last component's `stage_losses` and the batch's class scores a_L(s_L)."""
        s, logits, ce = self._stage(self.depth - 1, carry[0], y)
        return (s,), [ce], logits.detach()

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """`ce{i}` per component, their sum under `loss`; the last classifier's scores of the batch."""
        carry, out = self.initial_carry(x, y), {}
        for i in range(self.depth - 1):
            carry, (out[f"ce{i + 1}"],) = self.stage_losses(i, carry, y)
        _, (out[f"ce{self.depth}"],), scores = self.last_stage(carry, y)
        out["loss"] = sum(out.values())
        return out, scores
