"""Analyse experiments of AL and BP runs: per-layer measures, t-SNE views, figures and reports.

What this is: the one module that decides file names, figure styles and formats. It takes run
or experiment folders, extracts activations where needed (``alviz.extract``), measures every
layer (``alviz.metrics``), embeds the layers on the inference path with t-SNE
(``alviz.embed``), draws the figures (``alviz.plots``) and writes, per experiment::

    <out>/<experiment>/metrics.csv     tidy: experiment, run, method, seed, layer, role, depth,
                                       on_path, match, measure, stat, value
                                       (stat "value": one run; stats "mean", "std", "n",
                                       "ci_low", "ci_high" over the seeds of a method: run is the
                                       method name and seed is "all"; NaN is written "nan")
    <out>/<experiment>/metrics.json    the same rows, the aggregated summary, runs, settings,
                                       measure definitions
    <out>/<experiment>/fig_*.pdf/.png  figures (see FIGURES)
    <out>/<experiment>/report.md       tables and figures
    <out>/<experiment>/report.html     self-contained (base64 images, data, an interactive
                                       t-SNE viewer written here; no network, no CDN)
    <out>/<experiment>/.cache/         t-SNE embeddings and per-layer measures (.npy / .json)
                                       keyed by a hash of the exact inputs and settings

When experiments of one architecture and data set that differ in depth and/or activation are
analysed together, a study report ``<out>/study-<arch>-<dataset>/`` compares them (accuracy
and separation against depth / activation).

Every file is written atomically (temporary file + rename). A lock file (``fcntl.flock`` on
``<out>/<experiment>/.lock``) serialises two ``alviz analyze`` of the same experiment: the
second waits, then finds the first one's cache.

``compare(a, b)`` puts two runs or two experiments side by side, layer by layer (joined on the
manifest's ``match`` key), with the difference and the better side per measure.

What this is not: no training, no hooks (``alviz.extract``), no measure definitions
(``alviz.metrics``), no drawing primitives (``alviz.plots``), no argument parsing
(``alviz.cli``).
"""
from __future__ import annotations

import base64
import csv
import fcntl
import hashlib
import html
import io
import json
import math
import os
import re
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .checkpoint import write_bytes_atomic, write_text_atomic
from .errors import UserError
from .metrics import MEASURES, layer_measures, summarize

__all__ = [
    "Options",
    "analyze",
    "compare",
    "compare_rows",
    "better_side",
    "format_compare_table",
    "aggregate",
    "collect_runs",
    "DEFAULT_OUT",
    "CSV_COLUMNS",
    "COMPARE_COLUMNS",
    "FIGURES",
]

DEFAULT_OUT = Path("reports")
DEFAULT_ROOT = Path("checkpoints")
CSV_COLUMNS = ["experiment", "run", "method", "seed", "layer", "role", "depth", "on_path", "match",
               "measure", "stat", "value"]
COMPARE_COLUMNS = ["method_a", "method_b", "match", "layer_a", "layer_b", "depth", "measure",
                   "a", "b", "diff", "better", "scale_free", "n_a", "n_b"]
STATS = ("mean", "std", "n", "ci_low", "ci_high")
#: figure file stems and what they show
FIGURES = {
    "fig_ratio": "inter/intra distance ratio by layer, AL against BP",
    "fig_distances": "intra- and inter-class distances by layer",
    "fig_measures": "every separability measure by layer",
    "fig_tsne": "t-SNE of each layer on the inference path (rows AL, BP)",
    "fig_training": "test accuracy per epoch and AL's local losses",
    "fig_exits": "AL's test accuracy at each exit depth",
    "fig_study": "accuracy and separation across experiments (study reports only)",
}
_CACHE_VERSION = 1
_TSNE_ITER = 500
_TSNE_PCA = 50
# paper style: 8 pt text (column width 3.35 in), TrueType fonts in PDFs
STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "legend.title_fontsize": 7,
    "figure.titlesize": 9, "axes.linewidth": 0.6, "xtick.major.width": 0.6,
    "ytick.major.width": 0.6, "lines.linewidth": 1.2, "pdf.fonttype": 42, "ps.fonttype": 42,
    "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False,
    "savefig.dpi": 300, "figure.dpi": 100, "font.family": "DejaVu Sans",
}
COLUMN_WIDTH = 3.35  # inches, one column of a two-column paper
TEXT_WIDTH = 6.9


# ------------------------------------------------------------------------------------ options
@dataclass
class Options:
    """Settings of an analysis. ``max_samples`` caps the held-out (test) samples (None: all);
    ``train_samples`` caps the training samples the k-NN and probe measures learn from;
    ``tsne_samples`` points (stratified, the same in every panel) are embedded with
    ``perplexity``, ``tsne_jobs`` threads; ``seed`` seeds every sample and t-SNE;
    ``device`` runs the extraction."""

    max_samples: int | None = None
    train_samples: int = 5000
    tsne: bool = True
    tsne_samples: int = 2000
    perplexity: float = 30.0
    tsne_jobs: int = 1
    device: str = "cpu"
    seed: int = 0

    def validate(self) -> "Options":
        for name in ("train_samples", "tsne_samples", "tsne_jobs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and not (name == "tsne_jobs" and v == -1)):
                allowed = "a positive integer" + (" or -1 (all cores)" if name == "tsne_jobs" else "")
                raise UserError(f"{name.replace('_', '-')} must be {allowed}; received {v!r}")
        if self.max_samples is not None and (isinstance(self.max_samples, bool) or
                                             not isinstance(self.max_samples, int) or self.max_samples < 2):
            raise UserError(f"max-samples must be an integer >= 2 (or left out for all); received {self.max_samples!r}")
        if self.tsne_samples < 4:
            raise UserError(f"tsne-samples must be at least 4; received {self.tsne_samples}")
        if not (isinstance(self.perplexity, (int, float)) and 0 < self.perplexity < float("inf")):
            raise UserError(f"perplexity must be a positive number; received {self.perplexity!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed must be a non-negative integer; received {self.seed!r}")
        return self


# ------------------------------------------------------------------------------ small helpers
def _nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating,)):
        return _nan_to_none(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def _json(obj) -> str:
    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        return _nan_to_none(o)

    return json.dumps(clean(obj), indent=1, allow_nan=False)


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "nan" if not math.isfinite(v) else repr(float(v))
    return str(v)


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c in columns])
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    v = float(v)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}f}"


def _fmt_pm(mean, std, digits: int = 3) -> str:
    s = _fmt(mean, digits)
    if std is not None and isinstance(std, float) and math.isfinite(std):
        s += f" ± {_fmt(std, digits)}"
    return s


@contextmanager
def _locked(folder: Path, log=print):
    """Exclusive ``fcntl.flock`` on ``folder/.lock`` for the block (waits for another holder)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{folder}: another alviz analyze is writing here; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def _hash_arrays(*parts) -> str:
    """blake2b of arrays (dtype, shape and bytes, streamed in row chunks) and JSON-able settings."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray):
            a = p if p.ndim else p.reshape(1)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            step = max(1, (8 << 20) // max(a[:1].nbytes, 1))
            for s in range(0, len(a), step):
                h.update(np.ascontiguousarray(a[s:s + step]).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _prune(folder: Path, prefix: str, keep: str) -> None:
    """Drop stale cache entries ``prefix*`` other than ``keep`` (inputs changed since)."""
    for p in folder.glob(prefix + "*"):
        if p.name != keep and not p.name.startswith("."):
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- the runs
@dataclass
class RunInfo:
    path: Path
    name: str
    experiment: str
    method: str
    seed: int
    config: dict
    meta: dict
    history: list = field(default_factory=list)


def collect_runs(paths=None, *, root=DEFAULT_ROOT) -> dict[Path, list[Path]]:
    """Experiments to analyse: ``{experiment folder: [run folders]}`` from run, experiment or
    folder-of-experiments paths (``alviz.experiment.find_runs``); no paths: everything under
    ``root``. A path with no run below it is a ``UserError``."""
    from .experiment import find_runs

    if not paths:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"no runs found: {root}/ does not exist; train some with `alviz train`, "
                            f"or name runs or experiments: alviz analyze PATH...")
        paths = [root]
    groups: dict[Path, list[Path]] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"not a run or experiment directory: {p} does not exist")
        runs = find_runs(p)
        if not runs:
            raise UserError(f"no alviz runs found in {p} (a run folder holds config.yaml and meta.json); "
                            f"train some with `alviz train --out {p}`")
        for r in runs:
            groups.setdefault(r.parent.resolve(), [])
            if r.resolve() not in [q.resolve() for q in groups[r.parent.resolve()]]:
                groups[r.parent.resolve()].append(r)
    return groups


def _experiment_names(groups) -> dict[Path, str]:
    names: dict[Path, str] = {}
    used: set[str] = set()
    for exp in groups:
        name = _slug(exp.name)
        if _sweep_of(exp) is not None:  # a sweep's cell: <sweep>-<cell>, beside the sweep's study
            name = _slug(f"{exp.parent.name}-{exp.name}")
        if name in used:
            name = _slug(f"{exp.parent.name}-{exp.name}")
        while name in used:
            name += "_"
        used.add(name)
        names[exp] = name
    return names


def _sweep_of(exp: Path) -> Path | None:
    """The sweep folder (holding sweep.json) an experiment folder is a cell of, if any."""
    return exp.parent if (exp.parent / "sweep.json").is_file() else None


def _history(run: Path, meta: dict) -> list[dict]:
    hist = meta.get("history")
    if isinstance(hist, list) and hist:
        return hist
    p = run / "summary.csv"
    if p.is_file():
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        out = []
        for r in rows:
            d = {}
            for k, v in r.items():
                try:
                    d[k] = float(v) if v not in ("", None) else None
                except ValueError:
                    d[k] = v
            out.append(d)
        return out
    return []


def _run_info(run: Path, experiment: str) -> RunInfo:
    from . import checkpoint as ckpt

    ckpt.check_run_dir(run)
    cfg = ckpt.read_config(run)
    meta = ckpt.read_meta(run)
    from .models import resolve_shape_defaults

    cfg = resolve_shape_defaults(cfg)
    return RunInfo(path=run, name=run.name, experiment=experiment, method=cfg.method, seed=cfg.seed,
                   config=cfg.to_dict(), meta=meta, history=_history(run, meta))


def _method_order(m: str) -> tuple:
    return ({"al": 0, "bp": 1}.get(m, 2), m)


# ------------------------------------------------------------------------------ activations
class _Acts:
    """Test and train activation sets of one run."""

    def __init__(self, info: RunInfo, opts: Options, log):
        from .extract import extract_run, load_activations

        t_dir = extract_run(info.path, split="test", max_samples=opts.max_samples, device=opts.device,
                            log=log)
        cap = opts.train_samples if opts.max_samples is None else min(opts.train_samples, opts.max_samples)
        r_dir = extract_run(info.path, split="train", max_samples=cap, device=opts.device, log=log)
        self.test = load_activations(t_dir)
        self.train = load_activations(r_dir)
        for split, sets in (("test", self.test), ("train", self.train)):
            for name, a in sets.layers.items():
                step = max(1, (16 << 20) // max(a[:1].nbytes, 1))
                if not all(np.isfinite(a[s:s + step]).all() for s in range(0, len(a), step)):
                    raise UserError(f"{info.path}: layer {name} has NaN or inf activations on the {split} split "
                                    "(are its weights finite? --on-nan continue keeps a diverged run); alviz "
                                    "measures finite activations only: analyse the other runs, or retrain this "
                                    "one with a lower --lr")

    def layer(self, which, name) -> np.ndarray:
        a = getattr(self, which).layers[name]
        return a if a.ndim == 2 else a.reshape(len(a), -1)


def _measure_run(info: RunInfo, acts: _Acts, opts: Options, cache: Path, log) -> list[dict]:
    """Tidy per-layer rows (stat "value") of one run, from the cache where the inputs match."""
    rows = []
    cache = cache / "metrics" / _slug(info.name)
    cache.mkdir(parents=True, exist_ok=True)
    settings = {"v": _CACHE_VERSION, "seed": opts.seed, "train": opts.train_samples,
                "measures": sorted(MEASURES)}
    hits = 0
    t0 = time.perf_counter()
    for entry in acts.test.manifest["layers"]:
        name = entry["name"]
        Zt = acts.layer("test", name)
        Ztr = acts.layer("train", name) if name in acts.train.layers else None
        key = _hash_arrays(settings, Zt, acts.test.labels,
                           *((Ztr, acts.train.labels) if Ztr is not None else ()))
        fname = f"{_slug(name)}-{key}.json"
        path = cache / fname
        vals = None
        if path.is_file():
            try:
                vals = {k: (float("nan") if v is None else float(v))
                        for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
                hits += 1
            except (ValueError, OSError, TypeError, AttributeError):
                vals = None
        if vals is None or set(vals) != set(MEASURES):
            vals = layer_measures(Zt, acts.test.labels, Ztr, acts.train.labels if Ztr is not None else None,
                                  seed=opts.seed, max_train=opts.train_samples)
            write_text_atomic(path, _json(vals))
            _prune(cache, f"{_slug(name)}-", fname)
        for m in MEASURES:
            rows.append({
                "experiment": info.experiment, "run": info.name, "method": info.method,
                "seed": info.seed, "layer": name, "role": entry.get("role"),
                "depth": entry.get("position"), "on_path": bool(entry.get("on_path", True)),
                "match": entry.get("match"), "measure": m, "stat": "value", "value": float(vals[m]),
            })
    n = len(acts.test.manifest["layers"])
    log(f"{info.name}: {n} layers measured on {len(acts.test.labels)} held-out samples "
        f"({hits} from cache) in {time.perf_counter() - t0:.1f}s")
    return rows


def aggregate(rows: list[dict], confidence: float = 0.95) -> list[dict]:
    """Summary rows over seeds: per (experiment, method, layer, measure) the stats mean, std, n,
    ci_low, ci_high (``alviz.metrics.summarize``); run = the method, seed = "all"."""
    groups: dict[tuple, list] = defaultdict(list)
    first: dict[tuple, dict] = {}
    for r in rows:
        if r.get("stat", "value") != "value":
            continue
        k = (r.get("experiment"), r["method"], r["layer"], r["measure"])
        groups[k].append(float(r["value"]))
        first.setdefault(k, r)
    out = []
    for k, vals in groups.items():
        s = summarize(vals, confidence)
        base = {**first[k], "run": first[k]["method"], "seed": "all"}
        for stat in STATS:
            out.append({**base, "stat": stat, "value": float(s[stat])})
    return out


def _summary_index(summary: list[dict]) -> dict:
    """{(method, layer, measure): {stat: value}}"""
    idx: dict[tuple, dict] = defaultdict(dict)
    for r in summary:
        idx[(r["method"], r["layer"], r["measure"])][r["stat"]] = r["value"]
    return idx


# ------------------------------------------------------------------------------------- t-SNE
@contextmanager
def _blas_share(active: bool):
    """While t-SNE runs in its own thread, give BLAS half the cores (1 of 2): the two jobs then
    share the CPU instead of oversubscribing it, and sklearn's nested OpenMP/BLAS sections (k-NN,
    exact t-SNE neighbours) never meet a multi-threaded BLAS pool from the other thread."""
    if not active:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, _cores() // 2), user_api="blas"):
        yield


class _TsneJob:
    """The t-SNE grid of one experiment: rows = methods (the lowest seed present), columns =
    positions on the inference path, the same stratified held-out samples in every panel.

    Construction plans the panels and takes the cached ones; ``work()`` computes the rest and may
    run in several threads at once (each takes the next panel); ``result()`` aligns the panels
    and returns a dict (panels, labels, ids, rows, cols, titles, ...) or None."""

    def __init__(self, infos: list[RunInfo], acts: dict, opts: Options, cache: Path, log):
        from .embed import stratified_sample

        self.opts, self.log = opts, log
        self.lock = threading.Lock()
        self.raw: dict[tuple, np.ndarray] = {}
        self.titles: dict[tuple, str] = {}
        self.todo: list[tuple] = []
        self.computed = self.hits = 0
        self.error: BaseException | None = None
        self.t0 = time.perf_counter()
        self.plan = None
        by_method: dict[str, RunInfo] = {}
        for info in sorted(infos, key=lambda i: (_method_order(i.method), i.seed)):
            by_method.setdefault(info.method, info)
        grid_runs = [by_method[m] for m in sorted(by_method, key=_method_order)]
        if not grid_runs:
            return
        common = None  # the same samples in every panel: ids common to every run of the grid
        for info in grid_runs:
            ids = set(acts[info.name].test.ids.tolist())
            common = ids if common is None else common & ids
        ref = acts[grid_runs[0].name].test
        keep = np.flatnonzero(np.isin(ref.ids, np.fromiter(common, dtype=np.int64)))
        if len(keep) < 4:
            log("t-SNE skipped: fewer than 4 held-out samples shared by the runs")
            return
        if opts.tsne_samples > len(keep):
            log(f"asked for {opts.tsne_samples} t-SNE points but the runs share {len(keep)} held-out samples; "
                f"using all {len(keep)}")
        pick = keep[stratified_sample(ref.labels[keep], opts.tsne_samples, seed=opts.seed)]
        ids, labels = ref.ids[pick], ref.labels[pick]
        positions: dict[float, dict[str, str]] = defaultdict(dict)
        for info in grid_runs:
            for e in acts[info.name].test.manifest["layers"]:
                if e.get("on_path", True) and e.get("position") is not None:
                    positions[float(e["position"])][info.method] = e["name"]
        cols = sorted(positions)
        self.perp = min(opts.perplexity, (len(pick) - 1) / 3.0)
        tcache = cache / "tsne"
        tcache.mkdir(parents=True, exist_ok=True)
        self.tcache = tcache
        settings = {"v": _CACHE_VERSION, "perplexity": self.perp, "seed": opts.seed, "n_iter": _TSNE_ITER,
                    "pca": _TSNE_PCA}
        for info in grid_runs:
            a = acts[info.name].test
            row_of = {int(i): r for r, i in enumerate(a.ids.tolist())}
            rows_idx = np.asarray([row_of[int(i)] for i in ids])
            for pos in cols:
                name = positions[pos].get(info.method)
                if name is None:
                    continue
                Z = np.asarray(acts[info.name].layer("test", name)[rows_idx], dtype=np.float32)
                prefix = f"{_slug(info.name)}-{_slug(name)}-"
                path = tcache / f"{prefix}{_hash_arrays(settings, Z)}.npy"
                k = (info.method, pos)
                self.titles[k] = name
                Y = None
                if path.is_file():
                    try:
                        Y = np.load(path, allow_pickle=False)
                        Y = Y if Y.shape == (len(Z), 2) else None
                    except (ValueError, OSError, EOFError):
                        Y = None
                if Y is None:
                    self.todo.append((k, Z, path, prefix, f"{info.name}/{name}"))
                else:
                    self.raw[k] = Y
                    self.hits += 1
        self.todo.reverse()  # pop() takes them in grid order
        self.plan = {"labels": labels, "ids": ids, "cols": cols, "rows": [i.method for i in grid_runs],
                     "runs": {i.method: i.name for i in grid_runs}, "n": int(len(pick))}

    def cancel(self) -> None:
        with self.lock:
            self.todo.clear()

    def work(self) -> None:
        try:
            self._work()
        except BaseException as e:  # re-raised by result(), in the caller's thread
            with self.lock:
                self.error = self.error or e
                self.todo.clear()

    def _work(self) -> None:
        from .embed import tsne

        while True:
            with self.lock:
                if not self.todo:
                    return
                k, Z, path, prefix, what = self.todo.pop()
            t = time.perf_counter()
            Y = tsne(Z, perplexity=self.perp, seed=self.opts.seed, n_jobs=self.opts.tsne_jobs,
                     n_iter=_TSNE_ITER, pca_dims=_TSNE_PCA)
            with self.lock:
                _save_npy_atomic(path, Y)
                _prune(self.tcache, prefix, path.name)
                self.raw[k] = Y
                self.computed += 1
            self.log(f"t-SNE {what}: {len(Z)} points in {time.perf_counter() - t:.1f}s")

    def result(self):
        from .embed import procrustes_align

        if self.error is not None:
            raise self.error
        if self.plan is None or not self.raw:
            return None
        missing = [k for k in self.titles if k not in self.raw]
        if missing:
            raise RuntimeError(f"t-SNE panels {missing} were not computed")
        first, cols = self.plan["rows"][0], self.plan["cols"]
        # reference: the first row's last column (the deepest layer); every panel is rotated,
        # reflected and uniformly scaled onto it (t-SNE is invariant to all three)
        ref_key = next((first, p) for p in reversed(cols) if (first, p) in self.raw)
        panels = {k: procrustes_align(Y, self.raw[ref_key], scale=True) for k, Y in self.raw.items()}
        self.log(f"t-SNE: {len(panels)} panels of {self.plan['n']} points ({self.computed} computed, "
                 f"{self.hits} from cache) in {time.perf_counter() - self.t0:.1f}s")
        return {**self.plan, "panels": panels, "titles": self.titles, "reference": ref_key,
                "perplexity": self.perp}


def _tsne_panels(infos: list[RunInfo], acts: dict, opts: Options, cache: Path, log):
    """The t-SNE grid computed in the calling thread (see ``_TsneJob``)."""
    job = _TsneJob(infos, acts, opts, cache, log)
    job.work()
    return job.result()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 2


def _thumbnails(info: RunInfo, ids: np.ndarray, log):
    """uint8 thumbnails (N, H, W, C) of the samples ``ids`` for image data sets, else None."""
    try:
        from .data import load_raw

        raw = load_raw(info.config["dataset"], data_dir=info.config.get("data_dir", "data"),
                       test_fraction=info.config.get("test_fraction", 0.2))
    except Exception as e:  # thumbnails are a convenience: never fail the report for them
        log(f"no image thumbnails in report.html ({type(e).__name__}: {str(e)[:80]})")
        return None
    if not raw.image:
        return None
    lookup = {int(i): ("test", k) for k, i in enumerate(np.asarray(raw.ids_test).tolist())}
    out = []
    for i in ids.tolist():
        where = lookup.get(int(i))
        if where is None:
            return None
        out.append(raw.x_test[where[1]])
    x = np.stack(out).astype(np.float64)
    if x.ndim == 3:
        x = x[:, None]
    x = np.transpose(x, (0, 2, 3, 1))  # NHWC
    if raw.x_test.dtype == np.uint8:
        pass
    elif raw.pixel_max:
        x = x / raw.pixel_max * 255.0
    else:
        lo = x.min(axis=(1, 2, 3), keepdims=True)
        hi = x.max(axis=(1, 2, 3), keepdims=True)
        x = (x - lo) / np.maximum(hi - lo, 1e-12) * 255.0
    x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    if x.shape[1] > 32 or x.shape[2] > 32:  # keep the report small: at most 32 x 32
        step = int(math.ceil(max(x.shape[1], x.shape[2]) / 32))
        x = x[:, ::step, ::step]
    return x


# ------------------------------------------------------------------------------------ figures
def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save_figure(fig, folder: Path, stem: str) -> dict:
    """Write stem.pdf and stem.png atomically; returns {"png": bytes}."""
    out = {}
    # solve the constrained layout once (one draw), then save both formats with it frozen
    engine = fig.get_layout_engine()
    if engine is not None:
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    for fmt in ("pdf", "png"):
        buf = io.BytesIO()
        meta = {"Software": None} if fmt == "png" else {"Creator": f"alviz {__version__}"}
        fig.savefig(buf, format=fmt, metadata=meta, dpi=300 if fmt == "png" else None)
        data = buf.getvalue()
        write_bytes_atomic(folder / f"{stem}.{fmt}", data)
        out[fmt] = data
    return out


def _experiment_figures(rows, infos, tsne_data, class_names, folder: Path, log) -> dict[str, dict]:
    """Draw and save every figure of one experiment; returns {stem: {"png": bytes, caption}}."""
    import matplotlib

    from . import plots

    figs: dict[str, dict] = {}
    path_rows = [r for r in rows if r["on_path"] and r["depth"] is not None]
    n_seeds = max((sum(1 for i in infos if i.method == m) for m in {i.method for i in infos}), default=1)
    err_note = ("Points: mean over seeds; error bars: ±1 sample s.d." if n_seeds > 1
                else "One run per method (no error bars).")
    with matplotlib.rc_context(STYLE):
        if path_rows:
            fig = _new_figure(COLUMN_WIDTH, 2.5)
            ax = fig.add_subplot()
            plots.measure_by_layer(path_rows, "ratio", ax=ax, reference=1.0)
            figs["fig_ratio"] = {**_save_figure(fig, folder, "fig_ratio"), "caption": (
                "Inter-class over intra-class mean Euclidean distance of each layer on the "
                "inference path (held-out samples; higher: classes better separated; 1: no "
                f"separation). {err_note} The dotted line separates the encoder from the "
                "bridge/decoder (AL) or head (BP) layers; tick labels give both methods' layers.")}

            fig = _new_figure(TEXT_WIDTH, 2.5)
            plots.distances_by_layer(path_rows, fig=fig)
            figs["fig_distances"] = {**_save_figure(fig, folder, "fig_distances"), "caption": (
                "Mean Euclidean distance between two samples of the same class (a) and of "
                "different classes (b), by layer (log scale). Distances are in each layer's own "
                f"units: compare AL with BP at one position, not across positions. {err_note}")}

            fig = _new_figure(TEXT_WIDTH, 6.2)
            plots.measures_grid(path_rows, list(MEASURES), fig=fig)
            figs["fig_measures"] = {**_save_figure(fig, folder, "fig_measures"), "caption": (
                "Every separability measure by layer (definitions in the table below); intra, "
                f"inter, Fisher ratio and NC1 on log scales. Lower is better for intra and NC1. {err_note}")}

        if tsne_data is not None:
            rows_n = [plots.method_style(m)["label"] for m in tsne_data["rows"]]
            cols_n = [f"{p:g}" for p in tsne_data["cols"]]
            panels = {(plots.method_style(m)["label"], f"{p:g}"): Y
                      for (m, p), Y in tsne_data["panels"].items()}
            titles = {(plots.method_style(m)["label"], f"{p:g}"): t
                      for (m, p), t in tsne_data["titles"].items()}
            nc = len(cols_n)
            width = min(TEXT_WIDTH, 1.3 * nc + 0.4)
            fig = _new_figure(width, 1.25 * len(rows_n) + 0.55)
            plots.tsne_grid(panels, tsne_data["labels"], row_names=rows_n, col_names=cols_n,
                            titles=titles, class_names=class_names, fig=fig,
                            point_size=1.2 if tsne_data["n"] > 1000 else 2.5)
            ref = tsne_data["reference"]
            runs = ", ".join(f"{plots.method_style(m)['label']}: {r}" for m, r in tsne_data["runs"].items())
            figs["fig_tsne"] = {**_save_figure(fig, folder, "fig_tsne"), "caption": (
                f"t-SNE (openTSNE, PCA initialisation, perplexity {tsne_data['perplexity']:g}) of "
                f"the same {tsne_data['n']} held-out samples (stratified) in every panel; columns: "
                f"layers along the inference path, rows: methods ({runs}). Each panel is "
                f"Procrustes-aligned (rotation, reflection, scale) onto the "
                f"{plots.method_style(ref[0])['label']} {tsne_data['titles'][ref]} panel; colours: classes.")}

        hist = [{"method": i.method, "seed": i.seed, "history": i.history,
                 "depth": i.config.get("depth")} for i in infos if i.history]
        if hist:
            has_al_loss = any(i.method == "al" for i in infos if i.history)
            fig = _new_figure(COLUMN_WIDTH, 4.4 if has_al_loss else 2.3)
            axes = fig.subplots(2 if has_al_loss else 1, 1, squeeze=False)[:, 0]
            plots.training_curves(hist, ax=axes[0])
            axes[0].set_title("(a) test accuracy per epoch", loc="left")
            if has_al_loss:
                plots.al_losses(hist, ax=axes[1])
                axes[1].set_title("(b) AL local losses (training set, mean over seeds)", loc="left")
            figs["fig_training"] = {**_save_figure(fig, folder, "fig_training"), "caption": (
                "Test accuracy per epoch (line: mean over seeds; band: min–max)"
                + ("; AL's association (assoc k: bridge vs label code) and auto-encoder (AE k) "
                   "losses of each component k." if has_al_loss else "."))}
            if any(k.startswith("test_acc_exit") for h in hist if h["method"] == "al"
                   for k in (h["history"][-1] if h["history"] else {})):
                fig = _new_figure(COLUMN_WIDTH, 2.3)
                ax = fig.add_subplot()
                plots.exit_accuracy(hist, ax=ax)
                figs["fig_exits"] = {**_save_figure(fig, folder, "fig_exits"), "caption": (
                    "AL's test accuracy when inference exits after component k "
                    "(h_1(...h_k(b_k(s_k)))), at the last epoch; BP, which has only the full-depth "
                    f"output, for reference. {err_note}")}
    log(f"figures: {', '.join(figs)}")
    return figs


# ---------------------------------------------------------------------------- report writing
def _accuracy_summary(infos: list[RunInfo]) -> list[dict]:
    out = []
    for m in sorted({i.method for i in infos}, key=_method_order):
        accs = [float(i.history[-1]["test_acc"]) for i in infos
                if i.method == m and i.history and i.history[-1].get("test_acc") not in (None, "")]
        if accs:
            out.append({"method": m, **summarize(accs)})
    return out


def _run_table(infos: list[RunInfo]):
    head = ["run", "method", "seed", "epochs", "status", "test acc", "exit accuracies (k = 1..L)"]
    body = []
    for i in infos:
        last = i.history[-1] if i.history else {}
        exits = [last[k] for k in sorted((k for k in last if k.startswith("test_acc_exit")),
                                         key=lambda k: int(k[13:]))]
        body.append([i.name, i.method.upper(), str(i.seed), str(i.meta.get("epoch", "")),
                     str(i.meta.get("status", "")), _fmt(last.get("test_acc")),
                     " ".join(_fmt(e) for e in exits) or "–"])
    return head, body


_TABLE_MEASURES = ["ratio", "centroid_ratio", "fisher_ratio", "nc1", "silhouette", "knn_acc", "probe_acc"]
_SHORT = {"ratio": "inter/intra", "centroid_ratio": "centroid", "fisher_ratio": "Fisher", "nc1": "NC1",
          "silhouette": "silhouette", "knn_acc": "5-NN acc", "probe_acc": "probe acc",
          "intra": "intra", "inter": "inter"}


def _layer_table(rows: list[dict], summary: list[dict], measures=_TABLE_MEASURES):
    """Rows: (position, method, layer); cells mean ± s.d.; the better of AL/BP at a position is
    marked (returned as a set of (row index, column index))."""
    idx = _summary_index(summary)
    layers = {}
    for r in rows:
        layers[(r["method"], r["layer"])] = (r["depth"], r["on_path"], r["role"])
    order = sorted(layers, key=lambda k: (layers[k][0] if layers[k][1] else 1e9 + (layers[k][0] or 0),
                                          _method_order(k[0])))
    head = ["pos.", "method", "layer"] + [_SHORT.get(m, m) for m in measures]
    body, best = [], set()
    by_pos: dict = defaultdict(list)
    for k in order:
        depth, on_path, role = layers[k]
        pos = f"{depth:g}" if on_path and depth is not None else "exit"
        cells = [pos, k[0].upper(), k[1]]
        for m in measures:
            st = idx.get((k[0], k[1], m), {})
            cells.append(_fmt_pm(st.get("mean"), st.get("std")))
        if on_path:
            by_pos[depth].append((len(body), k))
        body.append(cells)
    for depth, members in by_pos.items():
        if len(members) != 2:
            continue
        for j, m in enumerate(measures):
            vals = [idx.get((k[0], k[1], m), {}).get("mean") for _, k in members]
            if any(v is None or not math.isfinite(v) for v in vals) or vals[0] == vals[1]:
                continue
            hib = MEASURES[m].higher_is_better
            win = int(np.argmax(vals) if hib else np.argmin(vals))
            best.add((members[win][0], 3 + j))
    return head, body, best


def _md_table(head, body, best=()) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, row in enumerate(body):
        cells = [f"**{c}**" if (i, j) in best else c for j, c in enumerate(row)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _html_table(head, body, best=()) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(body):
        out.append("<tr>" + "".join(
            f"<td class=\"best\">{html.escape(c)}</td>" if (i, j) in best else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _measure_defs():
    head = ["measure", "better", "definition"]
    body = [[m.name, "higher" if m.higher_is_better else "lower", m.description] for m in MEASURES.values()]
    return head, body


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right}th{background:#f3f3f3}
td:nth-child(-n+3){text-align:left}td.best{font-weight:bold;background:#eef6ee}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#444}code{background:#f5f5f5;padding:0 .2em}
.note{font-size:.85em;color:#555}
#tv{margin:1em 0}#tv .grid{display:grid;gap:4px;align-items:center}
#tv canvas{width:100%;aspect-ratio:1;border:1px solid #ccc;cursor:crosshair;touch-action:none;display:block}
#tv .ttl{font-size:.75em;text-align:center;color:#333;white-space:nowrap;overflow:hidden}
#tv .rowname{font-weight:bold;font-size:.9em;writing-mode:vertical-rl;transform:rotate(180deg);text-align:center}
#tv .legend{font-size:.8em;margin:.4em 0;user-select:none}
#tv .legend span{display:inline-block;margin:0 .5em .2em 0;cursor:pointer}
#tv .legend span.off{opacity:.3}
#tv .legend i{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.25em;vertical-align:-.05em}
#tv .tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #888;padding:4px 6px;
font-size:.8em;box-shadow:0 1px 4px rgba(0,0,0,.25);display:none;z-index:10}
#tv .tip canvas{width:84px;height:84px;image-rendering:pixelated;border:0;aspect-ratio:auto;display:block;margin-top:3px}
"""

# the interactive t-SNE viewer: canvas panels, wheel zoom, drag pan, double-click reset,
# hover = class, sample id, thumbnail, and the same sample ringed in every panel
_VIEWER_JS = r"""
(function(){
var el=document.getElementById('alviz-tsne');if(!el)return;
var D=JSON.parse(el.textContent),N=D.labels.length,root=document.getElementById('tv');
var hidden={},hover=-1,views=[],thumbs=null,pending=false;
if(D.thumb){var b=atob(D.thumb.b64);thumbs=new Uint8Array(b.length);for(var i=0;i<b.length;i++)thumbs[i]=b.charCodeAt(i);}
var legend=document.createElement('div');legend.className='legend';
legend.appendChild(document.createTextNode('classes (click to hide/show): '));
D.classNames.forEach(function(n,c){var s=document.createElement('span');
 s.innerHTML='<i style="background:'+D.colors[c]+'"></i>';s.appendChild(document.createTextNode(n));
 s.onclick=function(){hidden[c]=!hidden[c];s.className=hidden[c]?'off':'';redraw();};legend.appendChild(s);});
root.appendChild(legend);
var grid=document.createElement('div');grid.className='grid';
grid.style.gridTemplateColumns='1.4em repeat('+D.cols.length+',minmax(0,1fr))';root.appendChild(grid);
var tip=document.createElement('div');tip.className='tip';root.appendChild(tip);
grid.appendChild(document.createElement('div'));
D.cols.forEach(function(c){var t=document.createElement('div');t.className='ttl';t.textContent='position '+c;grid.appendChild(t);});
D.rows.forEach(function(r,ri){
 var rn=document.createElement('div');rn.className='rowname';rn.textContent=r;grid.appendChild(rn);
 D.cols.forEach(function(c,ci){
  var p=D.panels[ri*D.cols.length+ci],cell=document.createElement('div');grid.appendChild(cell);
  var t=document.createElement('div');t.className='ttl';t.textContent=p?p.title:'n/a';cell.appendChild(t);
  if(!p)return;
  var cv=document.createElement('canvas');cell.appendChild(cv);
  var x0=Infinity,x1=-Infinity,y0=Infinity,y1=-Infinity;
  for(var i=0;i<N;i++){x0=Math.min(x0,p.x[i]);x1=Math.max(x1,p.x[i]);y0=Math.min(y0,p.y[i]);y1=Math.max(y1,p.y[i]);}
  var v={p:p,cv:cv,cx:(x0+x1)/2,cy:(y0+y1)/2,span:Math.max(x1-x0,y1-y0,1e-9)*1.08,z:1};
  v.home=[v.cx,v.cy];views.push(v);attach(v);});});
function size(v){var r=v.cv.getBoundingClientRect(),d=window.devicePixelRatio||1;
 var w=Math.max(1,Math.round(r.width*d));if(v.cv.width!==w){v.cv.width=w;v.cv.height=w;}return w;}
function k(v){return v.cv.width/v.span*v.z;}
function px(v,i){var s=k(v),w=v.cv.width;return[w/2+(v.p.x[i]-v.cx)*s,w/2-(v.p.y[i]-v.cy)*s];}
function draw(v){var w=size(v),g=v.cv.getContext('2d'),d=window.devicePixelRatio||1,r=Math.max(1.2,D.pointSize*d);
 g.clearRect(0,0,w,w);
 for(var i=0;i<N;i++){var c=D.labels[i];if(hidden[c])continue;var q=px(v,i);
  if(q[0]<-r||q[1]<-r||q[0]>w+r||q[1]>w+r)continue;g.fillStyle=D.colors[c];g.fillRect(q[0]-r,q[1]-r,2*r,2*r);}
 if(hover>=0){var q=px(v,hover);g.lineWidth=2*d;g.strokeStyle='#000';g.beginPath();g.arc(q[0],q[1],6*d,0,7);g.stroke();}}
function redraw(){if(pending)return;pending=true;requestAnimationFrame(function(){pending=false;views.forEach(draw);});}
function local(v,e){var r=v.cv.getBoundingClientRect(),d=v.cv.width/r.width;return[(e.clientX-r.left)*d,(e.clientY-r.top)*d];}
function showTip(e){if(hover<0){tip.style.display='none';return;}var c=D.labels[hover];
 tip.innerHTML='';var a=document.createElement('div');
 a.innerHTML='<b style="color:'+D.colors[c]+'">&#9679;</b> ';
 a.appendChild(document.createTextNode('class '+D.classNames[c]+' \u00b7 sample id '+D.ids[hover]));tip.appendChild(a);
 if(thumbs){var h=D.thumb.h,w=D.thumb.w,ch=D.thumb.c,tc=document.createElement('canvas');tc.width=w;tc.height=h;
  var g=tc.getContext('2d'),im=g.createImageData(w,h),o=hover*h*w*ch;
  for(var j=0;j<h*w;j++){var R=thumbs[o+j*ch],G=ch>=3?thumbs[o+j*ch+1]:R,B=ch>=3?thumbs[o+j*ch+2]:R;
   im.data[4*j]=R;im.data[4*j+1]=G;im.data[4*j+2]=B;im.data[4*j+3]=255;}
  g.putImageData(im,0,0);tip.appendChild(tc);}
 tip.style.display='block';tip.style.left=(e.clientX+14)+'px';tip.style.top=(e.clientY+10)+'px';}
function attach(v){var drag=null;
 v.cv.addEventListener('wheel',function(e){e.preventDefault();var m=local(v,e),s=k(v),w=v.cv.width;
  var dx=v.cx+(m[0]-w/2)/s,dy=v.cy-(m[1]-w/2)/s;v.z*=Math.exp(-e.deltaY*0.0015);v.z=Math.min(Math.max(v.z,0.5),200);
  s=k(v);v.cx=dx-(m[0]-w/2)/s;v.cy=dy+(m[1]-w/2)/s;redraw();},{passive:false});
 v.cv.addEventListener('pointerdown',function(e){drag=[e.clientX,e.clientY];v.cv.setPointerCapture(e.pointerId);});
 v.cv.addEventListener('pointerup',function(){drag=null;});
 v.cv.addEventListener('pointermove',function(e){
  if(drag){var r=v.cv.getBoundingClientRect(),d=v.cv.width/r.width,s=k(v);
   v.cx-=(e.clientX-drag[0])*d/s;v.cy+=(e.clientY-drag[1])*d/s;drag=[e.clientX,e.clientY];redraw();return;}
  var m=local(v,e),best=-1,bd=Infinity,lim=Math.pow(8*(window.devicePixelRatio||1),2);
  for(var i=0;i<N;i++){if(hidden[D.labels[i]])continue;var q=px(v,i),dd=(q[0]-m[0])*(q[0]-m[0])+(q[1]-m[1])*(q[1]-m[1]);
   if(dd<bd){bd=dd;best=i;}}
  var nh=bd<=lim?best:-1;if(nh!==hover){hover=nh;redraw();}showTip(e);});
 v.cv.addEventListener('pointerleave',function(){if(hover>=0){hover=-1;redraw();}tip.style.display='none';});
 v.cv.addEventListener('dblclick',function(){v.z=1;v.cx=v.home[0];v.cy=v.home[1];redraw();});}
window.addEventListener('resize',redraw);redraw();
})();
"""


def _script_json(obj) -> str:
    """JSON safe inside <script>: no '</' and no HTML comment openers."""
    return _json(obj).replace("</", "<\\/").replace("<!--", "<\\!--")


def _viewer_payload(tsne_data, class_names, colors, thumbs) -> dict:
    from . import plots

    panels = []
    for m in tsne_data["rows"]:
        for p in tsne_data["cols"]:
            Y = tsne_data["panels"].get((m, p))
            if Y is None:
                panels.append(None)
                continue
            panels.append({"title": tsne_data["titles"][(m, p)],
                           "x": [round(float(v), 3) for v in Y[:, 0]],
                           "y": [round(float(v), 3) for v in Y[:, 1]]})
    payload = {
        "rows": [plots.method_style(m)["label"] for m in tsne_data["rows"]],
        "cols": [f"{p:g}" for p in tsne_data["cols"]],
        "panels": panels,
        "labels": [int(v) for v in tsne_data["labels"]],
        "ids": [int(v) for v in tsne_data["ids"]],
        "classNames": list(class_names),
        "colors": list(colors),
        "pointSize": 1.6 if tsne_data["n"] > 1000 else 2.4,
        "thumb": None,
    }
    if thumbs is not None:
        payload["thumb"] = {"h": int(thumbs.shape[1]), "w": int(thumbs.shape[2]), "c": int(thumbs.shape[3]),
                            "b64": base64.b64encode(np.ascontiguousarray(thumbs).tobytes()).decode("ascii")}
    return payload


class _Doc:
    """Blocks rendered both as Markdown and as self-contained HTML."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def h(self, text):
        self.blocks.append(("h", text))

    def p(self, text, md=None):
        self.blocks.append(("p", text, md))

    def table(self, head, body, best=()):
        self.blocks.append(("table", head, body, set(best)))

    def fig(self, stem, png: bytes, caption: str):
        self.blocks.append(("fig", stem, png, caption))

    def raw_html(self, text, md=None):
        self.blocks.append(("raw", text, md))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += [f"## {b[1]}", ""]
            elif b[0] == "p":
                out += [b[2] if b[2] is not None else b[1], ""]
            elif b[0] == "table":
                out += [_md_table(b[1], b[2], b[3]), ""]
            elif b[0] == "fig":
                out += [f"![{b[1]}]({b[1]}.png)", "", f"*{b[3]}* ([PDF]({b[1]}.pdf))", ""]
            elif b[0] == "raw" and b[2]:
                out += [b[2], ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self, data_json: str) -> str:
        out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
               f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h2>{html.escape(b[1])}</h2>")
            elif b[0] == "p":
                out.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "table":
                out.append(_html_table(b[1], b[2], b[3]))
            elif b[0] == "fig":
                src = "data:image/png;base64," + base64.b64encode(b[2]).decode("ascii")
                out.append(f"<figure id=\"{b[1]}\"><img alt=\"{b[1]}\" src=\"{src}\">"
                           f"<figcaption>{html.escape(b[3])}</figcaption></figure>")
            elif b[0] == "raw":
                out.append(b[1])
        out.append(f"<script type=\"application/json\" id=\"alviz-data\">{data_json}</script>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _write_report(folder: Path, doc: _Doc, rows_all: list[dict], payload: dict) -> None:
    write_text_atomic(folder / "metrics.csv", _csv_text(rows_all, CSV_COLUMNS))
    write_text_atomic(folder / "metrics.json", _json(payload))
    write_text_atomic(folder / "report.md", doc.markdown())
    write_text_atomic(folder / "report.html", doc.html(_script_json(payload)))


# ------------------------------------------------------------------------ one experiment
@dataclass
class ExperimentResult:
    name: str
    folder: Path
    infos: list
    rows: list
    summary: list
    config: dict
    seconds: float
    path: Path | None = None  # the experiment folder analysed


def _analyze_experiment(exp_dir: Path, run_dirs: list[Path], name: str, folder: Path, opts: Options,
                        log) -> ExperimentResult:
    from . import plots

    t0 = time.perf_counter()
    infos = []
    for r in sorted(run_dirs, key=lambda p: p.name):
        try:
            infos.append(_run_info(r, name))
        except UserError as e:
            log(f"{r}: skipped ({e})")
    if not infos:
        raise UserError(f"{exp_dir}: none of its runs could be read; see the messages above")
    infos.sort(key=lambda i: (_method_order(i.method), i.seed, i.name))
    datasets = sorted({i.config["dataset"] for i in infos})
    if len(datasets) > 1:
        raise UserError(f"{exp_dir}: its runs were trained on different data sets ({', '.join(datasets)}); "
                        "analyse them separately")
    for i in infos:
        if i.meta.get("status") != "complete":
            log(f"{i.path}: unfinished run (epoch {i.meta.get('epoch')}, status {i.meta.get('status')}); "
                "analysed as it is")
    cache = folder / ".cache"
    acts: dict[str, _Acts] = {}
    rows: list[dict] = []
    t = time.perf_counter()
    for info in infos:
        acts[info.name] = _Acts(info, opts, log)
    t_extract = time.perf_counter() - t
    # t-SNE panels (openTSNE releases the GIL) run in worker threads beside the measures, on
    # half the cores; when the measures are done this thread takes the remaining panels too
    t = time.perf_counter()
    job = _TsneJob(infos, acts, opts, cache, log) if opts.tsne else None
    n_workers = 0
    if job is not None and job.todo:
        n_workers = 1 if opts.tsne_jobs != 1 else max(1, min(_cores() // 2, len(job.todo)))
    workers = [threading.Thread(target=job.work, daemon=True) for _ in range(n_workers)]
    with _blas_share(bool(workers)):
        for w in workers:
            w.start()
        try:
            for info in infos:
                rows += _measure_run(info, acts[info.name], opts, cache, log)
            t_metrics = time.perf_counter() - t
            if job is not None and opts.tsne_jobs == 1:
                job.work()
        except BaseException:
            if job is not None:
                job.cancel()  # the workers stop after their current panel
            raise
        finally:
            for w in workers:
                w.join()
    tsne_data = job.result() if job is not None else None
    t_tsne = time.perf_counter() - t
    summary = aggregate(rows)
    manifest = acts[infos[0].name].test.manifest
    n_classes = int(manifest.get("num_classes") or (int(acts[infos[0].name].test.labels.max()) + 1))
    class_names = [str(c) for c in (manifest.get("class_names") or infos[0].meta.get("class_names")
                                    or range(n_classes))][:n_classes]
    t = time.perf_counter()
    figs = _experiment_figures(rows, infos, tsne_data, class_names, folder, log)
    t_figs = time.perf_counter() - t
    colors = plots.class_colors(n_classes)

    # ---- the document
    cfg = infos[0].config
    doc = _Doc(f"alviz report: {name}")
    seeds = sorted({i.seed for i in infos})
    doc.p(f"Experiment {exp_dir} — {cfg['arch']} on {cfg['dataset']}, activation {cfg['activation']}, "
          f"depth {cfg['depth']}, width {cfg['width']}, {cfg['epochs']} epochs; methods "
          f"{', '.join(sorted({i.method.upper() for i in infos}))}; seeds {', '.join(map(str, seeds))}. "
          f"Measures on {len(acts[infos[0].name].test.labels)} held-out (test-split) samples; k-NN and "
          f"linear probe fitted on {len(acts[infos[0].name].train.labels)} training samples. "
          f"Generated by alviz {__version__}.")
    doc.h("Runs")
    doc.table(*_run_table(infos))
    acc = _accuracy_summary(infos)
    if acc:
        doc.table(["method", "test accuracy (mean ± s.d.)", "n", "95 % CI"],
                  [[a["method"].upper(), _fmt_pm(a["mean"], a["std"]), str(a["n"]),
                    f"[{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}]" if a["n"] > 1 else "–"] for a in acc])
    doc.h("Separability by layer")
    doc.p("Mean ± sample s.d. over seeds (one value per run when a method has one seed). At each "
          "position the better of AL and BP is in bold (direction per measure: see Measures). "
          "pos.: position along the inference path; exit: AL's early-exit bridges (off the path). "
          "Per-seed values, standard deviations and 95 % confidence intervals are in metrics.csv.",
          md="Mean ± sample s.d. over seeds. At each position the better of AL and BP is in **bold**. "
             "pos.: position along the inference path; exit: AL's early-exit bridges (off the path). "
             "Per-seed values, standard deviations and 95 % confidence intervals: `metrics.csv`.")
    doc.table(*_layer_table(rows, summary))
    doc.h("Figures")
    for stem in ("fig_ratio", "fig_distances", "fig_measures", "fig_training", "fig_exits", "fig_tsne"):
        if stem in figs:
            doc.fig(stem, figs[stem]["png"], figs[stem]["caption"])
    if tsne_data is not None:
        thumbs = _thumbnails(infos[0], tsne_data["ids"], log)
        viewer = _viewer_payload(tsne_data, class_names, colors, thumbs)
        doc.h("Interactive t-SNE")
        doc.raw_html(
            "<p class=\"note\">Scroll to zoom, drag to pan, double-click to reset a panel. Hovering a "
            "point shows its class, sample id" + (" and image" if thumbs is not None else "") +
            ", and rings the same sample in every panel.</p><div id=\"tv\"></div>"
            f"<script type=\"application/json\" id=\"alviz-tsne\">{_script_json(viewer)}</script>"
            f"<script>{_VIEWER_JS}</script>",
            md="The interactive t-SNE viewer (zoom, hover for class, sample id and image) is in "
               "`report.html`.")
    doc.h("Measures")
    doc.table(*_measure_defs())
    doc.p(f"Settings: held-out samples {opts.max_samples or 'all'}; training samples for k-NN/probe "
          f"at most {opts.train_samples}; seed {opts.seed}; t-SNE "
          + (f"on {tsne_data['n']} points, perplexity {tsne_data['perplexity']:g}, {_TSNE_ITER} iterations, "
             f"PCA to {_TSNE_PCA} dimensions first" if tsne_data else "off")
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
        "rows": rows, "summary": summary,
        "figures": {k: v["caption"] for k, v in figs.items()},
        "tsne": None if tsne_data is None else {
            "n": tsne_data["n"], "perplexity": tsne_data["perplexity"], "ids": tsne_data["ids"].tolist(),
            "runs": tsne_data["runs"], "reference": [tsne_data["reference"][0], tsne_data["reference"][1]]},
        "timing_s": {"extract": round(t_extract, 2), "measures": round(t_metrics, 2),
                     "measures_and_tsne": round(t_tsne, 2), "figures": round(t_figs, 2)},
    }
    _write_report(folder, doc, rows_all, payload)
    log(f"{name}: extract {t_extract:.1f}s, measures {t_metrics:.1f}s, measures and t-SNE "
        f"{t_tsne:.1f}s, figures {t_figs:.1f}s")
    return ExperimentResult(name, folder, infos, rows, summary, cfg, time.perf_counter() - t0)


# ------------------------------------------------------------------------ studies
def _study_groups(results: list[ExperimentResult]) -> dict[tuple, list[ExperimentResult]]:
    groups: dict[tuple, list] = defaultdict(list)
    for r in results:
        groups[(r.config["arch"], r.config["dataset"])].append(r)
    out = {}
    for k, rs in groups.items():
        settings = {(r.config["depth"], r.config["activation"]) for r in rs}
        if len(rs) >= 2 and len(settings) >= 2:
            out[k] = rs
    return out


def _write_study(key, results: list[ExperimentResult], out: Path, log) -> Path:
    import matplotlib

    from . import plots

    arch, dataset = key
    name = f"study-{_slug(arch)}-{_slug(dataset)}"
    sweeps = {_sweep_of(r.path) if r.path is not None else None for r in results}
    if len(sweeps) == 1 and None not in sweeps:  # cells of one sweep: the sweep's own report
        sweep = next(iter(sweeps))
        try:
            grid = json.loads((sweep / "sweep.json").read_text(encoding="utf-8")).get("grid") or {}
        except (OSError, ValueError, AttributeError):
            grid = {}
        name = _slug(sweep.name)
        if "arch" in grid or "dataset" in grid:  # several studies in one sweep: keep them apart
            name = _slug(f"{sweep.name}-{arch}-{dataset}")
    folder = out / name
    depths = sorted({r.config["depth"] for r in results})
    acts = list(dict.fromkeys(r.config["activation"] for r in results))
    if len(depths) > 1:
        x, group, xlabel = "depth", ("activation" if len(acts) > 1 else None), "depth (components)"
    else:
        x, group, xlabel = "activation", None, "activation"
    recs = []
    for r in results:
        L = r.config["depth"]
        for i in r.infos:
            base = {"experiment": r.name, "method": i.method, "seed": i.seed, "depth": L,
                    "activation": r.config["activation"]}
            if i.history and i.history[-1].get("test_acc") not in (None, ""):
                recs.append({**base, "measure": "test_acc", "value": float(i.history[-1]["test_acc"])})
        for row in r.rows:  # the last encoder layer: block L, present in AL and BP alike
            if row["role"] == "encoder" and row["depth"] == L and row["measure"] in ("ratio", "probe_acc"):
                recs.append({"experiment": r.name, "method": row["method"], "seed": row["seed"], "depth": L,
                             "activation": r.config["activation"], "measure": row["measure"],
                             "value": row["value"]})
    with _locked(folder, log), matplotlib.rc_context(STYLE):
        fig = _new_figure(TEXT_WIDTH, 2.5)
        axes = fig.subplots(1, 2)
        plots.study(recs, x=x, group=group, measure="test_acc", ax=axes[0], xlabel=xlabel, legend=False)
        axes[0].set_title("(a) test accuracy", loc="left")
        plots.study(recs, x=x, group=group, measure="ratio", ax=axes[1], xlabel=xlabel, legend=False,
                    ylabel="inter / intra distance (block L)")
        axes[1].set_title("(b) separation at the last encoder layer", loc="left")
        plots.figure_legend(fig, axes[0])
        png = _save_figure(fig, folder, "fig_study")["png"]
        caption = (f"{arch} on {dataset}: test accuracy (a) and inter/intra distance ratio of the last "
                   f"encoder layer, block L (b), against {x}" + (f", one line style per {group}" if group else "")
                   + "; mean ± s.d. over seeds.")
        doc = _Doc(f"alviz study: {arch} on {dataset}")
        doc.p(f"{len(results)} experiments compared: " + ", ".join(r.name for r in results) + ".")
        head = ["experiment", "depth", "activation", "method", "test acc", "ratio (block L)", "probe acc (block L)"]
        body = []
        for r in sorted(results, key=lambda r: (r.config["activation"], r.config["depth"])):
            for m in sorted({i.method for i in r.infos}, key=_method_order):
                def mean_of(meas):
                    v = [q["value"] for q in recs if q["experiment"] == r.name and q["method"] == m
                         and q["measure"] == meas]
                    s = summarize(v) if v else {"mean": None, "std": None}
                    return _fmt_pm(s["mean"], s["std"])
                body.append([r.name, str(r.config["depth"]), r.config["activation"], m.upper(),
                             mean_of("test_acc"), mean_of("ratio"), mean_of("probe_acc")])
        doc.table(head, body)
        doc.fig("fig_study", png, caption)
        links = " ".join(f"<a href=\"../{html.escape(r.name)}/report.html\">{html.escape(r.name)}</a>"
                         for r in results)
        doc.raw_html(f"<p>Reports of the experiments: {links}</p>",
                     md="Reports of the experiments: " + ", ".join(f"[{r.name}](../{r.name}/report.md)"
                                                                   for r in results))
        rows_all = [row for r in results for row in r.rows + r.summary]
        payload = {"study": name, "arch": arch, "dataset": dataset, "x": x, "group": group,
                   "experiments": [r.name for r in results], "records": recs, "alviz_version": __version__}
        _write_report(folder, doc, rows_all, payload)
    log(f"study report: {folder / 'report.html'}")
    return folder


# ------------------------------------------------------------------------ entry points
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
    names = _experiment_names(groups)
    results = []
    for exp_dir, runs in groups.items():
        folder = out / names[exp_dir]
        with _locked(folder, log):
            log(f"analysing {exp_dir} ({len(runs)} run(s)) -> {folder}")
            results.append(_analyze_experiment(exp_dir, runs, names[exp_dir], folder, opts, log))
            results[-1].path = exp_dir
        log(f"report: {folder / 'report.html'} ({results[-1].seconds:.1f}s)")
    folders = [r.folder for r in results]
    for key, rs in _study_groups(results).items():
        folders.append(_write_study(key, rs, out, log))
    return folders


# ------------------------------------------------------------------------ compare
def better_side(measure: str, a: float, b: float) -> str:
    """"A", "B", "tie" or "n/a" (a value is NaN) by the direction in ``MEASURES``."""
    if measure not in MEASURES:
        raise UserError(f"unknown measure {measure!r}; allowed: {', '.join(MEASURES)}")
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return "n/a"
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return "tie"
    hib = MEASURES[measure].higher_is_better
    return "A" if (a > b) == hib else "B"


def compare_rows(rows_a: list[dict], rows_b: list[dict], *, by_method: bool | None = None) -> list[dict]:
    """Join two sets of per-run rows (stat "value") layer by layer on the ``match`` key.

    Values of several runs (seeds) on one side are averaged. ``by_method``: also join on the
    method (AL with AL, BP with BP); default: when either side holds more than one method.
    Returns rows with ``COMPARE_COLUMNS``; ``diff = a - b``; ``better`` per ``better_side``.
    Layers without a partner on the other side are left out."""
    def index(rows):
        vals: dict[tuple, list] = defaultdict(list)
        info: dict[tuple, dict] = {}
        methods = set()
        for r in rows:
            if r.get("stat", "value") != "value" or r.get("match") in (None, ""):
                continue
            methods.add(r["method"])
            k = (r["method"], r["match"], r["measure"])
            vals[k].append(float(r["value"]))
            info.setdefault(k, r)
        return vals, info, methods

    va, ia, ma = index(rows_a)
    vb, ib, mb = index(rows_b)
    if by_method is None:
        by_method = len(ma) > 1 or len(mb) > 1
    out = []
    for ka in sorted(va, key=lambda k: (_method_order(k[0]), float(ia[k]["depth"]) if ia[k].get("depth") is not None
                                        else 1e9, list(MEASURES).index(k[2]) if k[2] in MEASURES else 99)):
        m_a, match, meas = ka
        partners = [kb for kb in vb if kb[1] == match and kb[2] == meas and (not by_method or kb[0] == m_a)]
        for kb in partners:
            a = float(np.mean(va[ka]))
            b = float(np.mean(vb[kb]))
            out.append({"method_a": m_a, "method_b": kb[0], "match": match,
                        "layer_a": ia[ka]["layer"], "layer_b": ib[kb]["layer"],
                        "depth": ia[ka].get("depth"), "measure": meas, "a": a, "b": b,
                        "diff": a - b, "better": better_side(meas, a, b),
                        "scale_free": MEASURES[meas].scale_free if meas in MEASURES else None,
                        "n_a": len(va[ka]), "n_b": len(vb[kb])})
    return out


def format_compare_table(rows: list[dict], label_a: str = "A", label_b: str = "B") -> str:
    """A plain-text table of ``compare_rows`` output."""
    head = ["layer (A / B)", "measure", "A", "B", "A - B", "better"]
    body = []
    last = None
    for r in rows:
        layer = r["layer_a"] if r["layer_a"] == r["layer_b"] else f"{r['layer_a']} / {r['layer_b']}"
        if r["method_a"] != r["method_b"] or len({q["method_a"] for q in rows}) > 1:
            layer = f"{r['method_a'].upper()} {r['layer_a']} / {r['method_b'].upper()} {r['layer_b']}"
        show = layer if layer != last else ""
        last = layer
        star = "*" if r.get("scale_free") is False and r["better"] in ("A", "B") else ""
        body.append([show, r["measure"], _fmt(r["a"], 4), _fmt(r["b"], 4), _fmt(r["diff"], 4),
                     r["better"] + star])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = [f"A = {label_a}", f"B = {label_b}",
             "  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    for b in body:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(b, widths))))
    if any(b[-1].endswith("*") for b in body):
        lines.append("* in the units of each layer's activations: the direction holds only between layers of "
                     "equal scale; compare the unit-free measures (ratio, ...) across methods")
    return "\n".join(lines)


def compare(a, b, *, out=DEFAULT_OUT, csv_path=None, options: Options | None = None, log=print,
            **kw) -> tuple[list[dict], Path]:
    """Compare two runs or two experiments layer by layer; writes a CSV (default
    ``<out>/<experiment of a>/compare-<a>-vs-<b>.csv``) and returns (rows, csv path)."""
    opts = options or Options()
    if kw:
        opts = Options(**{**asdict(opts), **kw})
    opts.tsne = False
    opts.validate()
    out = Path(out)
    sides = []
    for p in (a, b):
        groups = collect_runs([p])
        sides.append(groups)
    all_groups: dict[Path, list[Path]] = {}
    for g in sides:
        for k, v in g.items():
            all_groups.setdefault(k, [])
            all_groups[k] += [r for r in v if r not in all_groups[k]]
    names = _experiment_names(all_groups)
    side_rows = []
    for g in sides:
        rows = []
        for exp_dir, runs in g.items():
            folder = out / names[exp_dir]
            with _locked(folder, log):
                for r in sorted(runs, key=lambda p: p.name):
                    info = _run_info(r, names[exp_dir])
                    rows += _measure_run(info, _Acts(info, opts, log), opts, folder / ".cache", log)
        side_rows.append(rows)
    result = compare_rows(side_rows[0], side_rows[1])
    if not result:
        raise UserError(f"{a} and {b} have no layers in common (joined on the manifest's match key)")

    def label(p):
        p = Path(p)
        return p.name if Path(a).name != Path(b).name else f"{p.parent.name}-{p.name}"

    if csv_path is None:
        first_exp = next(iter(sides[0]))
        csv_path = out / names[first_exp] / f"compare-{_slug(label(a))}-vs-{_slug(label(b))}.csv"
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        raise UserError(f"--csv must name a file; {csv_path} is a directory")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(csv_path, _csv_text(result, COMPARE_COLUMNS))
    return result, csv_path
