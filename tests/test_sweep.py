"""Sweeps: --grid parsing, cell names, one folder of experiments with sweep.json, resuming after an
interruption without redoing finished runs, and the errors."""

import hashlib
import json
import shutil

import pytest
import yaml

from alviz import checkpoint as ckpt
from alviz.cli import main
from alviz.config import TrainConfig
from alviz.errors import UserError
from alviz.experiment import find_runs
from alviz.presets import Spec, SweepSpec
from alviz.sweep import cell_name, grid_cells, make_sweep, parse_grid_args, parse_value, read_sweep_file, run_sweep
from alviz.train import Interrupted

TINY = TrainConfig(dataset="blobs", epochs=1, width=8, batch_size=64, lr=1e-2, schedule="none", device="cpu")
QUIET = {"progress": False, "log": lambda *a: None}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_grid_values_take_the_fields_type():
    g = parse_grid_args(["depth=2,4", "lr=1e-3,0.01", "amp=true,no", "width=none,16", "activation=sigmoid,relu",
                         "batch-size=32"])
    assert g == {"depth": [2, 4], "lr": [1e-3, 0.01], "amp": [True, False], "width": [None, 16],
                 "activation": ["sigmoid", "relu"], "batch_size": [32]}
    assert type(g["lr"][0]) is float and type(g["depth"][0]) is int
    assert parse_value("gamma", "1") == 1.0 and type(parse_value("gamma", "1")) is float


@pytest.mark.parametrize("items, msg", [
    (["dpeth=2,4"], "--grid: unknown key 'dpeth'; valid keys: arch, dataset, activation, depth"),
    (["depth=2,four"], "--grid depth: 'four' is not a valid value; depth takes an integer or none"),
    (["lr=fast"], "--grid lr: 'fast' is not a valid value; lr takes a number"),
    (["amp=maybe"], "amp takes true/false"),
    (["seed=1,2"], "'seed' cannot be swept (use --seeds)"),
    (["method=al"], "'method' cannot be swept (use --methods)"),
    (["depth"], "--grid takes KEY=V1,V2,..."),
    (["depth=2", "depth=4"], "--grid depth is given twice"),
    (["milestones=0.5"], "milestones takes a list; sweep it in a config file's sweep section"),
])
def test_grid_errors(items, msg):
    with pytest.raises(UserError) as e:
        parse_grid_args(items)
    assert msg in str(e.value)


def test_cell_names():
    assert cell_name({"depth": 4, "activation": "sigmoid"}) == "depth4-activation-sigmoid"
    assert cell_name({"lr": 0.001, "amp": True, "width": None}) == "lr0.001-amp-true-width-none"
    assert cell_name({}) == "base"
    assert [n for n, _ in grid_cells({"depth": [2, 4], "activation": ["relu", "tanh"]})] == [
        "depth2-activation-relu", "depth2-activation-tanh", "depth4-activation-relu", "depth4-activation-tanh"]


def test_make_sweep_checks_values_and_conflicts():
    spec = Spec(TINY)
    with pytest.raises(UserError, match="unknown activation 'swish'"):
        make_sweep(spec, {}, {"activation": ["relu", "swish"]}, ["al"], [0], "x")
    with pytest.raises(UserError, match="depth is swept .* and also given as --depth 3"):
        make_sweep(spec, {"depth": 3}, {"depth": [1, 2]}, ["al"], [0], "x")
    with pytest.raises(UserError, match="depth of cnn must be between 1 and 4; received 6"):
        make_sweep(Spec(TINY.replace(arch="cnn")), {}, {"depth": [2, 6]}, ["al"], [0], "x")
    sw = make_sweep(Spec(TINY, sweep=SweepSpec({"depth": [1, 2]}, ["bp"], [3])), {}, {"depth": [3]})
    assert sw.grid == {"depth": [3]} and sw.methods == ["bp"] and sw.seeds == [3]  # --grid replaces the axis


def test_sweep_makes_one_folder_of_experiments(tmp_path):
    sw = make_sweep(Spec(TINY), {}, {"depth": [1, 2]}, ["al"], [0], tmp_path / "sw")
    res = run_sweep(sw, **QUIET)
    assert res.status == "complete" and res.trained == 2 and res.skipped == 0
    runs = find_runs(tmp_path / "sw")
    assert [r.relative_to(tmp_path / "sw").as_posix() for r in runs] == ["depth1/al-seed0", "depth2/al-seed0"]
    assert [yaml.safe_load((r / "config.yaml").read_text())["depth"] for r in runs] == [1, 2]
    data = read_sweep_file(tmp_path / "sw")
    assert data["status"] == "complete" and data["grid"] == {"depth": [1, 2]} and data["methods"] == ["al"]
    assert (data["cells_total"], data["cells_done"], data["runs_total"], data["runs_done"]) == (2, 2, 2, 2)
    assert [c["name"] for c in data["cells"]] == ["depth1", "depth2"]
    run = data["cells"][1]["runs"][0]
    assert run["status"] == "complete" and run["run"] == "al-seed0" and 0.0 <= run["test_acc"] <= 1.0
    # killed during a run's first save: its folder holds only an incomplete .staging; rerun retrains it alone
    first, second = runs
    before = (_sha(first / "model.safetensors"), (first / "model.safetensors").stat().st_mtime_ns)
    shutil.rmtree(second)
    (second / ".staging").mkdir(parents=True)
    (second / ".staging" / "model.safetensors").write_bytes(b"half a file")
    res = run_sweep(make_sweep(Spec(TINY), {}, {"depth": [1, 2]}, ["al"], [0], tmp_path / "sw"), **QUIET)
    assert (res.trained, res.skipped) == (1, 1) and ckpt.read_meta(second)["status"] == "complete"
    assert (_sha(first / "model.safetensors"), (first / "model.safetensors").stat().st_mtime_ns) == before
    assert not (second / ".staging").exists()


def test_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    sw = make_sweep(Spec(TINY.replace(epochs=2)), {}, {"depth": [1, 2]}, ["al"], [0], tmp_path / "sw")
    first, second = tmp_path / "sw" / "depth1" / "al-seed0", tmp_path / "sw" / "depth2" / "al-seed0"
    real_save = ckpt.save_checkpoint

    def save(run_dir, model, opt, cfg, meta, history, **kw):  # Ctrl-C as the second run saves its epoch 2
        if str(second) == str(run_dir) and meta["epoch"] == 2:
            raise KeyboardInterrupt
        return real_save(run_dir, model, opt, cfg, meta, history, **kw)

    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    with pytest.raises(Interrupted, match="continue with: alviz sweep --resume --out"):
        run_sweep(sw, **QUIET)
    data = read_sweep_file(tmp_path / "sw")
    assert data["status"] == "interrupted" and data["cells_done"] == 1
    assert [r["status"] for c in data["cells"] for r in c["runs"]] == ["complete", "unfinished"]
    assert ckpt.read_meta(second)["epoch"] == 1
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)

    before = (_sha(first / "model.safetensors"), (first / "model.safetensors").stat().st_mtime_ns)
    lines = []
    again = make_sweep(Spec(TINY.replace(epochs=2)), {}, {"depth": [1, 2]}, ["al"], [0], tmp_path / "sw")
    res = run_sweep(again, progress=False, log=lines.append)
    assert res.status == "complete" and (res.trained, res.skipped) == (1, 1)
    assert (_sha(first / "model.safetensors"), (first / "model.safetensors").stat().st_mtime_ns) == before
    assert any("depth1/al-seed0: finished earlier; skipped" in x for x in lines)
    assert any("depth2/al-seed0: resuming" in x for x in lines)
    meta = ckpt.read_meta(second)
    assert meta["status"] == "complete" and meta["epoch"] == 2 and len(meta["history"]) == 2
    assert read_sweep_file(tmp_path / "sw")["status"] == "complete"


SWEEP = ["sweep", "--grid", "depth=1,2", "--methods", "al", "--seeds", "0", "--dataset", "blobs", "--epochs", "1",
         "--width", "8", "--device", "cpu", "--quiet"]


def test_sweep_cli_progress_rerun_resume_and_errors(tmp_path, capsys):
    out = str(tmp_path / "sw")
    assert main([*SWEEP, "--out", out]) == 0
    text = capsys.readouterr().out
    assert "2 cell(s) x 1 method(s) x 1 seed(s) = 2 run(s)" in text
    assert "[cells done 1/2 | run 2/2] depth2/al-seed0: training" in text and f"next: alviz analyze {out}" in text
    assert "depth2" in text and "+-" in text  # the closing summary: mean +- sd per cell and method
    assert main([*SWEEP, "--out", out]) == 0  # the same command again: nothing to do
    assert capsys.readouterr().out.count("finished earlier; skipped") == 2
    assert main(["sweep", "--resume", "--out", out, "--dry-run"]) == 0  # the request read from sweep.json
    assert "2 run(s), 0 to train" in capsys.readouterr().out
    # the same folder with another request, a folder that is not a sweep, nothing to sweep
    assert main([*SWEEP, "--epochs", "2", "--out", out]) == 2
    assert "holds another sweep (different epochs (1 stored, 2 asked))" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    assert main([*SWEEP, "--out", str(tmp_path / "other")]) == 2
    assert "exists and is not an alviz sweep (no sweep.json)" in capsys.readouterr().err
    assert (tmp_path / "other" / "x.txt").read_text() == "mine"
    for args, msg in [(["sweep", "--dataset", "blobs"], "nothing to sweep"),
                      (["sweep", "--grid", "widht=8"], "unknown key 'widht'; valid keys"),
                      (["sweep", "--grid", "width=8,big"], "'big' is not a valid value; width takes an integer"),
                      (["sweep", "--preset", "nope"], "unknown preset 'nope'; allowed: "),
                      (["sweep", "--resume", "--out", str(tmp_path / "none")], "holds no sweep.json")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert msg in err and err.startswith("alviz: error") and err.count("\n") == 1


def test_train_runs_a_config_with_a_sweep_section(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(
        "description: tiny study\ndataset: blobs\nepochs: 1\nwidth: 8\nschedule: none\nquick: true\n"
        "sweep:\n  depth: [1, 2]\n  methods: [bp]\n  seeds: [1]\n")
    assert main(["train", "--config", "study.yaml", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "QUICK variant" in out
    runs = find_runs(tmp_path / "checkpoints" / "study")
    assert [r.relative_to(tmp_path / "checkpoints" / "study").as_posix() for r in runs] == [
        "depth1/bp-seed1", "depth2/bp-seed1"]
    data = json.loads((tmp_path / "checkpoints" / "study" / "sweep.json").read_text())
    assert data["quick"] is True and data["description"] == "tiny study" and data["status"] == "complete"
