"""Measuring runs: a run's test and train activation sets (extracted on demand, with the run's own
predictions, checked finite), its per-layer measures with bootstrap intervals, per-class values
and the probe's confusion matrix through the content-keyed cache (``alviz.resample``), the
model's own accuracy (Clopper-Pearson and bootstrap intervals, per class, confusion matrix), and
the summary over seeds.

What this is not: no measure definitions (``alviz.metrics``), no extraction mechanics
(``alviz.extract``), no t-SNE, no figures.
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from .. import schema
from ..checkpoint import read_json, write_text_atomic
from ..errors import UserError
from ..safeio import describe
from ..metrics import MEASURES, summarize
from ..resample import PER_CLASS, layer_report
from ..uncertainty import bootstrap_counts, clopper_pearson, combine_seeds, percentile_interval
from .files import hash_arrays, prune_cache, slug, to_json
from .options import BOOT_STATS, CACHE_VERSION, CP_STATS, STATS, Options
from .runs import RunInfo


class RunActivations:
    """Test and train activation sets of one run (with `epoch`: of its snapshot of that epoch)."""

    def __init__(self, info: RunInfo, opts: Options, log, epoch: int | None = None):
        from ..extract import extract_run, load_activations

        t_dir = extract_run(info.path, split="test", max_samples=opts.max_samples, device=opts.device,
                            log=log, predictions=True, epoch=epoch)
        cap = opts.train_samples if opts.max_samples is None else min(opts.train_samples, opts.max_samples)
        r_dir = extract_run(info.path, split="train", max_samples=cap, device=opts.device, log=log, epoch=epoch)
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

    def digest(self, which, name) -> str:
        """Content hash of one layer's activations (``files.hash_arrays``), computed once per set."""
        memo = self.__dict__.setdefault("_digests", {})
        if (which, name) not in memo:
            memo[(which, name)] = hash_arrays(self.layer(which, name))
        return memo[(which, name)]


def replicates(labels: np.ndarray, opts: Options) -> np.ndarray:
    """The stratified bootstrap multiplicities (opts.boot x N) of the held-out samples: the same
    for every run measured on the same samples, so replicates of two runs are paired."""
    return bootstrap_counts(labels, opts.boot, seed=opts.seed)


def _base(info: RunInfo, name, entry) -> dict:
    return {"experiment": info.experiment, "run": info.name, "method": info.method, "seed": info.seed,
            "layer": name, "role": entry.get("role"), "depth": entry.get("position"),
            "on_path": bool(entry.get("on_path", True)), "match": entry.get("match")}


def _interval_rows(base: dict, measure: str, value: float, reps, *, cls=None, k_n=None) -> list[dict]:
    extra = {} if cls is None else {"class": cls}
    out = [{**base, **extra, "measure": measure, "stat": "value", "value": float(value)}]
    if reps is not None and len(reps):
        lo, hi = percentile_interval(reps)
        out += [{**base, **extra, "measure": measure, "stat": s, "value": v} for s, v in zip(BOOT_STATS, (lo, hi))]
    if k_n is not None and k_n[1] > 0:
        lo, hi = clopper_pearson(*k_n)
        out += [{**base, **extra, "measure": measure, "stat": s, "value": v} for s, v in zip(CP_STATS, (lo, hi))]
    return out


def _confusion_rows(base: dict, measure: str, classes, truth, pred) -> list[dict]:
    out = []
    C = len(classes)
    pos = {int(c): i for i, c in enumerate(classes)}
    M = np.zeros((C, C), dtype=np.int64)
    np.add.at(M, ([pos[int(t)] for t in truth], [pos.get(int(p), 0) for p in pred]), 1)
    for i, c in enumerate(classes):
        for j, d in enumerate(classes):
            out.append({**base, "class": int(c), "measure": measure, "stat": f"pred={int(d)}", "value": float(M[i, j])})
    return out


_NUMS = schema.List(schema.Either(schema.Num(finite=False), schema.Null()))
#: a layer's cache entry: values, bootstrap replicates, per-class values and replicates, probe predictions
LAYER_CACHE = schema.Map({"values": schema.MEASURES_CACHE, "reps": schema.Dict(_NUMS),
                          "classes": schema.List(schema.Int(0)), "per_class": schema.Dict(_NUMS),
                          "class_reps": schema.Dict(schema.List(_NUMS))},
                         {"probe_pred": schema.Opt(schema.List(schema.Int(0)))})


def read_cache(path: Path) -> dict | None:
    """A layer's cache entry when it is whole and ours (checked against ``LAYER_CACHE``); None when
    it is missing, damaged or not alviz's: the layer is then measured again."""
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        data = read_json(path, "a measures cache written by alviz")
        schema.check(data, LAYER_CACHE, path)
    except (UserError, OSError):
        return None
    if set(data["values"]) != set(MEASURES) or set(data["reps"]) != set(MEASURES) \
            or any(len(data["per_class"].get(m, ())) != len(data["classes"]) for m in PER_CLASS):
        return None
    return data


def measure_run(info: RunInfo, acts: RunActivations, opts: Options, cache: Path, log,
                reps_out: dict | None = None, epoch: int | None = None) -> list[dict]:
    """Tidy rows of one run, from the cache where the inputs match: per layer every measure (stat
    "value", with "boot_low"/"boot_high" and, for accuracies, "cp_low"/"cp_high"), per-class
    values (column ``class``), the probe's confusion matrix (measure "confusion_probe", class = the
    true class, stat "pred=<j>", value = count); for the run (layer "output"): the model's own
    accuracy ("model_acc") overall and per class and its confusion matrix ("confusion_model").
    ``reps_out``, when given, receives the bootstrap replicates: ``{(layer, measure): (B,)}``.
    With `epoch` (activations of a snapshot), every row also holds "epoch" and the cache has a
    folder per epoch (so measuring one snapshot never prunes another's entries)."""
    rows = []
    cache = cache / "metrics" / slug(info.name)
    if epoch is not None:
        cache = cache / f"epoch{epoch:04d}"
    cache.mkdir(parents=True, exist_ok=True)
    settings = {"v": CACHE_VERSION, "seed": opts.seed, "train": opts.train_samples, "boot": opts.boot,
                "measures": sorted(MEASURES)}
    labels = acts.test.labels
    W = replicates(labels, opts)
    hits = 0
    t0 = time.perf_counter()
    classes = np.unique(acts.test.labels)
    if len(classes) < 2:
        raise UserError(f"{info.path}: the held-out samples measured hold {len(classes)} class(es) "
                        f"({describe(classes.tolist())}); the measures compare classes: give --max-samples of at "
                        "least the number of classes, or data whose test split holds 2 or more classes")
    for entry in acts.test.manifest["layers"]:
        name = entry["name"]
        Zt = acts.layer("test", name)
        Ztr = acts.layer("train", name) if name in acts.train.layers else None
        key = hash_arrays(settings, Zt, labels, *((Ztr, acts.train.labels) if Ztr is not None else ()))
        fname = f"{slug(name)}-{key}.json"
        path = cache / fname
        data = read_cache(path)
        if data is not None:
            hits += 1
        else:
            r = layer_report(Zt, labels, Ztr, acts.train.labels if Ztr is not None else None, W=W,
                             seed=opts.seed, max_train=opts.train_samples, boot_seed=opts.seed)
            data = {"values": r["values"], "reps": {k: v.tolist() for k, v in r["reps"].items()},
                    "classes": r["classes"].tolist(), "per_class": {k: v.tolist() for k, v in r["per_class"].items()},
                    "class_reps": {k: np.asarray(v).T.tolist() for k, v in r["class_reps"].items()},
                    "probe_pred": None if r["probe_pred"] is None else r["probe_pred"].tolist()}
            write_text_atomic(path, to_json(data))
            prune_cache(cache, f"{slug(name)}-", fname)
        undefined = [m for m in MEASURES if data["values"][m] is None or not np.isfinite(data["values"][m])]
        if undefined:
            why = ("its activations are the same for every sample (a constant layer)"
                   if data["values"]["intra"] == 0 and data["values"]["inter"] == 0
                   else "a class or the whole layer has no spread")
            log(f"warning: {info.name} layer {name}: {', '.join(undefined)} undefined because {why}; reported as "
                "NaN (blank in the tables)")
        base = _base(info, name, entry)
        n = len(labels)
        for m in MEASURES:
            v = float("nan") if data["values"][m] is None else float(data["values"][m])
            reps = np.array([np.nan if x is None else x for x in data["reps"][m]], dtype=np.float64)
            if reps_out is not None:
                reps_out[(name, m)] = reps
                reps_out[(name, f"{m}:value")] = v
            k_n = (int(round(v * n)), n) if m in ("knn_acc", "probe_acc") and np.isfinite(v) else None
            rows += _interval_rows(base, m, v, reps, k_n=k_n)
        for m in PER_CLASS:
            for i, c in enumerate(data["classes"]):
                v = data["per_class"][m][i]
                creps = np.array([np.nan if x is None else x for x in data["class_reps"][m][i]], dtype=np.float64)
                rows += _interval_rows(base, m, float("nan") if v is None else v, creps, cls=int(c))
        if data.get("probe_pred") is not None:
            rows += _confusion_rows(base, "confusion_probe", data["classes"], labels, data["probe_pred"])
    rows += model_rows(info, acts, W, reps_out)
    if epoch is not None:
        rows = [{**r, "epoch": epoch} for r in rows]
    n = len(acts.test.manifest["layers"])
    log(f"{info.name}{'' if epoch is None else f' epoch {epoch}'}: {n} layers measured on {len(labels)} held-out samples "
        f"({hits} from cache) in {time.perf_counter() - t0:.1f}s")
    return rows


def model_rows(info: RunInfo, acts: RunActivations, W: np.ndarray, reps_out: dict | None = None) -> list[dict]:
    """The model's own accuracy on the held-out samples (layer "output", from ``pred.npy``)."""
    pred, y = acts.test.pred, acts.test.labels
    if pred is None:
        return []
    base = {"experiment": info.experiment, "run": info.name, "method": info.method, "seed": info.seed,
            "layer": "output", "role": "output", "depth": None, "on_path": False, "match": "output"}
    ok = (pred == y).astype(np.float64)
    reps = (W @ ok) / W.sum(1) if len(W) else np.zeros(0)
    if reps_out is not None:
        reps_out[("output", "model_acc")] = reps
        reps_out[("output", "correct")] = ok.astype(bool)
    rows = _interval_rows(base, "model_acc", ok.mean(), reps, k_n=(int(ok.sum()), len(ok)))
    classes = np.unique(y)
    for c in classes:
        m = y == c
        creps = (W[:, m] @ ok[m]) / m.sum() if len(W) else None
        rows += _interval_rows(base, "model_acc", ok[m].mean(), creps, cls=int(c), k_n=(int(ok[m].sum()), int(m.sum())))
    rows += _confusion_rows(base, "confusion_model", classes, y, pred)
    return rows


def aggregate(rows: list[dict], confidence: float = 0.95) -> list[dict]:
    """Summary rows over seeds: per (experiment, method, layer, measure, class[, epoch]) the stats mean,
    std, n, ci_low, ci_high (``alviz.metrics.summarize``: seed-to-seed variation only) and, where
    the runs carry bootstrap intervals, boot_low / boot_high combining both sources
    (``alviz.uncertainty.combine_seeds``); run = the method, seed = "all". Confusion counts are
    not aggregated."""
    groups: dict[tuple, list] = defaultdict(list)
    boots: dict[tuple, dict] = defaultdict(dict)
    first: dict[tuple, dict] = {}
    for r in rows:
        k = (r.get("experiment"), r["method"], r["layer"], r["measure"], r.get("class"), r.get("epoch"))
        if r["measure"].startswith("confusion_"):
            continue
        if r.get("stat", "value") == "value":
            groups[k].append(float(r["value"]))
            first.setdefault(k, r)
        elif r["stat"] in BOOT_STATS:
            boots[k].setdefault(r["stat"], []).append(float(r["value"]))
    out = []
    for k, vals in groups.items():
        s = summarize(vals, confidence)
        base = {**first[k], "run": first[k]["method"], "seed": "all"}
        for stat in STATS:
            out.append({**base, "stat": stat, "value": float(s[stat])})
        b = boots.get(k, {})
        if len(b.get("boot_low", ())) == len(vals) == len(b.get("boot_high", ())):
            lo, hi = combine_seeds(vals, b["boot_low"], b["boot_high"], confidence)
            out += [{**base, "stat": "boot_low", "value": lo}, {**base, "stat": "boot_high", "value": hi}]
    return out


def summary_index(summary: list[dict]) -> dict:
    """{(method, layer, measure): {stat: value}} of the whole-layer rows (no class)."""
    idx: dict[tuple, dict] = defaultdict(dict)
    for r in summary:
        if r.get("class") not in (None, ""):
            continue
        idx[(r["method"], r["layer"], r["measure"])][r["stat"]] = r["value"]
    return idx
