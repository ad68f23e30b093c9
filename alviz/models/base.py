"""What the models trained by one optimiser over all their parameters share: the depth (number of
encoder blocks in `blocks`) and that single parameter group. The matched and the authors' BP, SCPL
and DGL build on it; AL, with its per-path groups, does not. Nothing here is a loss or a layer."""

from __future__ import annotations

from torch import nn


class OneGroupNet(nn.Module):
    """A module with encoder `blocks` (set by the subclass) trained as one parameter group."""

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def param_groups(self, lr: float, gh_factor: float = 2.0) -> list[dict]:
        """One group of every parameter at `lr` (`gh_factor` is AL's and is ignored here)."""
        return [{"params": list(self.parameters()), "lr": lr, "name": "all"}]
