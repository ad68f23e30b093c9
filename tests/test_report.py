"""Tests for alviz.report and the `alviz analyze` / `alviz compare` commands, on tiny experiments
trained here (blobs data, width 16, 2 epochs): every file is produced, the tidy CSV and its
aggregated confidence intervals hold known answers, report.html is offline, caches are reused
and invalidated, compare's which-is-better logic, studies, locking and errors."""
import csv
import json
import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from alviz import report as R
from alviz.metrics import MEASURES
from alviz.report import files, measure, runs, tsne, viewer
from alviz.cli import main
from alviz.config import TrainConfig
from alviz.errors import UserError
from alviz.experiment import train_experiment

CFG = TrainConfig(dataset="blobs", epochs=2, width=16, batch_size=128, device="cpu")
TINY = dict(tsne_samples=40, perplexity=5.0, train_samples=300, device="cpu")


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models: one torch thread is many times faster than several on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    """One experiment: AL and BP, seeds 0 and 1 (4 runs)."""
    out = tmp_path_factory.mktemp("ckpt") / "blobs-exp"
    train_experiment(CFG, ("al", "bp"), (0, 1), out, progress=False, log=quiet)
    return out


@pytest.fixture(scope="module")
def analysed(exp, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    logs = []
    folders = R.analyze([exp], out=out, log=logs.append, **TINY)
    return folders[0], logs


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------- analyze
def test_analyze_writes_every_file(analysed):
    folder, logs = analysed
    assert folder.name == "blobs-exp"
    for name in ["metrics.csv", "metrics.json", "report.md", "report.html"]:
        assert (folder / name).stat().st_size > 0, name
    for stem in ["fig_ratio", "fig_distances", "fig_measures", "fig_tsne", "fig_training", "fig_exits"]:
        assert (folder / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-", stem
        assert (folder / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
    md = (folder / "report.md").read_text()
    assert "![fig_tsne](fig_tsne.png)" in md and "| pos. | method | layer |" in md
    assert not list(folder.glob(".*.tmp-*"))  # no temporary files left behind
    assert any("report" not in l and "measured" in l for l in logs)


def test_metrics_csv_is_tidy_with_aggregated_ci(analysed):
    folder, _ = analysed
    rows = read_csv(folder / "metrics.csv")
    assert list(rows[0]) == R.CSV_COLUMNS
    for col in ["run", "method", "seed", "layer", "role", "depth", "measure", "value"]:
        assert col in rows[0]
    per_run = [r for r in rows if r["stat"] == "value"]
    runs = {r["run"] for r in per_run}
    assert runs == {"al-seed0", "al-seed1", "bp-seed0", "bp-seed1"}
    # AL: block1, block2, bridge1 (early exit), bridge2, decoder2, decoder1; BP: block1, block2, head1..3
    layers = {(r["method"], r["layer"]) for r in per_run}
    assert {l for m, l in layers if m == "al"} == {"block1", "block2", "bridge1", "bridge2", "decoder2", "decoder1"}
    assert {l for m, l in layers if m == "bp"} == {"block1", "block2", "head1", "head2", "head3"}
    assert len(per_run) == (6 + 5) * 2 * len(MEASURES)
    # the aggregate over seeds: known answer from the per-run values
    vals = [float(r["value"]) for r in per_run if r["method"] == "al" and r["layer"] == "block2"
            and r["measure"] == "ratio"]
    stats = {r["stat"]: float(r["value"]) for r in rows if r["run"] == "al" and r["seed"] == "all"
             and r["layer"] == "block2" and r["measure"] == "ratio"}
    assert set(stats) == {"mean", "std", "n", "ci_low", "ci_high"}
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(vals))
    assert stats["std"] == pytest.approx(np.std(vals, ddof=1))
    half = 12.706204736 * stats["std"] / math.sqrt(2)  # t_{0.975, 1}
    assert stats["ci_low"] == pytest.approx(stats["mean"] - half)
    assert stats["ci_high"] == pytest.approx(stats["mean"] + half)
    assert math.isfinite(stats["ci_low"]) and stats["ci_low"] < stats["mean"] < stats["ci_high"]
    # positions: AL bridge2 joins BP head1 at L + 1 = 3
    pos = {(r["method"], r["layer"]): r["depth"] for r in per_run}
    assert float(pos[("al", "bridge2")]) == float(pos[("bp", "head1")]) == 3


def test_metrics_json_matches_csv(analysed):
    folder, _ = analysed
    data = json.loads((folder / "metrics.json").read_text())
    assert data["experiment"] == "blobs-exp"
    assert set(data["measures"]) == set(MEASURES)
    assert len(data["runs"]) == 4 and {r["method"] for r in data["runs"]} == {"al", "bp"}
    assert len(data["rows"]) == len([r for r in read_csv(folder / "metrics.csv") if r["stat"] == "value"])
    assert data["tsne"]["n"] == 40


def test_report_html_is_self_contained(analysed):
    folder, _ = analysed
    text = (folder / "report.html").read_text()
    assert not re.search(r"https?://", text)  # no external resources, not even links
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", text)
    assert text.count("data:image/png;base64,") == 6  # every figure inline
    viewer = re.search(r'<script type="application/json" id="alviz-tsne">(.*?)</script>', text, re.S).group(1)
    payload = json.loads(viewer)
    assert payload["rows"] == ["AL", "BP"] and len(payload["cols"]) == 5
    assert len(payload["labels"]) == len(payload["ids"]) == 40
    assert all(len(p["x"]) == 40 for p in payload["panels"] if p)
    assert payload["thumb"] is None  # blobs are vectors, not images
    data = json.loads(re.search(r'id="alviz-data">(.*?)</script>', text, re.S).group(1))
    assert data["experiment"] == "blobs-exp"


def test_caches_reused_then_invalidated(exp, tmp_path):
    """Measures and t-SNE panels come from the cache while the activations are unchanged; a
    changed activation file recomputes exactly its entries and drops the stale ones."""
    opts = R.Options(**dict(TINY, tsne_samples=30))
    infos = [runs.read_run(exp / n, "blobs-exp") for n in ("al-seed0", "bp-seed0")]
    cache = tmp_path / "cache"

    def run():
        logs = []
        acts = {i.name: measure.RunActivations(i, opts, quiet) for i in infos}
        rows = measure.measure_run(infos[0], acts["al-seed0"], opts, cache, logs.append)
        panels = tsne.tsne_panels(infos, acts, opts, cache, logs.append)
        return rows, panels, logs

    rows1, t1, logs = run()
    assert any("(0 from cache)" in l for l in logs) and any("(10 computed, 0 from cache)" in l for l in logs)
    tdir = cache / "tsne"
    before = {p.name: p.stat().st_mtime_ns for p in tdir.glob("*.npy")}
    assert len(before) == 10  # 5 positions x 2 methods
    rows2, t2, logs = run()
    assert any("(6 from cache)" in l for l in logs) and any("(0 computed, 10 from cache)" in l for l in logs)
    assert [r["value"] for r in rows2] == [r["value"] for r in rows1]
    for k in t1["panels"]:
        np.testing.assert_array_equal(t1["panels"][k], t2["panels"][k])
    assert {p.name: p.stat().st_mtime_ns for p in tdir.glob("*.npy")} == before
    f = exp / "al-seed0" / "activations" / "blobs-test" / "block1.npy"
    original = np.load(f)
    try:
        np.save(f, (original * 1.5 + 0.1).astype(original.dtype))
        rows3, t3, logs = run()
        assert any("(5 from cache)" in l for l in logs) and any("(1 computed, 9 from cache)" in l for l in logs)
        changed = {r["measure"] for r1, r in zip(rows1, rows3) if r["value"] != r1["value"]}
        assert "intra" in changed and all(r["layer"] == "block1" for r1, r in zip(rows1, rows3)
                                          if r["value"] != r1["value"])
        after = {p.name for p in tdir.glob("*.npy")}
        assert len(after) == 10 and len(after - set(before)) == 1
        assert len([n for n in after if n.startswith("al-seed0-block1-")]) == 1  # stale entry removed
        assert len(list((cache / "metrics" / "al-seed0").glob("block1-*.json"))) == 1
    finally:
        np.save(f, original)


def test_concurrent_analyze_cli_and_api_are_serialised(exp, tmp_path, capsys):
    """`alviz analyze` and analyze() on the same experiment at once: the second waits for the
    lock, both succeed, the files are whole."""
    out = tmp_path / "rep"
    results, errors, waits = [], [], []

    def cli():
        results.append(main(["analyze", str(exp / "bp-seed1"), "--out", str(out), "--no-tsne",
                             "--train-samples", "300", "--device", "cpu"]))

    def api():
        try:
            results.append(R.analyze([exp / "bp-seed1"], out=out, log=waits.append, **dict(TINY, tsne=False)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=cli), threading.Thread(target=api)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    captured = capsys.readouterr()
    assert not errors and 0 in results and len(results) == 2, captured.err
    assert f"report: {out / 'blobs-exp' / 'report.html'}" in captured.out
    folder = out / "blobs-exp"
    assert not (folder / "fig_tsne.png").exists() and (folder / "fig_ratio.png").exists()
    rows = read_csv(folder / "metrics.csv")
    assert {r["run"] for r in rows if r["stat"] == "value"} == {"bp-seed1"}
    assert len([r for r in rows if r["stat"] == "value"]) == 5 * len(MEASURES)
    json.loads((folder / "metrics.json").read_text())
    assert "id=\"alviz-tsne\"" not in (folder / "report.html").read_text()


def test_lock_excludes_a_second_holder(tmp_path):
    order = []
    with files.locked(tmp_path, log=quiet):
        t = threading.Thread(target=lambda: (files.locked(tmp_path, log=lambda m: order.append("waiting"))
                                             .__enter__(), order.append("got")))
        t.start()
        time.sleep(0.3)
        assert order == ["waiting"]  # blocked while we hold it
        order.append("released")
    t.join(5)
    assert order == ["waiting", "released", "got"]


# ----------------------------------------------------------------------------------- study
def test_study_across_depths(exp, tmp_path):
    deep = tmp_path / "ckpt" / "blobs-d3"
    train_experiment(CFG.replace(depth=3, epochs=1), ("al", "bp"), (0,), deep, progress=False, log=quiet)
    out = tmp_path / "rep"
    folders = R.analyze([exp / "al-seed0", exp / "bp-seed0", deep], out=out, log=quiet,
                        **dict(TINY, tsne=False, train_samples=100))
    names = [f.name for f in folders]
    assert names == ["blobs-exp", "blobs-d3", "study-mlp-blobs"]
    study = out / "study-mlp-blobs"
    for name in ["fig_study.pdf", "fig_study.png", "report.md", "report.html", "metrics.csv", "metrics.json"]:
        assert (study / name).is_file(), name
    data = json.loads((study / "metrics.json").read_text())
    assert data["x"] == "depth" and data["group"] is None
    depths = {(r["method"], r["depth"]) for r in data["records"] if r["measure"] == "ratio"}
    assert depths == {("al", 2), ("bp", 2), ("al", 3), ("bp", 3)}
    assert not re.search(r"https?://", (study / "report.html").read_text())


# --------------------------------------------------------------------------------- compare
def rec(method, match, layer, measure, value, seed=0, depth=1):
    return {"method": method, "match": match, "layer": layer, "measure": measure, "value": value,
            "seed": seed, "depth": depth, "stat": "value"}


def test_better_side_follows_measure_direction():
    assert R.better_side("ratio", 3.0, 2.0) == "A"  # higher is better
    assert R.better_side("ratio", 2.0, 3.0) == "B"
    assert R.better_side("nc1", 0.1, 0.2) == "A"  # lower is better
    assert R.better_side("intra", 5.0, 1.0) == "B"
    assert R.better_side("knn_acc", 0.9, 0.9) == "tie"
    assert R.better_side("silhouette", float("nan"), 0.5) == "n/a"
    with pytest.raises(UserError, match="unknown measure 'foo'"):
        R.better_side("foo", 1, 2)


def test_compare_rows_joins_on_match_and_averages_seeds():
    a = [rec("al", "p1", "block1", "ratio", 2.0, seed=0), rec("al", "p1", "block1", "ratio", 4.0, seed=1),
         rec("al", "p3", "bridge2", "nc1", 0.1, depth=3),
         rec("al", "p1.5", "bridge1", "ratio", 9.0, depth=1.5)]  # no partner in BP: left out
    b = [rec("bp", "p1", "block1", "ratio", 3.5), rec("bp", "p3", "head1", "nc1", 0.3, depth=3)]
    rows = R.compare_rows(a, b)
    assert [(r["layer_a"], r["layer_b"], r["measure"]) for r in rows] == [
        ("block1", "block1", "ratio"), ("bridge2", "head1", "nc1")]
    r0, r1 = rows
    assert r0["a"] == 3.0 and r0["b"] == 3.5 and r0["diff"] == -0.5 and r0["better"] == "B"
    assert r0["n_a"] == 2 and r0["n_b"] == 1
    assert r1["diff"] == pytest.approx(-0.2) and r1["better"] == "A"
    table = R.format_compare_table(rows, "runA", "runB")
    assert "A = runA" in table and "AL block1 / BP block1" in table and "AL bridge2 / BP head1" in table
    assert re.search(r"ratio\s+3\.0000\s+3\.5000\s+-0\.5000\s+B", table)


def test_compare_table_flags_scale_dependent_measures():
    rows = R.compare_rows([rec("al", "p1", "block1", "intra", 1.0), rec("al", "p1", "block1", "ratio", 2.0)],
                          [rec("bp", "p1", "block1", "intra", 2.0), rec("bp", "p1", "block1", "ratio", 1.0)])
    assert [(r["measure"], r["better"], r["scale_free"]) for r in rows] == [("intra", "A", False),
                                                                          ("ratio", "A", True)]
    table = R.format_compare_table(rows)
    assert re.search(r"intra .* A\*$", table, re.M) and re.search(r"ratio .* A$", table, re.M)
    assert "* in the units of each layer's activations" in table


def test_thumbnails_are_the_samples_images():
    from alviz.data import load_raw

    raw = load_raw("digits")
    ids = raw.ids_test[[3, 0, 7]]
    info = runs.RunInfo(path=Path("."), name="r", experiment="e", method="al", seed=0,
                     config={"dataset": "digits", "data_dir": "data", "test_fraction": 0.2}, meta={})
    th = viewer.thumbnails(info, ids, quiet)
    assert th.shape == (3, 8, 8, 1) and th.dtype == np.uint8
    expected = np.round(raw.x_test[[3, 0, 7], 0] / 16.0 * 255.0)  # digits: pixels 0..16
    np.testing.assert_array_equal(th[..., 0], expected.astype(np.uint8))
    info.config["dataset"] = "blobs"
    assert viewer.thumbnails(info, np.array([0]), quiet) is None  # vectors: no images


def test_compare_rows_by_method_when_sides_hold_both():
    a = [rec("al", "p1", "block1", "ratio", 2.0), rec("bp", "p1", "block1", "ratio", 1.0)]
    b = [rec("al", "p1", "block1", "ratio", 1.5), rec("bp", "p1", "block1", "ratio", 1.2)]
    rows = R.compare_rows(a, b)
    assert [(r["method_a"], r["method_b"], r["better"]) for r in rows] == [("al", "al", "A"), ("bp", "bp", "B")]


def test_cli_compare_runs(exp, tmp_path, capsys):
    out = tmp_path / "rep"
    code = main(["compare", str(exp / "al-seed0"), str(exp / "bp-seed0"), "--out", str(out),
                 "--train-samples", "300", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    csv_path = out / "blobs-exp" / "compare-al-seed0-vs-bp-seed0.csv"
    assert f"csv: {csv_path}" in captured.out
    rows = read_csv(csv_path)
    assert list(rows[0]) == R.COMPARE_COLUMNS
    assert {(r["layer_a"], r["layer_b"]) for r in rows} == {
        ("block1", "block1"), ("block2", "block2"), ("bridge2", "head1"), ("decoder2", "head2"),
        ("decoder1", "head3")}
    for r in rows:
        assert r["better"] == R.better_side(r["measure"], float(r["a"]), float(r["b"]))
        assert float(r["diff"]) == pytest.approx(float(r["a"]) - float(r["b"]))
    assert "better" in captured.out and "AL bridge2 / BP head1" in captured.out


# ---------------------------------------------------------------------------------- errors
def test_errors_no_runs_and_not_a_run(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no alviz runs found in"):
        R.analyze([empty], out=tmp_path / "rep", log=quiet)
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(UserError, match="not a run or experiment directory"):
        R.analyze([f], out=tmp_path / "rep", log=quiet)
    assert main(["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alviz: error: not a run or experiment directory") and err.count("\n") == 1
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    assert main(["analyze"]) == 2
    assert "no runs found: checkpoints/ does not exist" in capsys.readouterr().err
    assert main(["compare", str(empty), str(empty)]) == 2
    assert "no alviz runs found" in capsys.readouterr().err


def test_bad_options(tmp_path, capsys):
    for args, msg in [(["--tsne-samples", "2"], "tsne-samples must be at least 4"),
                      (["--perplexity", "0"], "perplexity must be a positive number"),
                      (["--max-samples", "1"], "max-samples must be an integer >= 2"),
                      (["--seed", "-1"], "seed must be a non-negative integer")]:
        assert main(["analyze", str(tmp_path), *args]) == 2
        assert msg in capsys.readouterr().err


def test_error_in_a_tsne_worker_reaches_the_caller(exp, tmp_path, monkeypatch):
    import alviz.embed

    def boom(*a, **k):
        raise FloatingPointError("boom in t-SNE")

    monkeypatch.setattr(alviz.embed, "tsne", boom)
    with pytest.raises(FloatingPointError, match="boom in t-SNE"):
        R.analyze([exp / "al-seed0"], out=tmp_path / "rep", log=quiet, **TINY)
    assert not (tmp_path / "rep" / "blobs-exp" / "report.html").exists()
