"""The speed options of issue 19 (fused CPU Adam, cost-based pipeline partition): what each
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
def test_fused_adam_is_torchs_fused_kernel_and_close_to_the_reference(blobs_cfg, method):
    from alviz.train import make_optimizer

    cfg = blobs_cfg.replace(method=method, weight_decay=1e-4, fused_adam=True)
    fused, opt = _train_steps(cfg, lambda g: make_optimizer(g, cfg, torch.device("cpu")))
    assert opt.defaults["fused"] is True
    # the same as torch's own fused Adam to the bit ...
    same, _ = _train_steps(cfg, lambda g: torch.optim.Adam(g, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True))
    # ... and within rounding of the reference single-tensor Adam (which the default matches to the bit)
    ref, _ = _train_steps(cfg, lambda g: torch.optim.Adam(g, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False))
    for k in ref:
        assert torch.equal(fused[k], same[k]), k
        torch.testing.assert_close(fused[k], ref[k], rtol=1e-5, atol=1e-6)


def test_default_cpu_optimizer_is_not_fused(blobs_cfg):
    from alviz.train import make_optimizer

    _, opt = _train_steps(blobs_cfg, lambda g: make_optimizer(g, blobs_cfg, torch.device("cpu")), steps=1)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]


def test_fused_adam_option_is_checked_and_may_change_on_resume(tmp_path, blobs_cfg):
    from alviz.train import train

    assert from_dict({"fused_adam": True}).fused_adam is True
    with pytest.raises(UserError, match=r"fused_adam must be true or false; received 'yes'"):
        TrainConfig(fused_adam="yes").validate()
    run = tmp_path / "r"
    train(blobs_cfg.replace(epochs=1), run, progress=False, log=lambda *_: None)
    res = train(blobs_cfg.replace(epochs=2, fused_adam=True), run, resume=True, progress=False, log=lambda *_: None)
    assert res.epoch == 2
