"""AL's own diagnostics for one AL run, on the held-out samples: the association gap
||b_k(s_k) - t_k|| per depth and class (t_k = g_k(...g_1(one-hot(y))): the label code the bridge
is trained to hit), the class separation of the label codes themselves, and the readout ladder
(AL's early exit h_1(...h_k(b_k(s_k))) against a linear probe on s_k, paired).

The label codes depend only on the class, so they are computed from the model's label encoders
(C one-hot vectors through g_1..g_k); b_k(s_k) are the extracted ``bridge{k}`` activations, and the
exits decode them with the model's h_k..h_1, so nothing is run twice over the data.

Rows (tidy, like ``measure``): per ``bridge{k}``: ``assoc_gap`` (mean over samples, bootstrap
interval; per class too), ``code_sep_min`` / ``code_sep_mean`` (smallest and mean Euclidean distance
between two classes' codes t_k), ``exit_acc`` (bootstrap and Clopper-Pearson intervals).

What this is not: no training, no extraction (``alviz.extract``), no drawing.
"""
from __future__ import annotations

import numpy as np

from ..uncertainty import percentile_interval
from .measure import _base, _interval_rows
from .verdicts import paired

DIAG_MEASURES = ("assoc_gap", "code_sep_min", "code_sep_mean", "exit_acc")


def label_codes(model, n_classes: int) -> list[np.ndarray]:
    """t_k for every class: a list over k = 1..L of (C, width) arrays."""
    import torch

    out = []
    with torch.no_grad():
        t = torch.eye(n_classes)
        for g in model.label_encoders:
            t = g(t)
            out.append(t.numpy().astype(np.float64))
    return out


def al_diagnostics(info, acts, W: np.ndarray, reps_out: dict) -> dict:
    """Rows and ladder records of one AL run; ``reps_out`` (from ``measure_run``) gets the
    replicates of the new measures and provides the probe's."""
    import torch

    from ..checkpoint import load_run

    model = load_run(info.path, "cpu").model
    y = acts.test.labels
    C = int(getattr(model, "num_classes", int(y.max()) + 1))
    codes = label_codes(model, C)
    entries = {e["name"]: e for e in acts.test.manifest["layers"]}
    rows, ladder = [], []
    classes = np.unique(y)
    for k in range(1, len(codes) + 1):
        name = f"bridge{k}"
        if name not in acts.test.layers:
            continue
        B = np.asarray(acts.layer("test", name), dtype=np.float64)
        base = _base(info, name, entries[name])
        gap = np.linalg.norm(B - codes[k - 1][y], axis=1)
        reps = (W @ gap) / W.sum(1) if len(W) else np.zeros(0)
        reps_out[(name, "assoc_gap")] = reps
        rows += _interval_rows(base, "assoc_gap", gap.mean(), reps)
        for c in classes:
            m = y == c
            rows += _interval_rows(base, "assoc_gap", gap[m].mean(), (W[:, m] @ gap[m]) / m.sum() if len(W) else None,
                                   cls=int(c))
        D = np.linalg.norm(codes[k - 1][:, None] - codes[k - 1][None], axis=2)
        off = D[~np.eye(C, dtype=bool)]
        rows += _interval_rows(base, "code_sep_min", off.min(), None)
        rows += _interval_rows(base, "code_sep_mean", off.mean(), None)
        with torch.no_grad():
            scores = model.decode(torch.from_numpy(B.astype(np.float32)), k).numpy()
        ok = (scores.argmax(1) == y).astype(np.float64)
        ereps = (W @ ok) / W.sum(1) if len(W) else np.zeros(0)
        reps_out[(name, "exit_acc")] = ereps
        rows += _interval_rows(base, "exit_acc", ok.mean(), ereps, k_n=(int(ok.sum()), len(ok)))
        lo, hi = percentile_interval(ereps)
        ladder.append({"depth": k, "what": "exit", "layer": name, "value": ok.mean(), "low": lo, "high": hi})
        block = f"block{k}"
        preps = reps_out.get((block, "probe_acc"))
        pval = next((r["value"] for r in info_rows(reps_out, block)), None)
        if preps is not None and pval is not None:
            lo, hi = percentile_interval(preps)
            ladder.append({"depth": k, "what": "probe", "layer": block, "value": pval, "low": lo, "high": hi})
            v = paired([ok.mean()], [pval], ereps[None], preps[None], "exit_acc")
            ladder[-1]["verdict"] = v["better"]
            ladder[-1]["diff"] = v["diff"]
    return {"rows": rows, "ladder": ladder, "codes": codes}


def info_rows(reps_out: dict, layer: str):
    """The probe accuracy value of ``layer`` stored beside the replicates by ``measure_run``."""
    v = reps_out.get((layer, "probe_acc:value"))
    return [] if v is None else [{"value": float(v)}]
