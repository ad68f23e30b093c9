"""Presets: every file loads, builds its models (on the meta device) and is a valid --config file;
the paper's values, the quick variants' labels, per_method and the errors."""

import numpy as np
import pytest
import torch
import yaml

from alviz import data as datamod
from alviz.cli import main
from alviz.errors import UserError
from alviz.models import create_model, resolve_shape_defaults
from alviz.presets import PRESET_DIR, list_presets, load_preset, load_spec, preset_names, preset_text
from alviz.sweep import grid_cells

SHAPES = {"mnist": ((1, 28, 28), 10), "mnist5k": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
          "cifar10-5k": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "cifar100-5k": ((3, 32, 32), 100)}
RULE_PRESETS = ["rules-mnist5k", "cifar10-scpl-vgg", "cifar10-dgl-resnet32", "cifar10-local-pred-mlp",
                "mnist-local-pred-mlp"]
PAPER_NETS = ["mnist-mlp", "mnist-cnn"] + [f"{d}-{a}" for d in ("cifar10", "cifar100")
                                           for a in ("mlp", "cnn", "vgg", "resnet20", "resnet32")]


def test_the_expected_presets_exist():
    names = preset_names()
    expected = PAPER_NETS + [f"{n}-quick" for n in PAPER_NETS] + ["sigmoid-study", "sigmoid-study-quick", "dynamics"]
    expected += RULE_PRESETS
    assert sorted(names) == sorted(expected)


@pytest.mark.parametrize("name", preset_names())
def test_preset_loads_builds_and_is_a_config_file(name):
    spec = load_spec(name)
    assert spec.description and "\n" not in spec.description
    assert spec.config.preset == name and spec.config.quick == name.endswith("-quick")
    datamod.check_name(spec.config.dataset)
    shape, classes = SHAPES[spec.config.dataset]
    cells = grid_cells(spec.sweep.grid) if spec.sweep else [("base", {})]
    for _, values in cells:
        for method in (spec.sweep.methods if spec.sweep and spec.sweep.methods else ("al", "bp")):
            cfg = spec.for_method(method).replace(**values)
            with torch.device("meta"):  # the paper's AL nets have up to 200M parameters: no memory here
                model = create_model(cfg, shape, classes)
            assert getattr(model, "recipe_method", model.method) == method and model.depth == cfg.depth
            assert sum(p.numel() for p in model.parameters()) > 0
    # `alviz train --config` reads the same file to the same configs (only the preset label differs)
    as_file = load_spec(config_file=PRESET_DIR / f"{name}.yaml")
    assert as_file.config.preset is None and as_file.config.replace(preset=name) == spec.config
    assert as_file.per_method == spec.per_method and as_file.sweep == spec.sweep


def test_paper_values():
    m = load_preset("mnist-mlp")
    assert (m.dataset, m.arch, m.depth, m.width, m.activation) == ("mnist", "mlp", 2, 1024, "elu")
    assert (m.epochs, m.batch_size, m.lr, m.recipe) == (200, 32, 1e-4, "authors")
    r = resolve_shape_defaults(m)  # the authors' per-step schedule (x0.1 at 40/60/80 %, x0.5 at 90 %) etc.
    assert (r.schedule, r.init, r.preprocess, r.shuffle, r.l2) == ("authors", "he-normal", "mean-image", False, 0.0)
    for name in preset_names():  # every paper preset and its quick variant: the authors' recipe
        if not name.startswith("sigmoid") and name not in RULE_PRESETS and name != "dynamics":
            assert load_preset(name).recipe == "authors", name
    widths = {"mnist-cnn": 256, "cifar10-mlp": 3000, "cifar100-mlp": 3000, "cifar10-cnn": 256, "cifar100-cnn": 500,
              "cifar10-vgg": 300, "cifar100-vgg": 500, "cifar10-resnet20": 300, "cifar100-resnet32": 500}
    for name, n in widths.items():
        assert load_preset(name).width == n, name
    assert load_preset("cifar10-cnn").augment is True and load_preset("mnist-cnn").augment is False
    r = load_spec("cifar10-resnet32")  # the authors' main.py: lr 1e-3 for every 'ResNet*' model, AL included
    assert r.per_method == {}
    assert r.for_method("bp").lr == 1e-3 and r.for_method("al").lr == 1e-3 and r.for_method("bp-authors").lr == 1e-3
    assert resolve_shape_defaults(load_spec("cifar100-resnet20").for_method("bp-authors")).l2 == 5e-4
    assert load_spec("cifar10-vgg").per_method == {}
    s = load_spec("sigmoid-study")
    assert s.config.activation == "sigmoid" and s.config.dataset == "mnist5k"
    assert (s.sweep.grid, s.sweep.methods, s.sweep.seeds) == ({"depth": [2, 4, 6, 8]}, ["al", "bp", "bp-authors"],
                                                                 [0, 1, 2])
    assert s.config.recipe == "alviz" and s.config.schedule == "none"


@pytest.mark.parametrize("name", PAPER_NETS)
def test_quick_variant_is_the_same_net_with_less_data_and_epochs(name):
    paper, quick = load_spec(name), load_spec(f"{name}-quick")
    assert not paper.config.quick and quick.config.quick
    a, b = paper.config.to_dict(), quick.config.to_dict()
    assert {k for k in a if a[k] != b[k]} <= {"dataset", "epochs", "schedule", "quick", "preset"}
    assert b["epochs"] < a["epochs"] and quick.per_method == paper.per_method
    assert b["dataset"] == {"mnist": "mnist5k", "cifar10": "cifar10-5k", "cifar100": "cifar100-5k"}[a["dataset"]]
    assert "QUICK" in quick.description


def test_presets_command_lists_and_prints(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("mnist-mlp-quick "))
    assert line.split()[1] == "yes" and "QUICK" in line
    assert next(x for x in out.splitlines() if x.startswith("mnist-mlp ")).split()[1] == "-"
    assert len(list_presets()) == len(preset_names())
    assert main(["presets", "cifar10-resnet20"]) == 0
    text = capsys.readouterr().out
    assert text == preset_text("cifar10-resnet20") and yaml.safe_load(text)["recipe"] == "authors"


def test_unknown_preset_lists_the_valid_ones(capsys):
    assert main(["train", "--preset", "mnist-mpl"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'mnist-mpl'; allowed: cifar10-cnn, " in err and "sigmoid-study" in err
    with pytest.raises(UserError, match="unknown preset 'x'"):
        load_preset("x")


@pytest.mark.parametrize("text, msg", [
    ("epochs: 1\nper_method: {bp: {lrr: 0.1}}\n", "unknown config key(s) 'lrr'"),
    ("per_method: {xx: {lr: 0.1}}\n", "per_method: unknown method 'xx'; allowed: al, bp"),
    ("per_method: {bp: {seed: 3}}\n", "per_method.bp: 'seed' cannot be set here"),
    ("per_method: {bp: {lr: fast}}\n", "lr must be of type float"),
    ("sweep: {depth: [2, x]}\n", "depth must be of type"),
    ("sweep: {depht: [2]}\n", "unknown sweep key 'depht'; valid keys: arch, dataset"),
    ("sweep: {depth: []}\n", "needs a non-empty list"),
    ("sweep: {depth: [2, 2]}\n", "lists 2 more than once"),
    ("sweep: {methods: [al, xx]}\n", "methods must be distinct names out of al, bp"),
    ("sweep: {seed: [1, 2]}\n", "'seed' cannot be set here; list them under `seeds`"),
    ("lr: 1e-3\n", "lr must be of type float"),  # YAML 1.1 reads 1e-3 as a string: say so
    ("descriptoin: x\n", "valid keys: method, arch"),
])
def test_config_file_section_errors(tmp_path, text, msg):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as e:
        load_spec(config_file=f)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_config_file_over_a_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 3\nsweep: {depth: [2], seeds: [5]}\nper_method: {al: {lr: 5.0e-3}}\n")
    spec = load_spec("sigmoid-study", f)
    assert spec.config.epochs == 3 and spec.config.activation == "sigmoid" and spec.config.preset == "sigmoid-study"
    assert (spec.sweep.grid, spec.sweep.methods, spec.sweep.seeds) == ({"depth": [2]}, None, [5])  # replaced whole
    assert spec.for_method("al").lr == 5e-3 and spec.for_method("bp").lr == 1e-3
    assert spec.differs(["al", "bp"]) and not spec.differs(["bp"])


BLOBS = ["--dataset", "blobs", "--epochs", "1", "--width", "8", "--device", "cpu", "--quiet"]


def test_per_method_settings_train_into_one_experiment(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("description: blobs test\nlr: 1.0e-3\nschedule: none\nper_method:\n  bp: {lr: 2.0e-2}\n")
    out = tmp_path / "e"
    assert main(["train", "--config", str(f), "--out", str(out), *BLOBS]) == 0
    lr = {m: yaml.safe_load((out / f"{m}-seed0" / "config.yaml").read_text())["lr"] for m in ("al", "bp")}
    assert lr == {"al": 1e-3, "bp": 2e-2}
    assert "(lr 0.02)" in capsys.readouterr().out
    # a flag wins over per_method (here on the one-method path, where per_method is folded into the config)
    assert main(["train", "--config", str(f), "--out", str(tmp_path / "f"), "--method", "bp", "--lr", "0.005",
                 *BLOBS]) == 0
    assert yaml.safe_load((tmp_path / "f" / "bp-seed0" / "config.yaml").read_text())["lr"] == 0.005


def test_quick_label_is_printed_and_stored(tmp_path, capsys):
    f = tmp_path / "q.yaml"
    f.write_text((PRESET_DIR / "mnist-mlp-quick.yaml").read_text().replace("dataset: mnist5k", "dataset: blobs")
                 .replace("width: 1024", "width: 8").replace("epochs: 5", "epochs: 1"))
    assert main(["train", "--config", str(f), "--method", "al", "--out", str(tmp_path / "e"), "--quiet",
                 "--device", "cpu"]) == 0
    assert "QUICK variant" in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "e" / "al-seed0" / "config.yaml").read_text())["quick"] is True


def test_cifar_subsets_are_fixed_stratified_parts_of_the_official_splits(monkeypatch):
    rng = np.random.default_rng(0)
    y_tr, y_te = np.repeat(np.arange(10), 500), np.repeat(np.arange(10), 100)

    def fake(name):
        def load(cfg):
            return datamod.Raw(rng.integers(0, 255, (5000, 3, 4, 4)).astype(np.uint8), y_tr,
                               np.zeros((1000, 3, 4, 4), np.uint8), y_te, np.arange(5000), np.arange(1000),
                               image=True, augment=True, per_image_standardize=True, pixel_max=255.0)
        return load

    monkeypatch.setattr(datamod, "_torchvision", fake)
    raw = datamod._tv_subset("cifar10", 400, 100)({"data_dir": "x", "test_fraction": 0.2})
    assert len(raw.y_train) == 400 and len(raw.y_test) == 100
    assert np.bincount(raw.y_train).tolist() == [40] * 10 and np.bincount(raw.y_test).tolist() == [10] * 10
    assert np.array_equal(raw.y_train, y_tr[raw.ids_train]) and len(set(raw.ids_train)) == 400
    assert raw.augment and raw.per_image_standardize
    again = datamod._tv_subset("cifar10", 400, 100)({"data_dir": "x", "test_fraction": 0.2})
    assert np.array_equal(again.ids_train, raw.ids_train) and np.array_equal(again.ids_test, raw.ids_test)


def test_rule_presets_and_published_registry(capsys):
    from alviz.published import PUBLISHED, for_preset

    r = load_spec("rules-mnist5k")
    assert r.sweep.methods == ["bp", "bp-authors", "al", "al-e2e", "scpl", "dgl"] and r.sweep.seeds == [0, 1, 2]
    assert (r.config.dataset, r.config.arch, r.sweep.grid) == ("mnist5k", "mlp", {"depth": [4]})
    s = load_spec("cifar10-scpl-vgg").config
    assert (s.lr, s.schedule, s.gamma, s.batch_size, s.epochs, s.temperature) == (1e-3, "cosine", 0.01, 1024, 200, 0.1)
    d = load_spec("cifar10-dgl-resnet32").config
    assert (d.optimizer, d.lr, d.momentum, d.weight_decay, d.batch_size, d.epochs, d.gamma) == \
        ("sgd", 0.1, 0.9, 5e-4, 128, 50, 0.2)
    # every registry entry names a source, where in it, and presets that exist
    for p in PUBLISHED:
        assert p.source and p.where and 0 < p.test_error < 100
        assert all(n in preset_names() for n in p.presets)
    assert [p.alviz_method for p in for_preset("cifar10-local-pred-mlp")] == ["bp", "dgl"]
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "published: cifar10 mlp" in out and "test error 32.33 %" in out and "anokland/local-loss" in out
    assert main(["presets", "--published"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(PUBLISHED)
