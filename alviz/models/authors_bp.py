"""The authors' own backprop baselines (`--method bp-authors`), per architecture, as their
TensorFlow code builds them (SamYWK/Associated_Learning, `MLP`, `CNN`, `VGG`, `ResNet` in models.py).

Not the matched baseline (backprop.py keeps AL's encoders and a head shaped and activated like AL's
inference path): here the encoders and head use ReLU (or, in a sigmoid/tanh study, that activation),
the head is dense layers 5n, n, (L-1) x n, then C logits, trained with softmax cross-entropy, and

- mlp, cnn: no BatchNorm anywhere; the head flattens the last map;
- vgg: every conv is conv + BatchNorm + act; three conv components (no FC1024 pair); every dense
  layer of the head is dense + BatchNorm + ReLU, and the dense kernels are Glorot-uniform under the
  authors' init (their `tf.layers.dense(net, units, None, regularizer)` passes the regulariser as
  `use_bias` and no kernel initialiser);
- resnet20/32: the stem and stages of backbones (block form from `resnet_block`), then 8 x 8
  average pooling (global when the map is smaller), and the BatchNorm'd dense head.

`head.0` (the first two dense layers) lines up with AL's last bridge, `head.j` with the decoders, as in
the matched BP, so the layer catalogue and the reports align it the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import ACT, Forms, batchnorm, build_components
from .backprop import EndToEndNet


def authors_bp_activation(activation: str) -> str:
    """ReLU where the AL encoders use ELU (the authors pair ELU-AL with ReLU-BP) or ReLU; a sigmoid
    or tanh study keeps its activation (encoders and head alike, as the authors' f_function)."""
    return "relu" if activation in ("relu", "elu") else activation


def _dense(d_in, d_out, act, bn_forms: Forms | None, glorot=False) -> nn.Sequential:
    lin = nn.Linear(d_in, d_out)
    if glorot:
        lin.tf_init = "glorot-uniform"
    layers = [lin]
    if bn_forms is not None:
        layers.append(batchnorm(d_out, bn_forms, dim=1))
    layers.append(act())
    return nn.Sequential(*layers)


class AuthorsBPModel(EndToEndNet):
    method = "bp"  # the layer catalogue's kind: encoder blocks, then a head (as the matched BP)
    recipe_method = "bp-authors"

    def __init__(self, arch: str, input_shape, depth: int, width: int, num_classes: int, activation: str,
                 forms: Forms):
        super().__init__()
        act_name = authors_bp_activation(activation)
        act = ACT[act_name]
        n, C = width, num_classes
        if arch == "vgg":
            forms_vgg = Forms(forms.resnet_block, "authors", forms.bn, forms.padding)  # BN after every conv
            blocks = build_components("vgg", input_shape, min(depth, 3), width, act_name, forms_vgg)
        else:
            blocks = build_components(arch, input_shape, depth, width, act_name, forms)
        self.num_classes = C
        self.blocks = nn.ModuleList(blocks)
        with torch.no_grad():
            x = torch.zeros((2,) + tuple(input_shape))
            was = [b.training for b in blocks]
            for b in blocks:
                b.eval()
                x = b(x)
            for b, w in zip(blocks, was):
                b.train(w)
        pre: list[nn.Module] = []
        if arch in ("resnet20", "resnet32") and x.dim() == 4:
            k = min(8, x.shape[-1], x.shape[-2])
            pre = [nn.AvgPool2d(k, k)]
            x = F.avg_pool2d(x, k, k)
        d = x[0].numel()
        bn = forms if arch in ("vgg", "resnet20", "resnet32") else None
        glorot = arch == "vgg"
        first = _dense(d, 5 * n, act, bn, glorot)
        second = _dense(5 * n, n, act, bn, glorot)
        head = [nn.Sequential(*pre, nn.Flatten(), *first, *second)]
        head += [_dense(n, n, act, bn, glorot) for _ in range(depth - 1)]
        out = nn.Linear(n, C)
        if glorot:
            out.tf_init = "glorot-uniform"
        head.append(out)
        self.head = nn.ModuleList(head)
