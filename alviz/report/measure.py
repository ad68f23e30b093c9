"""Measuring runs: a run's test and train activation sets (extracted on demand, checked finite),
its per-layer measures through the content-keyed cache, and the summary over seeds.

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
from ..metrics import MEASURES, layer_measures, summarize
from .files import hash_arrays, prune_cache, slug, to_json
from .options import CACHE_VERSION, STATS, Options
from .runs import RunInfo


class RunActivations:
    """Test and train activation sets of one run."""

    def __init__(self, info: RunInfo, opts: Options, log):
        from ..extract import extract_run, load_activations

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


def measure_run(info: RunInfo, acts: RunActivations, opts: Options, cache: Path, log) -> list[dict]:
    """Tidy per-layer rows (stat "value") of one run, from the cache where the inputs match."""
    rows = []
    cache = cache / "metrics" / slug(info.name)
    cache.mkdir(parents=True, exist_ok=True)
    settings = {"v": CACHE_VERSION, "seed": opts.seed, "train": opts.train_samples,
                "measures": sorted(MEASURES)}
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
        key = hash_arrays(settings, Zt, acts.test.labels,
                           *((Ztr, acts.train.labels) if Ztr is not None else ()))
        fname = f"{slug(name)}-{key}.json"
        path = cache / fname
        vals = None
        if path.is_file():
            try:
                cached = read_json(path, "a measures cache written by alviz")
                schema.check(cached, schema.MEASURES_CACHE, path)
                vals = {k: (float("nan") if v is None else float(v)) for k, v in cached.items()}
                hits += 1
            except (UserError, OSError):  # not ours, or damaged: measured again
                vals = None
        if vals is None or set(vals) != set(MEASURES):
            vals = layer_measures(Zt, acts.test.labels, Ztr, acts.train.labels if Ztr is not None else None,
                                  seed=opts.seed, max_train=opts.train_samples)
            write_text_atomic(path, to_json(vals))
            prune_cache(cache, f"{slug(name)}-", fname)
        undefined = [m for m in MEASURES if not np.isfinite(vals[m])]
        if undefined:
            why = ("its activations are the same for every sample (a constant layer)"
                   if vals["intra"] == 0 and vals["inter"] == 0 else "a class or the whole layer has no spread")
            log(f"warning: {info.name} layer {name}: {', '.join(undefined)} undefined because {why}; reported as "
                "NaN (blank in the tables)")
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


def summary_index(summary: list[dict]) -> dict:
    """{(method, layer, measure): {stat: value}}"""
    idx: dict[tuple, dict] = defaultdict(dict)
    for r in summary:
        idx[(r["method"], r["layer"], r["measure"])][r["stat"]] = r["value"]
    return idx
