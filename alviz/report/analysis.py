"""``alviz analyze``: for each experiment, read its runs, extract and measure every layer, embed
the inference path with t-SNE, draw the figures and write the report folder; then the studies
across experiments.

What this is not: the steps themselves live in the sibling files (``runs``, ``measure``,
``tsne``, ``figures``, ``tables``, ``viewer``, ``document``, ``study``); this file orders them.
"""
from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..checkpoint import write_text_atomic
from ..errors import UserError
from ..extract.runs import run_lock
from ..metrics import MEASURES
from . import dynamics as dyn
from .background import Background
from .document import Doc, files_line, shown_path, write_report
from .figures import experiment_figures
from .files import csv_text, locked
from .measure import RunActivations, aggregate, measure_run
from .reviewer import reviewer_sections
from .options import DEFAULT_OUT, DEFAULT_ROOT, Options
from .runs import collect_runs, experiment_names, method_order, read_run
from .study import ExperimentResult, study_groups, write_study
from .tables import accuracy_summary, fmt, fmt_pm, layer_table, layout_note, measure_defs, published_table, run_table
from .tsne import TsneJob, blas_share, cores, schedule_note
from .viewer import thumbnails, viewer_block, viewer_payload


def analyze_experiment(exp_dir: Path, run_dirs: list[Path], name: str, folder: Path, opts: Options,
                        log) -> ExperimentResult:
    from .. import plots

    t0 = time.perf_counter()
    infos = []
    for r in sorted(run_dirs, key=lambda p: p.name):
        try:
            infos.append(read_run(r, name))
        except UserError as e:
            log(f"{r}: skipped ({e})")
    if not infos:
        raise UserError(f"{exp_dir}: none of its runs could be read; see the messages above")
    infos.sort(key=lambda i: (method_order(i.method), i.seed, i.name))
    datasets = sorted({i.config["dataset"] for i in infos})
    if len(datasets) > 1:
        raise UserError(f"{exp_dir}: its runs were trained on different data sets ({', '.join(datasets)}); "
                        "analyse them separately")
    for i in infos:
        if i.meta.get("status") != "complete":
            log(f"{i.path}: unfinished run (epoch {i.meta.get('epoch')}, status {i.meta.get('status')}); "
                "analysed as it is")
    cache = folder / ".cache"
    acts: dict[str, RunActivations] = {}
    rows: list[dict] = []
    # every run stays locked from its extraction until its sets are read (measures and t-SNE): another
    # analysis with other settings waits instead of replacing a set this one is reading; the locks are
    # taken in path order, so two analyses never wait for each other
    reps_by_run: dict[str, dict] = {i.name: {} for i in infos}
    strip = None
    dyn_rows: list[dict] = []
    t_dyn = 0.0
    with ExitStack() as held:
        for info in sorted(infos, key=lambda i: str(i.path)):
            held.enter_context(run_lock(info.path))
        t = time.perf_counter()
        for info in infos:
            acts[info.name] = RunActivations(info, opts, log)
        t_extract = time.perf_counter() - t
        dynamic = opts.snapshots and dyn.has_snapshots(infos)
        if dynamic and opts.tsne:  # a wrong --strip-layer is an error before the long work
            dyn.strip_layer(infos, {(i.name, None): acts[i.name] for i in infos}, opts.strip_layer)
        # t-SNE panels (openTSNE releases the GIL) run in worker threads beside the measures, on
        # half the cores: the grid's panels first, then the strip's chains (planned by this thread
        # once the snapshots are extracted, before they are measured, so the chains, whose panels
        # must run one after another, start early); when the measures are done this thread takes
        # the remaining panels too
        t = time.perf_counter()
        job = TsneJob(infos, acts, opts, cache, log) if opts.tsne else None
        strip_planned = threading.Event()

        def panels() -> None:
            if job is not None:
                job.work()
            strip_planned.wait()  # ``strip`` is assigned below before the event is set
            if strip is not None:
                strip.work()

        n_workers = 0
        if opts.tsne and ((job is not None and job.todo) or dynamic):
            n_workers = 1 if opts.tsne_jobs != 1 else max(1, cores() // 2)
        workers = [threading.Thread(target=panels, daemon=True) for _ in range(n_workers)]
        with blas_share(bool(workers)):
            for w in workers:
                w.start()
            try:
                for info in infos:
                    rows += measure_run(info, acts[info.name], opts, cache, log, reps_by_run[info.name])
                t_metrics = time.perf_counter() - t
                if dynamic:  # every snapshot: extracted, the strip planned, then measured here
                    td = time.perf_counter()
                    dyn_acts = dyn.snapshot_activations(infos, acts, opts, log)
                    if opts.tsne:
                        layer = dyn.strip_layer(infos, dyn_acts, opts.strip_layer)
                        strip = dyn.StripJob(infos, dyn_acts, layer, opts, cache, log) if layer else None
                    strip_planned.set()
                    dyn_rows = dyn.measure_snapshots(infos, dyn_acts, rows, opts, cache, log)
                    t_dyn = time.perf_counter() - td
                strip_planned.set()
                if opts.tsne_jobs == 1 or not workers:
                    for j in (job, strip):
                        if j is not None:
                            j.work()
            except BaseException:
                for j in (job, strip):
                    if j is not None:
                        j.cancel()  # the workers stop after their current panel
                raise
            finally:
                strip_planned.set()
                for w in workers:
                    w.join()
        tsne_data = job.result() if job is not None else None
        strip_data = strip.result() if strip is not None else None
        t_tsne = time.perf_counter() - t
        t = time.perf_counter()
        review = reviewer_sections(infos, acts, rows, reps_by_run, opts, folder, log)
        rows += review["rows"]
        t_review = time.perf_counter() - t
    summary = aggregate(rows)
    whole = [r for r in rows if r.get("class") in (None, "") and r["measure"] in MEASURES
             and r.get("stat", "value") == "value"]
    manifest = acts[infos[0].name].test.manifest
    n_classes = int(manifest.get("num_classes") or (int(acts[infos[0].name].test.labels.max()) + 1))
    class_names = [str(c) for c in (manifest.get("class_names") or infos[0].meta.get("class_names")
                                    or range(n_classes))][:n_classes]
    t = time.perf_counter()
    dyn_summary, curves, dyn_figs, drawing = [], [], {}, None
    if dynamic:  # the dynamics figures are drawn in a second process while this one draws the rest
        dyn_summary = aggregate(dyn_rows)
        curves = dyn.exit_curves(infos, opts, log)
        n_seeds = max(sum(1 for i in infos if i.method == m) for m in {i.method for i in infos})
        drawing = Background(dyn.dynamics_figures, dyn_rows, curves, strip_data, class_names, folder, n_seeds,
                             log=log)
    figs = experiment_figures(whole, infos, tsne_data, class_names, folder, log)
    figs.update(review["figures"](summary, class_names))
    review["class_names"][0] = class_names
    if drawing is not None:
        dyn_figs = drawing.result()
        write_text_atomic(folder / "dynamics.csv", csv_text(dyn_rows + dyn_summary, dyn.DYNAMICS_COLUMNS))
    t_figs = time.perf_counter() - t
    groups = plots.class_groups(class_names)
    colors = plots.class_colors(n_classes, groups=None if groups is None else groups[1])

    # ---- the document
    cfg = infos[0].config
    doc = Doc(f"alviz report: {name}")
    seeds = sorted({i.seed for i in infos})
    doc.p(f"Experiment {shown_path(exp_dir)} — {cfg['arch']} on {cfg['dataset']}, activation {cfg['activation']}, "
          f"depth {cfg['depth']}, width {cfg['width']}, {cfg['epochs']} epochs; methods "
          f"{', '.join(sorted({i.method.upper() for i in infos}))}; seeds {', '.join(map(str, seeds))}. "
          f"Measures on {len(acts[infos[0].name].test.labels)} held-out (test-split) samples; k-NN and "
          f"linear probe fitted on {len(acts[infos[0].name].train.labels)} training samples. "
          f"Generated by alviz {__version__}.")
    doc.raw_html(*files_line(figs))
    doc.h("Runs")
    doc.table(*run_table(infos))
    acc = accuracy_summary(infos)
    if acc:
        doc.table(["method", "test accuracy (mean ± s.d.)", "n", "95 % CI"],
                  [[a["method"].upper(), fmt_pm(a["mean"], a["std"]), str(a["n"]),
                    f"[{fmt(a['ci_low'])}, {fmt(a['ci_high'])}]" if a["n"] > 1 else "–"] for a in acc])
    pub = published_table(infos, acc)
    if pub:
        doc.p("Published accuracies for the settings of this experiment's preset (alviz/published.py; "
              "the preset's file lists where alviz's set-up differs from the source's).")
        doc.table(*pub)
    for text in review["headline"]:
        doc.p(text)
    doc.h("Separability by layer")
    doc.p("Mean ± sample s.d. over seeds (one value per run when a method has one seed). A cell is in bold "
          "only where a paired comparison of AL and BP at that position excludes zero (95 %: the paired "
          "stratified bootstrap on the same resampled held-out samples, plus the seed-to-seed variance "
          "with several seeds); unmarked pairs show no detectable difference. "
          "pos.: position along the inference path; exit: heads off the path (AL's early-exit bridges, "
          "SCPL's projections, DGL's auxiliary classifiers). Per-seed values, bootstrap intervals (boot_low, boot_high), exact binomial intervals of "
          "accuracies (cp_low, cp_high) and 95 % confidence intervals over seeds are in metrics.csv.",
          md="Mean ± sample s.d. over seeds. A cell is in **bold** only where a paired comparison of AL and BP "
             "at that position excludes zero (paired stratified bootstrap, plus seed variance with several "
             "seeds); otherwise: no detectable difference. "
             "pos.: position along the inference path; exit: AL's early-exit bridges (off the path). "
             "Intervals (boot_low/boot_high, cp_low/cp_high, ci_low/ci_high): `metrics.csv`.")
    doc.table(*layer_table(whole, summary, winners=review["winners"]))
    review["document"](doc, figs)
    doc.h("Figures")
    for stem in ("fig_ratio", "fig_intervals", "fig_distances", "fig_measures", "fig_training", "fig_exits",
                 "fig_tsne"):
        if stem in figs:
            doc.fig(stem, figs[stem]["png"], figs[stem]["caption"])
    thumbs = None
    if tsne_data is not None:
        thumbs = thumbnails(infos[0], tsne_data["ids"], log)
        doc.h("Interactive t-SNE")
        doc.raw_html(*viewer_block(viewer_payload(tsne_data, class_names, colors, thumbs, groups=groups,
                                                  seed=opts.seed)))
        doc.p(layout_note(tsne_data))
    if dynamic:
        epochs = sorted({r["epoch"] for r in dyn_rows})
        kept = "; ".join(f"{i.name}: {', '.join(map(str, dyn.snapshot_epochs(i)))}" for i in infos)
        doc.h("Training dynamics")
        doc.p(f"Snapshots (epoch 0: the initialisation) measured like the final checkpoints, on the same "
              f"held-out samples: {kept}. Mean ± sample s.d. over seeds; per-seed values in dynamics.csv.")
        for meas in ("ratio", "probe_acc"):
            doc.p(f"{meas}: {dyn.MEASURE_NAMES.get(meas, meas)} by epoch.")
            doc.table(*dyn.epoch_table(dyn_summary, meas, epochs))
        for stem in ("fig_dynamics", "fig_dynamics_exits", "fig_dynamics_measures", "fig_dynamics_tsne"):
            if stem in dyn_figs:
                doc.fig(stem, dyn_figs[stem]["png"], dyn_figs[stem]["caption"])
        if strip_data is not None:
            thumbs_s = thumbnails(infos[0], strip_data["ids"], log)
            doc.h("Interactive t-SNE across epochs")
            doc.raw_html(*dyn.strip_viewer_block(dyn.strip_viewer_payload(strip_data, class_names, colors, thumbs_s, groups)))
    doc.h("Measures")
    doc.table(*measure_defs())
    doc.p(f"Settings: held-out samples {opts.max_samples or 'all'}; training samples for k-NN/probe "
          f"at most {opts.train_samples}; seed {opts.seed}; t-SNE "
          + (f"on {tsne_data['n']} points, perplexity {tsne_data['perplexity']:g}, {schedule_note()}"
             if tsne_data else "off")
          + ". Files: metrics.csv (tidy: one row per run, layer, measure; stat 'value' for a run, "
            "'mean', 'std', 'n', 'ci_low', 'ci_high' over the seeds of a method), metrics.json, "
            "fig_*.pdf/.png.")

    rows_all = rows + summary
    payload = {
        "experiment": name, "path": str(exp_dir), "alviz_version": __version__,
        "settings": asdict(opts),
        "measures": {k: {"description": m.description, "higher_is_better": m.higher_is_better,
                         "scale_free": m.scale_free} for k, m in MEASURES.items()},
        "runs": [{"run": i.name, "path": str(i.path), "method": i.method, "seed": i.seed,
                  "epoch": i.meta.get("epoch"), "status": i.meta.get("status"),
                  "test_acc": (i.history[-1].get("test_acc") if i.history else None),
                  "exit_acc": [i.history[-1][k] for k in sorted(
                      (k for k in (i.history[-1] if i.history else {}) if k.startswith("test_acc_exit")),
                      key=lambda k: int(k[13:]))],
                  "config": i.config} for i in infos],
        "accuracy": acc,
        "rows": rows, "summary": summary, **review["payload"],
        "figures": {k: v["caption"] for k, v in {**figs, **dyn_figs}.items()},
        "dynamics": None if not dynamic else {
            "snapshots": {i.name: dyn.snapshot_epochs(i) for i in infos}, "rows": dyn_rows, "summary": dyn_summary,
            "exit_accuracy": curves,
            "strip": None if strip_data is None else {
                "layer": strip_data["layer"], "n": strip_data["n"], "epochs": strip_data["cols"],
                "runs": strip_data["runs"], "perplexity": strip_data["perplexity"]}},
        "tsne": None if tsne_data is None else {
            "n": tsne_data["n"], "perplexity": tsne_data["perplexity"], "ids": tsne_data["ids"].tolist(),
            "runs": tsne_data["runs"], "reference": [tsne_data["reference"][0], tsne_data["reference"][1]],
            "init": "every panel starts from the reference panel's embedding",
            "centroid_shift": [{"method": m, "position": p, "layer": tsne_data["titles"][(m, p)], "shift": v}
                               for (m, p), v in sorted(tsne_data["shift"].items())]},
        "timing_s": {"extract": round(t_extract, 2), "measures": round(t_metrics, 2),
                     "snapshots_extract_and_measures": round(t_dyn, 2),
                     "measures_and_tsne": round(t_tsne, 2), "reviewer": round(t_review, 2),
                     "figures": round(t_figs, 2)},
    }
    write_report(folder, doc, rows_all, payload)
    if opts.export and tsne_data is not None:
        from .export import write_exports

        write_exports(folder / "export", tsne_data, class_names, thumbs, log)
    log(f"{name}: extract {t_extract:.1f}s, measures {t_metrics:.1f}s, "
        + (f"snapshots {t_dyn:.1f}s, " if dynamic else "")
        + f"measures and t-SNE {t_tsne:.1f}s, similarity/per-class/AL diagnostics {t_review:.1f}s, "
          f"figures {t_figs:.1f}s")
    return ExperimentResult(name, folder, infos, whole, summary, cfg, time.perf_counter() - t0)


def analyze(paths=None, *, out=DEFAULT_OUT, root=DEFAULT_ROOT, options: Options | None = None, log=print,
            **kw) -> list[Path]:
    """Analyse runs/experiments (all under ``root`` when ``paths`` is empty) into
    ``<out>/<experiment>/``; returns the report folders (experiments, then studies).

    Keyword arguments are ``Options`` fields (``max_samples``, ``tsne``, ``tsne_samples``,
    ``perplexity``, ``device``, ``seed``, ...)."""
    opts = options or Options()
    if kw:
        bad = sorted(set(kw) - set(Options.__dataclass_fields__))
        if bad:
            raise UserError(f"unknown option(s) {', '.join(bad)}; allowed: {', '.join(Options.__dataclass_fields__)}")
        opts = Options(**{**asdict(opts), **kw})
    opts.validate()
    out = Path(out)
    groups = collect_runs(paths, root=root)
    names = experiment_names(groups)
    results = []
    for exp_dir, runs in groups.items():
        folder = out / names[exp_dir]
        with locked(folder, log):
            log(f"analysing {exp_dir} ({len(runs)} run(s)) -> {folder}")
            results.append(analyze_experiment(exp_dir, runs, names[exp_dir], folder, opts, log))
            results[-1].path = exp_dir
        log(f"report: {folder / 'report.html'} ({results[-1].seconds:.1f}s)")
    folders = [r.folder for r in results]
    for key, rs in study_groups(results).items():
        folders.append(write_study(key, rs, out, log))
    return folders
