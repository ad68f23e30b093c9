"""Crash safety: SIGKILL at chosen points of `alviz train`, Ctrl-C, a full disk, a diverging loss,
and two `alviz analyze` at once.

Kills land exactly where they should through the test-only fault hook (`alviz.checkpoint.fault`,
environment variable ALVIZ_FAULT) in CLI subprocesses `python -m alviz train ...`; the other
tests call `alviz.cli.main([...])` in-process (the same entry point, faster). After every kill
the run directory must recover to a whole checkpoint of the last completed epoch, and a run
continued with --resume must end with exactly (bit for bit, on the CPU) the weights of a run that
was never interrupted.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alviz
from alviz import checkpoint as ckpt
from alviz.cli import main
from alviz.extract import load_activations

EPOCHS = 4  # 200 training samples / batch 20 = 10 steps per epoch


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # --threads 1 sets it for the whole process
    yield
    torch.set_num_threads(n)


def train_args(npz, out, *extra):
    return ["train", "--dataset", f"npz:{npz}", "--method", "al", "--width", "8", "--epochs", str(EPOCHS),
            "--batch-size", "20", "--lr", "0.01", "--device", "cpu", "--quiet", "--threads", "1",
            "--out", str(out), *extra]


def weights(run) -> dict:
    return load_file(Path(run) / "model.safetensors")


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(npz, tmp_path_factory, cli_main):
    """Weights of the uninterrupted run (in-process, one thread, like the subprocesses)."""
    out = tmp_path_factory.mktemp("ref") / "exp"
    assert cli_main(train_args(npz, out)) == 0
    return weights(out / "al-seed0")


class Cli:
    """`python -m alviz ARGS` in a subprocess (ALVIZ_FAULT=fault when given), output to files."""

    def __init__(self, args, logs: Path, fault=None):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
               "MPLBACKEND": "Agg"}
        env.pop(ckpt.FAULT_ENV, None)
        if fault:
            env[ckpt.FAULT_ENV] = fault
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / "stdout", logs / "stderr"
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "alviz", *args], env=env, stdout=o, stderr=e,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def finish(self, timeout=300):
        """(exit status, stdout, stderr); a negative status is the signal that ended it."""
        self.proc.wait(timeout=timeout)
        return self.proc.returncode, self.out.read_text(), self.err.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def recovered_epoch(run: Path, scratch: Path) -> int:
    """What a crash left in `run`, recovered in a copy (the original stays untouched): the epoch
    of the whole checkpoint it holds, checked file by file."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(run, scratch, symlinks=True)
    ckpt.recover(scratch)
    assert not (scratch / ckpt.STAGING).exists()
    meta = ckpt.read_meta(scratch)
    model, _ = alviz.load(scratch)  # config, meta and weights agree
    opt = torch.optim.Adam(model.param_groups(0.01, 2.0))
    assert ckpt.optimizer_from_file(opt, scratch / "train_state.safetensors") == meta["epoch"]
    assert len(meta["history"]) == meta["epoch"]
    assert len((scratch / "summary.csv").read_text().splitlines()) == meta["epoch"] + 1
    return meta["epoch"]


def _meta_epoch(path) -> int:
    return json.loads(Path(path).read_text())["epoch"]


def _killed_mid_epoch(run, staging):
    assert not staging.exists() and _meta_epoch(run / "meta.json") == 1


def _killed_staged(run, staging):
    assert (staging / "model.safetensors").is_file() and not (staging / ckpt.COMPLETE).exists()
    assert _meta_epoch(staging / "meta.json") == 2 and _meta_epoch(run / "meta.json") == 1


def _killed_moving(run, staging):  # config.yaml and model.safetensors moved, meta.json not yet
    assert (staging / ckpt.COMPLETE).is_file() and not (staging / "model.safetensors").exists()
    assert _meta_epoch(staging / "meta.json") == 2 and _meta_epoch(run / "meta.json") == 1


# fault (see alviz.checkpoint.fault) -> (what the kill left on disk, the epoch it recovers to)
KILLS = {
    "step:15": (_killed_mid_epoch, 1),  # mid-epoch 2 (10 steps per epoch)
    "save:staged:2": (_killed_staged, 1),  # staged, no COMPLETE marker: dropped
    "save:moving:2:2": (_killed_moving, 2),  # half moved into place: rolled forward
}


@pytest.mark.parametrize("fault", list(KILLS))
def test_sigkill_then_resume_equals_uninterrupted(background, fault, npz, reference, tmp_path):
    proc, exp = background[fault]
    run = exp / "al-seed0"
    code, _, err = proc.finish()
    assert code == -signal.SIGKILL, err
    left, epoch = KILLS[fault]
    left(run, run / ckpt.STAGING)  # the kill came where it was asked for
    assert recovered_epoch(run, tmp_path / "look") == epoch  # a whole checkpoint, always
    ckpt.recover(run)  # the run dir itself (recover, then alviz.load): the last completed epoch
    _, cfg = alviz.load(run)
    assert ckpt.read_meta(run)["epoch"] == epoch and cfg.epochs == EPOCHS
    # --resume finishes it: the same weights as a run never interrupted
    assert main(train_args(npz, exp, "--resume")) == 0
    meta = ckpt.read_meta(run)
    assert meta["status"] == "complete" and meta["epoch"] == EPOCHS and len(meta["history"]) == EPOCHS
    assert_same_weights(weights(run), reference)


def test_killed_during_the_first_save_starts_again_on_resume(npz, reference, tmp_path, capsys):
    exp = tmp_path / "exp"
    run = exp / "al-seed0"
    (run / ckpt.STAGING).mkdir(parents=True)  # what a SIGKILL while staging epoch 1 leaves
    (run / ckpt.STAGING / "model.safetensors").write_bytes(b"half a fi")
    assert main(train_args(npz, exp, "--resume")) == 0
    assert not (run / ckpt.STAGING).exists()
    assert_same_weights(weights(run), reference)


def test_ctrl_c_exits_130_with_one_line_and_resume_completes(background, npz, reference):
    proc, exp = background["ctrl-c"]
    run = exp / "al-seed0"
    code, out, err = proc.finish()
    assert code == 130, err
    line = one_line(err)
    assert line.startswith("alviz: interrupted during epoch 3;")
    assert f"the checkpoint of epoch 2 in {run} is kept" in line and "--resume" in line
    assert not (run / ckpt.STAGING).exists() and ckpt.read_meta(run)["epoch"] == 2
    assert alviz.load(run)[1].epochs == EPOCHS
    assert main(train_args(npz, exp, "--resume")) == 0
    assert ckpt.read_meta(run)["status"] == "complete"
    assert_same_weights(weights(run), reference)


THREADED = {"threads-kill": "step:15", "threads-ctrl-c": "step:25:sigint"}


@pytest.mark.parametrize("name", list(THREADED))
def test_component_threads_stopped_then_resumed_equal_the_uninterrupted_one_thread_run(background, name, npz,
                                                                                      reference, cli_main):
    proc, exp = background[name]
    run = exp / "al-seed0"
    code, out, err = proc.finish()
    if name == "threads-kill":
        assert code == -signal.SIGKILL, err
        assert recovered_epoch(run, run.parent / "look") == 1
        ckpt.recover(run)
    else:
        assert code == 130, err
        line = one_line(err)  # Ctrl-C reaches the main thread while the workers run: one line, no traceback
        assert line.startswith("alviz: interrupted during epoch 3;") and "--resume" in line
        assert ckpt.read_meta(run)["epoch"] == 2
    meta = ckpt.read_meta(run)
    assert meta["component_threads"] == [[1], [2]] and meta["torch_threads"] == 2
    assert cli_main(train_args(npz, exp, "--resume", "--threads", "2")) == 0
    assert ckpt.read_meta(run)["status"] == "complete"
    assert_same_weights(weights(run), reference)  # the 1-thread sequential run's weights, to the bit


class _HalfThenFull:
    """A file whose write stores half the bytes, then fails as a full disk does."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        self.fh.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(npz, reference, tmp_path, monkeypatch, capsys):
    exp = tmp_path / "exp"
    run = exp / "al-seed0"
    real_open = open
    seen = []

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        if Path(path).parent.name == ckpt.STAGING and Path(path).name == "model.safetensors":
            seen.append(path)
            if len(seen) == 2:  # epoch 2's weights
                return _HalfThenFull(fh)
        return fh

    monkeypatch.setattr(ckpt, "open", fake_open, raising=False)  # checkpoint.py's `open` only
    assert main(train_args(npz, exp)) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"alviz: error: {run}: could not write the checkpoint of epoch 2")
    assert "No space left on device" in line and "the previous checkpoint (epoch 1) is kept" in line
    assert "--resume" in line
    assert not (run / ckpt.STAGING).exists()  # the half-written file is gone
    assert recovered_epoch(run, tmp_path / "look") == 1
    monkeypatch.undo()
    assert main(train_args(npz, exp, "--resume")) == 0
    assert_same_weights(weights(run), reference)


@pytest.fixture
def nan_from_step_16(monkeypatch):
    """AL's assoc2 loss becomes NaN from training step 16 on (epoch 2, step 6)."""
    from conftest import poison_al_loss

    poison_al_loss(monkeypatch, 1, "assoc", lambda k: k >= 16)


def test_diverging_run_stops_naming_component_epoch_step(npz, tmp_path, capsys, nan_from_step_16):
    exp = tmp_path / "exp"
    run = exp / "al-seed0"
    assert main(train_args(npz, exp)) == 3
    line = one_line(capsys.readouterr().err)
    assert line.startswith("alviz: error: loss assoc2 became NaN/inf at epoch 2, step 6;")
    assert f"the checkpoint of epoch 1 in {run} is kept" in line and "--on-nan continue" in line
    assert recovered_epoch(run, tmp_path / "look") == 1
    model, _ = alviz.load(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_on_nan_continue_trains_on_and_says_so(npz, tmp_path, capsys, nan_from_step_16):
    exp = tmp_path / "exp"
    run = exp / "al-seed0"
    assert main(train_args(npz, exp, "--on-nan", "continue")) == 0
    captured = capsys.readouterr()
    assert "warning: loss assoc2 became NaN/inf at epoch 2, step 6; continuing (--on-nan continue)" in captured.out
    meta = ckpt.read_meta(run)
    assert meta["status"] == "complete" and meta["epoch"] == EPOCHS
    assert "nonfinite_losses" not in meta["history"][0]
    assert "assoc2" in meta["history"][1]["nonfinite_losses"].split(",")


ANALYZE = ["--no-tsne", "--train-samples", "100", "--device", "cpu"]


@pytest.fixture(scope="module")
def background(npz, tmp_path_factory, cli_main):
    """Subprocesses started together before the first test, running while the others do: runs
    killed at each point of KILLS, a run that gets Ctrl-C in epoch 3, and two `alviz analyze` of
    one experiment into one report folder."""
    root = tmp_path_factory.mktemp("bg")
    exp = root / "tiny-exp"
    assert cli_main(["train", "--dataset", f"npz:{npz}", "--width", "8", "--epochs", "1", "--batch-size", "20",
                     "--device", "cpu", "--quiet", "--threads", "1", "--out", str(exp)]) == 0
    procs = {"ctrl-c": (Cli(train_args(npz, root / "int"), root / "log-int", fault="step:25:sigint"), root / "int")}
    for i, fault in enumerate(KILLS):
        procs[fault] = (Cli(train_args(npz, root / f"kill{i}"), root / f"log-kill{i}", fault=fault), root / f"kill{i}")
    for name, fault in THREADED.items():  # the same run with its 2 components in 2 threads (alviz.concurrent)
        procs[name] = (Cli(train_args(npz, root / name, "--threads", "2"), root / f"log-{name}", fault=fault),
                       root / name)
    for k in (1, 2):
        procs[f"analyze{k}"] = (Cli(["analyze", str(exp), *ANALYZE, "--out", str(root / "reports")],
                                    root / f"log-an{k}"), exp)
    yield procs
    for proc, _ in procs.values():
        proc.stop()


@pytest.fixture(scope="module", autouse=True)
def _start_background_first(background):
    """Start the background subprocesses before the first test of this module."""


def test_two_analyses_at_once_leave_whole_reports_and_caches(background, tmp_path):
    results = [background[k][0].finish() for k in ("analyze1", "analyze2")]
    for code, out, err in results:
        assert code == 0 and "Traceback" not in err, err
    experiment = background["analyze1"][1]
    folder = background["analyze1"][0].out.parent.parent / "reports" / experiment.name
    assert main(["analyze", str(experiment), *ANALYZE, "--out", str(tmp_path / "alone")]) == 0  # a single run
    single = tmp_path / "alone" / experiment.name
    with open(folder / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["run"] for r in rows} >= {"al-seed0", "bp-seed0"} and all(r["value"] != "" for r in rows)
    assert json.loads((folder / "metrics.json").read_text())["rows"]
    assert (folder / "report.html").read_text().rstrip().endswith("</html>")
    assert (folder / "report.md").read_text().startswith("# ")
    assert (folder / "metrics.csv").read_bytes() == (single / "metrics.csv").read_bytes()
    for f in (folder, single):
        assert not [p for p in f.rglob("*") if ".tmp" in p.name]  # no temporary files left
    for run in ("al-seed0", "bp-seed0"):
        root = experiment / run / "activations"
        sets = sorted(p.name for p in root.iterdir())
        assert len(sets) == 2 and not [s for s in sets if s.startswith(".")], sets
        for s in sets:
            assert load_activations(root / s).labels.size  # whole and valid
