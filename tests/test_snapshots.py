"""Snapshots (`--snapshots`, config key `snapshots`): spec parsing, files, loading, resume safety.

Known answers: epoch 0 is the seeded initialisation; the snapshot of epoch k of a run equals the
final weights of the same run trained for k epochs (constant learning rate); a run killed and
resumed ends with the snapshots, bit for bit, of a run never interrupted.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import alviz
from alviz import checkpoint as ckpt
from alviz import cli
from alviz import snapshots as snap
from alviz.config import TrainConfig, from_dict, load_config
from alviz.errors import UserError
from alviz.models import create_model, resolve_shape_defaults
from alviz.train import train

TINY = {"dataset": "blobs", "width": 8, "batch_size": 40, "lr": 1e-2, "schedule": "none", "device": "cpu"}


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(path, **kw):
    cfg = TrainConfig(**{**TINY, **kw})
    train(cfg, path, progress=False, log=lambda *a: None)
    return path


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- specs

@pytest.mark.parametrize("spec, total, want", [
    ("log", 20, [0, 1, 2, 4, 8, 16, 20]),
    ("log", 16, [0, 1, 2, 4, 8, 16]),
    ("log", 1, [0, 1]),
    ("every:5", 20, [0, 5, 10, 15, 20]),
    ("every:5", 12, [0, 5, 10, 12]),
    ("every:1", 3, [0, 1, 2, 3]),
    ("0,1,2,5,10,20", 20, [0, 1, 2, 5, 10, 20]),
    (" 5, 0,5 ", 20, [0, 5]),
    ([10, 0], 20, [0, 10]),
    (3, 5, [3]),
    (None, 20, []),
    ("none", 20, []),
])
def test_spec_epochs(spec, total, want):
    assert snap.epochs(spec, total) == want


@pytest.mark.parametrize("spec", ["every:0", "every:", "every:x", "lg", "1,a", "-1,2", "1;2", True, 1.5, [1, "a"],
                                  "every:2:3"])
def test_bad_spec_is_one_line_naming_received_and_allowed(spec):
    with pytest.raises(UserError) as e:
        from_dict({"snapshots": spec})
    msg = str(e.value)
    assert "\n" not in msg and f"received {spec!r}" in msg
    assert "allowed:" in msg and "every:N" in msg and "log" in msg


def test_listed_epoch_beyond_the_run_is_an_error():
    with pytest.raises(UserError, match=r"lists epoch 30 but the run trains 20 epoch\(s\); allowed: epochs 0..20"):
        from_dict({"snapshots": "0,30"})


def test_config_normalises_yaml_and_cli_forms(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("snapshots: [5, 0, 1]\nepochs: 5\n")
    assert load_config(p).snapshots == "0,1,5"
    assert from_dict({"snapshots": " LOG "}).snapshots == "log"
    assert from_dict({"snapshots": "every:04"}).snapshots == "every:4"
    assert from_dict({"snapshots": "none"}).snapshots is None
    assert TrainConfig().snapshots is None  # the default job keeps none


def test_cli_bad_spec_exits_2_with_one_line(cli_main, capsys, tmp_path):
    assert cli_main(["train", "--dataset", "blobs", "--snapshots", "every:0", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("alviz: error: snapshots: received 'every:0'")
    assert not (tmp_path / "e").exists()


def test_sweep_grid_and_presets_accept_snapshots(tmp_path):
    from alviz.presets import load_spec
    from alviz.sweep import parse_grid_args

    assert parse_grid_args(["snapshots=log,every:2"]) == {"snapshots": ["log", "every:2"]}
    f = tmp_path / "s.yaml"
    f.write_text("dataset: blobs\nepochs: 4\nsnapshots: log\nsweep:\n  snapshots: [log, [0, 4]]\n  seeds: [0]\n")
    spec = load_spec(None, str(f))
    assert spec.config.snapshots == "log" and spec.sweep.grid["snapshots"] == ["log", "0,4"]


# --------------------------------------------------------------------------- files and loading

@pytest.fixture(scope="module")
def run5(tmp_path_factory):
    """An AL run of 5 epochs keeping every epoch."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(tmp_path_factory.mktemp("r") / "al-seed0", epochs=5, snapshots="every:1")
    finally:
        torch.set_num_threads(n)


def test_snapshot_files_are_hashed_listed_and_loadable(run5):
    assert ckpt.snapshot_epochs(run5) == [0, 1, 2, 3, 4, 5]
    index = json.loads((run5 / "meta.json").read_text())["snapshots"]
    assert sorted(map(int, index)) == [0, 1, 2, 3, 4, 5]
    for e, h in index.items():
        tensors, header, _ = ckpt._read_safetensors(ckpt.snapshot_path(run5, int(e)))  # its content hash checks
        assert header["epoch"] == e and header["tensors_sha256"] == h  # and meta.json lists it
        assert ckpt._tensors_sha256(tensors) == h
    # the last snapshot is the final checkpoint
    assert (run5 / "snapshots" / "epoch-0005.safetensors").read_bytes() == (run5 / "model.safetensors").read_bytes()
    assert not (run5 / ckpt.STAGING).exists()


def test_epoch_0_is_the_seeded_initialisation(run5):
    cfg = resolve_shape_defaults(TrainConfig(**{**TINY, "epochs": 5}))
    meta = ckpt.read_meta(run5)
    torch.manual_seed(cfg.seed)
    init = create_model(cfg, tuple(meta["input_shape"]), meta["num_classes"]).state_dict()
    model, _ = alviz.load(run5, epoch=0)
    _same(model.state_dict(), init)
    later, _ = alviz.load(run5, epoch=1)
    assert any(not torch.equal(later.state_dict()[k], init[k]) for k in init)  # training moved it


def test_epoch_k_equals_a_run_trained_for_k_epochs(run5, tmp_path):
    short = _train(tmp_path / "short", epochs=3)
    model, _ = alviz.load(run5, epoch=3)
    _same(model.state_dict(), load_file(short / "model.safetensors"))
    last, _ = alviz.load(run5)  # no epoch: the last checkpoint, as before
    _same(last.state_dict(), alviz.load(run5, epoch=5)[0].state_dict())
    r = alviz.load_run(run5, epoch=2)
    assert r.epoch == 2 and r.meta["epoch"] == 5 and "epoch=2" in repr(r)


def test_missing_epoch_is_a_clear_error(run5, tmp_path):
    with pytest.raises(UserError, match=r"no weights of epoch 9; it keeps snapshots of epochs 0, 1, 2, 3, 4, 5"):
        alviz.load(run5, epoch=9)
    plain = _train(tmp_path / "plain", epochs=2)
    with pytest.raises(UserError, match="keeps no snapshots .trained without --snapshots., only the checkpoint of "
                                        "epoch 2"):
        alviz.load(plain, epoch=1)
    assert alviz.load_run(plain, epoch=2).epoch == 2  # the checkpoint's own epoch needs no snapshot
    with pytest.raises(UserError, match="epoch must be an integer >= 0; received -1"):
        alviz.load(plain, epoch=-1)


def test_corrupted_snapshot_is_refused(run5, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run5, copy)
    f = ckpt.snapshot_path(copy, 2)
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        alviz.load(copy, epoch=2)


def test_evaluate_epoch(run5, cli_main, capsys):
    assert cli_main(["evaluate", str(run5), "--epoch", "0", "--json"]) == 0
    out0 = json.loads(capsys.readouterr().out)
    assert out0["epoch"] == 0 and len(out0["exit_accuracy"]) == 2
    model, _ = alviz.load(run5, epoch=0)
    from alviz.data import load_dataset
    from alviz.train import evaluate

    d = load_dataset("blobs")
    assert out0["accuracy"] == evaluate(model, d.x_test, d.y_test)["acc"]
    assert cli_main(["evaluate", str(run5), "--epoch", "5"]) == 0
    assert "epoch 5)" in capsys.readouterr().out
    assert cli_main(["evaluate", str(run5), "--epoch", "7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no weights of epoch 7" in err


def test_log_spec_writes_only_its_epochs(tmp_path):
    run = _train(tmp_path / "r", epochs=6, snapshots="log")
    assert ckpt.snapshot_epochs(run) == [0, 1, 2, 4, 6]
    assert sorted(map(int, ckpt.read_meta(run)["snapshots"])) == [0, 1, 2, 4, 6]


def test_default_run_writes_no_snapshots(tmp_path):
    run = _train(tmp_path / "r", epochs=1)
    assert not (run / "snapshots").exists() and "snapshots" not in ckpt.read_meta(run)


# --------------------------------------------------------------------------- resume

def test_resume_keeps_earlier_snapshots_and_adds_the_rest(run5, tmp_path):
    part = _train(tmp_path / "r", epochs=2, snapshots="every:1")  # stopped after 2 epochs ...
    first = {e: ckpt.snapshot_path(part, e).stat().st_mtime_ns for e in (0, 1, 2)}
    train(TrainConfig(**{**TINY, "epochs": 5, "snapshots": "every:1"}), part, resume=True, progress=False,
          log=lambda *a: None)  # ... and continued to 5
    assert {e: ckpt.snapshot_path(part, e).stat().st_mtime_ns for e in (0, 1, 2)} == first  # not rewritten
    assert ckpt.read_meta(part)["snapshots"] == ckpt.read_meta(run5)["snapshots"]  # the same tensors as
    for e in range(6):  # an uninterrupted run's, to the bit
        _same(load_file(ckpt.snapshot_path(part, e)), load_file(ckpt.snapshot_path(run5, e)))


def test_resume_with_another_spec_is_refused(run5, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(run5, run)
    with pytest.raises(UserError, match="cannot resume with a different snapshots .'every:1' stored, 'log' asked"):
        train(TrainConfig(**{**TINY, "epochs": 6, "snapshots": "log"}), run, resume=True, progress=False,
              log=lambda *a: None)


def _args(npz, out, *extra):
    return ["train", "--dataset", f"npz:{npz}", "--method", "al", "--width", "8", "--epochs", "4",
            "--batch-size", "20", "--lr", "0.01", "--device", "cpu", "--quiet", "--threads", "1",
            "--snapshots", "every:1", "--out", str(out), *extra]


# fault -> the epoch the run recovers to: killed with epoch 2 staged (dropped), and after moving
# epoch 2's snapshot but before its meta.json (rolled forward)
@pytest.mark.parametrize("fault, kept", [("save:staged:2", 1), ("save:moving:2:1", 2)])
def test_sigkill_while_saving_a_snapshot_then_resume_equals_uninterrupted(fault, kept, npz, tmp_path, cli_main):
    from test_crash import Cli  # the subprocess helper of the crash tests

    ref = tmp_path / "ref"
    assert cli_main(_args(npz, ref)) == 0
    exp = tmp_path / "exp"
    code, _, err = Cli(_args(npz, exp), tmp_path / "logs", fault=fault).finish()
    assert code == -signal.SIGKILL, err
    run = exp / "al-seed0"
    if fault.startswith("save:moving"):  # the snapshot is in place, meta.json still says epoch 1
        assert ckpt.snapshot_path(run, 2).is_file() and json.loads((run / "meta.json").read_text())["epoch"] == 1
    ckpt.recover(run)
    meta = ckpt.read_meta(run)
    assert meta["epoch"] == kept and ckpt.snapshot_epochs(run) == list(range(kept + 1))
    assert sorted(map(int, meta["snapshots"])) == list(range(kept + 1))
    assert cli_main(_args(npz, exp, "--resume")) == 0
    r = ref / "al-seed0"
    assert ckpt.read_meta(run)["snapshots"] == ckpt.read_meta(r)["snapshots"]
    for e in range(5):
        _same(load_file(ckpt.snapshot_path(run, e)), load_file(ckpt.snapshot_path(r, e)))


# --------------------------------------------------------------------------- parallel loops

def test_pipeline_and_ddp_keep_snapshots(tmp_path):
    from alviz.parallel import launch_local

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()))

    def args(out, *extra, epochs):
        return ["train", "--config", str(cfg), "--epochs", str(epochs), "--quiet", "--snapshots", "every:1",
                "--out", str(out), *extra]

    for mode in ("--pipeline", "--ddp"):
        exp = tmp_path / mode.strip("-")
        outs = launch_local(args(exp, "--method", "al", mode, epochs=2), 2, timeout=60, fork=True, entry=cli.main)
        outs += launch_local(args(exp, "--method", "al", mode, "--resume", epochs=3), 2, timeout=60, fork=True, entry=cli.main)
        for o in outs:
            assert o.killed is None and o.returncode == 0, o.stderr[-2000:]
        run = exp / "al-seed0"
        assert ckpt.snapshot_epochs(run) == [0, 1, 2, 3]
        ref = _train(tmp_path / f"single-{mode}", epochs=3, snapshots="every:1")
        _same(alviz.load(run, epoch=0)[0].state_dict(), alviz.load(ref, epoch=0)[0].state_dict())
        for e in (1, 2, 3):  # the same arithmetic as single-process training, to float rounding
            a, b = alviz.load(run, epoch=e)[0].state_dict(), alviz.load(ref, epoch=e)[0].state_dict()
            for k in a:
                torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0, msg=f"{mode} epoch {e} {k}")
        assert ckpt.snapshot_path(run, 3).read_bytes() == (run / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------- analysis of snapshots

def test_analyze_measures_every_snapshot_and_a_rerun_only_new_ones(tmp_path, monkeypatch):
    import csv as _csv

    import alviz.embed
    from alviz.report import analyze

    calls = []  # (started from another layout?, exaggeration iterations, iterations) of every panel
    real_tsne = alviz.embed.tsne

    def recording(Z, **kw):
        calls.append((kw.get("init") is not None, kw["exaggeration_iter"], kw["n_iter"]))
        return real_tsne(Z, **kw)

    monkeypatch.setattr(alviz.embed, "tsne", recording)

    exp = tmp_path / "exp"
    for m in ("al", "bp"):
        _train(exp / f"{m}-seed0", method=m, epochs=2, snapshots="every:1")
    logs: list[str] = []
    opts = dict(max_samples=60, train_samples=100, tsne_samples=40, perplexity=5.0)
    (folder,) = analyze([exp], out=tmp_path / "rep", log=logs.append, **opts)
    with open(folder / "dynamics.csv", newline="") as fh:
        rows = list(_csv.DictReader(fh))
    for m, n_layers in (("al", 6), ("bp", 5)):
        got = {(r["epoch"], r["layer"]) for r in rows if r["method"] == m and r["stat"] == "value"}
        assert {e for e, _ in got} == {"0", "1", "2"} and len(got) == 3 * n_layers
    # the snapshot of the last epoch is the checkpoint: its values are the final analysis's
    final = {(r["run"], r["layer"], r["measure"]): r["value"] for r in
             _csv.DictReader(open(folder / "metrics.csv", newline=""))
             if r["stat"] == "value" and r.get("class", "") == ""}  # whole-layer rows, not per-class ones
    for r in rows:
        if r["epoch"] == "2" and r["stat"] == "value":
            assert r["value"] == final[(r["run"], r["layer"], r["measure"])]
    for stem in ("fig_dynamics", "fig_dynamics_measures", "fig_dynamics_exits", "fig_dynamics_tsne"):
        assert (folder / f"{stem}.png").is_file() and (folder / f"{stem}.pdf").is_file()
    page = (folder / "report.html").read_text()
    assert 'id="alviz-tsne-strip"' in page and 'id="tv-strip"' in page and "Training dynamics" in page
    meta = json.loads((folder / "metrics.json").read_text())["dynamics"]
    assert meta["snapshots"] == {"al-seed0": [0, 1, 2], "bp-seed0": [0, 1, 2]}
    assert meta["strip"]["layer"] == "block2" and meta["strip"]["epochs"] == [0, 1, 2]
    exits0 = [c for c in meta["exit_accuracy"] if c["run"] == "al-seed0" and c["epoch"] == 0]
    assert sorted(c["exit"] for c in exits0) == [0, 1, 2]  # epoch 0 evaluated from the initialisation
    assert (exp / "al-seed0" / "activations" / "blobs-test-epoch0001" / "manifest.json").is_file()
    # openTSNE's full schedule from PCA (the grid's reference, each strip chain's epoch 0), the short
    # one for every panel started from another panel's layout
    assert sorted(set(calls)) == [(False, 250, 500), (True, 125, 250)]
    assert sum(not c[0] for c in calls) == 3 and len(calls) == 5 + 5 + 2 * 3  # grid: 5 path positions x 2; strip

    # the runs continue to epoch 3: epochs 0 and 1 come from the caches, only 2 and 3 are new
    for m in ("al", "bp"):
        train(TrainConfig(**{**TINY, "method": m, "epochs": 3, "snapshots": "every:1"}), exp / f"{m}-seed0",
              resume=True, progress=False, log=lambda *a: None)
    logs.clear()
    analyze([exp], out=tmp_path / "rep", log=logs.append, **opts)
    text = "\n".join(logs)
    for run, n in (("al-seed0", 6), ("bp-seed0", 5)):
        for e in (0, 1):
            assert f"{run} epoch {e}: {n} layers measured on 60 held-out samples ({n} from cache)" in text
        assert f"{run} epoch 2: {n} layers measured on 60 held-out samples (0 from cache)" in text
    assert "t-SNE strip: 8 panels of 40 points (2 computed, 6 from cache)" in text  # epoch 3 of AL and BP


def test_analyze_no_snapshots_and_bad_strip_layer(tmp_path, cli_main, capsys):
    exp = tmp_path / "exp"
    _train(exp / "al-seed0", epochs=1, snapshots="every:1")
    args = ["analyze", str(exp), "--out", str(tmp_path / "rep"), "--max-samples", "40", "--train-samples", "60",
            "--no-tsne"]
    assert cli_main(args + ["--no-snapshots"]) == 0
    assert not (tmp_path / "rep" / "exp" / "dynamics.csv").exists()
    assert cli_main(args[:-1] + ["--tsne-samples", "30", "--strip-layer", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--strip-layer 'nope' is not a layer of every run; allowed: block1" in err


def test_tsne_init_holds_the_layout():
    from alviz.embed import tsne

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 8, (4, 10))
    y = np.repeat(np.arange(4), 25)
    Z = centers[y] + rng.normal(0, 1, (100, 10))
    first = tsne(Z, perplexity=10, seed=0, n_jobs=1)
    again = tsne(Z + rng.normal(0, 0.1, Z.shape), perplexity=10, seed=0, n_jobs=1, init=first)
    c1 = np.stack([first[y == k].mean(0) for k in range(4)])
    c2 = np.stack([again[y == k].mean(0) for k in range(4)])
    # the same arrangement of classes: the direction from the centre to each class centre is kept
    c1, c2 = c1 - c1.mean(0), c2 - c2.mean(0)
    cos = (c1 * c2).sum(1) / np.linalg.norm(c1, axis=1) / np.linalg.norm(c2, axis=1)
    assert (cos > 0.9).all(), cos
    with pytest.raises(ValueError, match="init must be a finite"):
        tsne(Z, perplexity=10, init=np.zeros((3, 2)))
