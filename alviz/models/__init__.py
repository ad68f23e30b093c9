"""Model registry: `create_model(cfg, input_shape, num_classes)` builds the model of `cfg.method`:
AL, matched BP, the authors' BP, AL's objective end to end (al-e2e), SCPL or DGL, in the layer
forms and initialisation of the config's recipe keys."""

from __future__ import annotations

from torch import nn

from ..recipe import resolve_recipe
from .al_e2e import ALEndToEndModel
from .associated import ALModel
from .authors_bp import AuthorsBPModel
from .backbones import ACT, DEFAULT_DEPTH, DEFAULT_WIDTH, Forms, build_components, output_shapes
from .backprop import BPModel
from .dgl import DGLModel
from .init import init_tf
from .scpl import SCPLModel

__all__ = ["ALModel", "BPModel", "AuthorsBPModel", "ALEndToEndModel", "SCPLModel", "DGLModel", "LOCAL_METHODS", "component_params",
           "create_model", "resolve_shape_defaults"]

# methods whose every loss reaches only its own component: they can be trained as a pipeline
LOCAL_METHODS = ("al", "scpl", "dgl")


def resolve_shape_defaults(cfg):
    """Fill depth and width with the arch's defaults and the recipe keys with the recipe's values
    (alviz/recipe.py); returns a new config."""
    cfg = cfg.replace(depth=cfg.depth or DEFAULT_DEPTH[cfg.arch], width=cfg.width or DEFAULT_WIDTH[cfg.arch])
    return resolve_recipe(cfg)


def create_model(cfg, input_shape, num_classes: int) -> nn.Module:
    """Build the model of `cfg` (depth/width resolved). The encoders are built first, so models of
    every method built after the same `torch.manual_seed` start from identical encoder weights."""
    cfg = resolve_shape_defaults(cfg)
    forms = Forms.of(cfg)
    if cfg.method == "bp-authors":
        model = AuthorsBPModel(cfg.arch, input_shape, cfg.depth, cfg.width, num_classes, cfg.activation, forms)
    else:
        blocks = build_components(cfg.arch, input_shape, cfg.depth, cfg.width, cfg.activation, forms)
        shapes = output_shapes(blocks, input_shape)
        if cfg.method in ("al", "al-e2e"):
            cls = ALModel if cfg.method == "al" else ALEndToEndModel
            model = cls(blocks, shapes, num_classes, cfg.width, cfg.variant, cfg.bridge_pool)
            if cfg.arch == "vgg" and forms.vgg_form == "authors":
                freeze_bn_statistics(model.blocks)
        elif cfg.method == "scpl":
            model = SCPLModel(blocks, shapes, num_classes, cfg.temperature, cfg.bridge_pool)
        elif cfg.method == "dgl":
            model = DGLModel(blocks, shapes, num_classes, cfg.aux_type)
        else:
            model = BPModel(blocks, shapes, num_classes, cfg.width, cfg.head_act, ACT[cfg.activation],
                            cfg.bridge_pool)
    if cfg.init == "he-normal":
        init_tf(model)
    return model


def component_params(model, comps) -> list:
    """The parameters of components `comps` of a local rule (the stage protocol's
    `component_param_groups`), in the order of their optimiser groups."""
    return [p for g in model.component_param_groups(comps, 1.0) for p in g["params"]]


def freeze_bn_statistics(module: nn.Module) -> None:
    """BatchNorm running statistics that never move from mean 0 / variance 1 (momentum 0), as in the
    authors' VGG-AL: its update ops are gathered with `tf.get_collection(UPDATE_OPS, 'Layer_k')`,
    but its BatchNorm layers are built outside every 'Layer_k' name scope, so none is ever run and
    evaluation normalises with the initial statistics."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
