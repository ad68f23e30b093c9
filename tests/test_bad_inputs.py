"""A catalogue of bad inputs, each run through the real CLI.

Every case is one `alviz ...` command line that must end with exit status 2 and exactly one line
on stderr, starting `alviz: error` (no traceback), that names what was wrong and what is allowed;
and every file that existed before the command must be unchanged afterwards (sha256 and mtime of
every file under the test's folder). The cases in SUBPROCESS run as `python -m alviz ...` (started
together when this module starts); the others call `alviz.cli.main([...])` in-process with capsys,
for speed. Both go through the same entry point, `alviz.cli.main`.

A few inputs are not errors and are checked at the end: a sample count larger than the data is
clipped with a notice, and a class with a single sample trains, evaluates and extracts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import alviz
from alviz import checkpoint as ckpt
from alviz.cli import main

# a one-epoch AL run of width 8 on the CPU, one thread, no progress bar
TINY_RUN = ["--method", "al", "--width", "8", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--quiet",
            "--threads", "1"]


HAS_CUDA = torch.cuda.is_available()
CUDA = f"cuda:{torch.cuda.device_count()}" if HAS_CUDA else "cuda"  # a device that is not there
CUDA_MSG = "does not exist; this machine has" if HAS_CUDA else "no CUDA device is available; use --device cpu or auto"
TRAIN = "--device cpu --quiet --width 8 --epochs 1 --batch-size 32 --out {W}/out/new"


def _blobs(n=250, c=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    x = (rng.normal(0, 3, (c, d))[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return x, y.astype(np.int64)


@pytest.fixture(scope="module")
def world(tmp_path_factory, cli_main):
    """A folder with data files, config files, a trained 3-class run and a run with NaN weights."""
    w = tmp_path_factory.mktemp("world")
    x, y = _blobs()
    d = w / "data"
    d.mkdir()
    np.savez(d / "tiny.npz", x=x, y=y)
    np.savez(d / "empty.npz", x=np.zeros((0, 8), np.float32), y=np.zeros(0, np.int64))
    np.savez(d / "one-class.npz", x=x, y=np.zeros_like(y))
    np.savez(d / "label7.npz", x=x, y=np.where(np.arange(len(y)) == 5, 7, y))
    np.savez(d / "yfloat.npz", x=x, y=y + 0.5)
    np.savez(d / "ystr.npz", x=x, y=np.array(["a"] * len(y)))
    np.savez(d / "lengths.npz", x=x, y=y[:-3])
    np.savez(d / "nan.npz", x=np.where(np.arange(x.size).reshape(x.shape) == 26, np.nan, x), y=y)
    np.savez(d / "inf.npz", x=np.where(np.arange(x.size).reshape(x.shape) == 26, np.inf, x), y=y)
    np.savez(d / "shape.npz", x=x[:, :5], y=y)
    np.savez(d / "no-y.npz", x=x)
    np.savez(d / "x1d.npz", x=x[:, 0], y=y)
    ys = y.copy()
    ys[0] = 3  # class 3 has a single sample
    np.savez(d / "singleton.npz", x=x, y=ys)
    (w / "unknown-key.yaml").write_text("dataset: blobs\nepoch: 3\n")
    (w / "wrong-type.yaml").write_text("dataset: blobs\nepochs: ten\n")
    (w / "a-list.yaml").write_text("- dataset\n- blobs\n")
    (w / "broken.yaml").write_text("dataset: [blobs\n")
    (w / "file.txt").write_text("a regular file, not a folder\n")
    (w / "notarun").mkdir()
    (w / "notarun" / "notes.txt").write_text("hello\n")
    assert cli_main(["train", "--dataset", f"npz:{d / 'tiny.npz'}", *TINY_RUN, "--out", str(w / "exp")]) == 0
    run = w / "exp" / "al-seed0"
    nan_run = w / "nan-exp" / "al-seed0"
    nan_run.parent.mkdir()
    ckpt.save_checkpoint(nan_run, *_nan_model(run))
    return w


def _nan_model(run):
    r = alviz.load_run(run)
    with torch.no_grad():
        next(r.model.parameters()).fill_(float("nan"))
    return r.model, None, r.config, {k: v for k, v in r.meta.items() if k != "history"}, r.meta["history"]


def _paths(w: Path) -> dict:
    p = {"W": str(w), "run": str(w / "exp" / "al-seed0"), "exp": str(w / "exp"), "nanexp": str(w / "nan-exp"),
         "cuda": CUDA}
    p.update({f.stem.replace("-", "_"): str(f) for f in (w / "data").glob("*.npz")})
    p["T"] = TRAIN.format(**p)
    return p


def command(w: Path, cmd: str) -> list[str]:
    return shlex.split(cmd.format(**_paths(w)))


def snapshot(root: Path) -> dict:
    """sha256 and mtime of every file under `root`."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def assert_unchanged(before: dict, root: Path):
    after = snapshot(root)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"files changed or removed: {changed}"


def assert_one_line_error(err: str, expected):
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"stderr is not one line: {err!r}"
    assert lines[0].startswith("alviz: error") and "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


# id -> (command line, texts the message must hold: what was wrong and what is allowed)
CASES = {
    # --- arguments and names
    "unknown-dataset": ("train --dataset imagenet {T}", ["unknown dataset 'imagenet'", "allowed: mnist5k"]),
    "unknown-arch": ("train --dataset npz:{tiny} --arch lenet {T}", ["unknown arch 'lenet'", "allowed: mlp, cnn"]),
    "unknown-activation": ("train --dataset npz:{tiny} --activation swish {T}",
                           ["unknown activation 'swish'", "allowed: relu, elu, sigmoid, tanh"]),
    "unknown-preset": ("train --preset nope {T}", ["unknown preset 'nope'", "allowed: "]),
    "unknown-presets-name": ("presets nope", ["unknown preset 'nope'", "allowed: "]),
    "unknown-device": ("train --dataset npz:{tiny} --device tpu --out {W}/out/new --quiet",
                       ["unknown device 'tpu'", "allowed: auto, cpu, cuda, cuda:N"]),
    "cuda-not-there-train": ("train --dataset npz:{tiny} --device {cuda} --out {W}/out/new --quiet",
                             [f"device '{CUDA}'", CUDA_MSG]),
    "method-choice": ("train --method xx", ["Invalid value for '--method'", "'al', 'bp', 'bp-authors'", "'both', 'all'"]),
    "epochs-not-an-integer": ("train --epochs abc", ["'abc' is not a valid integer"]),
    "epochs-zero": ("train --dataset npz:{tiny} {T} --epochs 0", ["epochs must be a positive integer; received 0"]),
    "lr-negative": ("train --dataset npz:{tiny} {T} --lr -1", ["lr must be a positive number; received -1.0"]),
    "width-zero": ("train --dataset npz:{tiny} {T} --width 0", ["width must be a positive integer; received 0"]),
    "depth-too-deep": ("train --dataset npz:{tiny} {T} --depth 99",
                       ["depth of mlp must be between 1 and 64; received 99"]),
    "on-nan-unknown": ("train --dataset npz:{tiny} {T} --on-nan maybe",
                       ["unknown on_nan 'maybe'", "allowed: stop, continue"]),
    "seeds-not-integers": ("train --dataset npz:{tiny} {T} --seeds 0,x",
                           ["--seeds must be comma-separated non-negative integers", "received '0,x'"]),
    "threads-zero": ("train --dataset npz:{tiny} {T} --threads 0",
                     ["--threads must be a positive integer; received 0"]),
    "pipeline-and-ddp": ("train --dataset npz:{tiny} {T} --pipeline --ddp", ["received both, choose one"]),
    "micro-batches-alone": ("train --dataset npz:{tiny} {T} --micro-batches 2",
                            ["--micro-batches applies to --pipeline only; received 2"]),
    # --- config files
    "config-unknown-key": ("train --config {W}/unknown-key.yaml {T}", ["unknown config key(s) 'epoch'", "valid keys:"]),
    "config-wrong-type": ("train --config {W}/wrong-type.yaml {T}",
                          ["epochs must be of type int; received 'ten' (str)"]),
    "config-not-a-mapping": ("train --config {W}/a-list.yaml {T}",
                             ["expected a mapping of config keys, received list"]),
    "config-broken-yaml": ("train --config {W}/broken.yaml {T}", ["broken.yaml: not a valid YAML file"]),
    "config-missing": ("train --config {W}/nope.yaml {T}", ["config file not found"]),
    # --- data
    "empty-data": ("train --dataset npz:{empty} {T}", ["is empty (0 samples)", "at least 2 classes"]),
    "single-class": ("train --dataset npz:{one_class} {T}", ["needs at least 2 classes to train; received 1"]),
    "labels-not-integers": ("train --dataset npz:{yfloat} {T}", ["labels must be integers 0..C-1", "non-integer"]),
    "labels-strings": ("train --dataset npz:{ystr} {T}", ["labels must be integers 0..C-1; received dtype <U1"]),
    "x-y-lengths-differ": ("train --dataset npz:{lengths} {T}",
                           ["x has 250 samples but y has 247; they must match"]),
    "nan-inputs": ("train --dataset npz:{nan} {T}", ["NaN or inf", "inputs must be finite numbers"]),
    "inf-inputs": ("train --dataset npz:{inf} {T}", ["NaN or inf", "inputs must be finite numbers"]),
    "npz-missing": ("train --dataset npz:{W}/data/nope.npz {T}", ["nope.npz: file not found"]),
    "npz-without-y": ("train --dataset npz:{no_y} {T}", ["missing array(s) y", "expected x, y"]),
    "npz-1d-x": ("train --dataset npz:{x1d} {T}", ["x must have shape (N,D), (N,H,W) or (N,H,W,C)"]),
    "cnn-on-vectors": ("train --dataset npz:{tiny} --arch cnn {T}", ["needs image data", "use --arch mlp"]),
    "out-under-a-file": ("train --dataset npz:{tiny} {T} --out {W}/file.txt/sub",
                         ["file.txt is a file, not a folder", "choose a folder you can write to"]),
    # --- evaluate a trained 3-class run
    "labels-out-of-range": ("evaluate {run} --dataset npz:{label7}",
                            ["labels up to 7", "knows 3 classes (0..2)"]),
    "input-shape-mismatch": ("evaluate {run} --dataset npz:{shape}",
                             ["samples have shape (5,) but the model expects (8,)"]),
    "evaluate-nan-inputs": ("evaluate {run} --dataset npz:{nan}", ["NaN or inf", "inputs must be finite numbers"]),
    "evaluate-unknown-split": ("evaluate {run} --split val", ["unknown split 'val'", "allowed: train, test, all"]),
    "evaluate-batch-zero": ("evaluate {run} --batch-size 0", ["--batch-size must be a positive integer; received 0"]),
    "evaluate-cuda-not-there": ("evaluate {run} --device {cuda}", [f"device '{CUDA}'", CUDA_MSG]),
    "evaluate-not-a-run": ("evaluate {W}/notarun", ["not an alviz run directory (needs config.yaml and meta.json)"]),
    "evaluate-unknown-dataset": ("evaluate {run} --dataset nope", ["unknown dataset 'nope'", "allowed: mnist5k"]),
    # --- extract
    "unknown-layer": ("extract {run} --layers block1,nope", ["unknown layer(s) 'nope'", "valid layers: block1"]),
    "layers-empty": ("extract {run} --layers ,,", ["--layers must be comma-separated layer names; received ',,'"]),
    "unknown-dtype": ("extract {run} --dtype float64", ["unknown dtype 'float64'", "allowed: float32, float16"]),
    "unknown-pool": ("extract {run} --pool max", ["unknown pool 'max'", "allowed: gap, flatten"]),
    "max-samples-zero": ("extract {run} --max-samples 0", ["max samples must be a positive integer; received 0"]),
    "extract-nothing-there": ("extract {W}/notarun", ["no alviz run found at or below"]),
    # --- analyze, compare, sweep
    "analyze-missing-path": ("analyze {W}/nope --out {W}/reports", ["nope does not exist"]),
    "tsne-samples-too-few": ("analyze {exp} --tsne-samples 2 --out {W}/reports",
                             ["tsne-samples must be at least 4; received 2"]),
    "perplexity-negative": ("analyze {exp} --perplexity -1 --out {W}/reports",
                            ["perplexity must be a positive number; received -1.0"]),
    "nan-activations": ("analyze {nanexp} --no-tsne --train-samples 50 --device cpu --out {W}/reports",
                        ["layer block1 has NaN or inf activations", "finite activations only"]),
    "analyze-out-under-a-file": ("analyze {exp} --no-tsne --out {W}/file.txt/sub",
                                 ["file.txt", "a file, not a folder", "a folder you can write to"]),
    "compare-missing": ("compare {run} {W}/nope", ["nope does not exist"]),
    "grid-bad-value": ("sweep --grid depth=a,b --dataset npz:{tiny} --out {W}/out/sw",
                       ["--grid depth: 'a' is not a valid value"]),
    "grid-unknown-key": ("sweep --grid colour=red --out {W}/out/sw", ["unknown key 'colour'", "valid keys:"]),
    "nothing-to-sweep": ("sweep --out {W}/out/sw", ["nothing to sweep", "give --grid KEY=V1,V2"]),
}
SUBPROCESS = ("method-choice", "unknown-presets-name", "evaluate-cuda-not-there")


@pytest.fixture(scope="module")
def subprocesses(world):
    """The SUBPROCESS cases, started together: {id: (Popen, snapshot before)}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop(ckpt.FAULT_ENV, None)
    started = {}
    for case in SUBPROCESS:
        before = snapshot(world)
        started[case] = (subprocess.Popen([sys.executable, "-m", "alviz", *command(world, CASES[case][0])],
                                          cwd=world, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, text=True), before)
    yield started
    for proc, _ in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module", autouse=True)
def _start_subprocesses_first(subprocesses):
    """Start the subprocess cases before the first test of this module."""


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30 and set(SUBPROCESS) <= set(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c not in SUBPROCESS])
def test_bad_input_in_process(case, world, capsys, monkeypatch, cli_main):
    monkeypatch.chdir(world)
    cmd, expected = CASES[case]
    before = snapshot(world)
    capsys.readouterr()
    code = cli_main(command(world, cmd))
    assert code == 2, capsys.readouterr().err
    assert_one_line_error(capsys.readouterr().err, expected)
    assert_unchanged(before, world)


@pytest.mark.parametrize("case", SUBPROCESS)
def test_bad_input_subprocess(case, world, subprocesses):
    proc, before = subprocesses[case]
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert_one_line_error(err, CASES[case][1])
    assert_unchanged(before, world)


def test_output_folder_without_write_permission(world, capsys, tmp_path, cli_main):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user (root) can write to a read-only folder; covered by out-under-a-file")
        code = cli_main(command(world, "train --dataset npz:{tiny} {T}") + ["--out", str(locked / "exp")])
        assert code == 2
        assert_one_line_error(capsys.readouterr().err, ["locked is not writable by this user",
                                                        "choose a folder you can write to"])
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_a_sample_count_larger_than_the_data_is_clipped_with_a_notice(world, capsys):
    run = Path(_paths(world)["run"])
    assert main(["extract", str(run), "--max-samples", "100000", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    n_test = ckpt.read_meta(run)["n_test"]
    assert f"asked for 100000 samples but the test split of npz:{world / 'data' / 'tiny.npz'} holds {n_test}; " \
           f"using all {n_test}" in out
    folder = Path(out.strip().splitlines()[-1].split("activations: ")[1])
    assert json.loads((folder / "manifest.json").read_text())["n_samples"] == n_test == 51


def test_a_class_with_a_single_sample_is_not_an_error(world, capsys, tmp_path, cli_main):
    p = _paths(world)
    assert cli_main(["train", "--dataset", f"npz:{p['singleton']}", *TINY_RUN, "--out", str(tmp_path / "e")]) == 0
    run = tmp_path / "e" / "al-seed0"
    meta = ckpt.read_meta(run)
    assert meta["num_classes"] == 4 and (meta["n_train"], meta["n_test"]) == (199, 51)  # 17 test samples a class
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 51
    assert main(["extract", str(run), "--split", "train", "--device", "cpu"]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1].split("activations: ")[1])
    assert np.bincount(np.load(folder / "labels.npy")).tolist() == [66, 66, 66, 1]  # the lone sample trains
