"""Input-encoder backbones split into AL components: mlp, cnn, vgg, resnet20, resnet32.

Each builder returns a list of `nn.Module` components f_1..f_L (AL_METHOD.md's grid). Every
component is its own module, so forward hooks can see its output. Nothing here knows about AL,
backprop, losses or training.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

ACT = {"relu": nn.ReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}

DEFAULT_DEPTH = {"mlp": 2, "cnn": 4, "vgg": 4, "resnet20": 4, "resnet32": 4}
MAX_DEPTH = {"mlp": 64, "cnn": 4, "vgg": 4, "resnet20": 4, "resnet32": 4}
DEFAULT_WIDTH = {"mlp": 256, "cnn": 256, "vgg": 300, "resnet20": 300, "resnet32": 300}


def _conv(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def mlp(input_shape, depth, width, act):
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


def cnn(input_shape, depth, width, act):
    cin = input_shape[0]
    comps = []
    for c1, c2, stride in CNN_PLAN[:depth]:
        comps.append(nn.Sequential(_conv(cin, c1), ACT[act](), _conv(c1, c2, stride), ACT[act]()))
        cin = c2
    return comps


def vgg(input_shape, depth, width, act):
    cin, h, w = input_shape
    a = ACT[act]
    pool = lambda: nn.MaxPool2d(2)  # noqa: E731
    comps = [
        nn.Sequential(_conv(cin, 128), a(), _conv(128, 256), a(), pool()),
        nn.Sequential(_conv(256, 256), a(), _conv(256, 512), a(), pool()),
        nn.Sequential(_conv(512, 512), a(), pool(), _conv(512, 512), a(), pool()),
    ]
    flat = 512 * (h // 16) * (w // 16)
    if flat == 0:
        raise UserError(f"vgg needs images of at least 16x16 pixels; received {h}x{w}")
    comps.append(nn.Sequential(nn.Flatten(), nn.Linear(flat, 1024), a(), nn.Linear(1024, 1024), a()))
    return comps[:depth]


class BasicBlock(nn.Module):
    """The CIFAR ResNet basic block (He et al. 2016), with a projection shortcut on a shape change."""

    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = ACT[act]()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = ACT[act]()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


def _resnet(n_blocks):
    def build(input_shape, depth, width, act):
        cin = input_shape[0]
        stem = nn.Sequential(nn.Conv2d(cin, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), ACT[act]())
        comps = [stem]
        c = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for j in range(n_blocks):
                blocks.append(BasicBlock(c, cout, stride if j == 0 else 1, act))
                c = cout
            comps.append(nn.Sequential(*blocks))
        return comps[:depth]

    return build


BACKBONES = {"mlp": mlp, "cnn": cnn, "vgg": vgg, "resnet20": _resnet(3), "resnet32": _resnet(5)}


def build_components(arch, input_shape, depth, width, act) -> list[nn.Module]:
    if arch != "mlp" and len(input_shape) != 3:
        raise UserError(f"arch {arch!r} needs image data (N,H,W) or (N,H,W,C); the data set gives "
                        f"vectors of {input_shape[0]} features (use --arch mlp)")
    if not 1 <= depth <= MAX_DEPTH[arch]:
        raise UserError(f"depth of {arch} must be between 1 and {MAX_DEPTH[arch]}; received {depth}")
    return BACKBONES[arch](tuple(input_shape), depth, width, act)


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
