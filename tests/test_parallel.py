"""alviz.parallel: the AL pipeline and DDP across 2 gloo ranks on 127.0.0.1, failure handling.

Ranks are forks of the test process (`launch_local(fork=True, entry=cli.main)`: no import cost) running the real
`alviz train` command line with the environment torchrun would give them. Known answers: a
pipelined or data-parallel run does the same arithmetic as single-process training, so its
weights must match `alviz.train.train`'s to float rounding.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

import alviz
from alviz import cli
from alviz.config import TrainConfig
from alviz.data import load_dataset
from alviz.errors import UserError
from alviz.models import create_model
from alviz.parallel import launch_local, micro_batch_plan, partition
from alviz.parallel.profile import EpochProfile
from alviz.parallel.schedule import epoch_time, fill_bubble, ideal_speedup, speedup
from alviz.train import train

# blobs learns to 100 % in 5 epochs with these settings (chance is 20 %)
FAST = {"dataset": "blobs", "epochs": 5, "lr": 1e-2, "width": 32, "schedule": "none", "device": "cpu"}
LIMIT_S = 40  # per launch; a hang fails the test instead of stalling the suite


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs")


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    p.write_text("schedule: none\n")
    return p


def _args(cfg_file, out, *extra, epochs=5):
    return ["train", "--dataset", "blobs", "--epochs", str(epochs), "--lr", "0.01", "--width", "32",
            "--device", "cpu", "--quiet", "--config", str(cfg_file), "--out", str(out), *extra]


def _single(run_dir, blobs, **kw):
    """Single-process reference run, one thread (like each rank)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(**{**FAST, **kw}), run_dir, data=blobs, progress=False, log=lambda *a: None)
    finally:
        torch.set_num_threads(n)
    return run_dir


def _assert_same_weights(a, b, atol):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)
    sa, sb = load_file(a / "train_state.safetensors"), load_file(b / "train_state.safetensors")
    assert sorted(sa) == sorted(sb)  # the optimiser state has alviz.train's layout: --resume works on it
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=1e-3, msg=k)


def _ok(outs):
    for o in outs:
        assert o.killed is None and o.returncode == 0, f"rank {o.rank} rc {o.returncode} {o.killed}: {o.stderr[-2000:]}"


def test_pipeline_two_ranks_trains_like_single_process(tmp_path, blobs, cfg_file):
    outs = launch_local(_args(cfg_file, tmp_path / "exp", "--method", "al", "--pipeline"), 2,
                        timeout=LIMIT_S, fork=True, entry=cli.main)
    _ok(outs)
    assert "al seed 0: test acc 1.0000" in outs[0].stdout
    assert outs[1].stdout == ""  # ranks other than 0 report nothing
    run = tmp_path / "exp" / "al-seed0"
    model, config = alviz.load(run)  # an ordinary run directory
    assert config.method == "al" and model.depth == 2
    x, y = blobs.x_test, blobs.y_test
    assert (model(x).argmax(1) == y).float().mean() > 0.9
    meta = json.loads((run / "meta.json").read_text())
    assert meta["parallel"]["mode"] == "pipeline" and meta["parallel"]["world_size"] == 2
    assert meta["parallel"]["components"] == [[1], [2]]
    assert meta["status"] == "complete" and meta["epoch"] == 5

    ref = _single(tmp_path / "single", blobs, method="al")
    _assert_same_weights(run, ref, atol=1e-5)
    ref_meta = json.loads((ref / "meta.json").read_text())
    assert set(ref_meta) - {"parallel", "component_threads"} <= set(meta)  # how the single process trained
    ref_cols = (ref / "summary.csv").read_text().splitlines()[0].split(",")
    cols = (run / "summary.csv").read_text().splitlines()[0].split(",")
    assert set(ref_cols) <= set(cols) and {"busy_seconds_rank0", "busy_seconds_rank1"} <= set(cols)
    assert {f"rank{r}_{p}_s" for r in (0, 1) for p in ("compute", "cpu", "io_cpu", "recv_wait", "pack_send",
                                                        "send_wait")} <= set(cols)  # the per-rank profile
    rows = [r.split(",") for r in (run / "summary.csv").read_text().splitlines()[1:]]
    ref_rows = [r.split(",") for r in (ref / "summary.csv").read_text().splitlines()[1:]]
    for c in ("loss_assoc1", "loss_ae2", "test_acc"):  # same per-component losses, epoch by epoch
        i, j = cols.index(c), ref_cols.index(c)
        assert [float(r[i]) for r in rows] == pytest.approx([float(r[j]) for r in ref_rows], rel=1e-4, abs=1e-6)


def test_pipeline_micro_batches_and_resume(tmp_path, blobs, cfg_file):
    exp = tmp_path / "exp"
    _ok(launch_local(_args(cfg_file, exp, "--method", "al", "--pipeline", "--micro-batches", "3", "--depth", "3",
                           epochs=2), 2, timeout=LIMIT_S, fork=True, entry=cli.main))
    run = exp / "al-seed0"
    # stages by cost (alviz.parallel.cost): with 20 input features and width 32 the first component
    # is the lightest, so rank 0 takes two
    assert json.loads((run / "meta.json").read_text())["parallel"]["components"] == [[1, 2], [3]]
    outs = launch_local(_args(cfg_file, exp, "--method", "al", "--pipeline", "--micro-batches", "3", "--depth", "3",
                              "--resume", epochs=3), 2, timeout=LIMIT_S, fork=True, entry=cli.main)
    _ok(outs)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["epoch"] == 3 and [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    # 3 micro-batches per batch, then a restart from the epoch-2 checkpoint: still single-process AL
    _assert_same_weights(run, _single(tmp_path / "single", blobs, method="al", depth=3, epochs=3), atol=1e-4)


def test_ddp_two_ranks_both_methods(tmp_path, blobs, cfg_file):
    # batch 45 over 2 ranks: shards of 23 and 22, and a last batch of 15 (8 + 7): the gradient
    # weighting must still give the global batch's mean gradient
    outs = launch_local(_args(cfg_file, tmp_path / "exp", "--method", "both", "--ddp", "--batch-size", "45"), 2,
                        timeout=LIMIT_S, fork=True, entry=cli.main)
    _ok(outs)
    for method in ("al", "bp"):
        run = tmp_path / "exp" / f"{method}-seed0"
        model, config = alviz.load(run)
        assert config.method == method
        assert (model(blobs.x_test).argmax(1) == blobs.y_test).float().mean() > 0.9
        meta = json.loads((run / "meta.json").read_text())
        assert meta["parallel"] == {"mode": "ddp", "world_size": 2, "backend": "gloo",
                                    "shards": "each batch cut into world_size contiguous shards; same global batch"}
        ref = _single(tmp_path / f"single-{method}", blobs, method=method, batch_size=45)
        _assert_same_weights(run, ref, atol=1e-3)


def test_dead_rank_stops_the_others_with_a_clear_error(tmp_path, cfg_file):
    t0 = time.monotonic()
    # rank 1 exits abruptly at its 20th micro-batch (epoch 2 of 15 micro-batches each)
    outs = launch_local(_args(cfg_file, tmp_path / "exp", "--method", "al", "--pipeline"), 2, timeout=LIMIT_S,
                        fork=True, entry=cli.main, env={"ALVIZ_TEST_FAIL": "1:20"})
    assert time.monotonic() - t0 < LIMIT_S - 5
    r0, r1 = outs
    assert r1.returncode == 17 and "injected failure" in r1.stderr
    assert r0.killed is None and r0.returncode == 4, r0.stderr
    assert "alviz: error: rank 0 of 2: lost contact with another rank in epoch 2" in r0.stderr
    assert "Traceback" not in r0.stderr
    run = tmp_path / "exp" / "al-seed0"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["epoch"] == 1 and meta["status"] == "running"  # the last whole checkpoint is kept
    alviz.load(run)


def test_hung_rank_times_out(tmp_path, cfg_file):
    # rank 1 stops answering at step 20 of a DDP run: rank 0 gives up after ALVIZ_DIST_TIMEOUT
    t0 = time.monotonic()
    outs = launch_local(_args(cfg_file, tmp_path / "exp", "--method", "bp", "--ddp"), 2, timeout=LIMIT_S, grace=3,
                        fork=True, entry=cli.main, env={"ALVIZ_TEST_FAIL": "1:20:hang", "ALVIZ_DIST_TIMEOUT": "2"})
    assert time.monotonic() - t0 < LIMIT_S - 5
    r0, r1 = outs
    assert r0.killed is None and r0.returncode == 4, r0.stderr
    assert "lost contact with another rank in epoch 2" in r0.stderr and "timeout 2s" in r0.stderr
    assert r1.killed == "after another rank exited"


# --------------------------------------------------------------------------- in-process pieces

def test_partition_and_micro_batch_plan():
    assert partition(2, 2) == [range(0, 1), range(1, 2)]
    assert partition(5, 2) == [range(0, 2), range(2, 5)]
    assert partition(4, 4) == [range(i, i + 1) for i in range(4)]
    with pytest.raises(UserError, match="needs at least 3 components; received depth 2"):
        partition(2, 3)
    assert micro_batch_plan(10, 4, 3) == [(0, 1, False), (1, 2, False), (2, 4, True), (4, 5, False), (5, 6, False),
                                          (6, 8, True), (8, 9, False), (9, 10, True)]
    assert micro_batch_plan(5, 4, 1) == [(0, 4, True), (4, 5, True)]
    with pytest.raises(ValueError, match="one thread only"):  # OpenMP is not fork-safe
        launch_local(["train"], 2, threads=2, fork=True, entry=cli.main)


def test_schedule_known_answers():
    # equal stages of cost 3, handing on after a third: U*c + (K-1)*c/3
    assert epoch_time([3, 3, 3, 3], 32, 1 / 3) == pytest.approx(32 * 3 + 3 * 1)
    assert ideal_speedup(4, 32, 1 / 3) == pytest.approx(4 * 32 / (32 + 1))
    assert speedup([3, 3, 3, 3], 32, 1 / 3) == pytest.approx(ideal_speedup(4, 32, 1 / 3))
    assert fill_bubble(4, 32, 1 / 3) == pytest.approx(1 / 33) and fill_bubble(1, 8, 0.5) == 0
    # unequal stages: the slow one paces; stage 0 hands on at 0.5, 1.5, 2.5, 3.5; stage 1 ends at 0.5 + 4*2
    assert epoch_time([1, 2], 4, 0.5) == pytest.approx(8.5)
    assert epoch_time([2, 1], 4, 0.5) == pytest.approx(8.0)  # stage 0 ends at 8; stage 1 gets u3 at 7, ends at 8
    assert speedup([1, 2], 4, 0.5) == pytest.approx(12 / 8.5)
    assert epoch_time([5], 3, 1.0) == 15 and speedup([5], 3, 0.0) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        epoch_time([1, -1], 2, 0.5)


def test_profile_columns_known_answers():
    prof = torch.tensor([[1.0, 0.5, 0.1, 0.0, 0.2, 0.05], [1.2, 0.4, 0.2, 0.3, 0.0, 0.0]], dtype=torch.float64)
    row = EpochProfile.columns(prof, EpochProfile.PHASES)
    assert row["rank0_compute_s"] == pytest.approx(0.75) and row["rank1_compute_s"] == pytest.approx(0.9)
    assert row["rank0_pack_send_s"] == 0.2 and row["rank1_recv_wait_s"] == 0.3
    assert row["rank0_cpu_s"] == 0.5 and row["rank1_io_cpu_s"] == 0.2
    p = EpochProfile(simulated=True)
    p.start()
    p.simulate(0.01)
    p.phase["recv_wait"] += 0.25
    v = p.vector()
    assert len(v) == 3 + 4 and v[0] >= 0.01 and v[3] == 0.25 and v[6] >= 0.01  # wall, ..., simulated as slept


@pytest.mark.parametrize("variant", ["paper", "iclr2022"])
def test_component_losses_match_losses(variant):
    torch.manual_seed(0)
    model = create_model(TrainConfig(dataset="blobs", depth=3, width=8, variant=variant), (20,), 5)
    x, y = torch.randn(7, 20), torch.randint(0, 5, (7,))
    ref, _ = model.losses(x, y)
    s, t = x, torch.nn.functional.one_hot(y, 5).float()
    for i in range(3):
        s, t, assoc, ae = model.component_losses(i, s, t, y)
        assert torch.equal(assoc, ref[f"assoc{i + 1}"]) and torch.equal(ae, ref[f"ae{i + 1}"])


def _cli(capsys, *args):
    rc = cli.main(["train", "--dataset", "blobs", "--device", "cpu", "--quiet", *args])
    return rc, capsys.readouterr().err


def test_cli_errors(capsys, monkeypatch, tmp_path):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    out = ["--out", str(tmp_path / "e")]
    rc, err = _cli(capsys, "--method", "al", "--pipeline", *out)
    assert rc == 2 and "must be started by torchrun" in err and "lacks RANK, WORLD_SIZE" in err
    rc, err = _cli(capsys, "--method", "bp", "--pipeline", *out)
    assert rc == 2 and "--pipeline trains one local rule (al, scpl, dgl" in err and "received --method bp" in err
    rc, err = _cli(capsys, "--pipeline", *out)  # default --method both
    assert rc == 2 and "received --method both" in err
    rc, err = _cli(capsys, "--method", "al", "--pipeline", "--ddp", *out)
    assert rc == 2 and "received both, choose one" in err
    rc, err = _cli(capsys, "--method", "al", "--micro-batches", "2", *out)
    assert rc == 2 and "--micro-batches applies to --pipeline only; received 2" in err
    rc, err = _cli(capsys, "--method", "al", "--pipeline", "--micro-batches", "0", *out)
    assert rc == 2 and "between 1 and the batch size 64; received 0" in err
    monkeypatch.setenv("WORLD_SIZE", "3")
    rc, err = _cli(capsys, "--method", "al", "--pipeline", *out)
    assert rc == 2 and "over 3 ranks needs at least 3 components; received depth 2" in err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("method", ["scpl", "dgl"])
def test_pipeline_of_scpl_and_dgl_trains_like_single_process(tmp_path, blobs, cfg_file, method):
    """SCPL and DGL hand only s_i on: two ranks, three components, the same weights as one process."""
    outs = launch_local(_args(cfg_file, tmp_path / "exp", "--method", method, "--pipeline", "--depth", "3",
                              epochs=2), 2, timeout=LIMIT_S, fork=True, entry=cli.main)
    _ok(outs)
    run = tmp_path / "exp" / f"{method}-seed0"
    meta = json.loads((run / "meta.json").read_text())
    from alviz.parallel.cost import partition_by_cost

    costs = meta["parallel"]["component_cost_gflop"]  # stages by cost: the split its recorded costs give
    assert meta["parallel"]["components"] == [[i + 1 for i in r] for r in partition_by_cost(costs, 2)]
    assert meta["parallel"]["components"] in ([[1], [2, 3]], [[1, 2], [3]]) and meta["epoch"] == 2
    ref = _single(tmp_path / "single", blobs, method=method, depth=3, epochs=2)
    _assert_same_weights(run, ref, atol=1e-5)
    cols = (run / "summary.csv").read_text().splitlines()[0].split(",")
    want = {"loss_ce1", "loss_ce3"} if method == "dgl" else {"loss_cl1", "loss_cl3", "loss_ce"}
    assert want | {"test_acc"} <= set(cols)


def test_pipeline_refuses_the_end_to_end_control(capsys, monkeypatch, tmp_path):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    rc, err = _cli(capsys, "--method", "al-e2e", "--pipeline", "--out", str(tmp_path / "e"))
    assert rc == 2 and "received --method al-e2e" in err
