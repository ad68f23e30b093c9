import json

import pytest
import torch
from safetensors.torch import load_file

import alviz
from alviz import checkpoint as ckpt
from alviz.errors import UserError
from alviz.train import Diverged, lr_multiplier, resolve_device, train


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def test_train_writes_a_complete_run(tmp_path, blobs_cfg):
    r = train(blobs_cfg, tmp_path / "r", progress=False, log=lambda *_: None)
    run = tmp_path / "r"
    for f in ("config.yaml", "model.safetensors", "train_state.safetensors", "meta.json", "summary.csv"):
        assert (run / f).is_file(), f
    assert not (run / ".staging").exists()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["epoch"] == 3 and meta["status"] == "complete" and len(meta["history"]) == 3
    header = (run / "summary.csv").read_text().splitlines()[0].split(",")
    for col in ("epoch", "seconds", "loss_assoc1", "loss_ae1", "loss_assoc2", "loss_ae2", "train_acc", "test_acc",
                "test_acc_exit1", "test_acc_exit2"):
        assert col in header
    assert r.test_acc > 0.6  # 5 well-separated blobs: chance is 0.2


def test_same_seed_gives_identical_weights(tmp_path, blobs_cfg):
    train(blobs_cfg, tmp_path / "a", progress=False, log=lambda *_: None)
    train(blobs_cfg, tmp_path / "b", progress=False, log=lambda *_: None)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    train(blobs_cfg.replace(seed=1), tmp_path / "c", progress=False, log=lambda *_: None)
    wc = _weights(tmp_path / "c")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("method", ["al", "bp"])
def test_full_run_equals_stop_and_resume(tmp_path, blobs_cfg, method):
    cfg = blobs_cfg.replace(method=method)
    train(cfg, tmp_path / "full", progress=False, log=lambda *_: None)
    train(cfg.replace(epochs=1), tmp_path / "half", progress=False, log=lambda *_: None)
    train(cfg, tmp_path / "half", resume=True, progress=False, log=lambda *_: None)
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "half")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha = json.loads((tmp_path / "full" / "meta.json").read_text())["history"]
    hb = json.loads((tmp_path / "half" / "meta.json").read_text())["history"]
    assert [h["test_acc"] for h in ha] == [h["test_acc"] for h in hb]


def test_checkpoint_round_trip_identical_predictions(tmp_path, blobs_cfg):
    from alviz.data import load_dataset

    train(blobs_cfg, tmp_path / "r", progress=False, log=lambda *_: None)
    model, cfg = alviz.load(tmp_path / "r")
    assert cfg.dataset == "blobs" and cfg.width == 16
    d = load_dataset("blobs")
    # rebuild a second time from disk: same scores bit for bit
    model2, _ = alviz.load(tmp_path / "r")
    with torch.no_grad():
        assert torch.equal(model(d.x_test), model2(d.x_test))
        acc = (model(d.x_test).argmax(1) == d.y_test).float().mean().item()
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert acc == pytest.approx(meta["history"][-1]["test_acc"])


def test_existing_run_is_not_overwritten(tmp_path, blobs_cfg):
    train(blobs_cfg, tmp_path / "r", progress=False, log=lambda *_: None)
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        train(blobs_cfg, tmp_path / "r", progress=False, log=lambda *_: None)
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before


def test_resume_refuses_a_changed_config(tmp_path, blobs_cfg):
    train(blobs_cfg.replace(epochs=1), tmp_path / "r", progress=False, log=lambda *_: None)
    with pytest.raises(UserError, match=r"cannot resume with a different width \(16 stored, 32 asked\)"):
        train(blobs_cfg.replace(width=32), tmp_path / "r", resume=True, progress=False, log=lambda *_: None)


@pytest.mark.parametrize("concurrent", [True, False], ids=["component-threads", "sequential"])
def test_diverging_run_stops_and_keeps_last_good_checkpoint(tmp_path, blobs_cfg, monkeypatch, concurrent, threads):
    from conftest import poison_al_loss

    threads(2)
    poison_al_loss(monkeypatch, 1, "assoc", lambda k: k == 35)  # epoch 2 (30 steps per epoch), step 5
    with pytest.raises(Diverged, match=r"loss assoc2 became NaN/inf at epoch 2, step 5"):
        train(blobs_cfg.replace(concurrent=concurrent), tmp_path / "r", progress=False, log=lambda *_: None)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["epoch"] == 1
    assert ("component_threads" in meta) == concurrent
    w = _weights(tmp_path / "r")
    assert all(torch.isfinite(v).all() for v in w.values())


@pytest.mark.parametrize("concurrent", [True, False], ids=["component-threads", "sequential"])
def test_on_nan_continue(tmp_path, blobs_cfg, monkeypatch, concurrent, threads):
    from conftest import poison_al_loss

    threads(2)
    poison_al_loss(monkeypatch, 0, "ae", lambda k: True)
    train(blobs_cfg.replace(on_nan="continue", epochs=1, concurrent=concurrent), tmp_path / "r", progress=False,
          log=lambda *_: None)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["history"][0]["nonfinite_losses"].startswith("ae1")


def test_lr_schedule():
    from alviz.config import TrainConfig

    cfg = TrainConfig(epochs=10, schedule="step", milestones=[0.4, 0.6, 0.8], gamma=0.1)
    assert [round(lr_multiplier(cfg, e), 6) for e in (0, 3, 4, 5, 6, 8, 9)] == [1, 1, 0.1, 0.1, 0.01, 0.001, 0.001]
    assert lr_multiplier(cfg.replace(schedule="none"), 9) == 1.0


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UserError, match=r"unknown device 'tpu'; allowed: auto, cpu, cuda, cuda:N"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"no CUDA device is available"):
            resolve_device("cuda:0")


def test_checkpoint_journal_roll_forward_and_drop(tmp_path, blobs_cfg):
    run = tmp_path / "r"
    train(blobs_cfg.replace(epochs=1), run, progress=False, log=lambda *_: None)
    good = (run / "model.safetensors").read_bytes()
    # an incomplete staging folder (crash before COMPLETE) is dropped; the old checkpoint stays
    (run / ".staging").mkdir()
    (run / ".staging" / "model.safetensors").write_bytes(b"half-written")
    ckpt.recover(run)
    assert not (run / ".staging").exists() and (run / "model.safetensors").read_bytes() == good
    # a complete staging folder (crash during the moves) is rolled forward
    (run / ".staging").mkdir()
    (run / ".staging" / "meta.json").write_text((run / "meta.json").read_text().replace('"epoch": 1', '"epoch": 1 '))
    (run / ".staging" / "COMPLETE").write_text("ok")
    ckpt.recover(run)
    assert '"epoch": 1 ' in (run / "meta.json").read_text()


def test_failed_write_keeps_previous_checkpoint(tmp_path, blobs_cfg, monkeypatch):
    run = tmp_path / "r"
    train(blobs_cfg.replace(epochs=1), run, progress=False, log=lambda *_: None)
    good = (run / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "write_bytes_atomic", boom)
    with pytest.raises(OSError):
        train(blobs_cfg, run, resume=True, progress=False, log=lambda *_: None)
    monkeypatch.undo()
    ckpt.recover(run)
    assert (run / "model.safetensors").read_bytes() == good
    assert json.loads((run / "meta.json").read_text())["epoch"] == 1


def test_pickle_weights_are_refused_and_never_run(tmp_path, blobs_cfg):
    import pickle

    run = tmp_path / "r"
    train(blobs_cfg.replace(epochs=1), run, progress=False, log=lambda *_: None)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (run / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="not a valid safetensors file"):
        alviz.load(run)
    assert not marker.exists()


def test_wrong_architecture_weights(tmp_path, blobs_cfg):
    train(blobs_cfg.replace(epochs=1), tmp_path / "a", progress=False, log=lambda *_: None)
    train(blobs_cfg.replace(epochs=1, width=8), tmp_path / "b", progress=False, log=lambda *_: None)
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="weights do not match the architecture in config.yaml"):
        alviz.load(tmp_path / "a")


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="run directory not found"):
        alviz.load(tmp_path / "nope")
    with pytest.raises(UserError, match="is not an alviz run directory"):
        alviz.load(tmp_path)


@pytest.mark.parametrize("method", ["al", "bp"])
def test_cpu_reference_optimizer_matches_reference_adam_to_the_bit(blobs_cfg, method):
    from alviz.models import create_model
    from alviz.train import make_optimizer

    cfg = blobs_cfg.replace(method=method, weight_decay=1e-4, fused_adam=False)
    states = []
    for opt_of in (lambda groups: make_optimizer(groups, cfg, torch.device("cpu")),
                   lambda groups: torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)):
        torch.manual_seed(0)
        model = create_model(cfg, (20,), 5)
        opt = opt_of(model.param_groups(cfg.lr, cfg.lr_gh_factor))
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            x, y = torch.randn(32, 20, generator=g), torch.randint(0, 5, (32,), generator=g)
            losses, _ = model.losses(x, y)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
        states.append(model.state_dict())
    assert len(states[0]) > 4
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
