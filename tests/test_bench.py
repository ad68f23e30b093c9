"""The benchmark suite runs (quick mode), writes the JSON it promises, and skips what is missing;
bench/gpu_epoch.py runs on the CPU with tiny settings; the training options it times are wired."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _run(args, timeout=240):
    return subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def _quick_one(tmp_path, name: str):
    """`bench/run.py --quick --only NAME`: its stdout and its benchmark's result, which must have run."""
    out = tmp_path / "res.json"
    r = _run(["bench/run.py", "--quick", "--only", name, "--json", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    b = json.loads(out.read_text())["benchmarks"][name]
    assert b["status"] == "ok", b
    return r.stdout, b["result"]


def test_suite_quick_threads_times_both_loops_and_checks_the_result(tmp_path):
    stdout, res = _quick_one(tmp_path, "threads")
    (row,) = res["rows"]
    assert row["case"] == "quickstart-al" and row["same_as_one_thread"] is True and row["groups"] == [[0], [1]]
    for way in ("sequential", "threads", "threads_vs_sequential"):
        assert _positive(row[way]["median"]) and len(row[way]["all"]) == 1
    assert "| quickstart-al | 32 |" in stdout


def test_suite_quick_cost_times_every_component_and_compares_partitions(tmp_path):
    stdout, res = _quick_one(tmp_path, "cost")
    (row,) = res["rows"]
    assert row["case"] == "quick-mlp" and row["depth"] == 3 and all(_positive(s) for s in row["measured_s"])
    assert sum(row["measured_share"]) == pytest.approx(1) and sum(row["estimated_share"]) == pytest.approx(1)
    assert [p["groups"] for p in row["partitions"]] == [2, 3]
    assert all(p["slowdown"] >= 1 for p in row["partitions"])
    assert "| quick-mlp |" in stdout


def test_busy_fraction_is_the_union_of_kernel_intervals_over_the_window():
    from bench.gpu_epoch import busy_fraction

    assert busy_fraction([], 0, 10) == 0
    assert busy_fraction([(0, 10)], 0, 10) == 1
    # overlapping and nested kernels count once; unsorted input; a kernel past the window is clipped
    assert busy_fraction([(6, 8), (1, 3), (2, 4), (2.5, 3), (9, 12)], 0, 10) == pytest.approx((3 + 2 + 1) / 10)
    # touching intervals, one before the window
    assert busy_fraction([(-5, -1), (0, 2), (2, 5)], 0, 10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="end > start"):
        busy_fraction([(0, 1)], 3, 3)


def test_gpu_check_script_runs_its_steps_and_writes_a_summary(tmp_path):
    # the prepared GPU script's plumbing on the CPU: a step that fails (no GPU here) is noted and the next runs
    import os

    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_ONLY": "gpu_epoch,test_gpu",
           "PATH": str(Path(PY).parent) + os.pathsep + os.environ.get("PATH", "")}  # its python3: this one
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (out / "summary.txt").read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["gpu_epoch", "test_gpu"]
    expect = "rc=0" if torch.cuda.is_available() else "rc=2"
    assert expect in lines[0], lines
    assert "rc=0" in lines[1], (out / "test_gpu.txt").read_text()[-2000:]
    assert f"torch {torch.__version__} cuda" in (out / "env.txt").read_text()


def test_cost_comparison_known_answers():
    from bench.bench_cost import compare

    # the model thinks component 1 is the heaviest, the clock finds component 3 is
    c = compare([4.0, 1.0, 1.0], [1.0, 1.0, 4.0])
    assert c["estimated_share"] == pytest.approx([4 / 6, 1 / 6, 1 / 6])
    two = c["partitions"][0]
    assert two["cost_model"] == [[0], [1, 2]] and two["clock"] == [[0, 1], [2]] and two["same"] is False
    # measured heaviest group: {2, 3} = 5 under the model's split, {3} = 4 under the clock's
    assert two["slowdown"] == pytest.approx(5 / 4) and two["speedup_bound"] == pytest.approx(6 / 5)
    three = c["partitions"][1]
    assert three["same"] is True and three["slowdown"] == 1.0 and three["speedup_bound"] == pytest.approx(6 / 4)


def test_suite_quick_train_writes_figures(tmp_path):
    out = tmp_path / "res.json"
    r = _run(["bench/run.py", "--quick", "--only", "train", "--json", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    m = res["machine"]
    assert m["cores"] >= 1 and m["cpu_model"] and m["torch"] == torch.__version__ and len(m["loadavg"]) == 3
    assert res["quick"] is True and set(res["benchmarks"]) == {"train"}
    b = res["benchmarks"]["train"]
    assert b["status"] == "ok" and _positive(b["seconds"])
    t = b["result"]
    assert t["threads"] == 1 and t["reps"] >= 3
    (row,) = t["flops"]
    assert row["arch"] == "mlp" and row["width"] == 256 and row["batch"] == 64
    assert row["matmul"]["shape"] == [64, 256, 1280] and _positive(row["matmul"]["gflops_per_s"])
    for method in ("al", "bp"):
        v = row[method]
        for k in ("flops", "params", "step_cpu_s", "step_wall_s", "gflops_per_s", "vs_matmul",
                  "fused_adam_step_cpu_s", "fused_adam_vs_matmul"):
            assert _positive(v[k]), (method, k, v[k])
    # FLOP counts are exact, so they have known values: BP's MLP at batch 64, forward
    # 2*64*(784*256 + 256*256 + 256*1280 + 1280*256 + 256*256 + 256*10); backward twice that,
    # less the first layer's input gradient (the input needs none)
    fwd = 2 * 64 * (784 * 256 + 256 * 256 + 256 * 1280 + 1280 * 256 + 256 * 256 + 256 * 10)
    assert row["bp"]["flops"] == 3 * fwd - 2 * 64 * 784 * 256
    assert row["al"]["flops"] > row["bp"]["flops"]
    a = row["al_vs_bp"]
    assert a["predicted_flop_ratio"] == pytest.approx(row["al"]["flops"] / row["bp"]["flops"])
    assert _positive(a["measured_time_ratio"])
    eo = t["epoch_overhead"]["methods"]
    for method in ("al", "bp"):
        for k in ("pure_steps_cpu_s", "loop_cpu_s", "legacy_loop_cpu_s", "whole_train_call_cpu_s"):
            assert _positive(eo[method][k]), (method, k)
        assert -1 < eo[method]["loop_overhead"] < 1
    s = t["summary"]
    assert isinstance(s["goal_loop_overhead_under_5pct"], bool) and s["goal_mlp_step_half_of_matmul"] is None
    for k in ("evaluate_cpu_s", "checkpoint_cpu_s", "checkpoint_wall_s"):
        assert _positive(eo["al"][k]), k
    assert "| mlp w256 | 64 | AL |" in r.stdout and "## train" in r.stdout


def test_suite_quick_runs_every_other_benchmark(tmp_path):
    # so that none of them can rot (the train benchmark has its own test above)
    out = tmp_path / "res.json"
    r = _run(["bench/run.py", "--quick", "--only", "metrics,extract,analyze,script,parallel", "--json", str(out)],
             timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    b = json.loads(out.read_text())["benchmarks"]
    assert {k: v["status"] for k, v in b.items()} == dict.fromkeys(("metrics", "extract", "analyze", "script",
                                                                     "parallel"), "ok")
    ex = b["extract"]["result"]
    assert {(row["arch"], row["method"], row["layers"]) for row in ex["speed"]} == {
        (a, m, lay) for a in ("mlp", "cnn") for m, lay in (("bp", "all layers"), ("al", "on-path layers"),
                                                           ("al", "all layers"))}
    assert all(_positive(row["ratio_vs_plain"]) for row in ex["speed"])
    runs = ex["memory"]["runs"]
    assert {r_["writer"] for r_ in runs} == {"file writes", "through mapping"}
    assert all(_positive(r_["peak_rss"]) and r_["bytes_written"] > r_["n"] * 4 for r_ in runs)
    assert _positive(b["analyze"]["result"]["analyze"]["cold_s"])
    # the hand-written script and alviz analyze agree on every measure both compute (k-NN: sklearn's
    # default neighbour search against alviz's brute force, the same neighbours)
    sc = b["script"]["result"]
    assert set(sc["ways"]) == {"alviz_lean", "script"} and sc["agreement"]["values_compared"] > 0
    assert all(d < 1e-6 for d in sc["agreement"]["max_rel_diff"].values()), sc["agreement"]
    assert all(_positive(v["wall_s"]) for v in sc["ways"].values())
    rows = b["parallel"]["result"]["correctness"]["rows"]
    assert rows and all(row["max_weight_diff"] == 0.0 for row in rows if row["mode"].startswith("pipeline"))
    scaling = {(r_["ranks"], r_["micro_batches"]): r_ for r_ in b["parallel"]["result"]["scaling"]["rows"]}
    assert scaling[(2, 1)]["ideal_speedup"] == pytest.approx(2 * 8 / (8 + 1 / 3))  # fill: one forward third
    assert _positive(scaling[(2, 1)]["cores_used"])
    ab = b["parallel"]["result"]["ab"]["rows"][0]
    assert _positive(ab["speedup_vs_single1"]["median"]) and _positive(ab["speedup_vs_single2"]["median"])
    assert {"rank0_cpu_s", "rank1_recv_wait_s", "rank1_io_cpu_s"} <= set(ab["profile"])


def test_parallel_projection_known_partition():
    import importlib.util  # the multi-GPU projection: FLOP counts, no timing

    spec = importlib.util.spec_from_file_location("bench_parallel", ROOT / "bench" / "bench_parallel.py")
    bp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bp)

    (row,) = bp.projection(models=(("cifar10-resnet20", 32),), ranks=(2, 4))["rows"]
    assert row["units"] == 1563 and len(row["component_share"]) == 4
    assert sum(row["component_share"]) == pytest.approx(1.0, abs=2e-3)
    assert row["ranks"][2]["groups"] == [[1, 2], [3, 4]] and row["ranks"][4]["groups"] == [[1], [2], [3], [4]]
    assert row["ranks"][4]["bound"] == pytest.approx(1 / max(row["component_share"]), rel=1e-2)
    assert row["ranks"][4]["speedup"] <= row["ranks"][4]["bound"]


def test_suite_skips_missing_and_failing_benchmarks(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench_metrics.py").write_text("def run(quick=False):\n    return {'x': 2.5, 'quick': quick}\n")
    (bench / "bench_extract.py").write_text("def run(quick=False):\n    raise ValueError('no data here')\n")
    out = tmp_path / "res.json"
    r = _run(["bench/run.py", "--quick", "--only", "metrics,extract,analyze", "--json", str(out),
              "--bench-dir", str(bench)])
    assert r.returncode == 0, r.stderr[-2000:]
    b = json.loads(out.read_text())["benchmarks"]
    assert b["metrics"]["status"] == "ok" and b["metrics"]["result"] == {"x": 2.5, "quick": True}
    assert b["extract"]["status"] == "failed" and "ValueError: no data here" in b["extract"]["note"]
    assert b["analyze"]["status"] == "missing"
    assert "analyze: skipped, bench/bench_analyze.py does not exist" in r.stdout


def test_suite_rejects_unknown_names():
    r = _run(["bench/run.py", "--only", "trian"])
    assert r.returncode == 2
    assert ("--only: unknown benchmark 'trian'; allowed: train, step, threads, cost, metrics, extract, compare, analyze, "
            "script, parallel, snapshots, viewer") in r.stderr


def test_gpu_epoch_script_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    r = _run(["bench/gpu_epoch.py", "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch-size", "4",
              "--n-train", "16", "--width", "8", "--archs", "resnet20", "--methods", "al,bp",
              "--variants", "fp32,amp_cl", "--threads", "1", "--json", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["extrapolated"] is True and len(res["runs"]) == 4
    for run in res["runs"]:
        assert "error" not in run, run
        assert _positive(run["step_ms"]) and _positive(run["samples_per_s"]) and run["epoch_steps"] == 12500
        assert run["epoch_s_extrapolated"] == pytest.approx(run["step_ms"] / 1e3 * 12500)
        assert run["channels_last"] is False  # channels-last applies on CUDA only
        assert run["gpu_util_pct"] is None and run["width"] == 8
    assert "EXTRAPOLATED" in r.stdout and "| resnet20 | AL | amp_cl |" in r.stdout
    bad = _run(["bench/gpu_epoch.py", "--device", "cpu", "--archs", "resnet99"])
    assert bad.returncode == 2 and "--archs: received resnet99; allowed: resnet20, resnet32, vgg, cnn" in bad.stderr
    bad = _run(["bench/gpu_epoch.py", "--device", "cpu", "--profile-steps", "-1"])
    assert bad.returncode == 2 and "--profile-steps must be 0 (no profile) or a positive integer; received -1" in bad.stderr


def test_bench_scripts_refuse_bad_arguments_in_one_line():
    bad = _run(["bench/bench_cost.py", "--cases", "paper-mlp-32,vgg-99"])
    assert bad.returncode == 2 and "--cases: allowed: paper-mlp-32," in bad.stderr
    assert "received 'paper-mlp-32,vgg-99'" in bad.stderr
    bad = _run(["bench/bench_cost.py", "--reps", "0"])
    assert bad.returncode == 2 and "--reps must be at least 1; received 0" in bad.stderr
    bad = _run(["bench/bench_extract.py", "--device", "tpu"])
    assert bad.returncode == 2 and "--device: unknown device 'tpu'; allowed: auto, cpu, cuda, cuda:N" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.fixture
def one_thread():
    """Two OpenMP threads on two cores shared with other processes can be 10x slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_channels_last_and_compile_options(tmp_path, blobs_cfg, monkeypatch, one_thread):
    from alviz.config import TrainConfig, from_dict
    from alviz.errors import UserError
    from alviz.train import train, use_channels_last

    cfg = from_dict({"channels_last": True, "compile": False})
    assert cfg.channels_last is True and cfg.compile is False
    with pytest.raises(UserError, match=r"channels_last must be of type bool; received 'yes'"):
        from_dict({"channels_last": "yes"})
    with pytest.raises(UserError, match=r"compile must be true or false; received 1"):
        TrainConfig(compile=1).validate()
    conv = TrainConfig(arch="cnn", channels_last=True)
    assert use_channels_last(conv, torch.device("cuda"), (1, 28, 28))
    assert not use_channels_last(conv, torch.device("cpu"), (1, 28, 28))
    assert not use_channels_last(conv.replace(arch="mlp"), torch.device("cuda"), (1, 28, 28))

    # compile=True hands the model's losses to torch.compile (stubbed here: a real CPU compile
    # takes a minute) and trains with what it returns; the weights equal an uncompiled run's
    seen = []

    def fake_compile(fn, **kw):
        seen.append((fn.__name__, kw))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(blobs_cfg.replace(epochs=1), tmp_path / "a", progress=False, log=lambda *_: None)
    train(blobs_cfg.replace(epochs=1, compile=True, channels_last=True), tmp_path / "b", progress=False,
          log=lambda *_: None)
    assert seen == [("losses", {"dynamic": False})]
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # resuming with the speed options changed is allowed (they do not change what the run means)
    train(blobs_cfg.replace(epochs=2), tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["epoch"] == 2


def test_train_epoch_flags_the_first_nonfinite_step():
    from alviz.train import NonFiniteLoss, train_epoch

    class Toy(torch.nn.Module):
        def __init__(self, poison_at=None):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(3, 2)
            self.calls, self.poison_at = 0, poison_at

        def losses(self, x, y):
            self.calls += 1
            out = self.lin(x)
            a = torch.nn.functional.cross_entropy(out, y)
            b = (out ** 2).mean() * (float("nan") if self.calls == self.poison_at else 1.0)
            return {"a": a, "b": b, "loss": a + b}, out.detach()

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 3, generator=g), torch.randint(0, 2, (40,), generator=g)
    m = Toy()
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: every step sees the same model
    st = train_epoch(m, opt, x, y, torch.arange(40), batch_size=4, nan_check_every=3)
    assert st.keys == ["a", "b", "loss"] and st.n == 40 and st.first_bad == {}
    with torch.no_grad():
        assert st.correct == int((m.lin(x).argmax(1) == y).sum())
        # the sums are the per-step running float64 sums, bit for bit
        ref = 0.0
        for i in range(10):
            ref += float(torch.nn.functional.cross_entropy(m.lin(x[i * 4:(i + 1) * 4]), y[i * 4:(i + 1) * 4]).double()) * 4
    assert st.sums[0] == ref
    # a NaN in loss b at the 7th step (index 6) makes the weights NaN, so loss a follows at index 7
    m = Toy(poison_at=7)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    st = train_epoch(m, opt, x, y, torch.arange(40), batch_size=4, on_nan="continue", nan_check_every=3)
    assert st.first_bad == {"b": 6, "loss": 6, "a": 7} and m.calls == 10
    m = Toy(poison_at=7)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    with pytest.raises(NonFiniteLoss) as e:
        train_epoch(m, opt, x, y, torch.arange(40), batch_size=4, on_nan="stop", nan_check_every=3)
    assert e.value.stats.first_bad == {"b": 6, "loss": 6, "a": 7} and m.calls == 9  # the check after step 9


def test_suite_quick_step_and_compare(tmp_path):
    # bench_step (AL step against a plain PyTorch loop) and bench_compare (alviz beside the libraries)
    out = tmp_path / "res.json"
    # about 25 s of CPU; the wall-clock ceiling allows for a machine shared with other busy processes
    r = _run(["bench/run.py", "--quick", "--only", "step,compare", "--json", str(out)], timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    b = json.loads(out.read_text())["benchmarks"]
    assert {k: v["status"] for k, v in b.items()} == {"step": "ok", "compare": "ok"}, b
    (case,) = b["step"]["result"]["cases"]
    # the hand-written loop and alviz take the same step: same loss and weights to the bit
    assert case["same_step"] == {"loss": True, "weights": True}
    assert all(_positive(case[k]["step_cpu_s"]) for k in ("plain", "alviz", "alviz_exact"))
    assert 0 <= case["fused_vs_plain_max_weight_diff"] < 1e-5  # the default's fused Adam: rounding, no more
    c = b["compare"]["result"]
    ways = c["extraction"]["ways"]
    assert set(ways) == {"forward", "alviz", "hooks_npy", "torchvision_fx"}
    assert all(ways[w]["same_values_as_alviz"] for w in ("hooks_npy", "torchvision_fx"))
    assert c["measures"]["silhouette"]["abs_diff"] < 1e-9 and c["measures"]["class_distances"]["max_rel_diff"] < 1e-9
    assert c["measures"]["cka"]["abs_diff"] < 1e-6 and 0 < c["measures"]["cka"]["reference"] < 1
    assert c["tsne"]["identical"] is True
    assert "| torchvision_fx |" in r.stdout and "plain ms" in r.stdout


def test_tsne_schedule_bench_measures_both_schedules_from_the_same_start():
    sys.path.insert(0, str(ROOT))
    from bench.bench_tsne_schedule import chain, quality

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    sets = [(e, (rng.normal(0, 4, (3, 8))[y] + rng.normal(0, 1, (60, 8))).astype(np.float32)) for e in (0, 1)]
    rows = chain(sets, y, perplexity=5.0, seed=0)
    assert [r["epoch"] for r in rows] == [0, 1] and "short_kl" not in rows[0]
    assert {"full_kl", "short_kl", "full_knn10", "short_knn10", "full_shift", "short_shift"} <= set(rows[1])
    # the exact KL of a layout against itself is 0 only for a perfect fit; a random layout is worse
    Z = sets[1][1]
    kl_rand, keep_rand = quality(Z, rng.normal(size=(60, 2)), 5.0, 0)
    assert rows[1]["full_kl"] < kl_rand and rows[1]["full_knn10"] > keep_rand
