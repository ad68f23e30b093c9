"""Hostile and broken files: pickles that would run code, truncated or corrupted weights, arrays
and manifests, configs and metadata of the wrong kind, checkpoints of another architecture.

Every file alviz reads gets a pickle whose payload would create a marker file; each is refused
with a one-line error and the marker never appears (`test_the_payload_does_run_when_unpickled`
shows the payload does create it when unpickled). Run files (weights, optimiser state, config,
meta, data, sweep.json) are refused through the CLI with exit 2 (in-process `alviz.cli.main`, the
CLI's entry point). Activation sets and analysis caches are alviz's own derived data: reading
one (`alviz.extract.load_activations`) refuses a bad file with a UserError, and `alviz extract` /
`alviz analyze` say why they do not trust it and compute it again.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from alviz.report import analysis
from alviz.cli import main
from alviz.errors import UserError
from alviz.extract import load_activations


class Payload:
    """Unpickling this creates the file `path` (what a malicious pickle could do, and worse)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def base(tmp_path_factory, cli_main):
    """A trained 3-class AL run (1 epoch) with its test activations extracted, and its data."""
    root = tmp_path_factory.mktemp("base")
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    x = (rng.normal(0, 3, (3, 6))[y] + rng.normal(0, 1, (150, 6))).astype(np.float32)
    np.savez(root / "tiny.npz", x=x, y=y)
    assert cli_main(["train", "--dataset", f"npz:{root / 'tiny.npz'}", "--method", "al", "--width", "8",
                     "--epochs", "1", "--batch-size", "30", "--device", "cpu", "--quiet", "--threads", "1",
                     "--out", str(root / "exp")]) == 0
    run = root / "exp" / "al-seed0"
    assert main(["extract", str(run), "--device", "cpu"]) == 0
    return run


@pytest.fixture
def fresh(base, tmp_path):
    """A copy of the base run in `tmp_path/exp/al-seed0`; the marker path a payload would create."""
    run = tmp_path / "exp" / "al-seed0"
    shutil.copytree(base, run)
    return run, tmp_path / "PAYLOAD-RAN"


def acts_dir(run: Path) -> Path:
    (d,) = [p for p in (run / "activations").iterdir() if p.name.endswith("-test")]
    return d


def cli_error(capsys, args, code=2) -> str:
    """Run the CLI, expect `code` and a one-line `alviz: error`; return that line."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alviz: error") and "Traceback" not in err, err
    return err.strip()


def test_the_payload_does_run_when_unpickled(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()  # so an absent marker below means the payload never ran


# --------------------------------------------------------------------------- pickles in run files

@pytest.mark.parametrize("name", ["model.safetensors", "config.yaml", "meta.json"])
@pytest.mark.parametrize("protocol", [pickle.DEFAULT_PROTOCOL, 0])
def test_pickle_in_a_run_file_is_refused(fresh, capsys, name, protocol):
    run, marker = fresh
    (run / name).write_bytes(pickle.dumps(Payload(marker), protocol=protocol))
    line = cli_error(capsys, ["evaluate", run])
    assert str(run / name) in line
    if protocol:  # a binary pickle is recognised as one; a protocol-0 one is text of the wrong form
        assert "is a Python pickle, which alviz refuses to load" in line
    assert not marker.exists()


def test_pickle_as_optimizer_state_is_refused_on_resume(fresh, base, capsys):
    run, marker = fresh
    (run / "train_state.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    line = cli_error(capsys, ["train", "--dataset", f"npz:{base.parent.parent / 'tiny.npz'}", "--method", "al",
                              "--width", "8", "--epochs", "2", "--batch-size", "30", "--device", "cpu", "--quiet",
                              "--out", run.parent, "--resume"])
    assert "train_state.safetensors: not a valid safetensors file: it is a Python pickle" in line
    assert not marker.exists()


def test_pickle_as_config_file_and_yaml_python_tags_are_refused(tmp_path, capsys):
    marker = tmp_path / "PAYLOAD-RAN"
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(pickle.dumps(Payload(marker)))
    assert "c.yaml: is a Python pickle" in cli_error(capsys, ["train", "--config", cfg, "--out", tmp_path / "o"])
    cfg.write_text(f"!!python/object/apply:builtins.open [{str(marker)!r}, w]\n")
    assert "c.yaml: not a valid YAML file" in cli_error(capsys, ["train", "--config", cfg, "--out", tmp_path / "o"])
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_pickle_as_npz_data_is_refused(tmp_path, capsys):
    marker = tmp_path / "PAYLOAD-RAN"
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    assert "is a Python pickle, which alviz refuses to load" in cli_error(
        capsys, ["train", "--dataset", f"npz:{raw}", "--out", tmp_path / "o"])
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([Payload(marker)] * 4, dtype=object), y=np.arange(4))
    assert "holds pickled Python objects, which alviz refuses to load" in cli_error(
        capsys, ["train", "--dataset", f"npz:{obj}", "--out", tmp_path / "o"])
    assert not marker.exists()


def test_pickle_as_sweep_file_is_refused(tmp_path, capsys):
    marker = tmp_path / "PAYLOAD-RAN"
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_bytes(pickle.dumps(Payload(marker)))
    assert "sweep.json: is a Python pickle" in cli_error(capsys, ["sweep", "--resume", "--out", tmp_path / "sw"])
    assert not marker.exists()


# --------------------------------------------------------------------------- activation sets

@pytest.mark.parametrize("name, why", [
    ("manifest.json", "is a Python pickle, which alviz refuses to load"),
    ("labels.npy", "labels.npy holds pickled Python objects, which alviz refuses to load"),
    ("block1.npy", "block1.npy holds pickled Python objects, which alviz refuses to load"),
    ("object-array", "block1.npy holds pickled Python objects, which alviz refuses to load"),
])
def test_pickle_in_an_activation_set_is_refused_and_extracted_again(fresh, capsys, name, why):
    run, marker = fresh
    folder = acts_dir(run)
    if name == "object-array":  # a real .npy file whose array holds objects
        np.save(folder / "block1.npy", np.array([Payload(marker)] * 3, dtype=object), allow_pickle=True)
    else:
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserError, match=why):
        load_activations(folder)
    capsys.readouterr()
    assert main(["extract", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "not a valid activation set" in out and why in out
    assert load_activations(folder).layers["block1"].dtype == np.float32  # replaced by a whole set
    assert not marker.exists()


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


@pytest.mark.parametrize("breakage, why", [
    ("truncated-npy", "block1.npy is not a readable .npy file"),
    ("truncated-manifest", "manifest.json: not valid JSON"),
    ("labels-wrong-length", "labels must be"),
    ("path-outside", "is not inside the activation folder"),
    ("absolute-path", "is not inside the activation folder"),
    ("shape-lies", "layer 'block1' should be float32"),
])
def test_broken_activation_set_is_refused(fresh, capsys, breakage, why):
    run, _ = fresh
    folder = acts_dir(run)
    outside = run / "config.yaml"
    before = outside.read_bytes()
    m = _manifest(folder)
    if breakage == "truncated-npy":
        data = (folder / "block1.npy").read_bytes()
        (folder / "block1.npy").write_bytes(data[:len(data) // 2])
    elif breakage == "truncated-manifest":
        text = (folder / "manifest.json").read_text()
        (folder / "manifest.json").write_text(text[:len(text) // 2])
    elif breakage == "labels-wrong-length":
        np.save(folder / "labels.npy", np.zeros(3, np.int64))
    else:
        for e in m["layers"]:
            if e["name"] == "block1":
                if breakage == "path-outside":
                    e["file"] = "../../config.yaml"
                elif breakage == "absolute-path":
                    e["file"] = str(outside)
                else:
                    e["shape"] = [e["shape"][0], e["shape"][1] + 1]
        (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match=why):
        load_activations(folder)
    capsys.readouterr()
    assert main(["extract", str(run), "--device", "cpu"]) == 0  # extracted again, nothing outside touched
    assert "not a valid activation set" in capsys.readouterr().out
    assert load_activations(folder).layers["block1"].shape == tuple(_manifest(folder)["layers"][0]["shape"])
    assert outside.read_bytes() == before


# --------------------------------------------------------------------------- broken run files

def _edit_yaml(path, **changes):
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**data, **changes}))


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **changes}))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's data, the header stays valid
    path.write_bytes(bytes(data))


BROKEN = {
    "weights-truncated": (lambda r: _truncate(r / "model.safetensors"),
                          "model.safetensors: not a valid safetensors file"),
    "weights-empty": (lambda r: (r / "model.safetensors").write_bytes(b""),
                      "model.safetensors: not a valid safetensors file"),
    "weights-bit-flipped": (lambda r: _flip(r / "model.safetensors"),
                            "model.safetensors: corrupted: its tensors differ from the sha256"),
    "weights-a-torch-save-zip": (lambda r: torch.save({"w": torch.zeros(2)}, r / "model.safetensors"),
                                 "is a zip archive (a torch.save file holds pickles)"),
    "config-truncated": (lambda r: (r / "config.yaml").write_text("arch: [mlp\n"),
                         "config.yaml: not a valid YAML file"),
    "config-unknown-arch": (lambda r: _edit_yaml(r / "config.yaml", arch="transformer"),
                            "config.yaml: unknown arch 'transformer'; allowed: mlp"),
    "config-wrong-type": (lambda r: _edit_yaml(r / "config.yaml", width="wide"),
                          "config.yaml: width must be of type"),
    "config-says-another-width": (lambda r: _edit_yaml(r / "config.yaml", width=16),
                                  "weights do not match the architecture in config.yaml"),
    "config-says-bp": (lambda r: _edit_yaml(r / "config.yaml", method="bp"),
                       "weights do not match the architecture in config.yaml"),
    "meta-truncated": (lambda r: _truncate(r / "meta.json"), "meta.json: not valid JSON"),
    "meta-bad-preprocess": (lambda r: _edit_json(r / "meta.json", preprocess={}),
                            "meta.json: preprocess.mean is None; allowed: a list of 6 numbers"),
    "meta-bad-classes": (lambda r: _edit_json(r / "meta.json", num_classes=-1),
                         "meta.json: num_classes is -1; allowed: a positive integer"),
    "meta-bad-shape": (lambda r: _edit_json(r / "meta.json", input_shape="abc"),
                       "meta.json: input_shape is 'abc'; allowed: a list of 1 to 3 positive integers"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_run_file_is_a_clear_error(fresh, capsys, case):
    run, _ = fresh
    damage, why = BROKEN[case]
    damage(run)
    assert why in cli_error(capsys, ["evaluate", run])


def test_weights_of_another_architecture_are_refused(fresh, base, capsys, tmp_path):
    run, _ = fresh
    assert main(["train", "--dataset", f"npz:{base.parent.parent / 'tiny.npz'}", "--method", "bp", "--width", "8",
                 "--epochs", "1", "--batch-size", "30", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "bp")]) == 0
    shutil.copy(tmp_path / "bp" / "bp-seed0" / "model.safetensors", run / "model.safetensors")
    line = cli_error(capsys, ["evaluate", run])
    assert "weights do not match the architecture in config.yaml (missing" in line


def test_truncated_optimizer_state_is_a_clear_error_on_resume(fresh, base, capsys):
    run, _ = fresh
    _truncate(run / "train_state.safetensors")
    line = cli_error(capsys, ["train", "--dataset", f"npz:{base.parent.parent / 'tiny.npz'}", "--method", "al",
                              "--width", "8", "--epochs", "2", "--batch-size", "30", "--device", "cpu", "--quiet",
                              "--out", run.parent, "--resume"])
    assert "train_state.safetensors: not a valid safetensors file" in line


# --------------------------------------------------------------------------- analysis caches

def test_pickles_in_analysis_caches_are_never_loaded(fresh, capsys, monkeypatch, tmp_path):
    run, marker = fresh
    monkeypatch.setattr(analysis, "experiment_figures", lambda *a, **k: {})  # figures play no part here
    args = ["analyze", str(run.parent), "--tsne-samples", "20", "--train-samples", "60", "--device", "cpu",
            "--out", str(tmp_path / "reports")]
    assert main(args) == 0
    cache = tmp_path / "reports" / "exp" / ".cache"
    tsne = sorted((cache / "tsne").glob("*.npy"))
    measures = sorted((cache / "metrics").rglob("*.json"))
    assert tsne and measures
    csv_before = (tmp_path / "reports" / "exp" / "metrics.csv").read_bytes()
    for p in tsne + measures:
        p.write_bytes(pickle.dumps(Payload(marker)))
    assert main(args) == 0
    assert not marker.exists()
    for p in tsne:  # computed again and stored as plain arrays
        assert np.load(p, allow_pickle=False).shape == (20, 2)
    for p in measures:
        assert isinstance(json.loads(p.read_text()), dict)
    assert (tmp_path / "reports" / "exp" / "metrics.csv").read_bytes() == csv_before
