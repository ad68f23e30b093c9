"""Tests for alviz.extract: layer catalogue, hooks (capture), extract_run / load_activations, CLI."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import alviz
from alviz import extract as X
from alviz.extract import writer as XW
from alviz.cli import main
from alviz.config import TrainConfig
from alviz.data import load_dataset
from alviz.errors import UserError
from alviz.models import create_model


# ------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs (seconds): AL and BP MLPs on blobs, an AL CNN on digits."""
    from alviz.train import train

    root = tmp_path_factory.mktemp("runs")
    base = dict(dataset="blobs", epochs=1, depth=2, width=8, batch_size=64, schedule="none", device="cpu")
    for m in ("al", "bp"):
        train(TrainConfig(method=m, **base), root / m, progress=False, log=lambda *a: None)
    train(TrainConfig(method="al", arch="cnn", dataset="digits", epochs=1, depth=2, width=8, bridge_pool=2,
                      batch_size=256, schedule="none", device="cpu"), root / "cnn", progress=False,
          log=lambda *a: None)
    return root


@pytest.fixture
def fresh(runs, tmp_path):
    """A private copy of a trained run, so each test starts without activations."""
    def copy(name):
        dst = tmp_path / name
        shutil.copytree(runs / name, dst, ignore=shutil.ignore_patterns("activations"))
        return dst
    return copy


class Log(list):
    def __call__(self, msg):
        self.append(str(msg))

    def text(self):
        return "\n".join(self)


def _tiny(method, depth=3, width=4, in_dim=5, classes=3, **kw):
    cfg = TrainConfig(method=method, arch="mlp", depth=depth, width=width, **kw)
    torch.manual_seed(0)
    return create_model(cfg, (in_dim,), classes).eval()


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------------- catalogue

def test_catalogue_roles_positions_and_al_bp_alignment():
    L = 3
    al, bp = X.layer_catalogue(_tiny("al", L)), X.layer_catalogue(_tiny("bp", L))
    assert [e.name for e in al] == ["block1", "bridge1", "block2", "bridge2", "block3", "bridge3",
                                    "decoder3", "decoder2", "decoder1"]
    assert [e.name for e in bp] == ["block1", "block2", "block3", "head1", "head2", "head3", "head4"]
    a, b = {e.name: e for e in al}, {e.name: e for e in bp}
    assert [a[f"bridge{k}"].position for k in (1, 2, 3)] == [1.5, 2.5, 4]
    assert not a["bridge1"].on_path and not a["bridge2"].on_path and a["bridge3"].on_path
    assert {e.role for e in al} == {"encoder", "bridge", "decoder"} and {e.role for e in bp} == {"encoder", "head"}
    for k in range(1, L + 1):
        assert a[f"block{k}"].match == b[f"block{k}"].match and a[f"block{k}"].position == k
    assert b["head1"].match == a[f"bridge{L}"].match and b["head1"].position == L + 1
    for j in range(2, L + 2):
        assert b[f"head{j}"].match == a[f"decoder{L - j + 2}"].match and b[f"head{j}"].position == L + j
    # the modules are the ones the names promise
    m = _tiny("al", L)
    cat = {e.name: e.module for e in X.layer_catalogue(m)}
    assert cat["decoder1"] is m.decoders[0] and cat["bridge2"] is m.bridges[1] and cat["block3"] is m.blocks[2]
    off_path = {e.match for e in al if not e.on_path}
    assert not off_path & {e.match for e in bp}  # early exits join nothing on BP's side


# ------------------------------------------------------------------------------- capture

def test_capture_hand_set_net_exact_values():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
        net[0].bias.copy_(torch.tensor([0.0, 1.0]))
        net[2].weight.copy_(torch.tensor([[3.0, -1.0]]))
        net[2].bias.copy_(torch.tensor([0.5]))
    x = torch.tensor([[3.0, 1.0], [1.0, 4.0]])
    with alviz.capture(net, ["0", "1", "2"]) as acts:
        net(x)
    np.testing.assert_array_equal(acts["0"].numpy(), [[2, 7], [-3, 3]])
    np.testing.assert_array_equal(acts["1"].numpy(), [[2, 7], [0, 3]])
    np.testing.assert_array_equal(acts["2"].numpy(), [[-0.5], [-2.5]])
    assert _no_hooks(net)


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_capture_al_hand_set_weights_inference_path_and_early_bridge():
    """AL with L=2, n=2, C=2 and hand-set weights: blocks exactly, bridges/decoders against a
    float64 numpy reimplementation; decoders are those of h_1(h_2(b_2(s_2))), not of an exit."""
    m = _tiny("al", depth=2, width=2, in_dim=2, classes=2, activation="relu")
    W = {}
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (0.5 + 0.25 * (i % 3)))
        m.blocks[0][1].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.0]]))
        m.blocks[0][1].bias.copy_(torch.tensor([0.0, 1.0]))
        m.blocks[1][0].weight.copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
        m.blocks[1][0].bias.copy_(torch.tensor([0.0, 0.0]))
    for name, p in m.named_parameters():
        W[name] = p.detach().double().numpy()
    x = torch.tensor([[3.0, 1.0], [1.0, 4.0]])
    with alviz.capture(m) as acts:
        m(x)
    s1 = np.array([[2.0, 7.0], [0.0, 3.0]])
    s2 = np.array([[9.0, 0.0], [3.0, 0.0]])
    np.testing.assert_array_equal(acts["block1"].numpy(), s1)
    np.testing.assert_array_equal(acts["block2"].numpy(), s2)

    def bridge(k, s):
        h = _sig(s @ W[f"bridges.{k}.1.weight"].T + W[f"bridges.{k}.1.bias"])
        return _sig(h @ W[f"bridges.{k}.3.weight"].T + W[f"bridges.{k}.3.bias"])

    def dec(k, t):
        return _sig(t @ W[f"decoders.{k}.0.weight"].T + W[f"decoders.{k}.0.bias"])

    b1, b2 = bridge(0, s1), bridge(1, s2)
    d2 = dec(1, b2)
    d1 = dec(0, d2)
    for name, want in [("bridge1", b1), ("bridge2", b2), ("decoder2", d2), ("decoder1", d1)]:
        np.testing.assert_allclose(acts[name].numpy(), want, rtol=1e-6, atol=1e-7, err_msg=name)
    exit1 = dec(0, b1)  # h_1(b_1(s_1)): what a wrongly chosen decoder call would give
    assert np.abs(exit1 - d1).max() > 1e-3
    np.testing.assert_allclose(m(x).detach().numpy(), d1, rtol=1e-6)
    assert _no_hooks(m)


def test_capture_early_bridges_match_exits():
    m = _tiny("al", depth=3)
    x = torch.randn(6, 5)
    with torch.no_grad(), alviz.capture(m, ["bridge1", "bridge2", "decoder1"]) as acts:
        m(x)
        s1 = m.blocks[0](x)
        s2 = m.blocks[1](s1)
    torch.testing.assert_close(acts["bridge1"], m.bridges[0](s1).detach(), rtol=0, atol=0)
    torch.testing.assert_close(acts["bridge2"], m.bridges[1](s2).detach(), rtol=0, atol=0)
    torch.testing.assert_close(acts["decoder1"], m.exits(x)[-1].detach(), rtol=0, atol=0)


def test_capture_sink_sees_the_output_before_a_later_inplace_op():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    x = torch.randn(50, 3)
    got = {}
    with torch.no_grad():
        ref = net[0](x).clone()
        with alviz.capture(net, ["0"], sink=lambda name, t: got.setdefault(name, t.clone())) as acts:
            net(x)
    assert (ref < 0).any() and acts == {}
    torch.testing.assert_close(got["0"], ref, rtol=0, atol=0)


def test_capture_copy_survives_inplace_relu():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    x = torch.randn(50, 3)
    with torch.no_grad():
        ref = net[0](x).clone()
        with alviz.capture(net, ["0"]) as acts:
            out = net(x)
    assert (ref < 0).any()  # the in-place ReLU had negatives to overwrite
    assert (out >= 0).all()
    torch.testing.assert_close(acts["0"], ref, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["al", "bp"])
def test_hooks_removed_after_exception(method):
    m = _tiny(method, depth=3)
    with pytest.raises(RuntimeError):
        with alviz.capture(m) as acts:
            m(torch.randn(4, 7))  # wrong width: block1 raises
    assert _no_hooks(m) and acts == {}
    with pytest.raises(KeyError):
        with alviz.capture(m, ["block1", "bridge1"] if method == "al" else ["block1"]):
            m(torch.randn(4, 5))
            raise KeyError("user code fails inside the block")
    assert _no_hooks(m)


def test_capture_unknown_layer_lists_valid_ones_and_registers_nothing():
    m = _tiny("al", depth=2)
    with pytest.raises(UserError, match=r"unknown layer\(s\) 'block9'; valid layers: block1, bridge1, "
                                        r"block2, bridge2, decoder2, decoder1"):
        with alviz.capture(m, ["block1", "block9"]):
            pass
    assert _no_hooks(m)
    with pytest.raises(UserError, match="unknown pool 'max'; allowed: gap, flatten"):
        with alviz.capture(m, pool="max"):
            pass


def test_capture_pooling_gap_and_flatten():
    m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
    x = torch.randn(4, 2, 5, 5)
    with torch.no_grad():
        full = m(x)
        with alviz.capture(m, ["0"], pool="gap") as g:
            m(x)
        with alviz.capture(m, ["0"], pool="flatten", dtype=torch.float16) as f:
            m(x)
    torch.testing.assert_close(g["0"], full.mean((2, 3)))
    assert f["0"].shape == (4, 75) and f["0"].dtype == torch.float16
    torch.testing.assert_close(f["0"], full.reshape(4, -1).half())


# ------------------------------------------------------------------------------- extract_run

def _direct(run_dir, split="test"):
    run = alviz.load_run(run_dir)
    data = load_dataset(run.config.dataset, test_fraction=run.config.test_fraction,
                        preprocess=run.meta["preprocess"])
    x, y, ids = data.split(split)
    return run.model, x, y.numpy(), ids


def _expected(model, x, pool="gap"):
    """Every layer computed by hand (no hooks), as the extraction should store it."""
    out = {}
    with torch.no_grad():
        s = x
        for k, f in enumerate(model.blocks, start=1):
            s = f(s)
            out[f"block{k}"] = s
            if model.method == "al":
                out[f"bridge{k}"] = model.bridges[k - 1](s)
        if model.method == "al":
            t = out[f"bridge{len(model.blocks)}"]
            for k in range(len(model.blocks), 0, -1):
                t = model.decoders[k - 1](t)
                out[f"decoder{k}"] = t
        else:
            for j, layer in enumerate(model.head, start=1):
                s = layer(s)
                out[f"head{j}"] = s
    return {k: (v.mean((2, 3)) if (v.dim() == 4 and pool == "gap") else v.flatten(1)).numpy()
            for k, v in out.items()}


@pytest.mark.parametrize("name", ["al", "bp", "cnn"])
def test_memmap_equals_direct_forward(fresh, name):
    run = fresh(name)
    folder = X.extract_run(run, max_samples=60, batch_size=16, log=Log())
    assert folder == run / "activations" / f"{'digits' if name == 'cnn' else 'blobs'}-test"
    acts = X.load_activations(folder)
    model, x, y, ids = _direct(run)
    idx = X.select_samples(y, 60)
    want = _expected(model, x[idx])
    assert list(acts.layers) == [e.name for e in X.layer_catalogue(model)]
    for k, arr in acts.layers.items():
        assert isinstance(arr, np.memmap) and arr.dtype == np.float32
        np.testing.assert_allclose(arr, want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(acts.labels, y[idx])
    np.testing.assert_array_equal(acts.ids, ids[idx])


def test_cnn_gap_and_flatten(fresh):
    run = fresh("cnn")
    g = X.load_activations(X.extract_run(run, max_samples=30, log=Log()))
    assert g.layers["block1"].shape == (30, 32) and g.layers["block2"].shape == (30, 32)
    assert g.info("block1")["output_shape"] == [32, 8, 8]
    f = X.load_activations(X.extract_run(run, max_samples=30, pool="flatten", layers=["block1"], log=Log()))
    assert f.manifest["pool"] == "flatten" and f.layers["block1"].shape == (30, 32 * 8 * 8)
    np.testing.assert_allclose(np.asarray(f.layers["block1"]).reshape(30, 32, 64).mean(2), g.layers["block1"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stage_bytes", [XW.STAGE_BYTES, 100])
def test_batch_sizes_7_and_64_give_the_same_arrays(fresh, monkeypatch, stage_bytes):
    # 100 bytes: the staging buffers hold one batch, so every batch is flushed mid-stream
    monkeypatch.setattr(XW, "STAGE_BYTES", stage_bytes)
    run = fresh("al")
    a = X.load_activations(X.extract_run(run, batch_size=7, log=Log()))
    a = {k: np.array(v) for k, v in a.layers.items()} | {"ids": a.ids, "labels": a.labels}
    b = X.load_activations(X.extract_run(run, batch_size=64, force=True, log=Log()))
    assert a["ids"].shape == (240,)  # the whole blobs test split
    np.testing.assert_array_equal(a["ids"], b.ids)
    np.testing.assert_array_equal(a["labels"], b.labels)
    for k, arr in b.layers.items():
        # float GEMM may round the last bit differently per batch shape; rows must not move
        np.testing.assert_allclose(a[k], arr, rtol=1e-6, atol=1e-6, err_msg=k)


def test_writer_puts_rows_at_their_offsets(tmp_path):
    rows = np.arange(7 * 3, dtype=np.float16).reshape(7, 3)
    w = XW._NpyWriter(tmp_path / "a.npy", 7, (3,), np.float16)
    for start in (5, 0, 2):  # any order, uneven chunks
        stop = {5: 7, 0: 2, 2: 5}[start]
        w.write(start, rows[start:stop])
    w.close()
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy", allow_pickle=False), rows)
    w = XW._NpyWriter(tmp_path / "b.npy", 2, (3,), np.float32)
    with pytest.raises(ValueError, match="expected float32"):
        w.write(0, rows[:2])
    w.close()


@pytest.mark.parametrize("stage_bytes", [XW.STAGE_BYTES, 100])
def test_writer_thread_path_writes_the_same_arrays(fresh, tmp_path, monkeypatch, stage_bytes):
    # the GPU path (hooks copy to the host, a writer thread writes), exercised on the CPU
    monkeypatch.setattr(XW, "STAGE_BYTES", stage_bytes)
    run = fresh("al")
    model, x, y, _ = _direct(run)
    names = [e.name for e in X.layer_catalogue(model)]
    idx = X.select_samples(y, 50)
    out = {}
    for threaded in (False, True):
        folder = tmp_path / f"t{threaded}-{stage_bytes}"
        folder.mkdir()
        X.extract_arrays(model, x, idx, names, folder, batch_size=8, writer_thread=threaded)
        out[threaded] = {n: np.load(folder / f"{n}.npy") for n in names}
    want = _expected(model, x[idx])
    for n in names:
        np.testing.assert_array_equal(out[True][n], out[False][n], err_msg=n)
        np.testing.assert_allclose(out[True][n], want[n], rtol=1e-5, atol=1e-6, err_msg=n)
    import threading
    assert not [t for t in threading.enumerate() if t.name == "alviz-extract-writer"]


def test_writer_thread_error_is_raised_and_every_file_closed(fresh, tmp_path, monkeypatch):
    import os

    run = fresh("bp")
    model, x, y, _ = _direct(run)
    names = [e.name for e in X.layer_catalogue(model)]

    def boom(self, start, arr):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(XW._NpyWriter, "write", boom)
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(OSError, match="No space left"):
        X.extract_arrays(model, x, X.select_samples(y, 40), names, tmp_path, batch_size=8, writer_thread=True)
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds


def test_writer_stage_flushes_grows_and_checks_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(XW, "STAGE_BYTES", 24)  # 2 rows of 3 float32
    rows = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    w = XW._NpyWriter(tmp_path / "a.npy", 10, (3,), np.float32)
    assert len(w._stage) == 2
    w.write(0, rows[:1])
    w.write(1, rows[1:6])  # more than the buffer holds: it grows for this batch
    w.rows(6, 4).copy_(torch.from_numpy(rows[6:]))
    with pytest.raises(ValueError, match="rows 9:11 outside 0:10"):
        w.rows(9, 2)
    w.close()
    w.close()  # a second close does nothing
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), rows)


def test_writer_writes_a_large_stage_in_pieces(tmp_path, monkeypatch):
    import os

    sizes = []
    real = os.pwrite

    def pwrite(fd, buf, pos):
        sizes.append(len(buf))
        return real(fd, buf, pos)

    monkeypatch.setattr(XW, "WRITE_CHUNK", 40)
    monkeypatch.setattr(XW.os, "pwrite", pwrite)
    rows = np.arange(9 * 5, dtype=np.float32).reshape(9, 5)  # 20 bytes a row, one batch of 180
    w = XW._NpyWriter(tmp_path / "a.npy", 9, (5,), np.float32, batch_rows=9)
    w.write(0, rows)
    w.close()
    assert sizes == [40, 40, 40, 40, 20]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), rows)


def test_writer_reserves_the_file_size_or_falls_back_to_a_hole(tmp_path, monkeypatch):
    import errno

    w = XW._NpyWriter(tmp_path / "a.npy", 1000, (4,), np.float32)
    size = (tmp_path / "a.npy").stat().st_size
    assert size == w.offset + 1000 * 16
    w.close(flush=False)

    def unsupported(fd, off, n):
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(XW.os, "posix_fallocate", unsupported, raising=False)
    w = XW._NpyWriter(tmp_path / "b.npy", 5, (2,), np.float32)
    w.write(0, np.ones((5, 2), np.float32))
    w.close()
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.ones((5, 2)))

    def full(fd, off, n):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(XW.os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match="No space left"):  # a full disk fails before any row is computed
        XW._NpyWriter(tmp_path / "c.npy", 5, (2,), np.float32)


def test_float16(fresh):
    run = fresh("bp")
    a = X.load_activations(X.extract_run(run, dtype="float16", max_samples=20, log=Log()))
    model, x, y, _ = _direct(run)
    want = _expected(model, x[X.select_samples(y, 20)])
    assert a.manifest["dtype"] == "float16"
    for k, arr in a.layers.items():
        assert arr.dtype == np.float16
        np.testing.assert_array_equal(arr, want[k].astype(np.float16))


def test_manifest_round_trip_and_read_only(fresh):
    run = fresh("al")
    folder = X.extract_run(run, max_samples=25, log=Log())
    on_disk = json.loads((folder / "manifest.json").read_text())
    acts = X.load_activations(folder)
    assert acts.manifest == on_disk
    for key in ("format", "checkpoint_sha256", "dataset", "data_sha256", "split", "test_fraction", "max_samples",
                "sample_seed", "dtype", "pool", "n_samples", "labels_file", "ids_file", "layers", "num_classes",
                "method", "epoch"):
        assert key in on_disk, key
    assert on_disk["format"] == X.FORMAT and on_disk["n_samples"] == 25 and on_disk["max_samples"] == 25
    from alviz.checkpoint import sha256_file
    assert on_disk["checkpoint_sha256"] == sha256_file(run / "model.safetensors")
    cat = {e.name: e.to_dict() for e in X.layer_catalogue(alviz.load_run(run).model)}
    for e in on_disk["layers"]:
        assert {k: e[k] for k in ("name", "role", "position", "on_path", "match")} == cat[e["name"]]
        assert e["shape"] == list(acts.layers[e["name"]].shape) and e["file"] == e["name"] + ".npy"
    with pytest.raises(ValueError):
        acts.layers["block1"][0, 0] = 1.0
    assert sorted(p.name for p in (run / "activations").iterdir()) == ["blobs-test"]  # no temp leftovers


def test_reuse_without_force_and_force_redoes(fresh):
    run = fresh("al")
    folder = X.extract_run(run, max_samples=30, log=Log())
    stamp = (folder / "block1.npy").stat().st_mtime_ns
    log = Log()
    assert X.extract_run(run, max_samples=30, log=log) == folder
    assert "reusing" in log.text() and (folder / "block1.npy").stat().st_mtime_ns == stamp
    log = Log()  # a subset of what is there is reused too
    X.extract_run(run, max_samples=30, layers=["block2"], log=log)
    assert "reusing" in log.text() and len(X.load_activations(folder).layers) == 6
    log = Log()
    X.extract_run(run, max_samples=30, force=True, log=log)
    assert "--force" in log.text() and (folder / "block1.npy").stat().st_mtime_ns != stamp


def test_more_layers_than_stored_redoes(fresh):
    run = fresh("bp")
    folder = X.extract_run(run, layers="block1", max_samples=30, log=Log())
    assert list(X.load_activations(folder).layers) == ["block1"]
    log = Log()
    X.extract_run(run, max_samples=30, log=log)
    assert "reusing" not in log.text() and len(X.load_activations(folder).layers) == 5


def test_stale_checkpoint_is_detected_and_redone(fresh):
    run = fresh("al")
    folder = X.extract_run(run, max_samples=30, log=Log())
    old = np.array(X.load_activations(folder).layers["block1"])
    w = load_file(run / "model.safetensors")
    w["blocks.0.1.bias"] = w["blocks.0.1.bias"] + 5.0
    save_file(w, run / "model.safetensors", metadata={"format": "alviz-run/1", "epoch": "1"})
    log = Log()
    X.extract_run(run, max_samples=30, log=log)
    assert "stale: the checkpoint changed" in log.text() and "reusing" not in log.text()
    new = X.load_activations(folder).layers["block1"]
    assert np.abs(np.asarray(new) - old).max() > 1.0


@pytest.mark.parametrize("change, expect", [
    ({"dtype": "float16"}, "dtype 'float32' -> 'float16'"),
    ({"max_samples": 31}, "max_samples 30 -> 31"),
    ({"split": "train"}, None),  # another folder: nothing stale, a new set
])
def test_stale_settings_are_detected(fresh, change, expect):
    run = fresh("bp")
    X.extract_run(run, max_samples=30, log=Log())
    log = Log()
    args = {"max_samples": 30, **change}
    folder = X.extract_run(run, log=log, **args)
    assert "reusing" not in log.text()
    if expect:
        assert expect in log.text()
    assert X.load_activations(folder).manifest["split"] == args.get("split", "test")


def test_tampered_manifest_setting_is_not_reused(fresh):
    run = fresh("bp")
    folder = X.extract_run(run, max_samples=30, log=Log())
    m = json.loads((folder / "manifest.json").read_text())
    m["pool"] = "flatten"
    (folder / "manifest.json").write_text(json.dumps(m))
    log = Log()
    X.extract_run(run, max_samples=30, log=log)
    assert "stale: other settings (pool 'flatten' -> 'gap')" in log.text()


@pytest.mark.parametrize("bad", ["../block1.npy", "/etc/hostname", "sub/block1.npy", "..", "link.npy"])
def test_manifest_paths_must_stay_inside_the_folder(fresh, bad):
    run = fresh("bp")
    folder = X.extract_run(run, max_samples=30, log=Log())
    shutil.copy(folder / "block1.npy", folder.parent / "block1.npy")
    (folder / "link.npy").symlink_to(folder.parent / "block1.npy")
    m = json.loads((folder / "manifest.json").read_text())
    m["layers"][0]["file"] = bad
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="is not inside the activation folder"):
        X.load_activations(folder)
    m["layers"][0]["file"] = "block1.npy"
    m["labels_file"] = bad
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="is not inside the activation folder"):
        X.load_activations(folder)
    log = Log()  # extract_run does not trust it either: it extracts again
    X.extract_run(run, max_samples=30, log=log)
    assert "not a valid activation set" in log.text()
    assert X.load_activations(folder).manifest["labels_file"] == "labels.npy"


def test_manifest_shape_and_dtype_must_match_headers(fresh):
    run = fresh("bp")
    folder = X.extract_run(run, max_samples=30, log=Log())
    good = (folder / "manifest.json").read_text()
    m = json.loads(good)
    m["layers"][1]["shape"] = [30, 99]
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match=r"layer 'block2' should be float32 \[30, 99\] but block2.npy holds float32 \[30, 8\]"):
        X.load_activations(folder)
    m = json.loads(good)
    m["dtype"] = "float16"
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="should be float16"):
        X.load_activations(folder)
    (folder / "manifest.json").write_text(good)
    np.save(folder / "ids.npy", np.arange(5))
    with pytest.raises(UserError, match="ids must be 30 integers"):
        X.load_activations(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        X.load_activations(folder)
    with pytest.raises(UserError, match="activation folder not found"):
        X.load_activations(folder / "nope")


def test_crash_leaves_no_half_written_set(fresh, monkeypatch):
    run = fresh("bp")
    folder = X.extract_run(run, max_samples=30, log=Log())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls = []

    def boom(self):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk on fire")
        return original(self)

    original = XW._NpyWriter.flush
    monkeypatch.setattr(XW._NpyWriter, "flush", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        X.extract_run(run, max_samples=30, force=True, batch_size=5, log=Log())
    assert sorted(p.name for p in (run / "activations").iterdir()) == ["blobs-test"]  # no temp folder left
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the old complete set is intact
    shutil.rmtree(folder)
    with pytest.raises(RuntimeError, match="disk on fire"):
        X.extract_run(run, max_samples=30, batch_size=5, log=Log())
    assert list((run / "activations").iterdir()) == []
    import threading
    assert not [t for t in threading.enumerate() if t.name == "alviz-extract-writer"]  # writer thread joined


def test_leftover_temp_folder_of_a_dead_process_is_cleaned(fresh):
    run = fresh("bp")
    (run / "activations" / ".tmp-999999999-blobs-test-abc").mkdir(parents=True)
    X.extract_run(run, max_samples=30, log=Log())
    assert sorted(p.name for p in (run / "activations").iterdir()) == ["blobs-test"]


def test_foreign_folder_is_not_overwritten_without_force(fresh):
    run = fresh("bp")
    mine = run / "activations" / "blobs-test"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match="is not an alviz activation set"):
        X.extract_run(run, log=Log())
    assert (mine / "notes.txt").read_text() == "precious"
    X.extract_run(run, force=True, max_samples=10, log=Log())
    assert not (mine / "notes.txt").exists()


def test_same_sample_ids_for_every_run_and_clip_notice(fresh):
    a, b = fresh("al"), fresh("bp")
    ia = X.load_activations(X.extract_run(a, max_samples=37, log=Log()))
    ib = X.load_activations(X.extract_run(b, max_samples=37, log=Log()))
    np.testing.assert_array_equal(ia.ids, ib.ids)
    np.testing.assert_array_equal(ia.labels, ib.labels)
    counts = np.bincount(ia.labels)
    assert counts.sum() == 37 and counts.max() - counts.min() <= 1  # blobs: 5 balanced classes
    log = Log()
    big = X.load_activations(X.extract_run(a, max_samples=10_000, split="train", log=log))
    assert "asked for 10000 samples but the train split of blobs holds 960; using all 960" in log.text()
    assert big.manifest["n_samples"] == 960


def test_npz_data(fresh, tmp_path):
    run = fresh("al")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 20)).astype(np.float32)
    y = np.repeat(np.arange(5), 10)
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y, x_test=x[:20], y_test=y[:20])
    folder = X.extract_run(run, dataset=f"npz:{path}", log=Log())
    assert folder.name.startswith("npz-mine-") and folder.name.endswith("-test")
    acts = X.load_activations(folder)
    assert acts.manifest["dataset"] == f"npz:{path.resolve()}" and acts.manifest["data_sha256"]
    model = alviz.load_run(run).model
    spec = alviz.load_run(run).meta["preprocess"]
    from alviz.data import apply_preprocess
    want = _expected(model, apply_preprocess(x[:20], spec))
    for k, arr in acts.layers.items():
        np.testing.assert_allclose(arr, want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    np.testing.assert_array_equal(acts.labels, y[:20])
    np.savez(path, x=x * 2, y=y, x_test=x[:20] * 2, y_test=y[:20])  # same path, new content: stale
    log = Log()
    X.extract_run(run, dataset=f"npz:{path}", log=log)
    assert "data_sha256" in log.text() and "reusing" not in log.text()


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "val"}, "unknown split 'val'; allowed: train, test, all"),
    ({"dtype": "float64"}, "unknown dtype 'float64'; allowed: float32, float16"),
    ({"pool": "max"}, "unknown pool 'max'; allowed: gap, flatten"),
    ({"batch_size": 0}, "batch size must be a positive integer; received 0"),
    ({"max_samples": -3}, "max samples must be a positive integer; received -3"),
    ({"layers": ["block1", "head9"]}, r"unknown layer\(s\) 'head9'; valid layers: block1, block2, head1, head2, head3"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"dataset": "npz:/nonexistent/x.npz"}, "file not found"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_extract_run_errors(fresh, kwargs, message):
    run = fresh("bp")
    with pytest.raises(UserError, match=message):
        X.extract_run(run, log=Log(), **kwargs)
    assert not (run / "activations").exists() or not any((run / "activations").iterdir())


def test_activation_dir_and_slug(runs):
    assert X.activation_dir(runs / "al") == runs / "al" / "activations" / "blobs-test"
    assert X.activation_dir(runs / "al", "mnist5k", "train").name == "mnist5k-train"
    a, b = X.dataset_slug("npz:/a/x.npz"), X.dataset_slug("npz:/b/x.npz")
    assert a.startswith("npz-x-") and a != b


# ------------------------------------------------------------------------------- CLI

def test_cli_layers(runs, capsys):
    assert main(["layers", str(runs / "al")]) == 0
    out = capsys.readouterr().out
    assert "bridge1" in out and "decoder1" in out and " no " in out
    assert main(["layers", str(runs / "cnn"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    b1 = next(r for r in rows if r["name"] == "block1")
    assert b1["shape"] == [32, 8, 8] and b1["stored"] == {"gap": 32, "flatten": 2048} and b1["match"] == "p1"


def test_cli_extract(fresh, capsys):
    run = fresh("al")
    assert main(["extract", str(run), "--layers", "block1,bridge1", "--max-samples", "20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "activations:" in out
    acts = X.load_activations(run / "activations" / "blobs-test")
    assert list(acts.layers) == ["block1", "bridge1"] and acts.manifest["n_samples"] == 20
    assert main(["extract", str(run), "--layers", "block1,bridge1", "--max-samples", "20", "--device", "cpu"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert main(["extract", str(run), "--layers", "block1,nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alviz: error: unknown layer(s) 'nope'; valid layers: block1, bridge1, block2")
    assert main(["extract", str(run), "--split", "val"]) == 2
    assert "unknown split 'val'" in capsys.readouterr().err


def test_cli_extract_disk_full_is_one_line_and_leaves_nothing(fresh, capsys, monkeypatch):
    import errno

    run = fresh("bp")

    def full(fd, off, n):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(XW.os, "posix_fallocate", full, raising=False)
    assert main(["extract", str(run), "--max-samples", "20", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("alviz: error: cannot write ")
    assert ".npy: No space left on device; give paths" in err
    assert not (run / "activations").exists() or list((run / "activations").iterdir()) == []


def test_cli_extract_experiment_checks_every_run_first(fresh, capsys):
    al, bp = fresh("al"), fresh("bp")
    assert main(["extract", str(al.parent), "--layers", "bridge1"]) == 2
    assert "bp: unknown layer(s) 'bridge1'" in capsys.readouterr().err
    assert not (al / "activations").exists()  # nothing extracted before the check failed
    assert main(["extract", str(al.parent), "--layers", "block1", "--max-samples", "10"]) == 0
    assert (al / "activations" / "blobs-test").is_dir() and (bp / "activations" / "blobs-test").is_dir()
