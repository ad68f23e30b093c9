import json

import pytest

from alviz.cli import main

BLOBS = ["--dataset", "blobs", "--epochs", "3", "--width", "16", "--batch-size", "32", "--lr", "0.01",
         "--device", "cpu", "--quiet"]


def test_train_both_then_evaluate(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *BLOBS]) == 0
    out = capsys.readouterr().out
    exp = tmp_path / "checkpoints" / "mlp-blobs-relu"
    assert (exp / "al-seed0" / "model.safetensors").is_file() and (exp / "bp-seed0" / "model.safetensors").is_file()
    assert "next: alviz analyze" in out
    assert main(["evaluate", str(exp / "al-seed0"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == "al" and res["n"] == 240 and len(res["exit_accuracy"]) == 2
    assert 0.0 <= res["accuracy"] <= 1.0
    # a second identical call skips the finished runs and changes nothing
    before = (exp / "al-seed0" / "model.safetensors").stat().st_mtime_ns
    assert main(["train", *BLOBS]) == 0
    assert "already trained; skipped" in capsys.readouterr().out
    assert (exp / "al-seed0" / "model.safetensors").stat().st_mtime_ns == before


def test_seeds_and_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: blobs\nepochs: 1\nwidth: 8\nschedule: none\n")
    assert main(["train", "--config", str(cfg), "--method", "bp", "--seeds", "0,1", "--out", str(tmp_path / "e"),
                 "--quiet", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["bp-seed0", "bp-seed1"]
    assert "width: 8" in (tmp_path / "e" / "bp-seed1" / "config.yaml").read_text()


@pytest.mark.parametrize("args, msg", [
    (["train", "--arch", "lenet"], "unknown arch 'lenet'; allowed: mlp, cnn, vgg, resnet20, resnet32"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'; allowed: mnist5k"),
    (["train", "--method", "xx"], "Invalid value for '--method'"),
    (["train", "--epochs", "abc"], "'abc' is not a valid integer"),
    (["train", "--seeds", "a,b"], "--seeds must be comma-separated non-negative integers"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--config", "/nonexistent.yaml"], "config file not found"),
    (["evaluate", "/nonexistent/run"], "run directory not found"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
])
def test_cli_errors_are_one_line_exit_2(args, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err and err.startswith("alviz: error") and err.count("\n") == 1 and "Traceback" not in err


def test_unfinished_run_needs_resume(tmp_path, capsys):
    out = str(tmp_path / "e")
    assert main(["train", *BLOBS, "--method", "al", "--epochs", "1", "--out", out]) == 0
    assert main(["train", *BLOBS, "--method", "al", "--out", out]) == 2
    assert "holds an unfinished run (epoch 1 of 3); continue it with --resume" in capsys.readouterr().err
    assert main(["train", *BLOBS, "--method", "al", "--out", out, "--resume"]) == 0
    assert json.loads((tmp_path / "e" / "al-seed0" / "meta.json").read_text())["epoch"] == 3
    assert main(["train", *BLOBS, "--method", "al", "--width", "32", "--out", out]) == 2
    assert "different configuration" in capsys.readouterr().err
