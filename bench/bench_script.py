"""Benchmark the whole `alviz analyze` against the script a researcher would write by hand (issue 19).

    python bench/bench_script.py [--quick] [--exp PATH] [--reps R] [--json PATH]

On one trained experiment (--exp, else the default one is trained first, as bench/bench_analyze.py
does; --quick: its blobs experiment), each repetition runs, in a fresh process each, cold (on a
copy of the runs without their activation folders, into a fresh report folder: nothing cached),
in an order that alternates between repetitions:
- `alviz`: ``alviz analyze EXP`` with its defaults (200 bootstrap replicates, layer similarity);
- `alviz_lean`: ``alviz analyze EXP --boot 0 --no-similarity``: without the two things the
  script does not do at all, so the ratio is fair both ways (alviz still measures centroid,
  Fisher and NC1, aligns the t-SNE panels, writes the viewer and the report);
- `script`: ``bench/handwritten_analysis.py EXP`` (hooks, sklearn, openTSNE, matplotlib; its
  docstring lists what it does not do).
Reported: wall and CPU seconds (user + system of the child) of each, medians and ranges over the
repetitions, the ratios to the script, alviz's phases (metrics.json `timing_s`; the rest is
starting Python, reading the runs and writing the report) and the script's, and whether the
two agree on the measures they share (silhouette, intra, inter, ratio, k-NN and probe accuracy
per layer, from alviz's metrics.json against the script's metrics.csv).
--quick: one repetition, 100 t-SNE points, `alviz_lean` and `script` only (checks that it runs, not
the figures).
Timings are wall clock on whatever else the machine runs: the load average is recorded. Not a test.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from bench._common import loadavg, run_timed, write_json  # noqa: E402
from bench.bench_analyze import ALVIZ, _copy_without_activations, _train  # noqa: E402

WAYS = {"alviz": [], "alviz_lean": ["--boot", "0", "--no-similarity"], "script": None}
SHARED = ("silhouette", "intra", "inter", "ratio", "knn_acc", "probe_acc")


def _command(way: str, exp: Path, out: Path, quick: bool) -> list[str]:
    if way == "script":
        cmd = [sys.executable, str(ROOT / "bench" / "handwritten_analysis.py"), str(exp), "--out", str(out)]
        return cmd + (["--tsne-samples", "100"] if quick else [])
    cmd = ALVIZ + ["analyze", str(exp), "--out", str(out), "--device", "cpu"] + WAYS[way]
    return cmd + (["--tsne-samples", "100"] if quick else [])


def _once(way: str, exp: Path, tmp: Path, rep: int, quick: bool) -> dict:
    cold = _copy_without_activations(exp, tmp / f"{way}-{rep}" / "in" / exp.name)
    out = tmp / f"{way}-{rep}" / "out"
    wall, cpu = run_timed(_command(way, cold, out, quick))
    print(f"  {way} repetition {rep + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU (load {loadavg()})", file=sys.stderr,
          flush=True)
    if way == "script":
        phases = json.loads((out / "timing.json").read_text())
    else:
        phases = json.loads((out / exp.name / "metrics.json").read_text())["timing_s"]
    return {"wall_s": wall, "cpu_s": cpu, "phases_s": phases, "out": out}


def agreement(alviz_out: Path, script_out: Path) -> dict:
    """Largest difference between alviz's and the script's values of the measures both compute."""
    meta = json.loads(alviz_out.read_text())
    ours = {(r["run"], r["layer"], r["measure"]): r["value"] for r in meta["rows"]
            if r.get("stat") == "value" and r.get("class") in (None, "") and r["measure"] in SHARED}
    diffs = {m: 0.0 for m in SHARED}
    n = 0
    with open(script_out) as fh:
        for row in csv.DictReader(fh):
            for m in SHARED:
                v = ours.get((row["run"], row["layer"], m))
                if v is not None:
                    diffs[m] = max(diffs[m], abs(float(row[m]) - v) / max(abs(v), 1e-12))
                    n += 1
    return {"max_rel_diff": diffs, "values_compared": n}


def run(quick: bool = False, exp=None, reps: int | None = None) -> dict:
    reps = reps or (1 if quick else 3)
    res: dict = {"quick": quick, "reps": reps, "load_start": loadavg()}
    with tempfile.TemporaryDirectory(prefix="alviz-bench-script-") as d:
        tmp = Path(d)
        if exp is None:
            exp, res["train_s"] = _train(tmp, quick)
        exp = Path(exp)
        res["experiment"] = str(exp)
        res["commands"] = {w: " ".join(_command(w, exp, Path("OUT"), quick)[1:]) for w in WAYS}
        ways = [w for w in WAYS if not (quick and w == "alviz")]  # --quick: the lean alviz only
        runs: dict[str, list] = {w: [] for w in ways}
        for r in range(reps):
            for w in (ways if r % 2 == 0 else ways[::-1]):
                runs[w].append(_once(w, exp, tmp, r, quick))
        res["agreement"] = agreement(runs[ways[0]][0]["out"] / exp.name / "metrics.json",
                                     runs["script"][0]["out"] / "metrics.csv")
    res["ways"] = {}
    for w, rs in runs.items():
        wall, cpu = [x["wall_s"] for x in rs], [x["cpu_s"] for x in rs]
        phases = {k: statistics.median(x["phases_s"][k] for x in rs) for k in rs[0]["phases_s"]}
        res["ways"][w] = {"wall_s": statistics.median(wall), "wall_range_s": [min(wall), max(wall)],
                          "cpu_s": statistics.median(cpu), "cpu_range_s": [min(cpu), max(cpu)],
                          "all_wall_s": wall, "all_cpu_s": cpu, "phases_s": phases}
    for w in (w for w in ("alviz", "alviz_lean") if w in runs):
        per = [a["wall_s"] / s["wall_s"] for a, s in zip(runs[w], runs["script"])]
        per_cpu = [a["cpu_s"] / s["cpu_s"] for a, s in zip(runs[w], runs["script"])]
        res["ways"][w].update(vs_script_wall=statistics.median(per), vs_script_wall_range=[min(per), max(per)],
                              vs_script_cpu=statistics.median(per_cpu), vs_script_cpu_range=[min(per_cpu), max(per_cpu)])
    res["load_end"] = loadavg()
    return res


def table(res: dict) -> str:
    lines = [f"`alviz analyze` against a hand-written script, cold, each in a fresh process; medians [range] of "
             f"{res['reps']} alternating repetitions:", "",
             "| way | command | wall s | CPU s | wall / script | CPU / script | phases s (medians) |",
             "|---|---|---:|---:|---:|---:|---|"]
    for w, v in res["ways"].items():
        ratio = cratio = "1"
        if "vs_script_wall" in v:
            ratio = f"{v['vs_script_wall']:.2f} [{v['vs_script_wall_range'][0]:.2f}-{v['vs_script_wall_range'][1]:.2f}]"
            cratio = f"{v['vs_script_cpu']:.2f} [{v['vs_script_cpu_range'][0]:.2f}-{v['vs_script_cpu_range'][1]:.2f}]"
        phases = ", ".join(f"{k} {x:.1f}" for k, x in v["phases_s"].items() if x)
        lines.append(f"| {w} | `{res['commands'][w]}` | {v['wall_s']:.1f} [{v['wall_range_s'][0]:.1f}-"
                     f"{v['wall_range_s'][1]:.1f}] | {v['cpu_s']:.1f} [{v['cpu_range_s'][0]:.1f}-"
                     f"{v['cpu_range_s'][1]:.1f}] | {ratio} | {cratio} | {phases} |")
    ag = res["agreement"]
    lines += ["", f"Shared measures ({ag['values_compared']} values), largest relative difference alviz vs script: "
              + ", ".join(f"{m} {d:.1e}" for m, d in ag["max_rel_diff"].items()),
              f"Load average {res['load_start']} at the start, {res['load_end']} at the end."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="blobs experiment, 100 t-SNE points, one repetition")
    p.add_argument("--exp", default=None, help="experiment to analyse [train the default one]")
    p.add_argument("--reps", type=int, default=None, help="repetitions [3; --quick 1]")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    res = run(a.quick, a.exp, a.reps)
    print(table(res))
    write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
