"""alviz.adam.InPlaceAdam against torch's Adam: the same weights and state to the bit, step by step."""
from __future__ import annotations

import math

import pytest
import torch

from alviz.adam import InPlaceAdam
from alviz.recipe import TFAdam


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 33), (33,), (7, 3, 3, 3), (5,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g) * 0.1) for s in shapes]


def _run(opt_cls, steps=6, lr_change=True, **kw):
    ps = _params()
    groups = [{"params": ps[:2], "lr": 1e-2}, {"params": ps[2:], "lr": 2e-2, "weight_decay": kw.pop("wd2", 0.0)}]
    opt = opt_cls(groups, **kw)
    g = torch.Generator().manual_seed(1)
    for k in range(steps):
        for i, p in enumerate(ps):
            # one parameter skips a step (no gradient), some gradients are tiny (subnormal second moments)
            p.grad = None if (k == 2 and i == 1) else torch.randn(p.shape, generator=g) * (1e-22 if i == 3 else 1)
        if lr_change and k == 3:
            for gr in opt.param_groups:
                gr["lr"] = gr["lr"] * 0.5
        opt.step()
    return ps, opt


@pytest.mark.parametrize("ref_kw", [{"foreach": True}, {"foreach": False}], ids=["foreach", "single-tensor"])
@pytest.mark.parametrize("extra", [{}, {"weight_decay": 1e-3}, {"wd2": 5e-4}, {"betas": (0.8, 0.99), "eps": 1e-6}],
                         ids=["defaults", "weight-decay", "one-group-decay", "betas-eps"])
def test_in_place_adam_equals_torch_adam_to_the_bit(ref_kw, extra):
    ref_p, ref = _run(torch.optim.Adam, **ref_kw, **dict(extra))
    ours_p, ours = _run(InPlaceAdam, foreach=True, **dict(extra))
    for a, b in zip(ref_p, ours_p):
        assert torch.equal(a, b)
    sa, sb = ref.state_dict(), ours.state_dict()
    assert [{k: v for k, v in g.items() if k != "foreach"} for g in sa["param_groups"]] == \
        [{k: v for k, v in g.items() if k != "foreach"} for g in sb["param_groups"]]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][k][name], sb["state"][k][name]), (k, name)
            assert sa["state"][k][name].dtype == sb["state"][k][name].dtype
    assert set(sb["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}  # its buffers are not state


def test_tf_epsilon_adam_runs_in_place_with_the_same_result_as_torchs_step():
    class TorchTF(torch.optim.Adam):  # TFAdam's epsilon rule on torch's own step
        def __init__(self, params, eps=1e-8, **kw):
            super().__init__(params, eps=eps, **kw)
            self.tf_eps = eps

        def step(self, closure=None):
            for g in self.param_groups:
                st = [self.state[p]["step"] for p in g["params"] if "step" in self.state.get(p, {})]
                t = int(st[0]) if st else 0
                g["eps"] = self.tf_eps / math.sqrt(1.0 - g["betas"][1] ** (t + 1))
            return torch.optim.Adam.step(self, closure)

    ref_p, _ = _run(TorchTF, foreach=True)
    ours_p, ours = _run(TFAdam, foreach=True)
    assert isinstance(ours, InPlaceAdam)
    assert all(torch.equal(a, b) for a, b in zip(ref_p, ours_p))


def test_other_settings_take_torchs_own_step(monkeypatch):
    calls = []
    real = torch.optim.Adam.step

    def spy(self, closure=None):
        calls.append(1)
        return real(self, closure)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    for kw in ({"amsgrad": True}, {"maximize": True}, {"foreach": False}):
        ref_p, _ = _run(torch.optim.Adam, steps=2, lr_change=False, **{"foreach": True, **kw})
        ours_p, _ = _run(InPlaceAdam, steps=2, lr_change=False, **{"foreach": True, **kw})
        assert all(torch.equal(a, b) for a, b in zip(ref_p, ours_p))
    assert len(calls) == 3 * 2 * 2  # every step of both, through torch's step
