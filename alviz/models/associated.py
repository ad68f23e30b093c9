"""Associated Learning (Kao & Chen 2019): components f/g/b/h, each trained by its local losses.

    s_i = f_i(sg(s_{i-1}))      t_i = g_i(sg(t_{i-1}))
    assoc_i = MSE(b_i(s_i), sg(t_i))       (trains f_i, b_i)
    ae_i    = MSE(h_i(t_i), sg(t_{i-1}))   (trains g_i, h_i; t_0 = one-hot(y))

Gradients never cross a component: the sum of the local losses can be back-propagated in one call
and every parameter still gets exactly its own component's gradient. The model owns its losses
(`losses(x, y)`); it knows nothing about optimisers, epochs or files.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


# "tanh-ce": tanh in g, h and b and cross-entropy for the first auto-encoder loss. An alviz variant
# named after the ICLR-2022 follow-up's idea; it is NOT the model of github Hibb-bb/AL (an NLP code
# base: ELU activations, bias-free one-layer bridges, embedding/LSTM/transformer encoders).
# "iclr2022" is its old name, still read so that older checkpoints load.
TANH_CE = ("tanh-ce", "iclr2022")


def _act(variant):
    return nn.Tanh() if variant in TANH_CE else nn.Sigmoid()


class Bridge(nn.Sequential):
    """b_i: [AdaptiveAvgPool2d(p)], Flatten, Linear(D -> 5n), act, Linear(5n -> n), act.

    `in_shape` is the component's output shape; `pool` > 0 average-pools a conv map to pool x pool
    before flattening (an alviz option; the authors flatten the whole map, pool = 0)."""

    def __init__(self, in_shape: tuple, width: int, act: nn.Module, act2: nn.Module, pool: int = 0):
        pre: list[nn.Module] = []
        d_in = 1
        for s in in_shape:
            d_in *= s
        if pool and len(in_shape) == 3 and (in_shape[1] > pool or in_shape[2] > pool):
            pre = [nn.AdaptiveAvgPool2d(pool)]
            d_in = in_shape[0] * pool * pool
        super().__init__(*pre, nn.Flatten(), nn.Linear(d_in, 5 * width), act,
                         nn.Linear(5 * width, width), act2)


class Dense(nn.Sequential):
    """One dense layer with an optional activation (label encoders and decoders)."""

    def __init__(self, d_in: int, d_out: int, act: nn.Module | None):
        super().__init__(nn.Linear(d_in, d_out), *([act] if act is not None else []))


class ALModel(nn.Module):
    method = "al"
    local = True  # every loss reaches only its own component (the pipeline may split it)

    def __init__(self, blocks: list[nn.Module], feat_shapes: list[tuple], num_classes: int, width: int,
                 variant: str = "paper", bridge_pool: int = 0):
        super().__init__()
        L, n, C = len(blocks), width, num_classes
        self.variant = variant
        self.num_classes = C
        self.blocks = nn.ModuleList(blocks)  # f_i
        self.bridges = nn.ModuleList(Bridge(d, n, _act(variant), _act(variant), bridge_pool)
                                     for d in feat_shapes)  # b_i
        self.label_encoders = nn.ModuleList(Dense(C if i == 0 else n, n, _act(variant)) for i in range(L))  # g_i
        # h_1 decodes to class scores; with the tanh-ce variant it gives logits for cross-entropy
        self.decoders = nn.ModuleList(
            Dense(n, C if i == 0 else n, None if (i == 0 and variant in TANH_CE) else _act(variant))
            for i in range(L))  # h_i

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def param_groups(self, lr: float, gh_factor: float = 2.0) -> list[dict]:
        """f/b at lr, g/h at gh_factor * lr (the authors' two Adam optimisers; Adam is
        per-parameter, so one Adam with two groups performs the same updates)."""
        fb = [*self.blocks.parameters(), *self.bridges.parameters()]
        gh = [*self.label_encoders.parameters(), *self.decoders.parameters()]
        return [{"params": fb, "lr": lr, "name": "f/b"}, {"params": gh, "lr": lr * gh_factor, "name": "g/h"}]

    def decode(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """h_1(h_2(...h_k(t)))."""
        for i in reversed(range(k)):
            t = self.decoders[i](t)
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores along the inference path h_1(...h_L(b_L(f_L(...f_1(x)))))."""
        s = x
        for f in self.blocks:
            s = f(s)
        return self.decode(self.bridges[-1](s), self.depth)

    def exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Class scores of the early exit at every depth k = 1..L: h_1(...h_k(b_k(s_k)))."""
        out, s = [], x
        for k, f in enumerate(self.blocks, start=1):
            s = f(s)
            out.append(self.decode(self.bridges[k - 1](s), k))
        return out

    @staticmethod
    def _cross(v: torch.Tensor) -> torch.Tensor:
        """What a component's input goes through: AL stops the gradient at every component boundary
        (the end-to-end control, al_e2e.py, overrides this with the identity)."""
        return v.detach()

    def _component(self, i: int, s_prev, t_prev, y):
        """One component's forward and losses: (s_i, t_i, b_i(s_i), assoc_i, ae_i). The targets
        sg(t_i) and sg(t_{i-1}) are part of the loss definition; `_cross` is the boundary."""
        s = self.blocks[i](self._cross(s_prev))
        t = self.label_encoders[i](self._cross(t_prev))
        b = self.bridges[i](s)
        assoc = F.mse_loss(b, t.detach())
        rec = self.decoders[i](t)
        if i == 0 and self.variant in TANH_CE:
            ae = F.cross_entropy(rec, y)
        else:
            ae = F.mse_loss(rec, t_prev.detach())
        return s, t, b, assoc, ae

    def component_losses(self, i: int, s_prev: torch.Tensor, t_prev: torch.Tensor, y: torch.Tensor):
        """Component i (0-based) alone, as one pipeline stage computes it: `(s_i, t_i, assoc, ae)`
        from s_{i-1}, t_{i-1} (t_0 = one-hot(y)) and y: the same arithmetic as `losses()`."""
        s, t, _, assoc, ae = self._component(i, s_prev, t_prev, y)
        return s, t, assoc, ae

    # ---- the stage protocol (alviz.parallel's --pipeline): component i alone, carrying (s, t) forward

    def component_modules(self, i: int) -> list[nn.Module]:
        """The modules component i (0-based) owns: f_i, b_i, g_i, h_i."""
        return [self.blocks[i], self.bridges[i], self.label_encoders[i], self.decoders[i]]

    def component_param_groups(self, comps, lr: float, gh_factor: float = 2.0) -> list[dict]:
        """`param_groups` restricted to components `comps` (same names, same rates)."""
        fb = [p for i in comps for m in (self.blocks[i], self.bridges[i]) for p in m.parameters()]
        gh = [p for i in comps for m in (self.label_encoders[i], self.decoders[i]) for p in m.parameters()]
        return [{"params": fb, "lr": lr, "name": "f/b"}, {"params": gh, "lr": lr * gh_factor, "name": "g/h"}]

    def component_loss_keys(self, i: int) -> list[str]:
        return [f"assoc{i + 1}", f"ae{i + 1}"]

    def initial_carry(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x, F.one_hot(y, self.num_classes).to(x.dtype)

    def carry_shapes(self, i: int, feat_shapes) -> list[tuple]:
        """Per-sample shapes of what component i (0-based) hands on: s_i and t_i."""
        return [tuple(feat_shapes[i]), (self.decoders[i][0].in_features,)]

    def stage_losses(self, i: int, carry, y: torch.Tensor):
        """Component i from what the previous one handed on: (its carry, [its losses in
        `component_loss_keys` order])."""
        s, t, _, assoc, ae = self._component(i, carry[0], carry[1], y)
        return (s, t), [assoc, ae]

    def score_snapshot(self, i: int):
        """What the batch's class scores need of component i (0-based) as it stands now, before its
        update: a copy of h_i for every component but the last (the scores run through h_L ... h_1, and
        alviz.concurrent decodes a batch after upstream components have stepped); None for the last."""
        return None if i == self.depth - 1 else copy.deepcopy(self.decoders[i])

    def last_stage(self, carry, y: torch.Tensor, decoders):
        """The last component from what the previous one handed on: (its carry, [its losses], the
        batch's class scores h_1(...h_L(b_L(s_L)))), with `decoders[j]` standing for h_{j+1}, j < L - 1
        (the live modules, or `score_snapshot` copies taken at this batch's forward pass)."""
        i = self.depth - 1
        s, t, b, assoc, ae = self._component(i, carry[0], carry[1], y)
        with torch.no_grad():
            scores = self.decoders[i](b.detach())
            for j in reversed(range(i)):
                scores = decoders[j](scores)
        return (s, t), [assoc, ae], scores

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The local losses (`assoc{i}`, `ae{i}`), their sum under `loss`, and the class scores of
        the batch along the inference path (computed without gradient, for running accuracy):
        `stage_losses` of every component but the last, then `last_stage` with the live decoders."""
        carry = self.initial_carry(x, y)
        out: dict[str, torch.Tensor] = {}
        for i in range(self.depth - 1):
            carry, (out[f"assoc{i + 1}"], out[f"ae{i + 1}"]) = self.stage_losses(i, carry, y)
        _, (assoc, ae), scores = self.last_stage(carry, y, self.decoders)
        out[f"assoc{self.depth}"], out[f"ae{self.depth}"] = assoc, ae
        total = 0.0
        for v in out.values():
            total = total + v
        out["loss"] = total
        return out, scores
