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
    per_run = [r for r in rows if r["stat"] == "value" and r["class"] == "" and r["measure"] in MEASURES]
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
             and r["layer"] == "block2" and r["measure"] == "ratio" and r["class"] == ""}
    assert set(stats) == {"mean", "std", "n", "ci_low", "ci_high", "boot_low", "boot_high"}
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
    assert len(data["rows"]) == len([r for r in read_csv(folder / "metrics.csv") if r["seed"] != "all"])
    assert data["tsne"]["n"] == 40


def test_report_html_is_self_contained(analysed):
    folder, _ = analysed
    text = (folder / "report.html").read_text()
    assert not re.search(r"https?://", text)  # no external resources, not even links
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(?!data:)", text)
    assert text.count("data:image/png;base64,") == 9  # every figure inline (6 + intervals, similarity, ladder)
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
    assert len([r for r in rows if r["stat"] == "value" and r["class"] == "" and r["measure"] in MEASURES]) == 5 * len(MEASURES)
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


def test_intervals_per_class_and_confusion_rows(analysed):
    folder, _ = analysed
    rows = read_csv(folder / "metrics.csv")
    run = [r for r in rows if r["run"] == "al-seed0" and r["class"] == ""]
    st = {(r["layer"], r["measure"], r["stat"]): float(r["value"]) for r in run}
    n_test = 240
    for (layer, m, stat), v in st.items():
        if stat == "value" and m in MEASURES and math.isfinite(v) and m != "silhouette":
            lo, hi = st[(layer, m, "boot_low")], st[(layer, m, "boot_high")]
            assert lo <= hi and lo - 0.25 * abs(v) <= v <= hi + 0.25 * abs(v), (layer, m, lo, v, hi)
    # accuracies: exact binomial intervals, known answer from the value and n
    from scipy.stats import beta
    v = st[("block2", "probe_acc", "value")]
    k = round(v * n_test)
    assert st[("block2", "probe_acc", "cp_low")] == pytest.approx(beta.ppf(0.025, k, n_test - k + 1) if k else 0.0)
    # the model's own accuracy from pred.npy, its confusion matrix sums to the held-out samples
    conf = [r for r in rows if r["run"] == "al-seed0" and r["measure"] == "confusion_model"]
    assert sum(float(r["value"]) for r in conf) == n_test
    diag = sum(float(r["value"]) for r in conf if r["stat"] == f"pred={r['class']}")
    assert st[("output", "model_acc", "value")] == pytest.approx(diag / n_test)
    # per class: every class of blobs (5) for ratio and probe accuracy at each layer
    pc = {(r["layer"], r["measure"], r["class"]) for r in rows if r["run"] == "bp-seed0" and r["class"] != ""
          and r["stat"] == "value"}
    assert {c for l, m, c in pc if l == "block1" and m == "ratio"} == {"0", "1", "2", "3", "4"}
    assert {m for l, m, c in pc if l == "block1"} >= {"intra", "inter", "ratio", "knn_acc", "probe_acc"}


def test_reviewer_sections_similarity_verdicts_and_al_diagnostics(analysed):
    folder, _ = analysed
    md = (folder / "report.md").read_text()
    for text in ("## AL against BP, paired", "## Layer-to-layer similarity", "## Per class", "## AL diagnostics",
                 "McNemar", "Confusion matrix of al-seed0"):
        assert text in md, text
    sim = read_csv(folder / "similarity.csv")
    assert {r["pair"] for r in sim} == {"AL vs BP", "AL vs AL", "BP vs BP"}
    for r in sim:
        assert r["measure"] in ("cka", "procrustes", "knn_overlap")
        if r["measure"] == "procrustes":
            assert 0 <= float(r["value"]) <= math.pi / 2 + 1e-9
    aligned = [r for r in sim if r["pair"] == "AL vs BP" and r["match_a"] == r["match_b"] and r["measure"] == "cka"]
    assert {r["layer_a"] for r in aligned} == {"block1", "block2", "bridge2", "decoder2", "decoder1"}
    assert all(float(r["boot_low"]) <= float(r["boot_high"]) for r in aligned)
    data = json.loads((folder / "metrics.json").read_text())
    assert {v["better"] for v in data["verdicts"]} <= {"A", "B", "no detectable difference"}
    # the layer table marks exactly the paired winners
    winners = sum(1 for v in data["verdicts"] if v["better"] != "no detectable difference")
    table = [l for l in md.split("## Separability by layer")[1].split("\n## ")[0].splitlines() if l.startswith("|")]
    assert sum(l.count("**") for l in table) == 2 * winners
    assert data["noise_floor"] and all(len(f["floors"]) == 2 for f in data["noise_floor"])
    # McNemar for every seed pair (AL seed s against BP seed s), then combined
    assert [(p["run_a"], p["run_b"]) for p in data["mcnemar"]["pairs"]] == [("al-seed0", "bp-seed0"),
                                                                            ("al-seed1", "bp-seed1")]
    assert data["mcnemar"]["combined"][0]["n_pairs"] == 2 and "al-seed1 vs bp-seed1: AL right" in md
    assert "Combined: p < 0.05 in" in md
    assert [r["depth"] for r in data["readout_ladder"] if r["what"] == "exit"] == [1, 2]
    gap = [r for r in read_csv(folder / "metrics.csv") if r["measure"] == "assoc_gap" and r["class"] == ""
           and r["stat"] == "value" and r["run"] == "al-seed0"]
    assert {r["layer"] for r in gap} == {"bridge1", "bridge2"} and all(float(r["value"]) >= 0 for r in gap)


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
        assert float(r["diff"]) == pytest.approx(float(r["a"]) - float(r["b"]))
        if r["class"] == "":  # a side is better only where the paired interval excludes zero
            lo, hi = float(r["diff_low"]), float(r["diff_high"])
            if lo <= 0 <= hi:
                assert r["better"] == "no detectable difference"
            else:
                assert r["better"] == R.better_side(r["measure"], float(r["a"]), float(r["b"]))
    assert {r["class"] for r in rows} >= {"", "0", "4"}
    assert "better" in captured.out and "AL bridge2 / BP head1" in captured.out and "McNemar" in captured.out
    # every printed row of the table names its layers (grep works)
    assert all(l.startswith("AL ") for l in captured.out.splitlines() if re.search(r"\s(ratio|nc1)\s", l))
    assert (csv_path.parent / "compare-al-seed0-vs-bp-seed0-similarity.csv").is_file()
    code = main(["compare", str(exp / "al-seed0"), str(exp / "bp-seed0"), "--out", str(out),
                 "--train-samples", "300", "--device", "cpu", "--json", "--boot", "20"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["similarity"] and data["rows"]
    (pair,) = data["mcnemar"]["pairs"]  # one run a side: one seed pair, named
    assert pair["run_a"] == "blobs-exp/al-seed0" and pair["run_b"] == "blobs-exp/bp-seed0" and pair["a_only"] >= 0
    assert data["mcnemar"]["combined"][0]["n_pairs"] == 1


def test_compare_experiments_mcnemar_for_every_seed_pair(exp, tmp_path, capsys):
    code = main(["compare", str(exp), str(exp), "--out", str(tmp_path), "--train-samples", "300", "--device", "cpu",
                 "--json", "--boot", "0", "--no-similarity"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    pairs = [(p["run_a"], p["run_b"]) for p in data["mcnemar"]["pairs"]]
    assert pairs == [(f"blobs-exp/{m}-seed{s}",) * 2 for m in ("al", "bp") for s in (0, 1)]  # AL with AL, by seed
    assert all(p["a_only"] == p["b_only"] == 0 and p["p"] == 1.0 for p in data["mcnemar"]["pairs"])
    assert [(c["method_a"], c["n_pairs"], c["paired_by"]) for c in data["mcnemar"]["combined"]] == [
        ("al", 2, "seed"), ("bp", 2, "seed")]


def test_second_analyze_takes_the_similarity_from_the_cache(exp, tmp_path, monkeypatch):
    from alviz.report import simsection

    calls = []
    real = simsection.similarity_matrices
    monkeypatch.setattr(simsection, "similarity_matrices", lambda *a, **k: calls.append(1) or real(*a, **k))
    opts = dict(TINY, tsne=False, boot=20)
    R.analyze([exp], out=tmp_path, log=quiet, **opts)
    assert len(calls) == 3  # AL vs BP, AL vs AL, BP vs BP
    sim = (tmp_path / "blobs-exp" / "similarity.csv").read_text()
    logs = []
    R.analyze([exp], out=tmp_path, log=logs.append, **opts)
    assert len(calls) == 3 and sum("from the cache" in line for line in logs if line.startswith("similarity:")) == 3
    assert (tmp_path / "blobs-exp" / "similarity.csv").read_text() == sim
    R.analyze([exp], out=tmp_path, log=quiet, **dict(opts, boot=30))  # a setting that changes the result
    assert len(calls) == 6


def test_compare_refuses_runs_on_different_held_out_data(exp):
    # B's held-out set now differs (fewer samples): refused, naming both data sets
    from alviz.report.measure import RunActivations
    from alviz.report.simsection import same_samples
    from alviz.report.runs import read_run
    a = RunActivations(read_run(exp / "al-seed0", "e"), R.Options(max_samples=100, train_samples=300), quiet)
    b = RunActivations(read_run(exp / "bp-seed0", "e"), R.Options(max_samples=60, train_samples=300), quiet)
    with pytest.raises(UserError, match=r"al-seed0 and bp-seed0 were measured on different held-out data \(blobs test "
                                        r"\(100 samples\) vs blobs test \(60 samples\)\)"):
        same_samples("al-seed0", a, "bp-seed0", b)


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
