"""alviz.concurrent: a local rule's components trained side by side in threads.

The claim under test: with W workers of 1 thread each, a run equals the sequential loop's run on 1
thread to the bit (weights, optimiser state, every logged figure but the time), for every local rule,
optimiser, per-step schedule and partition; a failure in a worker reaches the caller; NaN stops name
the sequential loop's step; and only runs that can gain use it.
"""
from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from alviz import concurrent
from alviz.config import TrainConfig
from alviz.epochstats import NonFiniteLoss
from alviz.models import create_model
from alviz.train import make_optimizer, train, train_epoch

QUIET = {"progress": False, "log": lambda *_: None}


def _files(run):
    return load_file(str(run / "model.safetensors")), load_file(str(run / "train_state.safetensors"))


def _history(run):
    rows = json.loads((run / "meta.json").read_text())["history"]
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


CASES = {
    "al-mlp": TrainConfig(dataset="blobs", epochs=2, width=16, batch_size=32, lr=1e-2),
    "al-authors-recipe": TrainConfig(dataset="blobs", epochs=2, width=16, batch_size=32, lr=1e-2, recipe="authors"),
    "al-cnn-3-components-augmented": TrainConfig(dataset="digits", arch="cnn", depth=3, width=16, epochs=1,
                                                 batch_size=64, augment=True),
    "scpl-3": TrainConfig(method="scpl", dataset="blobs", depth=3, width=16, epochs=2, batch_size=32),
    "dgl-3-sgd": TrainConfig(method="dgl", dataset="blobs", depth=3, width=16, epochs=2, batch_size=32,
                             optimizer="sgd", lr=1e-2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_component_threads_equal_the_one_thread_sequential_run_to_the_bit(case, tmp_path, threads):
    cfg = CASES[case].replace(device="cpu")
    threads(1)
    train(cfg.replace(concurrent=False), tmp_path / "seq", **QUIET)
    threads(2)
    train(cfg, tmp_path / "conc", **QUIET)
    meta = json.loads((tmp_path / "conc" / "meta.json").read_text())
    assert "component_threads" in meta and "component_threads" not in json.loads(
        (tmp_path / "seq" / "meta.json").read_text())
    parts = meta["component_threads"]
    assert len(parts) == 2 and sum(parts, []) == list(range(1, cfg.depth + 1 if cfg.depth else 3))
    for a, b in zip(_files(tmp_path / "seq"), _files(tmp_path / "conc")):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert _history(tmp_path / "seq") == _history(tmp_path / "conc")  # losses, running accuracy, test accuracy


def test_resuming_a_threaded_run_equals_an_uninterrupted_one(tmp_path, threads, blobs_cfg):
    threads(2)
    train(blobs_cfg.replace(epochs=1), tmp_path / "r", **QUIET)
    train(blobs_cfg, tmp_path / "r", resume=True, **QUIET)
    train(blobs_cfg, tmp_path / "straight", **QUIET)
    for a, b in zip(_files(tmp_path / "r"), _files(tmp_path / "straight")):
        assert all(torch.equal(a[k], b[k]) for k in a)


def _model_and_opt(cfg):
    torch.manual_seed(0)
    model = create_model(cfg, (2,), 3)
    return model, make_optimizer(model.param_groups(cfg.lr, cfg.lr_gh_factor), cfg, torch.device("cpu"))


def _blobs(n=96):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 3
    return torch.randn(n, 2, generator=g) + 3 * torch.nn.functional.one_hot(y, 3)[:, :2].float(), y


@pytest.mark.parametrize("component", [0, 1], ids=["first-group", "middle-group"])
def test_a_nan_stop_names_the_sequential_loops_step_and_sums(monkeypatch, threads, component):
    """A component goes NaN at step 7 (of 12, checks every 4): both loops stop at the check of step 8
    with the same first bad steps and the same sums up to there, though the groups downstream lag
    (and may already wait for step 9, which never comes: they must stop, not hang)."""
    from conftest import poison_al_loss

    cfg = TrainConfig(dataset="blobs", width=8, batch_size=8, lr=1e-2, device="cpu", depth=3)
    x, y = _blobs()
    perm = torch.arange(len(y))
    stats = []
    for loop in ("sequential", "threads"):
        monkeypatch.undo()
        poison_al_loss(monkeypatch, component, "assoc", lambda k: k >= 7)
        model, opt = _model_and_opt(cfg)
        threads(1 if loop == "sequential" else 3)
        with pytest.raises(NonFiniteLoss) as e:
            if loop == "sequential":
                train_epoch(model, opt, x, y, perm, batch_size=8, nan_check_every=4)
            else:
                concurrent.ComponentThreads(model, opt, (2,), 8, 3).train_epoch(x, y, perm, batch_size=8,
                                                                                nan_check_every=4)
        stats.append(e.value.stats)
    seq, conc = stats
    assert seq.first_bad[f"assoc{component + 1}"] == 6 and seq.n == 64  # 0-based step 6, stopped after step 8
    assert (conc.keys, conc.first_bad, conc.n) == (seq.keys, seq.first_bad, seq.n)
    assert [v for v in conc.sums] == pytest.approx(seq.sums, nan_ok=True)


def test_an_exception_in_a_worker_reaches_the_caller_and_stops_the_others(monkeypatch, threads):
    from alviz.models.associated import ALModel

    cfg = TrainConfig(dataset="blobs", width=8, batch_size=8, lr=1e-2, device="cpu", depth=2)
    model, opt = _model_and_opt(cfg)
    real, calls = ALModel.stage_losses, []

    def failing(self, i, carry, y):
        calls.append(i)
        if len(calls) == 5:
            raise RuntimeError("boom in component 1")
        return real(self, i, carry, y)

    threads(2)
    workers = concurrent.ComponentThreads(model, opt, (2,), 8, 2)
    monkeypatch.setattr(ALModel, "stage_losses", failing)
    x, y = _blobs()
    with pytest.raises(RuntimeError, match="boom in component 1"):
        workers.train_epoch(x, y, torch.arange(len(y)), batch_size=8)
    assert not [t for t in threading.enumerate() if t.name.startswith("alviz-component")]
    assert torch.get_num_threads() == 2  # the caller's thread count is restored


def test_sub_optimizers_share_the_run_optimisers_state_and_rates():
    cfg = TrainConfig(dataset="blobs", width=8, lr=1e-2, device="cpu", depth=2)
    model, opt = _model_and_opt(cfg)
    params = [p for m in model.component_modules(1) for p in m.parameters()]
    sub, parents = concurrent.sub_optimizer(opt, params)
    assert sub.state is opt.state and parents == [0, 1]  # AL: the f/b and g/h groups
    assert [g["lr"] for g in sub.param_groups] == [1e-2, 2e-2]
    assert sum(len(g["params"]) for g in sub.param_groups) == len(params)


@pytest.mark.parametrize("change, uses", [({}, True), ({"concurrent": False}, False), ({"method": "bp"}, False),
                                          ({"method": "al-e2e"}, False), ({"depth": 1}, False),
                                          ({"compile": True}, False)])
def test_only_local_rules_of_two_components_on_two_threads_use_threads(change, uses):
    cfg = TrainConfig(dataset="blobs", width=8, device="cpu", depth=2).replace(**change)
    model = create_model(cfg, (2,), 3)
    assert concurrent.eligible(model, cfg, torch.device("cpu"), 2) == uses
    assert not concurrent.eligible(model, cfg, torch.device("cpu"), 1)
    assert not concurrent.eligible(model, cfg, torch.device("cuda"), 2)


def test_more_workers_than_components_take_one_component_each_and_share_the_threads():
    cfg = TrainConfig(dataset="blobs", width=8, device="cpu", depth=2)
    model, opt = _model_and_opt(cfg)
    w = concurrent.ComponentThreads(model, opt, (2,), 32, 5)
    assert [list(p) for p in w.parts] == [[0], [1]] and w.intra == 2
