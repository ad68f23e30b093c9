import pytest
import torch
import torch.nn.functional as F

from alviz.config import TrainConfig
from alviz.errors import UserError
from alviz.models import ALModel, BPModel, create_model

SHAPES = {"mlp": (1, 28, 28), "cnn": (1, 28, 28), "vgg": (3, 32, 32), "resnet20": (3, 32, 32), "resnet32": (3, 32, 32)}


@pytest.mark.parametrize("arch", list(SHAPES))
@pytest.mark.parametrize("method", ["al", "bp"])
def test_shapes_every_arch_and_method(arch, method):
    torch.manual_seed(0)
    cfg = TrainConfig(method=method, arch=arch, width=8, bridge_pool=0 if arch in ("mlp", "cnn") else 2)
    m = create_model(cfg, SHAPES[arch], 7)
    x = torch.randn(3, *SHAPES[arch])
    y = torch.tensor([0, 3, 6])
    assert m(x).shape == (3, 7)
    losses, scores = m.losses(x, y)
    assert scores.shape == (3, 7)
    assert torch.isfinite(losses["loss"])
    if method == "al":
        assert [k for k in losses if k != "loss"] == [f"{p}{i}" for i in range(1, m.depth + 1) for p in ("assoc", "ae")]
        assert len(m.exits(x)) == m.depth
        assert torch.allclose(m.exits(x)[-1], m(x))


@pytest.mark.parametrize("act", ["relu", "elu", "sigmoid", "tanh"])
def test_activations(act):
    m = create_model(TrainConfig(activation=act, width=4, depth=3), (5,), 3)
    assert m(torch.randn(2, 5)).shape == (2, 3)


def _component_params(m: ALModel, i):
    return {id(p) for mod in (m.blocks[i], m.bridges[i], m.label_encoders[i], m.decoders[i]) for p in mod.parameters()}


@pytest.mark.parametrize("variant", ["paper", "iclr2022"])
def test_gradient_locality(variant):
    """Each local loss leaves every other component's gradients at zero (and g gets none from assoc)."""
    torch.manual_seed(1)
    m = create_model(TrainConfig(depth=3, width=6, variant=variant), (10,), 4)
    x, y = torch.randn(8, 10), torch.randint(0, 4, (8,))
    for i in range(3):
        for kind in ("assoc", "ae"):
            m.zero_grad(set_to_none=True)
            losses, _ = m.losses(x, y)
            losses[f"{kind}{i + 1}"].backward()
            own = _component_params(m, i)
            for p in m.parameters():
                g = p.grad
                nonzero = g is not None and bool(g.abs().sum() > 0)
                if id(p) not in own:
                    assert not nonzero, f"{kind}{i + 1} leaked into another component"
            trained = {id(p) for p in m.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
            if kind == "assoc":  # f_i and b_i only
                expect = {id(p) for p in [*m.blocks[i].parameters(), *m.bridges[i].parameters()]}
            else:  # g_i and h_i only
                expect = {id(p) for p in [*m.label_encoders[i].parameters(), *m.decoders[i].parameters()]}
            assert trained == expect


def test_summed_loss_equals_local_gradients():
    torch.manual_seed(2)
    m = create_model(TrainConfig(depth=2, width=6), (10,), 3)
    x, y = torch.randn(8, 10), torch.randint(0, 3, (8,))
    losses, _ = m.losses(x, y)
    losses["loss"].backward()
    total = [p.grad.clone() for p in m.parameters()]
    acc = [torch.zeros_like(p) for p in m.parameters()]
    for k in ("assoc1", "ae1", "assoc2", "ae2"):
        m.zero_grad(set_to_none=True)
        m.losses(x, y)[0][k].backward()
        acc = [a + (p.grad if p.grad is not None else 0) for a, p in zip(acc, m.parameters())]
    for a, t in zip(acc, total):
        assert torch.allclose(a, t, atol=1e-7)


def test_bp_head_has_shape_of_al_inference_path():
    cfg = TrainConfig(depth=3, width=10)
    al = create_model(cfg, (20,), 4)
    bp = create_model(cfg.replace(method="bp"), (20,), 4)
    al_path = [al.bridges[-1]] + [al.decoders[i] for i in reversed(range(3))]
    assert len(bp.head) == len(al_path) == 4

    def linear_shapes(mod):
        return [tuple(p.shape) for n, p in mod.named_parameters() if n.endswith("weight")]

    for h, a in zip(bp.head, al_path):
        assert linear_shapes(h) == linear_shapes(a)
    assert [tuple(p.shape) for p in bp.blocks.parameters()] == [tuple(p.shape) for p in al.blocks.parameters()]


def test_same_seed_same_encoder_init_for_al_and_bp():
    cfg = TrainConfig(depth=2, width=8)
    torch.manual_seed(5)
    al = create_model(cfg, (12,), 3)
    torch.manual_seed(5)
    bp = create_model(cfg.replace(method="bp"), (12,), 3)
    for a, b in zip(al.blocks.parameters(), bp.blocks.parameters()):
        assert torch.equal(a, b)


def test_al_losses_by_hand():
    """The paper variant's losses, recomputed by hand from the modules."""
    torch.manual_seed(3)
    m = create_model(TrainConfig(depth=2, width=5), (6,), 3)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 1])
    losses, scores = m.losses(x, y)
    t0 = F.one_hot(y, 3).float()
    s1 = m.blocks[0](x)
    s2 = m.blocks[1](s1)
    t1 = m.label_encoders[0](t0)
    t2 = m.label_encoders[1](t1)
    assert torch.allclose(losses["assoc1"], F.mse_loss(m.bridges[0](s1), t1))
    assert torch.allclose(losses["assoc2"], F.mse_loss(m.bridges[1](s2), t2))
    assert torch.allclose(losses["ae1"], F.mse_loss(m.decoders[0](t1), t0))
    assert torch.allclose(losses["ae2"], F.mse_loss(m.decoders[1](t2), t1))
    assert torch.allclose(scores, m(x))
    assert torch.allclose(m(x), m.decoders[0](m.decoders[1](m.bridges[1](s2))))


def test_iclr_variant_uses_ce_for_first_autoencoder():
    torch.manual_seed(3)
    m = create_model(TrainConfig(depth=2, width=5, variant="iclr2022"), (6,), 3)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 1])
    losses, _ = m.losses(x, y)
    t1 = m.label_encoders[0](F.one_hot(y, 3).float())
    assert torch.allclose(losses["ae1"], F.cross_entropy(m.decoders[0](t1), y))
    assert isinstance(m.bridges[0][2], torch.nn.Tanh)


def test_param_groups_two_learning_rates():
    m = create_model(TrainConfig(depth=2, width=5), (6,), 3)
    g = m.param_groups(1e-3, 2.0)
    assert [x["lr"] for x in g] == [1e-3, 2e-3]
    assert sum(len(x["params"]) for x in g) == len(list(m.parameters()))
    assert isinstance(create_model(TrainConfig(method="bp", width=5), (6,), 3), BPModel)


@pytest.mark.parametrize("cfg, shape, msg", [
    (dict(arch="cnn"), (20,), r"arch 'cnn' needs image data"),
    (dict(arch="cnn", depth=5), (1, 28, 28), r"depth of cnn must be between 1 and 4; received 5"),
    (dict(arch="vgg"), (1, 8, 8), r"vgg needs images of at least 16x16 pixels; received 8x8"),
])
def test_model_errors(cfg, shape, msg):
    with pytest.raises(UserError, match=msg):
        create_model(TrainConfig(**cfg), shape, 3)
