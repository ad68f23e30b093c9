"""Weight initialisation schemes (`init` key): PyTorch's defaults, or the authors' TensorFlow ones.

`he-normal` is `tf.keras.initializers.he_normal()` of TF 1.x: a normal truncated at two standard
deviations whose scale is divided by 0.8796... so that the truncated draw has standard deviation
sqrt(2 / fan_in); biases zero (tf.layers' default). A module marked `tf_init = "glorot-uniform"` gets
TF's default kernel initialiser instead (the authors' VGG-BP dense layers, which pass no
kernel_initializer). BatchNorm keeps gamma 1, beta 0 in both. Nothing here builds or trains a model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# std of a standard normal truncated to [-2, 2] (TF's VarianceScaling correction constant)
TRUNC_STD = 0.87962566103423978


def fans(w: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) as TF computes them: a Linear (out, in) -> (in, out); a conv (out, in, kh, kw)
    -> (in kh kw, out kh kw)."""
    rf = w[0][0].numel() if w.dim() > 2 else 1
    return w.shape[1] * rf, w.shape[0] * rf


@torch.no_grad()
def he_normal_(w: torch.Tensor) -> torch.Tensor:
    std = math.sqrt(2.0 / fans(w)[0]) / TRUNC_STD
    return nn.init.trunc_normal_(w, 0.0, std, -2.0 * std, 2.0 * std)


@torch.no_grad()
def glorot_uniform_(w: torch.Tensor) -> torch.Tensor:
    fi, fo = fans(w)
    limit = math.sqrt(6.0 / (fi + fo))
    return nn.init.uniform_(w, -limit, limit)


@torch.no_grad()
def init_tf(model: nn.Module) -> nn.Module:
    """Re-initialise every Conv2d and Linear of `model` as the authors' code does, in module order
    (the encoders first, so AL and the matched BP, which share them, draw the same encoder weights)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if getattr(m, "tf_init", None) == "glorot-uniform":
                glorot_uniform_(m.weight)
            else:
                he_normal_(m.weight)
            if m.bias is not None:
                m.bias.zero_()
    return model


__all__ = ["he_normal_", "glorot_uniform_", "init_tf", "fans", "TRUNC_STD"]
