"""The reviewer's sections of an experiment report, in one place: paired verdicts for the layer
table, the accuracy headline (exact binomial intervals, McNemar on per-sample correctness), the
layer-to-layer similarity with its seed noise floor (``simsection``), the per-class tables
(``perclass``), AL's own diagnostics (``aldiag``) and the interval figures (``intervalfigs``).

``reviewer_sections`` computes everything that needs the activations and returns rows for
metrics.csv, the table marks, headline sentences, a function adding the document's sections,
a function drawing the figures and the payload for metrics.json; ``similarity.csv`` is written
here.

What this is not: no measuring of separability (``measure``), no rendering (``document``).
"""
from __future__ import annotations

from ..checkpoint import write_text_atomic
from ..uncertainty import NO_DIFFERENCE, clopper_pearson
from .files import csv_text
from .measure import replicates
from .perclass import class_table, confusion_table
from .runs import method_order
from .simsection import SIM_COLUMNS, csv_rows, floor_verdicts, heatmap_figure, pairs_for
from .tables import fmt
from .verdicts import accuracy_pairs, position_verdicts, word

TABLE_VERDICT_MEASURES = ["ratio", "centroid_ratio", "fisher_ratio", "nc1", "silhouette", "knn_acc", "probe_acc"]


def _interval(lo, hi) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


def accuracy_headline(infos, reps_by_run, rows) -> tuple[list[str], dict]:
    methods = sorted({i.method for i in infos}, key=method_order)
    runs = {m: [i.name for i in sorted(infos, key=lambda i: i.seed) if i.method == m] for m in methods}
    text = []
    acc = {}
    for m in methods:
        r0 = runs[m][0]
        ok = reps_by_run[r0].get(("output", "correct"))
        if ok is None:
            continue
        lo, hi = clopper_pearson(int(ok.sum()), len(ok))
        acc[m] = {"run": r0, "acc": float(ok.mean()), "cp_low": lo, "cp_high": hi, "n": len(ok)}
    if acc:
        text.append("Accuracy of each method's first run on the held-out samples measured here, with the exact "
                    "(Clopper-Pearson) 95 % interval: " + "; ".join(
                        f"{m.upper()} ({a['run']}) {fmt(a['acc'])} {_interval(a['cp_low'], a['cp_high'])}, "
                        f"n = {a['n']}" for m, a in acc.items()) + ".")
    out = {"accuracy": acc}
    if len(acc) == 2:
        ma, mb = list(acc)
        seed = {i.name: i.seed for i in infos}
        sides = [[{"run": r, "method": m, "seed": seed[r], "correct": reps_by_run[r][("output", "correct")]}
                  for r in runs[m] if ("output", "correct") in reps_by_run[r]] for m in (ma, mb)]
        mc = accuracy_pairs(*sides)
        if mc["pairs"]:
            A, B = ma.upper(), mb.upper()
            c = mc["combined"][0]
            per = "; ".join(f"{r['run_a']} vs {r['run_b']}: {A} right and {B} wrong on {r['a_only']} samples, the "
                            f"reverse on {r['b_only']}, p = {r['p']:.3g} ({word(r['better'], A, B)})"
                            for r in mc["pairs"])
            line = f"Per sample, McNemar's exact test for each seed pair (paired by {c['paired_by']}): {per}."
            if c["n_pairs"] > 1:
                line += (f" Combined: p < {c['alpha']:g} in {c['significant']} of {c['n_pairs']} pairs; summed over "
                         f"the pairs {A} right and {B} wrong on {c['a_only']} samples, the reverse on {c['b_only']} "
                         "(the pairs share the held-out samples, so the sums get no test of their own); "
                         f"{word(c['better'], A, B)} (a method is called better only where every pair's test says so).")
            text.append(line)
            out["mcnemar"] = {"method_a": ma, "method_b": mb, **mc}
    return text, out


def reviewer_sections(infos, acts, rows, reps_by_run, opts, folder, log) -> dict:
    from .aldiag import al_diagnostics

    new_rows: list[dict] = []
    ladder = []
    for i in sorted(infos, key=lambda i: (method_order(i.method), i.seed)):
        if i.method == "al":
            d = al_diagnostics(i, acts[i.name], replicates(acts[i.name].test.labels, opts), reps_by_run[i.name])
            new_rows += d["rows"]
            if not ladder:
                ladder = d["ladder"]
    verdicts = position_verdicts(rows, reps_by_run, TABLE_VERDICT_MEASURES)
    winners = {(v["depth"], v["measure"]): v["winner"] for v in verdicts}
    headline, acc = accuracy_headline(infos, reps_by_run, rows)
    pairs = pairs_for(infos, acts, opts.boot, opts.seed, log, folder / ".cache") if opts.similarity else []
    sim_rows = csv_rows(pairs)
    floors = floor_verdicts(pairs)
    if pairs:
        write_text_atomic(folder / "similarity.csv", csv_text(sim_rows, SIM_COLUMNS))

    def figures(summary, class_names):
        from .intervalfigs import interval_figures

        figs = interval_figures(summary, ladder, folder, log)
        hm = heatmap_figure(pairs, folder, log)
        if hm:
            figs["fig_similarity"] = hm
        return figs

    def document(doc, figs):
        all_rows = rows + new_rows
        if verdicts:
            doc.h("AL against BP, paired")
            doc.p("Per position and measure: the difference of the first method minus the second, its 95 % "
                  "interval from the paired stratified bootstrap (same resampled held-out samples for both; with "
                  "several seeds, seed-to-seed variance added), and the verdict.")
            doc.table(["pos.", "layers", "measure", "difference", "95 % interval", "verdict"],
                      [[f"{v['depth']:g}", f"{v['method_a'].upper()} {v['layer_a']} / {v['method_b'].upper()} "
                        f"{v['layer_b']}", v["measure"], fmt(v["diff"], 4), _interval(v["low"], v["high"]),
                        {"A": f"{v['method_a'].upper()} better", "B": f"{v['method_b'].upper()} better"}.get(
                            v["better"], NO_DIFFERENCE)] for v in verdicts])
        if pairs:
            doc.h("Layer-to-layer similarity")
            doc.p("Linear CKA (unbiased estimator; similarity, 1 = same up to rotation and scale) between aligned "
                  "layers, with 95 % group-bootstrap intervals, against the same measure between two seeds of one "
                  "method (the noise floor). Procrustes distances (angular, lower = more alike) and mutual 10-NN "
                  "overlaps of every layer pair are in similarity.csv. The AL-BP pair uses runs of different "
                  "seeds when there are two (runs of one seed share the encoders' initialisation).")
            if floors:
                labels = [f["label"] for f in floors[0]["floors"]]
                head = ["pos.", "layers", f"CKA {pairs[0]['label']}"] + [f"CKA {lab}" for lab in labels] + \
                       [f"vs {lab}" for lab in labels]
                body = []
                for f in floors:
                    body.append([f"{f['depth']:g}", f"{f['layer_a']} / {f['layer_b']}",
                                 f"{fmt(f['value'])} {_interval(*f['interval'])}"]
                                + [f"{fmt(x['value'])} {_interval(*x['interval'])}" for x in f["floors"]]
                                + [x["verdict"] for x in f["floors"]])
                doc.table(head, body)
                if not labels:
                    doc.p("No noise floor: each method has one seed here (train a second: alviz train --seeds 0,1).")
            if "fig_similarity" in figs:
                doc.fig("fig_similarity", figs["fig_similarity"]["png"], figs["fig_similarity"]["caption"])
        doc.h("Per class")
        doc.p("Per-class accuracy of the models and of the linear probe, and the per-class inter/intra ratio, at "
              "each method's last encoder layer (mean over seeds). Every layer's per-class values and intervals are "
              "rows of metrics.csv (column class).")
        doc.table(*class_table(all_rows, doc_class_names[0]))
        for i in sorted(infos, key=lambda i: (method_order(i.method), i.seed)):
            if any(j.method == i.method and j.seed < i.seed for j in infos):
                continue
            t = confusion_table(all_rows, i.name, class_names=doc_class_names[0])
            if t:
                doc.p(f"Confusion matrix of {i.name} (its own predictions; rows: true class, columns: predicted; "
                      f"the probe's matrices per layer are rows of metrics.csv, measure confusion_probe).")
                doc.table(*t)
        if ladder:
            doc.h("AL diagnostics")
            doc.p("Association gap ||b_k(s_k) - t_k|| (mean over held-out samples; per class in metrics.csv), the "
                  "smallest and mean distance between two classes' label codes t_k, and the readout ladder: the "
                  "early exit at depth k against a linear probe on s_k (paired bootstrap verdict).")
            body = []
            for k in sorted({r["depth"] for r in ladder}):
                ex = next(r for r in ladder if r["depth"] == k and r["what"] == "exit")
                pr = next((r for r in ladder if r["depth"] == k and r["what"] == "probe"), None)
                gap = [r for r in new_rows if r["layer"] == ex["layer"] and r["run"] == ladder_run[0]
                       and r.get("class") is None and r["stat"] == "value"]
                g = {r["measure"]: r["value"] for r in gap}
                body.append([str(k), fmt(g.get("assoc_gap")), fmt(g.get("code_sep_min")), fmt(g.get("code_sep_mean")),
                             f"{fmt(ex['value'])} {_interval(ex['low'], ex['high'])}",
                             f"{fmt(pr['value'])} {_interval(pr['low'], pr['high'])}" if pr else "–",
                             {"A": "exit better", "B": "probe better"}.get(pr.get("verdict"), NO_DIFFERENCE)
                             if pr else "–"])
            doc.table(["k", "assoc. gap", "code dist. min", "code dist. mean", "exit acc", "probe acc (s_k)",
                       "verdict"], body)
            if "fig_ladder" in figs:
                doc.fig("fig_ladder", figs["fig_ladder"]["png"], figs["fig_ladder"]["caption"])

    ladder_run = [next((i.name for i in sorted(infos, key=lambda i: i.seed) if i.method == "al"), None)]
    doc_class_names = [[]]

    payload = {"verdicts": verdicts, "similarity": sim_rows, "noise_floor": floors, "readout_ladder": ladder, **acc}
    return {"rows": new_rows, "winners": winners, "headline": headline, "figures": figures,
            "document": document, "payload": payload, "class_names": doc_class_names}
