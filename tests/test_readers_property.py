"""Property tests (hypothesis) of every reader of a file a user may receive from someone else.

For any bytes (random, a valid file mutated, structured JSON/YAML values), each reader returns a
valid object or raises alviz's one user error (`UserError`); nothing else escapes, nothing hangs
(each example has a time limit) and memory stays bounded (numpy's and Python's allocations are
traced: none above PEAK_BYTES). Readers: config YAML (`--config`, a run's config.yaml, with the
preset sections), meta.json, activation manifests, labels/ids/layer `.npy` files, sweep.json,
user `.npz` data, safetensors files and headers, and the analysis caches (measures JSON, t-SNE `.npy`).
"""

from __future__ import annotations

import json
import shutil
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alviz import checkpoint as ckpt
from alviz import config, npyfile, presets, sweep
from alviz.data import load_raw
from alviz.errors import UserError
from alviz.extract import load_activations

PEAK_BYTES = 64 << 20
SECONDS = 10
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
    max_leaves=30)


def bounded(read):
    """Run `read()`: it returns or raises UserError, within SECONDS and PEAK_BYTES."""
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        read()
    except UserError as e:
        assert str(e) and "\n" not in str(e).strip()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.monotonic() - t0 < SECONDS
    assert peak < PEAK_BYTES, f"{peak} bytes allocated"


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


mutations = st.tuples(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
                      st.none() | st.integers(0, 4000))


@pytest.fixture(scope="module")
def good(tmp_path_factory, cli_main):
    """A trained 2-epoch run with extracted activations, a sweep folder and the files they hold."""
    root = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = (rng.normal(0, 3, (3, 5))[y] + rng.normal(0, 1, (90, 5))).astype(np.float32)
    np.savez(root / "d.npz", x=x, y=y)
    args = ["--dataset", f"npz:{root / 'd.npz'}", "--width", "8", "--epochs", "1", "--batch-size", "30",
            "--device", "cpu", "--quiet", "--threads", "1"]
    assert cli_main(["sweep", "--grid", "depth=1", "--methods", "al", *args, "--out", str(root / "sw")]) == 0
    run = root / "sw" / "depth1" / "al-seed0"
    assert cli_main(["extract", str(run), "--device", "cpu"]) == 0
    return root, run


def _copy_run(good, tmp_path) -> Path:
    _, run = good
    dst = tmp_path / "run"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(run, dst)
    return dst


# --------------------------------------------------------------------------- config YAML

def _read_config(p: Path):
    config.load_config(p)
    presets.load_spec(config_file=p)


@SETTINGS
@given(st.binary(max_size=600))
def test_config_yaml_any_bytes(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_bytes(data)
    bounded(lambda: _read_config(p))


@SETTINGS
@given(st.dictionaries(st.sampled_from(list(config.FIELD_NAMES) + ["sweep", "per_method", "description", "x"]),
                       json_values, max_size=6))
def test_config_yaml_any_mapping(tmp_path, value):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(value))
    bounded(lambda: _read_config(p))


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 9))
def test_config_yaml_alias_trees(tmp_path, depth, fan):
    lines = ["a0: &a0 [1, 2, 3]"]
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    p = tmp_path / "c.yaml"
    p.write_text("\n".join(lines) + "\n")
    bounded(lambda: _read_config(p))


# --------------------------------------------------------------------------- meta.json, sweep.json

@SETTINGS
@given(mutations)
def test_meta_json_mutated(good, tmp_path, m):
    run = _copy_run(good, tmp_path)
    p = run / "meta.json"
    p.write_bytes(mutate(p.read_bytes(), *m))
    bounded(lambda: ckpt.load_run(run))


@SETTINGS
@given(json_values)
def test_meta_json_any_value(good, tmp_path, value):
    run = _copy_run(good, tmp_path)
    (run / "meta.json").write_text(json.dumps(value))
    bounded(lambda: ckpt.read_meta(run))


@SETTINGS
@given(st.sampled_from(["history", "preprocess", "num_classes", "input_shape", "epoch", "class_names",
                        "weights_sha256", "status"]), json_values)
def test_meta_json_any_field(good, tmp_path, key, value):
    run = _copy_run(good, tmp_path)
    meta = json.loads((run / "meta.json").read_text())
    meta[key] = value
    (run / "meta.json").write_text(json.dumps(meta))
    bounded(lambda: ckpt.load_run(run))


@SETTINGS
@given(st.sampled_from(["base", "grid", "methods", "seeds", "per_method", "cells"]), json_values)
def test_sweep_json_any_field(good, tmp_path, key, value):
    root, _ = good
    out = tmp_path / "sw"
    out.mkdir(exist_ok=True)
    data = json.loads((root / "sw" / "sweep.json").read_text())
    data[key] = value
    (out / "sweep.json").write_text(json.dumps(data))
    bounded(lambda: sweep.sweep_from_file(out))


@SETTINGS
@given(mutations)
def test_sweep_json_mutated(good, tmp_path, m):
    root, _ = good
    out = tmp_path / "sw"
    out.mkdir(exist_ok=True)
    (out / "sweep.json").write_bytes(mutate((root / "sw" / "sweep.json").read_bytes(), *m))
    bounded(lambda: sweep.sweep_from_file(out))


# --------------------------------------------------------------------------- activation sets

def _acts(run: Path) -> Path:
    (d,) = [p for p in (run / "activations").iterdir() if p.name.endswith("-test")]
    return d


@SETTINGS
@given(mutations)
def test_manifest_mutated(good, tmp_path, m):
    d = _acts(_copy_run(good, tmp_path))
    p = d / "manifest.json"
    p.write_bytes(mutate(p.read_bytes(), *m))
    bounded(lambda: load_activations(d))


@SETTINGS
@given(st.sampled_from(["layers", "n_samples", "num_classes", "labels_file", "dtype", "class_names"]), json_values)
def test_manifest_any_field(good, tmp_path, key, value):
    d = _acts(_copy_run(good, tmp_path))
    man = json.loads((d / "manifest.json").read_text())
    man[key] = value
    (d / "manifest.json").write_text(json.dumps(man))
    bounded(lambda: load_activations(d))


@SETTINGS
@given(st.sampled_from(["labels.npy", "ids.npy", "block1.npy"]), mutations)
def test_npy_files_of_a_set_mutated(good, tmp_path, name, m):
    d = _acts(_copy_run(good, tmp_path))
    p = d / name
    p.write_bytes(mutate(p.read_bytes(), *m))
    bounded(lambda: load_activations(d))


@SETTINGS
@given(st.binary(max_size=300))
def test_npy_any_bytes(tmp_path, data):
    p = tmp_path / "a.npy"
    p.write_bytes(data)
    bounded(lambda: npyfile.load_npy(p))
    bounded(lambda: npyfile.load_npy(p, mmap=True))


@SETTINGS
@given(st.text(max_size=120), st.integers(0, 2000))
def test_npy_any_header(tmp_path, header, body):
    h = header.encode("utf-8", "replace")[:200]
    p = tmp_path / "a.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + b"\0" * body)
    bounded(lambda: npyfile.load_npy(p))


# --------------------------------------------------------------------------- user data (.npz)

@SETTINGS
@given(mutations)
def test_npz_mutated(good, tmp_path, m):
    root, _ = good
    p = tmp_path / "d.npz"
    p.write_bytes(mutate((root / "d.npz").read_bytes(), *m))
    bounded(lambda: load_raw(f"npz:{p}"))


@SETTINGS
@given(st.binary(max_size=400))
def test_npz_any_bytes(tmp_path, data):
    p = tmp_path / "d.npz"
    p.write_bytes(b"PK\x03\x04" + data)
    bounded(lambda: load_raw(f"npz:{p}"))


@SETTINGS
@given(st.lists(st.integers(-3, 2**63 - 1), min_size=1, max_size=30), st.sampled_from([np.int64, np.uint64, np.float64]))
def test_npz_any_labels(tmp_path, labels, dtype):
    y = np.array(labels).astype(dtype)
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((len(y), 2), np.float32), y=y)
    bounded(lambda: load_raw(f"npz:{p}"))


# --------------------------------------------------------------------------- safetensors

@SETTINGS
@given(mutations)
def test_safetensors_mutated(good, tmp_path, m):
    run = _copy_run(good, tmp_path)
    p = run / "model.safetensors"
    p.write_bytes(mutate(p.read_bytes(), *m))
    bounded(lambda: ckpt.load_run(run))


@SETTINGS
@given(json_values, st.integers(0, 64))
def test_safetensors_any_header(good, tmp_path, header, extra):
    run = _copy_run(good, tmp_path)
    h = json.dumps(header).encode()
    (run / "train_state.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * extra)
    bounded(lambda: ckpt._read_safetensors(run / "train_state.safetensors"))


@SETTINGS
@given(st.integers(0, 2**64 - 1), st.binary(max_size=100))
def test_safetensors_any_length(good, tmp_path, n, rest):
    run = _copy_run(good, tmp_path)
    (run / "model.safetensors").write_bytes(struct.pack("<Q", n) + rest)
    bounded(lambda: ckpt._read_safetensors(run / "model.safetensors"))


def test_optimizer_state_header_any_groups(good, tmp_path):
    run = _copy_run(good, tmp_path)
    model = ckpt.load_run(run).model
    opt = torch.optim.Adam(model.parameters())
    for groups in ("[" * 5000, "{}", "[1]", '[{"params": "x"}]', json.dumps([{"params": [10**30]}])):
        data = ckpt._state_to_safetensors({}, {"format": ckpt.FORMAT, "epoch": "1", "param_groups": groups})
        (run / "train_state.safetensors").write_bytes(data)
        bounded(lambda: ckpt.optimizer_from_file(opt, run / "train_state.safetensors"))
