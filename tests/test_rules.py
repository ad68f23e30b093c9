"""The learning rules beside AL and BP: AL's objective end to end (al-e2e), SCPL and DGL.

Gradient locality for each local rule (a loss reaches exactly its own component's parameters), the
opposite for the end-to-end control, SCPL's loss against a brute-force loop and a hand-computed
value, the stage protocol the pipeline uses, and each rule learning on `blobs`."""

import math

import pytest
import torch

from alviz.config import TrainConfig
from alviz.errors import UserError
from alviz.models import ALEndToEndModel, DGLModel, SCPLModel, create_model
from alviz.models.scpl import scpl_loss
from alviz.train import lr_multiplier, make_optimizer, train

SHAPES = {"mlp": (1, 28, 28), "cnn": (1, 28, 28), "vgg": (3, 32, 32), "resnet20": (3, 32, 32), "resnet32": (3, 32, 32)}
RULES = ["al-e2e", "scpl", "dgl"]


def _ids(params):
    return {id(p) for p in params}


def _nonzero(model):
    return {id(p) for p in model.parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}


def _component_params(m, i):
    return _ids(p for mod in m.component_modules(i) for p in mod.parameters())


@pytest.mark.parametrize("arch", list(SHAPES))
@pytest.mark.parametrize("method", RULES)
def test_every_rule_on_every_backbone(arch, method):
    torch.manual_seed(0)
    cfg = TrainConfig(method=method, arch=arch, width=8, bridge_pool=0 if arch in ("mlp", "cnn") else 2)
    m = create_model(cfg, SHAPES[arch], 7)
    x, y = torch.randn(4, *SHAPES[arch]), torch.tensor([0, 3, 6, 3])
    losses, scores = m.losses(x, y)
    assert scores.shape == (4, 7) and m(x).shape == (4, 7)
    assert torch.isfinite(losses["loss"])
    keys = [k for i in range(m.depth) for k in m.component_loss_keys(i)]
    assert [k for k in losses if k != "loss"] == keys
    assert torch.allclose(losses["loss"], sum(losses[k] for k in keys))
    if hasattr(m, "exits"):
        m.eval()
        assert len(m.exits(x)) == m.depth and torch.allclose(m.exits(x)[-1], m(x))


@pytest.mark.parametrize("method, aux_type", [("scpl", "mlp-sr"), ("dgl", "mlp-sr"), ("dgl", "cnn")])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_gradient_locality_of_local_rules(method, aux_type, arch):
    """Every loss of SCPL and DGL reaches exactly its own component's parameters (none elsewhere, and
    all of its own: the block and its projection or auxiliary classifier; SCPL's head only from ce)."""
    torch.manual_seed(1)
    shape = (10,) if arch == "mlp" else (1, 12, 12)
    m = create_model(TrainConfig(method=method, arch=arch, depth=3, width=6, aux_type=aux_type), shape, 4)
    x, y = torch.randn(8, *shape), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    for i in range(m.depth):
        for key in m.component_loss_keys(i):
            m.zero_grad(set_to_none=True)
            m.losses(x, y)[0][key].backward()
            got = _nonzero(m)
            if key == "ce" and method == "scpl":  # the head learns from sg(s_L)
                expect = _ids(m.head.parameters())
            elif method == "scpl":
                expect = _ids([*m.blocks[i].parameters(), *m.projections[i].parameters()])
            else:
                expect = _ids([*m.blocks[i].parameters(), *m.aux[i].parameters()])
            assert got == expect, f"{method} {key}: gradient outside its component or missing"
            assert got <= _component_params(m, i)


def test_summed_local_losses_give_each_component_its_own_gradient():
    """One backward of the sum = the per-loss gradients added (what lets train.py stay generic)."""
    for method in ("scpl", "dgl"):
        torch.manual_seed(2)
        m = create_model(TrainConfig(method=method, depth=2, width=6), (10,), 3)
        m.eval()  # BatchNorm statistics fixed, so repeated forwards are identical
        x, y = torch.randn(8, 10), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        m.losses(x, y)[0]["loss"].backward()
        total = [p.grad.clone() for p in m.parameters()]
        acc = [torch.zeros_like(p) for p in m.parameters()]
        for k in [k for i in range(m.depth) for k in m.component_loss_keys(i)]:
            m.zero_grad(set_to_none=True)
            m.losses(x, y)[0][k].backward()
            acc = [a + (p.grad if p.grad is not None else 0) for a, p in zip(acc, m.parameters())]
        for a, t in zip(acc, total):
            assert torch.allclose(a, t, atol=1e-6)


def test_al_e2e_gradient_crosses_components():
    """The control: the last association loss reaches the first encoder, the last auto-encoder loss
    the first label encoder; AL's own losses would reach neither."""
    torch.manual_seed(3)
    cfg = TrainConfig(method="al-e2e", depth=3, width=6)
    m = create_model(cfg, (10,), 4)
    assert isinstance(m, ALEndToEndModel) and not m.local
    x, y = torch.randn(8, 10), torch.randint(0, 4, (8,))
    m.zero_grad(set_to_none=True)
    m.losses(x, y)[0]["assoc3"].backward()
    got = _nonzero(m)
    assert _ids(m.blocks[0].parameters()) <= got and _ids(m.blocks[1].parameters()) <= got
    assert not got & _ids([*m.label_encoders.parameters(), *m.decoders.parameters()])  # target sg(t_3) stays
    m.zero_grad(set_to_none=True)
    m.losses(x, y)[0]["ae3"].backward()
    got = _nonzero(m)
    assert _ids(m.label_encoders[0].parameters()) <= got and _ids(m.label_encoders[1].parameters()) <= got
    assert not got & _ids([*m.blocks.parameters(), *m.bridges.parameters()])
    # AL with the same weights: the same loss values, but assoc3 stays inside component 3
    al = create_model(cfg.replace(method="al"), (10,), 4)
    al.load_state_dict(m.state_dict())
    la, le = al.losses(x, y)[0], m.losses(x, y)[0]
    assert all(torch.allclose(la[k], le[k]) for k in la)
    al.zero_grad(set_to_none=True)
    la["assoc3"].backward()
    assert _nonzero(al) == _ids([*al.blocks[2].parameters(), *al.bridges[2].parameters()])


def test_al_e2e_same_inference_path_and_groups_as_al():
    torch.manual_seed(4)
    cfg = TrainConfig(depth=2, width=5)
    torch.manual_seed(4)
    al = create_model(cfg, (6,), 3)
    torch.manual_seed(4)
    e2e = create_model(cfg.replace(method="al-e2e"), (6,), 3)
    assert al.state_dict().keys() == e2e.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(al.state_dict().values(), e2e.state_dict().values()))
    x = torch.randn(5, 6)
    assert torch.equal(al(x), e2e(x))
    assert [g["lr"] for g in e2e.param_groups(1e-3, 2.0)] == [1e-3, 2e-3]


# --------------------------------------------------------------------------- SCPL's loss

def _scpl_brute(z, y, tau):
    """SCPL's loss (minyaho/SCPL, model/loss_fn.py) as loops over anchors and pairs."""
    z = [v / v.norm() for v in z]
    n, total = len(y), 0.0
    for i in range(n):
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        pos = [j for j in range(n) if j != i and y[j] == y[i]]
        s = sum(float(z[i] @ z[j]) / tau - math.log(denom) for j in pos)
        total += -s / (len(pos) + 1)  # the reference's divisor counts the anchor itself
    return total / n


def test_scpl_loss_known_answer():
    """Labels [0, 0, 1], z_0 = z_1 = e_1, z_2 = e_2, tau = 1: anchors 0 and 1 each give
    -(1 - log(e + 1)) / 2, anchor 2 has no positive and gives 0; the mean is (log(1 + e) - 1) / 3."""
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = scpl_loss(z, torch.tensor([0, 0, 1]), 1.0)
    assert got.item() == pytest.approx((math.log(1 + math.e) - 1) / 3, rel=1e-6)
    # scaling z changes nothing (it is normalised); the temperature does
    assert scpl_loss(3 * z, torch.tensor([0, 0, 1]), 1.0).item() == pytest.approx(got.item(), rel=1e-6)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_scpl_loss_against_brute_force(tau):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    assert scpl_loss(z, y, tau).item() == pytest.approx(_scpl_brute(z, y, tau), rel=1e-9)


def test_scpl_loss_prefers_clustered_classes():
    y = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    assert scpl_loss(clustered, y, 0.1) < scpl_loss(mixed, y, 0.1)


def test_scpl_projection_and_head_follow_the_reference():
    m = create_model(TrainConfig(method="scpl", depth=2, width=8, temperature=0.3), (10,), 3)
    assert isinstance(m, SCPLModel) and m.temperature == 0.3
    lin = [mod for mod in m.projections[0] if isinstance(mod, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lin] == [(8, 512), (512, 1024)]
    assert [(l.in_features, l.out_features) for l in m.head.modules() if isinstance(l, torch.nn.Linear)] == \
        [(8, 2500), (2500, 3)]


def test_dgl_exits_are_its_auxiliary_classifiers():
    torch.manual_seed(5)
    m = create_model(TrainConfig(method="dgl", arch="cnn", depth=3, width=8), (1, 12, 12), 4)
    assert isinstance(m, DGLModel)
    m.eval()
    x = torch.randn(3, 1, 12, 12)
    s1 = m.blocks[0](x)
    s2 = m.blocks[1](s1)
    ex = m.exits(x)
    assert torch.allclose(ex[0], m.aux[0](s1)) and torch.allclose(ex[1], m.aux[1](s2))
    # mlp-sr: pool, three 1x1 conv + BN + ReLU, pool 2x2; the last classifier: two hidden layers
    convs = [c for c in m.aux[0].reduce if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(c.kernel_size == (1, 1) for c in convs)
    assert [n for n, _ in m.aux[0].named_children()] == ["reduce", "mlp1", "mlp2", "mlp3", "out"]
    assert [n for n, _ in m.aux[2].named_children()] == ["reduce", "mlp1", "mlp2", "out"]


@pytest.mark.parametrize("method", ["al", "scpl", "dgl"])
def test_stage_protocol_reproduces_losses(method):
    """Component by component through `stage_losses` (what a pipeline rank runs) gives the same
    losses as `losses()`."""
    torch.manual_seed(6)
    m = create_model(TrainConfig(method=method, depth=3, width=6), (10,), 4)
    m.eval()
    x, y = torch.randn(8, 10), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    ref = m.losses(x, y)[0]
    carry = m.initial_carry(x, y)
    from alviz.models.backbones import output_shapes

    feat = output_shapes(list(m.blocks), (10,))
    for i in range(m.depth):
        carry, ls = m.stage_losses(i, carry, y)
        assert [tuple(c.shape[1:]) for c in carry] == m.carry_shapes(i, feat)
        for k, v in zip(m.component_loss_keys(i), ls):
            assert torch.allclose(v, ref[k]), k
    groups = m.component_param_groups(range(m.depth), 1e-3, 2.0)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


# --------------------------------------------------------------------------- training switches

def test_cosine_schedule_and_sgd():
    cfg = TrainConfig(schedule="cosine", epochs=10, gamma=0.01)
    assert lr_multiplier(cfg, 0) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 5) == pytest.approx(0.505)
    assert lr_multiplier(cfg, 10) == pytest.approx(0.01)
    m = create_model(TrainConfig(method="dgl", width=4), (6,), 3)
    opt = make_optimizer(m.param_groups(0.1), TrainConfig(optimizer="sgd", momentum=0.9), torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("bad, msg", [(dict(temperature=0.0), "temperature must be a positive number"),
                                      (dict(aux_type="deep"), "aux_type"),
                                      (dict(optimizer="rmsprop"), "optimizer"),
                                      (dict(momentum=1.5), "momentum must be in")])
def test_rule_config_errors(bad, msg):
    with pytest.raises(UserError, match=msg):
        TrainConfig(**bad).validate()


# --------------------------------------------------------------------------- learning

@pytest.mark.parametrize("method", RULES)
def test_each_rule_learns_on_blobs(tmp_path, blobs_cfg, method):
    r = train(blobs_cfg.replace(method=method, epochs=4), tmp_path / method, progress=False, log=lambda *_: None)
    assert r.test_acc > 0.8, f"{method}: {r.test_acc}"  # 5 separated blobs: chance is 0.2
    if method != "scpl":
        assert r.exits is not None and len(r.exits) == 2


def test_exit_figure_draws_every_rule_with_exits():
    import matplotlib

    matplotlib.use("Agg")
    from alviz import curves as C

    def hist(acc, exits=None):
        row = {"epoch": 1, "test_acc": acc}
        row.update({f"test_acc_exit{k + 1}": v for k, v in enumerate(exits or [])})
        return [row]

    hs = [{"method": "al", "seed": 0, "history": hist(0.9, [0.8, 0.9])},
          {"method": "dgl", "seed": 0, "history": hist(0.95, [0.93, 0.95])},
          {"method": "scpl", "seed": 0, "history": hist(0.94), "depth": 2},
          {"method": "bp", "seed": 0, "history": hist(0.92), "depth": 2}]
    ax = C.exit_accuracy(hs)
    labels = [c.get_label() for c in ax.containers]
    assert labels == ["AL, exit at depth k", "DGL, exit at depth k", "BP (full depth)", "SCPL (full depth)"]
    dgl = ax.containers[1].lines[0]
    assert list(dgl.get_ydata()) == [0.93, 0.95]


# --------------------------------------------------------------------------- layer map

@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_layer_map_aligns_block_k_of_every_rule(arch):
    from alviz.extract import capture, layer_catalogue

    shape = (20,) if arch == "mlp" else (1, 12, 12)
    x = torch.randn(5, *shape)
    maps = {}
    for method in ["al", "bp", *RULES]:
        torch.manual_seed(0)
        m = create_model(TrainConfig(method=method, arch=arch, depth=3, width=8), shape, 4).eval()
        cat = layer_catalogue(m)
        maps[method] = {e.name: e for e in cat}
        blocks = [e for e in cat if e.role == "encoder"]
        assert [(e.name, e.position, e.match, e.on_path) for e in blocks] == \
            [(f"block{k}", k, f"p{k}", True) for k in (1, 2, 3)]
        with capture(m) as acts:  # one forward fills every layer, off-path heads included
            out = m(x)
        assert set(acts) == set(maps[method])
        s = x
        for k in (1, 2, 3):
            s = m.blocks[k - 1](s)
            torch.testing.assert_close(acts[f"block{k}"], s)
            if method == "scpl":
                torch.testing.assert_close(acts[f"proj{k}"], m.projections[k - 1](s))
            if method == "dgl" and k < 3:
                torch.testing.assert_close(acts[f"exit{k}"], m.exits(x)[k - 1])
        last = max(cat, key=lambda e: e.position)
        torch.testing.assert_close(acts[last.name], out)  # the last layer of the path gives the scores
    assert maps["al-e2e"].keys() == maps["al"].keys()
    assert {maps["scpl"]["proj2"].match, maps["dgl"]["exit2"].match, maps["al"]["bridge2"].match} == {"p2.5"}
    assert maps["scpl"]["proj3"].on_path is False and maps["scpl"]["head1"].position == 4
    assert [n for n in maps["dgl"] if n.startswith("head")] == ["head1", "head2", "head3"]  # mlp1, mlp2, out
