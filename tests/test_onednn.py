"""`onednn_linear: true` (alviz.onednn): the Linear products through torch's oneDNN give the default
path's outputs and gradients within float32 rounding, with the same parameters; other inputs fall
back to F.linear exactly; the option is checked and may change on resume. Timings live in bench/."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn


onednn = pytest.importorskip("alviz.onednn")
pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch has no oneDNN")


def _pair(d_in, d_out, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.Linear(d_in, d_out, bias=bias)
    new = nn.Linear(d_in, d_out, bias=bias)
    new.load_state_dict(ref.state_dict())
    assert onednn.route_linears(new) == 1 and type(new) is onednn.OneDNNLinear
    return ref, new


@pytest.mark.parametrize("shape", [(32, 784, 1024), (7, 33, 5), (1, 10, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_gradients_match_the_default_within_rounding(shape, bias):
    b, d_in, d_out = shape
    ref, new = _pair(d_in, d_out, bias)
    x = torch.randn(b, d_in, generator=torch.Generator().manual_seed(1))
    g = torch.randn(b, d_out, generator=torch.Generator().manual_seed(2))
    outs = []
    for m in (ref, new):
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        y.backward(g)
        outs.append((y.detach(), xi.grad, m.weight.grad, m.bias.grad if bias else None))
    for a, c in zip(*outs):
        if a is None:
            assert c is None
        else:
            torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-5)
    # a known answer besides: the bias gradient is the sum of the output gradients over the batch
    if bias:
        torch.testing.assert_close(outs[1][3], g.sum(0))


def test_detached_input_gets_no_gradient_and_other_inputs_fall_back_exactly():
    ref, new = _pair(6, 4)
    x = torch.randn(5, 6)
    new(x).sum().backward()  # an input without grad: only the parameters get gradients
    assert new.weight.grad is not None and new.bias.grad is not None
    for x in (torch.randn(2, 5, 6), torch.randn(5, 12)[:, ::2]):  # batched; not contiguous
        assert torch.equal(new(x), F.linear(x, ref.weight, ref.bias))
    new64, ref64 = new.double(), ref.double()
    x = torch.randn(5, 6, dtype=torch.float64)
    assert torch.equal(new64(x), ref64(x))


def test_al_step_with_onednn_matches_the_default_and_keeps_the_state_dict(blobs_cfg):
    from alviz.models import create_model
    from alviz.train import cpu_kernels

    cfg = blobs_cfg.replace(method="al")
    grads, keys = [], []
    for on in (False, True):
        c = cfg.replace(onednn_linear=on)
        torch.manual_seed(0)
        m = cpu_kernels(create_model(c, (20,), 5), c, torch.device("cpu"))
        assert any(type(mod) is onednn.OneDNNLinear for mod in m.modules()) is on
        keys.append(list(m.state_dict()))
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 20, generator=g), torch.randint(0, 5, (32,), generator=g)
        losses, _ = m.losses(x, y)
        losses["loss"].backward()
        grads.append([losses["loss"].detach()] + [p.grad for p in m.parameters()])
    assert keys[0] == keys[1]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
