"""AL's objective trained end to end (`--method al-e2e`): the control that separates gradient
locality from AL's loss.

Same modules as AL (f_i, g_i, b_i, h_i), same losses (the sum of every assoc_i and ae_i, with the
same stop-gradient on each loss's *target*, which belongs to the loss's definition), same optimiser
groups, inference path and early exits. The one difference: nothing is detached at a component
boundary, so

    s_i = f_i(s_{i-1})      t_i = g_i(t_{i-1})
    assoc_i = MSE(b_i(s_i), sg(t_i))       reaches f_i, b_i and every f_j, j < i
    ae_i    = MSE(h_i(t_i), sg(t_{i-1}))   reaches g_i, h_i and every g_j, j < i

and one backward call of the sum is one end-to-end gradient step on AL's objective. Comparing AL
with this model changes only where the gradient may flow (tested in tests/test_rules.py).
"""

from __future__ import annotations

import torch

from .associated import ALModel


class ALEndToEndModel(ALModel):
    method = "al-e2e"
    local = False

    @staticmethod
    def _cross(v: torch.Tensor) -> torch.Tensor:
        return v  # no stop-gradient between components
