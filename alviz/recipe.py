"""Training recipes: `recipe: alviz | authors` sets every key of the training set-up at once.

`alviz` is alviz's own set-up (PyTorch initialisation, per-channel z-scoring, epoch-wise step
schedule, a reshuffle every epoch, no L2, torchvision-style ResNet blocks, ...); `authors` is the
set-up of the authors' TensorFlow code (SamYWK/Associated_Learning, MNIST/ and CIFAR10/ main.py and
models.py). Each difference is also its own config key; a key left at None takes the recipe's value,
a key given explicitly wins (docs/METHOD.md has the table, with the test that pins each one).

This module resolves configs and answers "which parameters get L2" and "what is the learning rate
at step s"; it does not build models, load data or train.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .adam import InPlaceAdam

# key -> value under each recipe
RECIPE_KEYS: dict[str, dict[str, object]] = {
    "init": {"alviz": "torch", "authors": "he-normal"},
    "preprocess": {"alviz": "channel-zscore", "authors": "mean-image"},
    "augment_ops": {"alviz": "crop-flip", "authors": "authors"},
    "schedule": {"alviz": "step", "authors": "authors"},
    "shuffle": {"alviz": True, "authors": False},
    "l2": {"alviz": 0.0, "authors": None},  # None: the authors' scale for this arch / method / data set
    "resnet_block": {"alviz": "torchvision", "authors": "authors"},
    "vgg_form": {"alviz": "alviz", "authors": "authors"},
    "bn": {"alviz": "torch", "authors": "tf"},
    "padding": {"alviz": "torch", "authors": "tf"},
    "adam_eps": {"alviz": "torch", "authors": "tf"},
}

# the authors' schedule: (fraction of all steps, factor), applied per step (their lr_scheduling)
AUTHORS_SCHEDULE = ((0.4, 0.1), (0.6, 0.1), (0.8, 0.1), (0.9, 0.5))


def authors_l2(arch: str, method: str, dataset: str) -> float:
    """The authors' L2 scale (tf.contrib.layers.l2_regularizer) for a model: ResNet-AL 1e-4 (both
    CIFARs), ResNet-BP 1e-4 (CIFAR-10) / 5e-4 (CIFAR-100), VGG-AL 1e-5, VGG-BP 5e-4; MLP and CNN
    none (their CNN's regulariser has scale 0.0, which disables it). The matched BP baseline, which
    the authors did not have, gets AL's scale on the same encoder kernels."""
    if arch in ("resnet20", "resnet32"):
        if method == "bp-authors":
            return 5e-4 if dataset.startswith("cifar100") else 1e-4
        return 1e-4
    if arch == "vgg":
        return 5e-4 if method == "bp-authors" else 1e-5
    return 0.0


def resolve_recipe(cfg):
    """A config whose recipe keys (those left at None) hold the recipe's values."""
    changes = {}
    for key, values in RECIPE_KEYS.items():
        if getattr(cfg, key) is None:
            v = values[cfg.recipe]
            if key == "l2" and v is None:
                v = authors_l2(cfg.arch, cfg.method, cfg.dataset)
            changes[key] = v
    return cfg.replace(**changes) if changes else cfg


# --------------------------------------------------------------------------- L2 scope

def _kernels(module: nn.Module, kinds=(nn.Conv2d, nn.Linear)) -> list[nn.Parameter]:
    return [m.weight for m in module.modules() if isinstance(m, kinds)]


def l2_params(model: nn.Module, arch: str) -> list[nn.Parameter]:
    """The kernels the authors' code regularises, per model (read from their scoping: an AL loss adds
    `get_regularization_loss(scope)` of its own component's layer scope only):

    - AL: the input encoders' kernels of each component; ResNet: every conv kernel of the stem and
      the stages (shortcuts included); VGG: the conv kernels only (their FC1024 pair passes the
      regulariser as `use_bias`, so it has none). Never biases, BatchNorm, bridges (built in another
      scope) or the label path (built without a regulariser).
    - the authors' BP: ResNet: every kernel (conv and dense, `get_regularization_loss()` unscoped);
      VGG: the conv kernels (their dense layers pass the regulariser as `use_bias`).
    - matched BP: the same encoder kernels as AL (the controlled comparison).
    MLP and CNN: the authors use none; a user-set l2 applies to the encoder kernels."""
    method = getattr(model, "recipe_method", getattr(model, "method", None))
    convs_only = arch == "vgg"
    kinds = (nn.Conv2d,) if convs_only else (nn.Conv2d, nn.Linear)
    params = []
    for block in model.blocks:
        params += _kernels(block, kinds)
    if method == "bp-authors" and arch in ("resnet20", "resnet32"):
        params += _kernels(model.head)
    return params


def split_l2_groups(groups: list[dict], model: nn.Module, arch: str, l2: float) -> list[dict]:
    """Optimizer groups with the L2-scoped kernels in groups of their own (`weight_decay` = l2, which
    in Adam adds l2 * w to the gradient: the gradient of TF's l2 * sum(w^2) / 2). Unchanged if l2 == 0."""
    if not l2:
        return groups
    scoped = {id(p) for p in l2_params(model, arch)}
    out = []
    for g in groups:
        inside = [p for p in g["params"] if id(p) in scoped]
        rest = [p for p in g["params"] if id(p) not in scoped]
        if inside:
            out.append({**g, "params": inside, "weight_decay": l2, "name": f"{g.get('name', '')}+l2"})
        if rest:
            out.append({**g, "params": rest})
    return out


# --------------------------------------------------------------------------- learning rate

def step_multiplier(step: int, total_steps: int) -> float:
    """The authors' per-step schedule: step s (0-based over the whole run) is trained at
    lr x the product of the factors whose milestone round(fraction x total) it has reached."""
    mult = 1.0
    for frac, factor in AUTHORS_SCHEDULE:
        if step >= int(round(frac * total_steps)):
            mult *= factor
    return mult


def total_steps(n: int, batch_size: int, epochs: int) -> int:
    return math.ceil(n / batch_size) * epochs


# --------------------------------------------------------------------------- optimiser

class TFAdam(InPlaceAdam):
    """Adam with TensorFlow 1's placement of epsilon (`adam_eps: tf`).

    TF's AdamOptimizer: w -= lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);
    PyTorch's: w -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps). They are the same update
    when PyTorch's eps is eps_tf / sqrt(1 - b2^t), which this sets before every step (30x larger
    than 1e-8 at step 1, back to it after a few thousand steps). Everything else is torch's Adam
    (taken in place on the CPU: alviz.adam)."""

    def __init__(self, params, eps: float = 1e-8, **kw):
        super().__init__(params, eps=eps, **kw)
        self.tf_eps = eps

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            t = 0
            for p in g["params"]:
                st = self.state.get(p)
                if st and "step" in st:
                    t = int(st["step"])
                    break
            g["eps"] = self.tf_eps / math.sqrt(1.0 - g["betas"][1] ** (t + 1))
        return super().step(closure)


__all__ = ["TFAdam", "RECIPE_KEYS", "AUTHORS_SCHEDULE", "authors_l2", "resolve_recipe", "l2_params", "split_l2_groups",
           "step_multiplier", "total_steps"]
