"""The speed options of issue 19 (fused CPU Adam by default, cost-based pipeline partition): what each
promises about the results, with known answers. Timings live in bench/, never here."""
from __future__ import annotations

import pytest
import torch

from alviz.config import TrainConfig, from_dict
from alviz.errors import UserError


def _train_steps(cfg, opt_of, steps=5):
    from alviz.models import create_model

    torch.manual_seed(0)
    model = create_model(cfg, (20,), 5)
    opt = opt_of(model.param_groups(cfg.lr, cfg.lr_gh_factor))
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 20, generator=g), torch.randint(0, 5, (32,), generator=g)
        losses, _ = model.losses(x, y)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
    return model.state_dict(), opt


@pytest.mark.parametrize("method", ["al", "bp"])
def test_default_cpu_adam_is_torchs_fused_kernel_and_close_to_the_reference(blobs_cfg, method):
    from alviz.train import make_optimizer

    assert TrainConfig().fused_adam is True
    cfg = blobs_cfg.replace(method=method, weight_decay=1e-4)
    fused, opt = _train_steps(cfg, lambda g: make_optimizer(g, cfg, torch.device("cpu")))
    assert opt.defaults["fused"] is True
    # the same as torch's own fused Adam to the bit ...
    same, _ = _train_steps(cfg, lambda g: torch.optim.Adam(g, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True))
    # ... and within rounding of the reference single-tensor Adam (which `fused_adam: false` matches to the bit)
    ref, _ = _train_steps(cfg, lambda g: torch.optim.Adam(g, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False))
    assert any(not torch.equal(fused[k], ref[k]) for k in ref)  # the two roundings do differ
    for k in ref:
        assert torch.equal(fused[k], same[k]), k
        torch.testing.assert_close(fused[k], ref[k], rtol=1e-5, atol=1e-6)


def test_fused_adam_false_is_the_in_place_reference_arithmetic(blobs_cfg):
    from alviz.adam import InPlaceAdam
    from alviz.train import make_optimizer

    cfg = blobs_cfg.replace(fused_adam=False)
    _, opt = _train_steps(cfg, lambda g: make_optimizer(g, cfg, torch.device("cpu")), steps=1)
    assert isinstance(opt, InPlaceAdam) and opt.defaults["foreach"] is True and not opt.defaults["fused"]


@pytest.mark.parametrize("option", ["fused_adam", "onednn_linear", "concurrent"])
def test_cpu_kernel_option_is_checked_and_may_change_on_resume(option, tmp_path, blobs_cfg):
    from alviz.train import train

    flipped = not getattr(TrainConfig(), option)
    assert getattr(from_dict({option: flipped}), option) is flipped
    with pytest.raises(UserError, match=rf"{option} must be true or false; received 'yes'"):
        TrainConfig(**{option: "yes"}).validate()
    run = tmp_path / "r"
    train(blobs_cfg.replace(epochs=1), run, progress=False, log=lambda *_: None)
    res = train(blobs_cfg.replace(epochs=2, **{option: flipped}), run, resume=True, progress=False,
                log=lambda *_: None)
    assert res.epoch == 2


def test_partition_by_cost_known_answers():
    from alviz.parallel.cost import partition_by_cost
    from alviz.parallel.pipeline import partition

    assert partition_by_cost([4, 1, 1, 1, 1], 2) == [range(0, 1), range(1, 5)]
    assert partition_by_cost([1, 1, 1, 1, 4], 2) == [range(0, 4), range(4, 5)]
    assert partition_by_cost([10, 1, 1, 1], 2) == [range(0, 1), range(1, 4)]
    assert partition_by_cost([3, 3, 2, 2, 2], 3) == [range(0, 1), range(1, 3), range(3, 5)]
    assert partition_by_cost([5, 1, 1, 1, 1, 1, 1, 5], 4) == [range(0, 1), range(1, 4), range(4, 7), range(7, 8)]
    # equal costs: the even split by count, whatever the depth and rank count
    for L in range(1, 12):
        for K in range(1, L + 1):
            assert partition_by_cost([2.0] * L, K) == partition(L, K), (L, K)
    with pytest.raises(UserError, match="needs at least 3 components; received depth 2"):
        partition_by_cost([1, 1], 3)
    with pytest.raises(UserError, match="non-negative"):
        partition_by_cost([1, float("nan")], 1)


def test_component_costs_count_the_flops_and_the_update():
    from alviz.models import create_model, resolve_shape_defaults
    from alviz.parallel.cost import ADAM_FLOPS_PER_PARAM, component_costs

    cfg = resolve_shape_defaults(TrainConfig(method="al", arch="mlp", depth=2, width=8, device="cpu"))
    torch.manual_seed(0)
    model = create_model(cfg, (6,), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    c = component_costs(model, (6,), batch_size=4)
    # component 1: f 6->8, b 8->40->8, g 3->8, h 8->3; its input (x) needs no gradient, so backward is
    # 2x forward less f's input gradient; component 2 the same with f 8->8 and g 8->8, h 8->8
    def cost(f_in, g_in, h_out):
        macs = f_in * 8 + 8 * 40 + 40 * 8 + g_in * 8 + 8 * h_out
        flops = 2 * macs * 3 - 2 * f_in * 8 - 2 * g_in * 8  # no gradient for the detached inputs
        params = (f_in + 1) * 8 + (8 + 1) * 40 + (40 + 1) * 8 + (g_in + 1) * 8 + (8 + 1) * h_out
        return 4 * flops + ADAM_FLOPS_PER_PARAM * params
    assert c == [pytest.approx(cost(6, 3, 3)), pytest.approx(cost(8, 8, 8))]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and all(p.grad is None for p in model.parameters())
