"""Input-encoder backbones split into AL components: mlp, cnn, vgg, resnet20, resnet32.

Each builder returns a list of `nn.Module` components f_1..f_L (AL_METHOD.md's grid). Every
component is its own module, so forward hooks can see its output. Nothing here knows about AL,
backprop, losses or training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

ACT = {"relu": nn.ReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}

DEFAULT_DEPTH = {"mlp": 2, "cnn": 4, "vgg": 4, "resnet20": 4, "resnet32": 4}
MAX_DEPTH = {"mlp": 64, "cnn": 4, "vgg": 4, "resnet20": 4, "resnet32": 4}
DEFAULT_WIDTH = {"mlp": 256, "cnn": 256, "vgg": 300, "resnet20": 300, "resnet32": 300}


class SameConv2d(nn.Conv2d):
    """A conv with TensorFlow's "same" padding: pad_total = max((ceil(in/s) - 1) s + k - in, 0), of
    which floor(pad_total / 2) goes top/left and the rest bottom/right. At stride 2 on an even size
    that is one row and column at the bottom/right only, where `padding=1` pads both sides and so
    samples a grid shifted by one pixel. Same parameters (and state_dict keys) as nn.Conv2d."""

    def __init__(self, cin, cout, k, stride=1, bias=True):
        super().__init__(cin, cout, k, stride=stride, padding=0, bias=bias)

    def forward(self, x):
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


@dataclass(frozen=True)
class Forms:
    """The layer forms of the recipe keys resnet_block, vgg_form, bn and padding (alviz's by default)."""

    resnet_block: str = "torchvision"
    vgg_form: str = "alviz"
    bn: str = "torch"
    padding: str = "torch"

    @classmethod
    def of(cls, cfg) -> "Forms":
        return cls(cfg.resnet_block or "torchvision", cfg.vgg_form or "alviz", cfg.bn or "torch",
                   cfg.padding or "torch")


ALVIZ = Forms()


def _conv(cin, cout, stride=1, forms: Forms = ALVIZ, k=3, bias=True):
    """A k x k conv ("same" size at stride 1); `forms.padding == "tf"`: TF's padding at stride > 1."""
    if forms.padding == "tf" and stride > 1 and k > 1:
        return SameConv2d(cin, cout, k, stride=stride, bias=bias)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


def batchnorm(c, forms: Forms = ALVIZ, dim=2):
    """BatchNorm with PyTorch's momentum 0.1 / eps 1e-5, or TF's decay 0.99 / eps 1e-3 (`bn: tf`)."""
    cls = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    return cls(c, momentum=0.01, eps=1e-3) if forms.bn == "tf" else cls(c)


def mlp(input_shape, depth, width, act, forms=ALVIZ):
    d_in = 1
    for s in input_shape:
        d_in *= s
    comps = []
    for i in range(depth):
        layers = [nn.Flatten()] if i == 0 else []
        layers += [nn.Linear(d_in if i == 0 else width, width), ACT[act]()]
        comps.append(nn.Sequential(*layers))
    return comps


CNN_PLAN = [(32, 32, 1), (32, 32, 2), (64, 64, 1), (64, 64, 2)]


def cnn(input_shape, depth, width, act, forms=ALVIZ):
    cin = input_shape[0]
    comps = []
    for c1, c2, stride in CNN_PLAN[:depth]:
        comps.append(nn.Sequential(_conv(cin, c1, 1, forms), ACT[act](), _conv(c1, c2, stride, forms), ACT[act]()))
        cin = c2
    return comps


def vgg(input_shape, depth, width, act, forms=ALVIZ):
    cin, h, w = input_shape
    a = ACT[act]
    pool = lambda: nn.MaxPool2d(2)  # noqa: E731

    def c(i, o):  # conv + act (alviz), or the authors' conv_layer_bn: conv + BatchNorm + act
        if forms.vgg_form == "authors":
            return [_conv(i, o, 1, forms), batchnorm(o, forms), a()]
        return [_conv(i, o, 1, forms), a()]

    comps = [
        nn.Sequential(*c(cin, 128), *c(128, 256), pool()),
        nn.Sequential(*c(256, 256), *c(256, 512), pool()),
        nn.Sequential(*c(512, 512), pool(), *c(512, 512), pool()),
    ]
    flat = 512 * (h // 16) * (w // 16)
    if flat == 0:
        raise UserError(f"vgg needs images of at least 16x16 pixels; received {h}x{w}")
    comps.append(nn.Sequential(nn.Flatten(), nn.Linear(flat, 1024), a(), nn.Linear(1024, 1024), a()))
    return comps[:depth]


class BasicBlock(nn.Module):
    """The CIFAR ResNet basic block (He et al. 2016), with a projection shortcut on a shape change."""

    def __init__(self, cin, cout, stride, act, forms: Forms = ALVIZ):
        super().__init__()
        self.conv1 = _conv(cin, cout, stride, forms, bias=False)
        self.bn1 = batchnorm(cout, forms)
        self.act1 = ACT[act]()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = batchnorm(cout, forms)
        self.act2 = ACT[act]()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), batchnorm(cout, forms))

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class AuthorsBlock(nn.Module):
    """The authors' resBlock: conv(bias)-BN-act, conv(bias)-BN-act, then act(that + shortcut), the
    shortcut a 1x1 conv with bias and no BatchNorm at a stride (identity otherwise)."""

    def __init__(self, cin, cout, stride, act, forms: Forms):
        super().__init__()
        self.conv1 = _conv(cin, cout, stride, forms)
        self.bn1 = batchnorm(cout, forms)
        self.act1 = ACT[act]()
        self.conv2 = _conv(cout, cout, 1, forms)
        self.bn2 = batchnorm(cout, forms)
        self.act2 = ACT[act]()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = _conv(cin, cout, stride, forms, k=1)
        self.act3 = ACT[act]()

    def forward(self, x):
        out = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.act3(out + self.shortcut(x))


def _resnet(n_blocks):
    def build(input_shape, depth, width, act, forms=ALVIZ):
        cin = input_shape[0]
        if forms.resnet_block == "authors":
            stem = nn.Sequential(_conv(cin, 16, 1, forms), batchnorm(16, forms), ACT[act]())
        else:
            stem = nn.Sequential(nn.Conv2d(cin, 16, 3, 1, 1, bias=False), batchnorm(16, forms), ACT[act]())
        comps = [stem]
        c = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for j in range(n_blocks):
                s = stride if j == 0 else 1
                blocks.append(AuthorsBlock(c, cout, s, act, forms) if forms.resnet_block == "authors"
                              else BasicBlock(c, cout, s, act, forms))
                c = cout
            comps.append(nn.Sequential(*blocks))
        return comps[:depth]

    return build


BACKBONES = {"mlp": mlp, "cnn": cnn, "vgg": vgg, "resnet20": _resnet(3), "resnet32": _resnet(5)}


def build_components(arch, input_shape, depth, width, act, forms: Forms = ALVIZ) -> list[nn.Module]:
    if arch != "mlp" and len(input_shape) != 3:
        raise UserError(f"arch {arch!r} needs image data (N,H,W) or (N,H,W,C); the data set gives "
                        f"vectors of {input_shape[0]} features (use --arch mlp)")
    if not 1 <= depth <= MAX_DEPTH[arch]:
        raise UserError(f"depth of {arch} must be between 1 and {MAX_DEPTH[arch]}; received {depth}")
    return BACKBONES[arch](tuple(input_shape), depth, width, act, forms)


@torch.no_grad()
def output_shapes(components, input_shape) -> list[tuple[int, ...]]:
    """The shape (without batch) each component outputs, found by a forward pass of zeros."""
    x = torch.zeros((2,) + tuple(input_shape))
    shapes = []
    modes = [c.training for c in components]
    for c in components:
        c.eval()
        x = c(x)
        shapes.append(tuple(x.shape[1:]))
    for c, m in zip(components, modes):
        c.train(m)
    return shapes
