"""The report's layer-to-layer similarity: CKA, Procrustes and k-NN overlap matrices between AL and
BP (first seed of each) and, as the noise floor, between two seeds of the same method; bootstrap
intervals for the aligned layer pairs; the verdict per aligned pair (is AL-vs-BP more dissimilar
than seed-to-seed?); the heatmap figure; rows for ``similarity.csv``. The matrices and replicates
of a pair of runs are cached under the report's ``.cache/similarity/``, keyed by everything that
changes them (``compare_pair``).

What this is not: no measure definitions (``alviz.similarity``), no drawing primitives
(``alviz.simplots``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import schema
from ..checkpoint import read_json, write_text_atomic
from ..errors import UserError
from ..similarity import GROUP_BUDGET, SIM_MEASURES, group_bootstrap, similarity_matrices
from ..uncertainty import NO_DIFFERENCE, boot_mean, bootstrap_counts, percentile_interval
from .files import hash_arrays, prune_cache, slug, to_json
from .runs import method_order

SIM_COLUMNS = ["pair", "run_a", "layer_a", "match_a", "run_b", "layer_b", "match_b", "measure", "value",
               "boot_low", "boot_high"]
KNN_K = 10


def same_samples(name_a: str, acts_a, name_b: str, acts_b) -> None:
    """Refuse two activation sets whose held-out samples differ (one line naming both data sets)."""
    ta, tb = acts_a.test, acts_b.test
    if len(ta.ids) != len(tb.ids) or not np.array_equal(ta.ids, tb.ids) or not np.array_equal(ta.labels, tb.labels):
        da = f"{ta.manifest.get('dataset_name')} {ta.manifest.get('split')} ({len(ta.ids)} samples)"
        db = f"{tb.manifest.get('dataset_name')} {tb.manifest.get('split')} ({len(tb.ids)} samples)"
        raise UserError(f"{name_a} and {name_b} were measured on different held-out data ({da} vs {db}); "
                        "layers can only be compared on the same samples: use runs of one data set and the same "
                        "--max-samples")


def path_layers(acts) -> list[dict]:
    return sorted((e for e in acts.test.manifest["layers"] if e.get("on_path", True)), key=lambda e: e["position"])


SIM_CACHE_VERSION = 1
N_GROUPS = 50          # groups of the group bootstrap
PROCRUSTES_BOOT = 50   # at most this many Procrustes replicates (one SVD each)
_NUMS = schema.List(schema.Either(schema.Num(finite=False), schema.Null()))
#: a layer pair's cache entry: the matrices and the aligned pairs' replicates
SIM_CACHE = schema.Map({**{m: schema.List(_NUMS) for m in SIM_MEASURES},
                        "aligned": schema.Dict(schema.Map({"i": schema.COUNT, "j": schema.COUNT,
                                                           "reps": schema.Dict(_NUMS)}))})


def _measure_pair(acts_a, la, acts_b, lb, y, boot: int, seed: int) -> dict:
    m = similarity_matrices({e["name"]: acts_a.layer("test", e["name"]) for e in la},
                            {e["name"]: acts_b.layer("test", e["name"]) for e in lb}, k=KNN_K)
    W = bootstrap_counts(y, boot, seed=seed, dtype=np.float64)
    aligned = {}
    for i, ea in enumerate(la):
        for j, eb in enumerate(lb):
            if ea["match"] != eb["match"]:
                continue
            reps = {"cka": np.zeros(0), "procrustes": np.zeros(0), "knn_overlap": np.zeros(0)}
            if boot > 1:
                reps = group_bootstrap(m["stats_a"][ea["name"]], m["stats_b"][eb["name"]], y, n_boot=boot,
                                       n_groups=N_GROUPS, seed=seed, procrustes_boot=min(boot, PROCRUSTES_BOOT))
                reps["knn_overlap"] = boot_mean(m["knn_per_sample"][(i, j)], W)
            aligned[ea["match"]] = {"i": i, "j": j, "reps": {k: reps[k] for k in SIM_MEASURES}}
    return {**{k: m[k] for k in SIM_MEASURES}, "aligned": aligned}


def _read_cache(path: Path, shape: tuple) -> dict | None:
    """The cached matrices and replicates as arrays (NaN for null), or None when the entry is
    missing, damaged, not alviz's or of another shape: the pair is then measured again."""
    if not path.exists():
        return None
    try:
        data = read_json(path, "a similarity cache written by alviz")
        schema.check(data, SIM_CACHE, path)
    except (UserError, OSError):
        return None

    def arr(v):
        return np.array([[np.nan if x is None else x for x in r] for r in v] if v and isinstance(v[0], list)
                        else [np.nan if x is None else x for x in v], dtype=np.float64)

    out = {k: arr(data[k]) for k in SIM_MEASURES}
    if any(out[k].shape != shape for k in SIM_MEASURES):
        return None
    out["aligned"] = {k: {"i": v["i"], "j": v["j"], "reps": {m: arr(v["reps"].get(m, [])) for m in SIM_MEASURES}}
                      for k, v in data["aligned"].items()}
    return out


def compare_pair(label: str, name_a: str, acts_a, name_b: str, acts_b, boot: int, seed: int,
                 cache: Path | None = None, log=None) -> dict:
    """Matrices between the path layers of two runs, with replicates for the aligned pairs. With
    ``cache`` (a report's ``.cache`` folder) they are read from ``cache/similarity/<a>--<b>/<key>.json``
    when the key matches: the content hashes, names, match keys and positions of both runs'
    layers, the held-out ids and labels, ``boot``, ``seed`` and the fixed settings (k-NN k, bootstrap
    groups, Procrustes replicates, the group products' memory budget, measures, version)."""
    same_samples(name_a, acts_a, name_b, acts_b)
    la, lb = path_layers(acts_a), path_layers(acts_b)
    y = acts_a.test.labels
    data = path = None
    if cache is not None:
        settings = {"v": SIM_CACHE_VERSION, "boot": boot, "seed": seed, "k": KNN_K, "groups": N_GROUPS,
                    "procrustes_boot": PROCRUSTES_BOOT, "group_budget": GROUP_BUDGET, "measures": sorted(SIM_MEASURES)}
        layers = [[[e["name"], e["match"], e["position"], acts.digest("test", e["name"])] for e in lst]
                  for acts, lst in ((acts_a, la), (acts_b, lb))]
        folder = Path(cache) / "similarity" / f"{slug(name_a)}--{slug(name_b)}"
        path = folder / f"{hash_arrays(settings, *layers, y, np.asarray(acts_a.test.ids))}.json"
        data = _read_cache(path, (len(la), len(lb)))
        if data is not None and log is not None:
            log(f"similarity: {label} ({name_a} vs {name_b}) from the cache")
    if data is None:
        data = _measure_pair(acts_a, la, acts_b, lb, y, boot, seed)
        if path is not None:
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, to_json({**{k: data[k].tolist() for k in SIM_MEASURES},
                                             "aligned": {k: {"i": v["i"], "j": v["j"],
                                                             "reps": {m: np.asarray(r).tolist()
                                                                      for m, r in v["reps"].items()}}
                                                         for k, v in data["aligned"].items()}}))
            prune_cache(folder, "", path.name)
    return {"label": label, "run_a": name_a, "run_b": name_b, "rows": [e["name"] for e in la],
            "cols": [e["name"] for e in lb], "match_a": [e["match"] for e in la], "match_b": [e["match"] for e in lb],
            "depth": {e["match"]: e["position"] for e in la}, **{k: data[k] for k in SIM_MEASURES},
            "aligned": data["aligned"]}


def pairs_for(infos, acts, boot: int, seed: int, log, cache: Path | None = None) -> list[dict]:
    """AL vs BP (first AL seed against the second BP seed when there is one: runs of the same seed
    share their initialisation), then AL vs AL and BP vs BP (first two seeds) where present."""
    by = {}
    for i in sorted(infos, key=lambda i: (method_order(i.method), i.seed)):
        by.setdefault(i.method, []).append(i.name)
    out = []
    methods = sorted(by, key=method_order)
    if len(methods) >= 2:
        # runs of one seed share their encoders' initialisation (matched AL/BP): the cross-method pair
        # takes different seeds where it can, like the seed-to-seed floors it is compared with
        a = by[methods[0]][0]
        b = by[methods[1]][1] if len(by[methods[1]]) > 1 else by[methods[1]][0]
        out.append(compare_pair(f"{methods[0].upper()} vs {methods[1].upper()}", a, acts[a], b, acts[b], boot, seed,
                                cache, log))
        if b == by[methods[1]][0]:
            log("similarity: AL and BP compared at the same seed (one seed each): they share their encoders' "
                "initialisation, which raises their similarity; train a second seed for a fair noise floor")
    for m in methods:
        if len(by[m]) >= 2:
            a, b = by[m][0], by[m][1]
            out.append(compare_pair(f"{m.upper()} vs {m.upper()}", a, acts[a], b, acts[b], boot, seed, cache, log))
    log(f"similarity: {', '.join(p['label'] for p in out) or 'nothing to compare (one method, one seed)'}")
    return out


def csv_rows(pairs: list[dict]) -> list[dict]:
    rows = []
    for p in pairs:
        for i, la in enumerate(p["rows"]):
            for j, lb in enumerate(p["cols"]):
                al = p["aligned"].get(p["match_a"][i]) if p["match_a"][i] == p["match_b"][j] else None
                for meas in SIM_MEASURES:
                    lo = hi = float("nan")
                    if al is not None and len(al["reps"][meas]):
                        lo, hi = percentile_interval(al["reps"][meas])
                    rows.append({"pair": p["label"], "run_a": p["run_a"], "layer_a": la, "match_a": p["match_a"][i],
                                 "run_b": p["run_b"], "layer_b": lb, "match_b": p["match_b"][j], "measure": meas,
                                 "value": float(p[meas][i, j]), "boot_low": lo, "boot_high": hi})
    return rows


def floor_verdicts(pairs: list[dict], measure: str = "cka") -> list[dict]:
    """Per aligned position of the cross-method pair: its value and interval, each seed-to-seed
    floor's, and whether the cross-method pair is more dissimilar than each floor (paired
    replicates: the same groups and draws, so the difference's interval is paired)."""
    cross = [p for p in pairs if p["label"].split(" vs ")[0] != p["label"].split(" vs ")[1]]
    floors = [p for p in pairs if p not in cross]
    if not cross:
        return []
    c = cross[0]
    higher_similar = SIM_MEASURES[measure][1]
    out = []
    for match, al in sorted(c["aligned"].items(), key=lambda kv: c["depth"][kv[0]]):
        v = float(c[measure][al["i"], al["j"]])
        row = {"match": match, "depth": c["depth"][match], "layer_a": c["rows"][al["i"]],
               "layer_b": c["cols"][al["j"]], "value": v, "interval": percentile_interval(al["reps"][measure]),
               "floors": []}
        for f in floors:
            fa = f["aligned"].get(match)
            if fa is None:
                continue
            fv = float(f[measure][fa["i"], fa["j"]])
            verdict = NO_DIFFERENCE
            ra, rb = al["reps"][measure], fa["reps"][measure]
            if len(ra) > 1 and len(ra) == len(rb):
                lo, hi = percentile_interval(rb - ra if higher_similar else ra - rb)
                if lo > 0:
                    verdict = "more different than seeds"
                elif hi < 0:
                    verdict = "more alike than seeds"
            row["floors"].append({"label": f["label"], "value": fv, "interval": percentile_interval(rb),
                                  "verdict": verdict})
        out.append(row)
    return out


def heatmap_figure(pairs: list[dict], folder, log):
    """fig_similarity: one CKA heatmap per pair, one shared colour scale [0, 1]."""
    import matplotlib

    from .. import simplots
    from .figures import STYLE, TEXT_WIDTH, new_figure, save_figure

    if not pairs:
        return None
    with matplotlib.rc_context(STYLE):
        n = len(pairs)
        fig = new_figure(min(TEXT_WIDTH, 2.4 * n + 0.6), 2.6)
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, p in zip(axes, pairs):
            a, b = p["label"].split(" vs ")
            simplots.similarity_heatmap(p["cka"], p["rows"], p["cols"], ax=ax, title=p["label"],
                                        ylabel=f"{a} ({p['run_a']})", xlabel=f"{b} ({p['run_b']})")
        fig.colorbar(axes[0]._alviz_image, ax=list(axes), shrink=0.8, label="linear CKA (unbiased)")
        out = save_figure(fig, folder, "fig_similarity")
    return {**out, "caption": (
        "Linear CKA (unbiased estimator) between every layer on the inference path of two runs, on the same "
        "held-out samples; one colour scale for all panels (0: unrelated, 1: the same representation up to "
        "rotation and scale). The seed-to-seed panels are the noise floor: differences between AL and BP "
        "matter only where they exceed it (table above).")}
