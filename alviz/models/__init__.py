"""Model registry: `create_model(cfg, input_shape, num_classes)` builds an AL or BP model."""

from __future__ import annotations

from torch import nn

from .associated import ALModel
from .backbones import ACT, DEFAULT_DEPTH, DEFAULT_WIDTH, build_components, output_shapes
from .backprop import BPModel

__all__ = ["ALModel", "BPModel", "create_model", "resolve_shape_defaults"]


def resolve_shape_defaults(cfg):
    """Fill depth and width with the arch's defaults; returns a new config."""
    return cfg.replace(depth=cfg.depth or DEFAULT_DEPTH[cfg.arch], width=cfg.width or DEFAULT_WIDTH[cfg.arch])


def create_model(cfg, input_shape, num_classes: int) -> nn.Module:
    """Build the model of `cfg` (depth/width resolved). The encoders are built first, so an AL and
    a BP model built after the same `torch.manual_seed` start from identical encoder weights."""
    cfg = resolve_shape_defaults(cfg)
    blocks = build_components(cfg.arch, input_shape, cfg.depth, cfg.width, cfg.activation)
    shapes = output_shapes(blocks, input_shape)
    if cfg.method == "al":
        return ALModel(blocks, shapes, num_classes, cfg.width, cfg.variant, cfg.bridge_pool)
    return BPModel(blocks, shapes, num_classes, cfg.width, cfg.head_act, ACT[cfg.activation], cfg.bridge_pool)
