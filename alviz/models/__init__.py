"""Model registry: `create_model(cfg, input_shape, num_classes)` builds the model of `cfg.method`:
AL, matched BP, AL's objective end to end (al-e2e), SCPL or DGL."""

from __future__ import annotations

from torch import nn

from .al_e2e import ALEndToEndModel
from .associated import ALModel
from .backbones import ACT, DEFAULT_DEPTH, DEFAULT_WIDTH, build_components, output_shapes
from .backprop import BPModel
from .dgl import DGLModel
from .scpl import SCPLModel

__all__ = ["ALModel", "BPModel", "ALEndToEndModel", "SCPLModel", "DGLModel", "LOCAL_METHODS", "create_model",
           "resolve_shape_defaults"]

# methods whose every loss reaches only its own component: they can be trained as a pipeline
LOCAL_METHODS = ("al", "scpl", "dgl")


def resolve_shape_defaults(cfg):
    """Fill depth and width with the arch's defaults; returns a new config."""
    return cfg.replace(depth=cfg.depth or DEFAULT_DEPTH[cfg.arch], width=cfg.width or DEFAULT_WIDTH[cfg.arch])


def create_model(cfg, input_shape, num_classes: int) -> nn.Module:
    """Build the model of `cfg` (depth/width resolved). The encoders are built first, so models of
    every method built after the same `torch.manual_seed` start from identical encoder weights."""
    cfg = resolve_shape_defaults(cfg)
    blocks = build_components(cfg.arch, input_shape, cfg.depth, cfg.width, cfg.activation)
    shapes = output_shapes(blocks, input_shape)
    if cfg.method in ("al", "al-e2e"):
        cls = ALModel if cfg.method == "al" else ALEndToEndModel
        return cls(blocks, shapes, num_classes, cfg.width, cfg.variant, cfg.bridge_pool)
    if cfg.method == "scpl":
        return SCPLModel(blocks, shapes, num_classes, cfg.temperature, cfg.bridge_pool)
    if cfg.method == "dgl":
        return DGLModel(blocks, shapes, num_classes, cfg.aux_type)
    return BPModel(blocks, shapes, num_classes, cfg.width, cfg.head_act, ACT[cfg.activation], cfg.bridge_pool)
