"""Model registry: `create_model(cfg, input_shape, num_classes)` builds an AL, matched BP or the
authors' BP model, in the layer forms and initialisation of the config's recipe keys."""

from __future__ import annotations

from torch import nn

from ..recipe import resolve_recipe
from .associated import ALModel
from .authors_bp import AuthorsBPModel
from .backbones import ACT, DEFAULT_DEPTH, DEFAULT_WIDTH, Forms, build_components, output_shapes
from .backprop import BPModel
from .init import init_tf

__all__ = ["ALModel", "BPModel", "AuthorsBPModel", "create_model", "resolve_shape_defaults"]


def resolve_shape_defaults(cfg):
    """Fill depth and width with the arch's defaults and the recipe keys with the recipe's values
    (alviz/recipe.py); returns a new config."""
    cfg = cfg.replace(depth=cfg.depth or DEFAULT_DEPTH[cfg.arch], width=cfg.width or DEFAULT_WIDTH[cfg.arch])
    return resolve_recipe(cfg)


def create_model(cfg, input_shape, num_classes: int) -> nn.Module:
    """Build the model of `cfg` (depth/width resolved). The encoders are built first, so an AL and
    a BP model built after the same `torch.manual_seed` start from identical encoder weights."""
    cfg = resolve_shape_defaults(cfg)
    forms = Forms.of(cfg)
    if cfg.method == "bp-authors":
        model = AuthorsBPModel(cfg.arch, input_shape, cfg.depth, cfg.width, num_classes, cfg.activation, forms)
    else:
        blocks = build_components(cfg.arch, input_shape, cfg.depth, cfg.width, cfg.activation, forms)
        shapes = output_shapes(blocks, input_shape)
        if cfg.method == "al":
            model = ALModel(blocks, shapes, num_classes, cfg.width, cfg.variant, cfg.bridge_pool)
            if cfg.arch == "vgg" and forms.vgg_form == "authors":
                freeze_bn_statistics(model.blocks)
        else:
            model = BPModel(blocks, shapes, num_classes, cfg.width, cfg.head_act, ACT[cfg.activation],
                            cfg.bridge_pool)
    if cfg.init == "he-normal":
        init_tf(model)
    return model


def freeze_bn_statistics(module: nn.Module) -> None:
    """BatchNorm running statistics that never move from mean 0 / variance 1 (momentum 0), as in the
    authors' VGG-AL: its update ops are gathered with `tf.get_collection(UPDATE_OPS, 'Layer_k')`,
    but its BatchNorm layers are built outside every 'Layer_k' name scope, so none is ever run and
    evaluation normalises with the initial statistics."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
