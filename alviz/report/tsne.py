"""The t-SNE grid of an experiment: rows are methods, columns are positions on the inference
path, the same stratified held-out samples in every panel; panels come from the cache or are
computed (possibly in worker threads beside the measures). Layouts are made comparable: one
reference panel (the one whose points' nearest neighbours in the layer most often share their
class) is embedded first and every other panel starts from its positions, then each is
Procrustes-aligned onto it; how far each class's centroid still moves is measured (``shift``).
Also each panel's nearest neighbours in the layer itself, and the runs' per-sample predictions
where the activation sets hold them.

What this is not: no t-SNE algorithm (``alviz.embed``), no drawing (``figures``, ``viewer``).
"""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..npyfile import load_npy
from .files import hash_arrays, prune_cache, save_npy_atomic, slug
from .options import CACHE_VERSION, NEIGHBOURS, TSNE_EE_ITER, TSNE_INIT_SCHEDULE, TSNE_ITER, TSNE_PCA, Options
from .runs import RunInfo, method_order


@contextmanager
def blas_share(active: bool):
    """While t-SNE runs in its own thread, give BLAS half the cores (1 of 2): the two jobs then
    share the CPU instead of oversubscribing it, and sklearn's nested OpenMP/BLAS sections (k-NN,
    exact t-SNE neighbours) never meet a multi-threaded BLAS pool from the other thread."""
    if not active:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, cores() // 2), user_api="blas"):
        yield


def schedule_settings() -> dict:
    """What every cached panel's key holds of the t-SNE settings besides its input and start."""
    return {"v": CACHE_VERSION, "schedule": [TSNE_EE_ITER, TSNE_ITER], "init_schedule": list(TSNE_INIT_SCHEDULE),
            "pca": TSNE_PCA}


def embed_panel(Z, opts: Options, perplexity: float, init=None) -> np.ndarray:
    """One report panel: ``alviz.embed.tsne`` with the report's settings; openTSNE's full schedule
    from PCA, the shorter ``TSNE_INIT_SCHEDULE`` when started from another panel's layout."""
    from ..embed import tsne

    ee, n = (TSNE_EE_ITER, TSNE_ITER) if init is None else TSNE_INIT_SCHEDULE
    return tsne(Z, perplexity=perplexity, seed=opts.seed, n_jobs=opts.tsne_jobs, n_iter=n, exaggeration_iter=ee,
                pca_dims=TSNE_PCA, init=init)


def schedule_note() -> str:
    """The t-SNE schedule in words (the reports' settings lines)."""
    return (f"{TSNE_EE_ITER} early-exaggeration + {TSNE_ITER} iterations from PCA, {TSNE_INIT_SCHEDULE[0]} + "
            f"{TSNE_INIT_SCHEDULE[1]} for a panel started from another panel's layout; PCA to {TSNE_PCA} "
            "dimensions first")


class PanelJob:
    """What the report's t-SNE jobs share: a lock, the queue of work items that worker threads pop
    (``todo``; empty when nothing is left to compute), ``cancel()``, and ``work()``, which keeps the
    first error of any worker for ``result()`` to re-raise in the caller's thread. Subclasses
    fill ``todo`` and define ``_work()``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.todo: list = []
        self.error: BaseException | None = None
        self.computed = self.hits = 0
        self.t0 = time.perf_counter()
        self.plan = None

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
        raise NotImplementedError


class TsneJob(PanelJob):
    """The t-SNE grid of one experiment: rows = methods (the lowest seed present), columns =
    positions on the inference path, the same stratified held-out samples in every panel.

    Construction plans the panels and takes the cached ones; ``work()`` computes the rest and may
    run in several threads at once (each takes the next panel; the reference comes first and the
    others wait for it); ``result()`` aligns the panels and returns a dict (panels, labels, ids,
    rows, cols, titles, reference, shift, neighbours, Z, pred, ...) or None."""

    def __init__(self, infos: list[RunInfo], acts: dict, opts: Options, cache: Path, log):
        from ..embed import stratified_sample

        super().__init__()
        self.opts, self.log = opts, log
        self.raw: dict[tuple, np.ndarray] = {}
        self.titles: dict[tuple, str] = {}
        by_method: dict[str, RunInfo] = {}
        for info in sorted(infos, key=lambda i: (method_order(i.method), i.seed)):
            by_method.setdefault(info.method, info)
        grid_runs = [by_method[m] for m in sorted(by_method, key=method_order)]
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
        self.settings = {**schedule_settings(), "perplexity": self.perp, "seed": opts.seed}
        self.items: dict[tuple, tuple] = {}  # (method, position) -> (Z, prefix, what)
        self.neighbours: dict[tuple, np.ndarray] = {}
        self.Z: dict[tuple, np.ndarray] = {}
        preds = {}
        for info in grid_runs:
            a = acts[info.name].test
            row_of = {int(i): r for r, i in enumerate(a.ids.tolist())}
            rows_idx = np.asarray([row_of[int(i)] for i in ids])
            pred, conf = getattr(a, "pred", None), getattr(a, "conf", None)
            if pred is not None:  # per-sample predictions, when the activation set holds them
                preds[info.method] = (np.asarray(pred)[rows_idx].astype(np.int64),
                                      None if conf is None else np.asarray(conf, dtype=np.float32)[rows_idx])
            for pos in cols:
                name = positions[pos].get(info.method)
                if name is None:
                    continue
                Z = np.asarray(acts[info.name].layer("test", name)[rows_idx], dtype=np.float32)
                k = (info.method, pos)
                self.titles[k] = name
                self.Z[k] = Z
                self.items[k] = (Z, f"{slug(info.name)}-{slug(name)}-", f"{info.name}/{name}")
        if not self.items:
            return
        from ..embed import neighbours

        # each point's nearest neighbours in the layer itself (listed by the viewer), and how
        # often they share its class; the shared reference is the panel where they do most (the
        # clearest class layout; ties: the earlier run, the deeper layer). It is embedded first
        # (PCA initialisation) and every other panel starts from its positions, so classes tend
        # to keep their region across panels (how far they still move: ``shift``)
        self.neighbours = {k: neighbours(Z, NEIGHBOURS, pca_dims=TSNE_PCA, seed=opts.seed)
                           for k, (Z, _, _) in self.items.items()}
        agree = {k: float((labels[nn] == labels[:, None]).mean()) for k, nn in self.neighbours.items()}
        rank = {m: r for r, m in enumerate(i.method for i in grid_runs)}
        self.ref_key = max(self.items, key=lambda k: (round(agree[k], 6), -rank[k[0]], k[1]))
        self.ref_ready = threading.Event()
        for k in [self.ref_key] + [k for k in self.items if k != self.ref_key]:
            if not self._from_cache(k):
                self.todo.append(k)
        self.todo.reverse()  # pop() takes the reference first, then the grid in order
        self.plan = {"labels": labels, "ids": ids, "cols": cols, "rows": [i.method for i in grid_runs],
                     "runs": {i.method: i.name for i in grid_runs}, "n": int(len(pick)), "pred": preds}

    def _path(self, k) -> Path:
        """The cache file of panel k: its input, the settings and (for every panel but the
        reference) the reference embedding it starts from."""
        Z, prefix, _ = self.items[k]
        init = [] if k == self.ref_key else [self.raw[self.ref_key]]
        mode = "pca" if k == self.ref_key else "reference"
        return self.tcache / f"{prefix}{hash_arrays({**self.settings, 'init': mode}, Z, *init)}.npy"

    def _from_cache(self, k) -> bool:
        if k != self.ref_key and self.ref_key not in self.raw:
            return False  # its key depends on the reference: looked up once that is known
        path = self._path(k)
        Y = None
        if path.is_file():
            try:  # header checked against the file first; not a finite (n, 2) float array: redone
                Y = load_npy(path)
                ok = Y.shape == (len(self.items[k][0]), 2) and Y.dtype.kind == "f" and np.isfinite(Y).all()
                Y = Y.astype(np.float64, copy=False) if ok else None
            except (UserError, OSError):
                Y = None
        if Y is None:
            return False
        with self.lock:
            self.raw[k] = Y
            self.hits += 1
        if k == self.ref_key:
            self.ref_ready.set()
        return True

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.todo or self.error is not None:
                    return
                k = self.todo.pop()
            if k != self.ref_key:
                while not self.ref_ready.wait(0.2):  # the reference is computed by another thread
                    if self.error is not None:
                        return
                if self._from_cache(k):
                    continue
            Z, prefix, what = self.items[k]
            t = time.perf_counter()
            init = None if k == self.ref_key else self.raw[self.ref_key]
            Y = embed_panel(Z, self.opts, self.perp, init)
            path = self._path(k)
            with self.lock:
                save_npy_atomic(path, Y)
                prune_cache(self.tcache, prefix, path.name)
                self.raw[k] = Y
                self.computed += 1
            if k == self.ref_key:
                self.ref_ready.set()
            self.log(f"t-SNE {what}: {len(Z)} points in {time.perf_counter() - t:.1f}s")

    def result(self):
        from ..embed import centroid_shift, procrustes_align

        if self.error is not None:
            raise self.error
        if self.plan is None or not self.raw:
            return None
        missing = [k for k in self.titles if k not in self.raw]
        if missing:
            raise RuntimeError(f"t-SNE panels {missing} were not computed")

        ref = self.raw[self.ref_key]
        # every panel is also rotated, reflected and uniformly scaled onto the reference (t-SNE
        # is invariant to all three); shift: how far each class's centroid lies from its place in
        # the reference panel, in units of the reference panel's radius (reported per panel)
        panels = {k: procrustes_align(Y, ref, scale=True) for k, Y in self.raw.items()}
        shift = {k: centroid_shift(Y, panels[self.ref_key], self.plan["labels"]) for k, Y in panels.items()}
        self.log(f"t-SNE: {len(panels)} panels of {self.plan['n']} points ({self.computed} computed, "
                 f"{self.hits} from cache) in {time.perf_counter() - self.t0:.1f}s")
        return {**self.plan, "panels": panels, "titles": self.titles, "reference": self.ref_key,
                "perplexity": self.perp, "shift": shift, "neighbours": self.neighbours, "Z": self.Z}


def tsne_panels(infos: list[RunInfo], acts: dict, opts: Options, cache: Path, log):
    """The t-SNE grid computed in the calling thread (see ``TsneJob``)."""
    job = TsneJob(infos, acts, opts, cache, log)
    job.work()
    return job.result()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 2
