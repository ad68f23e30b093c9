"""The thirteen classes of issue 18 (hostile inputs and faults, second round), one or more known
cases each: every one ends as a one-line `alviz: error: ...` (exit 2), a warning, or the right
answer; never a traceback, a hang, a silently wrong result or a write outside alviz's own files.
Property tests of the readers: tests/test_readers_property.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
import yaml

from alviz import checkpoint as ckpt
from alviz import locks
from alviz.cli import main
from alviz.config import from_dict
from alviz.errors import UserError
from alviz.extract import load_activations
from test_hostile_files import cli_error as err_line  # run the CLI, expect one `alviz: error` line

TINY = ["--method", "al", "--width", "8", "--epochs", "1", "--batch-size", "30", "--device", "cpu", "--quiet",
        "--threads", "1"]


def _blobs(n=90, c=3, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    return (rng.normal(0, 3, (c, d))[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def world(tmp_path_factory, cli_main):
    w = tmp_path_factory.mktemp("r2")
    x, y = _blobs()
    np.savez(w / "d.npz", x=x, y=y)
    assert cli_main(["train", "--dataset", f"npz:{w / 'd.npz'}", *TINY, "--out", str(w / "exp")]) == 0
    assert cli_main(["train", "--dataset", f"npz:{w / 'd.npz'}", *TINY, "--seed", "1", "--out", str(w / "exp")]) == 0
    return w


@pytest.fixture
def run(world, tmp_path):
    dst = tmp_path / "exp" / "al-seed0"
    shutil.copytree(world / "exp" / "al-seed0", dst)
    return dst


@pytest.fixture
def no_figures(monkeypatch):
    """Figures play no part in these analyses (and take most of their time)."""
    monkeypatch.setattr("alviz.report.analysis.experiment_figures", lambda *a, **k: {})


def _nest(n: int) -> str:
    return "[" * n + "]" * n


# --------------------------------------------------------------------------- 1. unbounded nesting

@pytest.mark.parametrize("target", ["config", "run-config", "meta", "manifest", "sweep"])
def test_1_nesting_100000_deep_is_refused(run, tmp_path, capsys, target):
    deep = _nest(100_000)
    if target == "config":
        (tmp_path / "c.yaml").write_text(f"width: {deep}\n")
        line = err_line(capsys, ["train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "o"])
    elif target == "run-config":
        (run / "config.yaml").write_text(f"width: {deep}\n")
        line = err_line(capsys, ["evaluate", run])
    elif target == "meta":
        (run / "meta.json").write_text(deep)
        line = err_line(capsys, ["evaluate", run])
    elif target == "manifest":
        assert main(["extract", str(run), "--device", "cpu"]) == 0
        (d,) = (run / "activations").iterdir()
        (d / "manifest.json").write_text(deep)
        with pytest.raises(UserError, match="nested"):
            load_activations(d)
        return
    else:
        (tmp_path / "sw").mkdir()
        (tmp_path / "sw" / "sweep.json").write_text(deep)
        line = err_line(capsys, ["sweep", "--resume", "--out", tmp_path / "sw"])
    assert "nested" in line and "refused" in line


def test_1_measures_cache_nested_deep_is_measured_again(run, tmp_path, capsys, no_figures):
    args = ["analyze", str(run.parent), "--no-tsne", "--train-samples", "30", "--device", "cpu",
            "--out", str(tmp_path / "rep")]
    assert main(args) == 0
    caches = sorted((tmp_path / "rep" / "exp" / ".cache" / "metrics").rglob("*.json"))
    assert caches
    for p in caches:
        p.write_text(_nest(100_000))
    assert main(args) == 0
    assert all(isinstance(json.loads(p.read_text()), dict) for p in caches)


# --------------------------------------------------------------------------- 2. size lies

def _lying_npy(shape=(10**7, 10**6)) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


def test_2_npz_member_claiming_terabytes_is_refused(tmp_path, capsys):
    p = tmp_path / "lie.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", _lying_npy())
        z.writestr("y.npy", _lying_npy((4,)))
    assert p.stat().st_size < 4000
    line = err_line(capsys, ["train", "--dataset", f"npz:{p}", "--out", tmp_path / "o"])
    assert "header claims shape" in line and "truncated or altered" in line


@pytest.mark.parametrize("name", ["labels.npy", "block1.npy"])
def test_2_npy_claiming_terabytes_in_a_set_is_refused(run, name):
    assert main(["extract", str(run), "--device", "cpu"]) == 0
    (d,) = (run / "activations").iterdir()
    (d / name).write_bytes(_lying_npy())
    with pytest.raises(UserError, match="header claims shape"):
        load_activations(d)


def test_2_tsne_cache_claiming_terabytes_is_computed_again(run, tmp_path, no_figures):
    args = ["analyze", str(run.parent), "--tsne-samples", "20", "--train-samples", "30", "--device", "cpu",
            "--out", str(tmp_path / "rep")]
    assert main(args) == 0
    tsne = sorted((tmp_path / "rep" / "exp" / ".cache" / "tsne").glob("*.npy"))
    assert tsne
    for p in tsne:
        p.write_bytes(_lying_npy())
    assert main(args) == 0
    assert all(np.load(p).shape == (18, 2) for p in tsne)  # the 18 held-out samples


@pytest.mark.parametrize("label", [2**62, 1_000_000, 10_000])
def test_2_a_huge_class_label_is_refused(tmp_path, capsys, label):
    x, y = _blobs()
    y = y.astype(np.int64)
    y[7] = label
    np.savez(tmp_path / "big.npz", x=x, y=y)
    line = err_line(capsys, ["train", "--dataset", f"npz:{tmp_path / 'big.npz'}", "--out", tmp_path / "o"])
    assert f"received a label {label}" in line and "at most 10000" in line


# --------------------------------------------------------------------------- 3. resource exhaustion

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


def test_3_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    (tmp_path / "bomb.yaml").write_text(BOMB)
    assert len(BOMB) < 700
    t0 = time.monotonic()
    line = err_line(capsys, ["train", "--config", tmp_path / "bomb.yaml", "--out", tmp_path / "o"])
    assert time.monotonic() - t0 < 5
    assert "expands to more than" in line and "aliases" in line


def test_3_small_aliases_still_work(tmp_path):
    (tmp_path / "ok.yaml").write_text("milestones: &m [0.5, 0.75]\nper_method: {bp: {milestones: *m}}\n")
    from alviz.presets import load_spec

    assert load_spec(config_file=tmp_path / "ok.yaml").for_method("bp").milestones == [0.5, 0.75]


def test_3_weights_linked_to_dev_zero_are_refused(run, capsys):
    (run / "model.safetensors").unlink()
    (run / "model.safetensors").symlink_to("/dev/zero")
    line = err_line(capsys, ["evaluate", run])
    assert "is a character device, not a regular file" in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["model.safetensors", "meta.json", "config.yaml"])
def test_3_a_fifo_in_a_run_does_not_hang(run, capsys, name):
    (run / name).unlink()
    os.mkfifo(run / name)
    line = err_line(capsys, ["evaluate", run])
    assert "FIFO" in line or "not an alviz run directory" in line


@pytest.mark.timeout(60)
def test_3_a_fifo_as_config_or_data_does_not_hang(tmp_path, capsys):
    os.mkfifo(tmp_path / "c.yaml")
    assert "is a FIFO (named pipe), not a regular file" in err_line(
        capsys, ["train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "o"])
    os.mkfifo(tmp_path / "d.npz")
    assert "is a FIFO (named pipe), not a regular file" in err_line(
        capsys, ["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out", tmp_path / "o"])


def test_3_an_error_never_formats_an_unbounded_value(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("width: [" + ", ".join(["1"] * 50_000) + "]\n")
    line = err_line(capsys, ["train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "o"])
    assert "width must be of type" in line and len(line) < 400


# --------------------------------------------------------------------------- 4. too few samples

def test_4_analyze_with_two_samples_and_three_training_samples(run, tmp_path, capsys, no_figures):
    base = ["analyze", str(run.parent), "--no-tsne", "--device", "cpu", "--out", str(tmp_path / "rep")]
    assert main(base + ["--train-samples", "3"]) == 0
    code = main(base + ["--max-samples", "2"])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        assert err.startswith("alviz: error") and "class" in err


def test_4_a_single_class_test_split_is_a_clear_error(tmp_path, capsys, cli_main, no_figures):
    x, y = _blobs()
    xt, yt = x[:10], np.zeros(10, np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt, y_test=yt)
    assert cli_main(["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", *TINY, "--out", str(tmp_path / "e")]) == 0
    line = err_line(capsys, ["analyze", tmp_path / "e", "--no-tsne", "--device", "cpu", "--out", tmp_path / "rep"])
    assert "hold 1 class(es)" in line and "2 or more classes" in line


# --------------------------------------------------------------------------- 5. seeds out of range

@pytest.mark.parametrize("args", [["--seed", "99999999999999999999"], ["--seeds", "0,99999999999999999999"],
                                  ["--seed", str(2**32)]])
def test_5_seeds_beyond_the_generators_are_refused_before_training(world, tmp_path, capsys, args):
    out = tmp_path / "o"
    line = err_line(capsys, ["train", "--dataset", f"npz:{world / 'd.npz'}", *TINY, *args, "--out", out])
    assert "between 0 and 4294967295" in line or "0..4294967295" in line
    assert not out.exists()  # nothing trained first


def test_5_analyze_seed_out_of_range(world, tmp_path, capsys):
    line = err_line(capsys, ["analyze", world / "exp", "--seed", str(2**40), "--out", tmp_path / "rep"])
    assert "seed must be a non-negative integer (at most 4294967295)" in line


# --------------------------------------------------------------------------- 6. file-system errors

def test_6_a_name_too_long_is_one_line(world, tmp_path, capsys):
    line = err_line(capsys, ["train", "--dataset", f"npz:{world / 'd.npz'}", *TINY,
                             "--out", tmp_path / ("x" * 300) / "y"])
    assert "File name too long" in line and "x" * 50 in line


def test_6_efbig_from_the_activation_writer_names_the_file(run, capsys):
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600)); from alviz.cli import main; "
            f"sys.exit(main(['extract', {str(run)!r}, '--device', 'cpu']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "File too large" in proc.stderr and str(run) in proc.stderr
    assert not [p for p in (run / "activations").rglob("*") if p.is_file()]


def test_6_every_oserror_is_one_line(monkeypatch, capsys):
    import errno


    def boom(*a, **k):
        raise OSError(errno.EIO, "Input/output error", "/some/file")

    monkeypatch.setattr("alviz.presets.load_spec", boom)
    line = err_line(capsys, ["train"])
    assert line == "alviz: error: cannot use /some/file: Input/output error"


# --------------------------------------------------------------------------- 7. files that type-check but are wrong

def _edit_json(path, **kv):
    d = json.loads(path.read_text())
    d.update(kv)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("change, why", [
    ({"history": [1, 2]}, "history[0] is 1; allowed: a mapping of names to numbers"),
    ({"class_names": [1, 2, 3]}, "class_names"),
    ({"status": "done"}, "status is 'done'"),
])
def test_7_meta_json_structure(run, capsys, change, why):
    _edit_json(run / "meta.json", **change)
    assert why in err_line(capsys, ["evaluate", run])


@pytest.mark.parametrize("key, value, why", [
    ("std", 0.0, "preprocess.std[0] is 0.0; allowed"),
    ("mean", float("nan"), "preprocess.mean[0] is nan"),
    ("std", float("inf"), "preprocess.std[0] is inf"),
])
def test_7_preprocessing_statistics_must_be_usable(run, capsys, key, value, why):
    meta = json.loads((run / "meta.json").read_text())
    meta["preprocess"][key][0] = value
    (run / "meta.json").write_text(json.dumps(meta))
    assert why in err_line(capsys, ["evaluate", run])


def test_7_manifest_num_classes_must_be_a_count(run):
    assert main(["extract", str(run), "--device", "cpu"]) == 0
    (d,) = (run / "activations").iterdir()
    _edit_json(d / "manifest.json", num_classes="ten")
    with pytest.raises(UserError, match="num_classes is 'ten'; allowed: a positive integer"):
        load_activations(d)


def test_7_fortran_order_npy_is_refused_and_extracted_again(run, capsys):
    assert main(["extract", str(run), "--device", "cpu"]) == 0
    (d,) = (run / "activations").iterdir()
    a = np.load(d / "block1.npy")
    np.save(d / "block1.npy", np.asfortranarray(a))
    with pytest.raises(UserError, match="Fortran order"):
        load_activations(d)
    capsys.readouterr()
    assert main(["extract", str(run), "--device", "cpu"]) == 0
    assert "Fortran order" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(load_activations(d).layers["block1"]), a)


def test_7_user_npz_in_fortran_order_is_read_correctly(tmp_path):
    from alviz.data import load_raw

    x, y = _blobs()
    np.savez(tmp_path / "f.npz", x=np.asfortranarray(x), y=y)
    raw = load_raw(f"npz:{tmp_path / 'f.npz'}")
    np.testing.assert_array_equal(np.concatenate([raw.x_train, raw.x_test])[np.argsort(
        np.concatenate([raw.ids_train, raw.ids_test]))], x)


# --------------------------------------------------------------------------- 8. config values

@pytest.mark.parametrize("key, value, allowed", [
    ("weight_decay", -0.1, "weight_decay must be a number >= 0; received -0.1"),
    ("gamma", -0.1, "gamma must be a positive number"),
    ("gamma", float("nan"), "gamma must be a positive number"),
    ("lr_gh_factor", -2.0, "lr_gh_factor must be a positive number"),
    ("lr_gh_factor", 0.0, "lr_gh_factor must be a positive number"),
    ("weight_decay", float("inf"), "weight_decay must be a number >= 0; received inf"),
    ("lr", 1e39, "beyond float32"),
])
def test_8_config_values_are_validated(tmp_path, capsys, key, value, allowed):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({key: value}))
    line = err_line(capsys, ["train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "o"])
    assert allowed in line and str(tmp_path / "c.yaml") in line
    with pytest.raises(UserError, match=key):
        from_dict({key: value})


# --------------------------------------------------------------------------- 9. writing where it must not

def test_9_compare_csv_never_overwrites_a_run_file(world, tmp_path, capsys):
    exp = tmp_path / "exp"
    shutil.copytree(world / "exp", exp)
    before = (exp / "al-seed0" / "meta.json").read_bytes()
    line = err_line(capsys, ["compare", exp / "al-seed0", exp / "al-seed1", "--csv", exp / "al-seed0" / "meta.json",
                             "--device", "cpu", "--out", tmp_path / "rep"])
    assert "is not a comparison CSV written by alviz; alviz will not overwrite it" in line
    assert (exp / "al-seed0" / "meta.json").read_bytes() == before


def test_9_staging_link_is_refused_and_nothing_moves(run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"someone else's")
    (other / "COMPLETE").write_text("ok\n")
    (run / ".staging").symlink_to(other)
    weights = (run / "model.safetensors").read_bytes()
    line = err_line(capsys, ["evaluate", run])
    assert ".staging is a symbolic link" in line
    assert (run / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() == b"someone else's"


def test_9_activations_link_is_refused(run, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "activations").symlink_to(outside)
    line = err_line(capsys, ["extract", run, "--device", "cpu"])
    assert "activations is a symbolic link" in line
    assert list(outside.iterdir()) == []


def test_9_run_files_linked_out_of_the_run_are_refused(run, tmp_path, capsys):
    shutil.copy(run / "meta.json", tmp_path / "meta.json")
    (run / "meta.json").unlink()
    (run / "meta.json").symlink_to(tmp_path / "meta.json")
    assert "outside" in err_line(capsys, ["evaluate", run])


# --------------------------------------------------------------------------- 10. concurrency

def test_10_a_second_writer_names_the_first(world, tmp_path, capsys):
    out = tmp_path / "e"
    (out / "al-seed0").mkdir(parents=True)
    code = ("import sys, time; from alviz import locks\n"
            f"with locks.run_writer({str(out / 'al-seed0')!r}):\n"
            "    print('held', flush=True); sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = err_line(capsys, ["train", "--dataset", f"npz:{world / 'd.npz'}", *TINY, "--out", out])
        assert f"run {out / 'al-seed0'} is being trained by process {holder.pid}" in line
    finally:
        holder.communicate("\n", timeout=60)
    assert main(["train", "--dataset", f"npz:{world / 'd.npz'}", *TINY, "--out", str(out)]) == 0


def test_10_the_writer_lock_is_reentrant_and_leaves_nothing(tmp_path):
    run = tmp_path / "r"
    with locks.run_writer(run):
        with locks.run_writer(run):
            assert (run / locks.WRITER_LOCK).read_text().strip() == str(os.getpid())
    assert not run.exists()  # created here and nothing saved: removed again


def test_10_analysis_holds_the_run_lock_until_it_has_measured(run, tmp_path, monkeypatch, no_figures):
    """While one analysis measures, another extraction of the same run (other settings) waits."""
    from alviz.extract.runs import run_lock
    from alviz.report import measure as measure_mod

    seen = {}
    real = measure_mod.measure_run

    def spy(info, acts, *a, **k):
        probe = subprocess.run([sys.executable, "-c",
                                "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY);\n"
                                "try:\n fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
                                "except BlockingIOError:\n print('held')", str(info.path)],
                               capture_output=True, text=True, timeout=60)
        seen[info.name] = probe.stdout.strip()
        return real(info, acts, *a, **k)

    monkeypatch.setattr("alviz.report.analysis.measure_run", spy)
    assert main(["analyze", str(run.parent), "--no-tsne", "--train-samples", "30", "--device", "cpu",
                 "--out", str(tmp_path / "rep")]) == 0
    assert seen and set(seen.values()) == {"held"}
    with run_lock(run):  # and released afterwards
        pass


# --------------------------------------------------------------------------- 11. silently wrong answers

def test_11_compare_of_runs_on_different_data_is_refused(world, tmp_path, capsys, cli_main):
    x, y = _blobs(seed=5)
    np.savez(tmp_path / "other.npz", x=x, y=y)
    assert cli_main(["train", "--dataset", f"npz:{tmp_path / 'other.npz'}", *TINY, "--out", str(tmp_path / "o")]) == 0
    line = err_line(capsys, ["compare", world / "exp" / "al-seed0", tmp_path / "o" / "al-seed0", "--device", "cpu",
                             "--out", tmp_path / "rep"])
    assert "were trained and tested on different data" in line


def test_11_evaluate_refuses_nan_weights(run, capsys):
    r = ckpt.load_run(run)
    with torch.no_grad():
        next(r.model.parameters()).fill_(float("nan"))
    ckpt.save_checkpoint(run, r.model, None, r.config, {k: v for k, v in r.meta.items() if k != "history"},
                         r.meta["history"])
    line = err_line(capsys, ["evaluate", run])
    assert "holds NaN or inf values (the run diverged)" in line


def test_11_weights_of_another_seed_are_refused(world, run, capsys):
    shutil.copy(world / "exp" / "al-seed1" / "model.safetensors", run / "model.safetensors")
    line = err_line(capsys, ["evaluate", run])
    assert "is not the file this run saved" in line and "weights_sha256" in line


def test_11_resume_with_more_epochs_equals_a_fresh_run(world, tmp_path, cli_main):
    data = ["--dataset", f"npz:{world / 'd.npz'}", "--method", "al", "--width", "8", "--batch-size", "30",
            "--device", "cpu", "--quiet", "--threads", "1"]
    assert cli_main(["train", *data, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert cli_main(["train", *data, "--epochs", "4", "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert cli_main(["train", *data, "--epochs", "4", "--out", str(tmp_path / "b")]) == 0
    ha = ckpt.read_meta(tmp_path / "a" / "al-seed0")["history"]
    hb = ckpt.read_meta(tmp_path / "b" / "al-seed0")["history"]
    assert [r["lr"] for r in ha] == [r["lr"] for r in hb] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])
    wa = ckpt.load_run(tmp_path / "a" / "al-seed0").model.state_dict()
    wb = ckpt.load_run(tmp_path / "b" / "al-seed0").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_11_data_changed_after_training_is_reported(world, tmp_path, capsys, cli_main):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert cli_main(["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", *TINY, "--out", str(tmp_path / "e")]) == 0
    run = tmp_path / "e" / "al-seed0"
    assert len(ckpt.read_meta(run)["data_sha256"]) == 64
    np.savez(tmp_path / "d.npz", x=x[::-1].copy(), y=y)
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    err = capsys.readouterr().err
    assert "warning: npz:" in err and "not the data this run was trained on" in err
    assert main(["extract", str(run), "--device", "cpu"]) == 0
    assert "not the data this run was trained on" in capsys.readouterr().out


@pytest.mark.parametrize("arrays, why", [
    (lambda x, y: dict(x=x[:6], y=np.arange(6)), "its test split is empty"),
    (lambda x, y: dict(x=np.zeros((len(y), 0), np.float32), y=y), "samples with no features"),
    (lambda x, y: dict(x=x, y=np.where(np.arange(len(y)) == 3, 1_000_000, y)), "received a label 1000000"),
    (lambda x, y: dict(x=x.astype(np.float64) * 1e300, y=y), "beyond float32's range"),
])
def test_11_and_12_degenerate_data_is_refused(tmp_path, capsys, arrays, why):
    x, y = _blobs()
    np.savez(tmp_path / "d.npz", **arrays(x, y))
    assert why in err_line(capsys, ["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", *TINY, "--out", tmp_path / "o"])


def test_11_a_constant_layer_is_reported(tmp_path):
    from alviz.report.measure import measure_run

    class Info:
        experiment, name, method, seed, path = "e", "al-seed0", "al", 0, tmp_path

    class Set:
        pred = conf = None  # an activation set written without predictions

        def __init__(self, n):
            self.labels = np.arange(n) % 3
            self.layers = {"block1": np.ones((n, 4), np.float32)}
            self.manifest = {"layers": [{"name": "block1", "role": "block", "position": 1, "match": "b1"}]}

    class Acts:
        test, train = Set(30), Set(30)

        def layer(self, which, name):
            return getattr(self, which).layers[name]

    from alviz.report.options import Options

    lines = []
    rows = measure_run(Info(), Acts(), Options(), tmp_path / "cache", lines.append)
    assert any(line.startswith("warning: al-seed0 layer block1:") and "constant layer" in line for line in lines)
    assert np.isnan([r["value"] for r in rows if r["measure"] == "ratio"][0])


# --------------------------------------------------------------------------- 12. wrong error kind

def test_12_a_finite_float64_beyond_float32_is_a_user_error(tmp_path, capsys):
    x, y = _blobs()
    x = x.astype(np.float64)
    x[4, 2] = 1e39
    np.savez(tmp_path / "d.npz", x=x, y=y)
    line = err_line(capsys, ["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", *TINY, "--out", tmp_path / "o"])
    assert "beyond float32's range" in line and "sample 4" in line


# --------------------------------------------------------------------------- 13. surprising flags

def test_13_duplicate_seeds_are_refused(world, tmp_path, capsys):
    line = err_line(capsys, ["train", "--dataset", f"npz:{world / 'd.npz'}", *TINY, "--seeds", "0,0",
                             "--out", tmp_path / "o"])
    assert "0 more than once" in line and not (tmp_path / "o").exists()


@pytest.mark.parametrize("cmd", ["train", "sweep"])
def test_13_resume_and_force_together_are_refused(world, tmp_path, capsys, cmd):
    extra = ["--grid", "depth=1"] if cmd == "sweep" else []
    line = err_line(capsys, [cmd, "--dataset", f"npz:{world / 'd.npz'}", *extra, "--resume", "--force",
                             "--out", tmp_path / "o"])
    assert "--resume continues runs and --force replaces them; received both, choose one" in line
