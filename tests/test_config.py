import pytest

from alviz.config import TrainConfig, dump_yaml, from_dict, load_config
from alviz.errors import UserError


def test_defaults_validate():
    cfg = TrainConfig().validate()
    assert cfg.method == "al" and cfg.arch == "mlp" and cfg.dataset == "mnist5k"


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(arch="cnn", width=32, milestones=[0.3], lr=5e-4)
    p = tmp_path / "c.yaml"
    p.write_text(dump_yaml(cfg))
    assert load_config(p) == cfg


def test_unknown_key_names_valid_keys():
    with pytest.raises(UserError, match=r"unknown config key\(s\) 'widht'; valid keys: method, arch"):
        from_dict({"widht": 3})


@pytest.mark.parametrize("data, msg", [
    ({"epochs": "ten"}, r"epochs must be of type int; received 'ten' \(str\)"),
    ({"lr": True}, r"lr must be of type float"),
    ({"arch": "lenet"}, r"unknown arch 'lenet'; allowed: mlp, cnn, vgg, resnet20, resnet32"),
    ({"epochs": 0}, r"epochs must be a positive integer; received 0"),
    ({"lr": -1.0}, r"lr must be a positive number"),
    ({"activation": "gelu"}, r"unknown activation 'gelu'; allowed: relu, elu, sigmoid, tanh"),
    ({"test_fraction": 1.5}, r"test_fraction must be between 0 and 1"),
])
def test_bad_values(data, msg):
    with pytest.raises(UserError, match=msg):
        from_dict(data)


def test_int_accepted_for_float():
    assert from_dict({"lr": 1}).lr == 1.0


def test_bad_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("epochs: [1,\n")
    with pytest.raises(UserError, match="not a valid YAML file"):
        load_config(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(p)


def test_yaml_python_tags_are_refused(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("epochs: !!python/object/apply:os.system ['echo pwned > %s']\n" % (tmp_path / "pwned"))
    with pytest.raises(UserError):
        load_config(p)
    assert not (tmp_path / "pwned").exists()
