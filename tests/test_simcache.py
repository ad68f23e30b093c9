"""The report's similarity cache (``report.simsection.compare_pair``) and McNemar's test for every
seed pair (``report.verdicts.accuracy_pairs``), on small stand-ins: no training, no extraction."""
from types import SimpleNamespace

import numpy as np
import pytest

from alviz.report import simsection, verdicts
from alviz.report.files import hash_arrays
from alviz.uncertainty import NO_DIFFERENCE


class FakeActs:
    """What compare_pair reads of a RunActivations: the test set's ids, labels, manifest layers."""

    def __init__(self, layers: dict, labels):
        self.arrays = layers
        entries = [{"name": n, "match": f"m{k}", "position": k, "on_path": True} for k, n in enumerate(layers)]
        self.test = SimpleNamespace(ids=np.arange(len(labels)), labels=np.asarray(labels),
                                    manifest={"layers": entries, "dataset_name": "fake", "split": "test"})

    def layer(self, which, name):
        return self.arrays[name]

    def digest(self, which, name):
        return hash_arrays(self.arrays[name])


def _acts(seed, n=120):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    h1 = rng.normal(size=(n, 6))
    h1[np.arange(n), y] += 2.0
    return FakeActs({"block1": h1, "block2": np.tanh(h1 @ rng.normal(size=(6, 5)))}, y)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = simsection.similarity_matrices

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(simsection, "similarity_matrices", counting)
    return calls


def _same(p, q):
    for m in simsection.SIM_MEASURES:
        np.testing.assert_array_equal(p[m], q[m])
        for k in p["aligned"]:
            np.testing.assert_array_equal(p["aligned"][k]["reps"][m], q["aligned"][k]["reps"][m])
    assert p["aligned"].keys() == q["aligned"].keys()


def test_second_compare_pair_comes_from_the_cache(counted, tmp_path):
    a, b = _acts(0), _acts(1)
    logs = []
    first = simsection.compare_pair("A vs B", "ra", a, "rb", b, 20, 0, tmp_path, logs.append)
    assert len(counted) == 1 and not logs
    again = simsection.compare_pair("A vs B", "ra", a, "rb", b, 20, 0, tmp_path, logs.append)
    assert len(counted) == 1 and any("from the cache" in line for line in logs)
    _same(first, again)
    assert again["rows"] == ["block1", "block2"] and set(again["aligned"]) == {"m0", "m1"}
    assert len(first["aligned"]["m0"]["reps"]["cka"]) == 20
    # without a cache folder: always measured
    simsection.compare_pair("A vs B", "ra", a, "rb", b, 20, 0)
    assert len(counted) == 2


def test_a_changed_setting_or_layer_recomputes_and_replaces_the_entry(counted, tmp_path):
    a, b = _acts(0), _acts(1)
    base = simsection.compare_pair("x", "ra", a, "rb", b, 20, 0, tmp_path)
    folder = tmp_path / "similarity" / "ra--rb"
    for boot, seed in ((30, 0), (20, 1)):  # every setting that changes the result is in the key
        simsection.compare_pair("x", "ra", a, "rb", b, boot, seed, tmp_path)
    assert len(counted) == 3
    b.arrays["block2"] = b.arrays["block2"] * 2 + 1  # the same CKA, other activations: measured again
    changed = simsection.compare_pair("x", "ra", a, "rb", b, 20, 0, tmp_path)
    assert len(counted) == 4 and changed["cka"] == pytest.approx(base["cka"])
    assert len(list(folder.glob("*.json"))) == 1  # stale entries of this pair are dropped
    entry = next(folder.glob("*.json"))
    entry.write_text('{"cka": "not a matrix"}')  # damaged: measured again, never an error
    simsection.compare_pair("x", "ra", a, "rb", b, 20, 0, tmp_path)
    assert len(counted) == 5


def _run(name, method, seed, correct):
    return {"run": name, "method": method, "seed": seed, "correct": np.asarray(correct, bool)}


def _pair_correct(a_only, b_only, both=50, neither=10):
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


def test_mcnemar_for_every_seed_pair_with_known_exact_p_values():
    # two-sided exact binomial p: 2 P(X <= min | n, 1/2)
    known = {(9, 1): 2 * (1 + 10) / 2**10, (8, 2): 2 * (1 + 10 + 45) / 2**10, (10, 0): 2 / 2**10}
    cases = list(known)
    runs_a, runs_b = [], []
    for seed, (ao, bo) in zip((2, 0, 1), cases):  # given out of seed order
        ca, cb = _pair_correct(ao, bo)
        runs_a.append(_run(f"al-seed{seed}", "al", seed, ca))
        runs_b.append(_run(f"bp-seed{seed}", "bp", seed, cb))
    m = verdicts.accuracy_pairs(runs_a, runs_b[::-1])
    assert [(r["seed_a"], r["seed_b"]) for r in m["pairs"]] == [(0, 0), (1, 1), (2, 2)]
    for r in m["pairs"]:
        assert r["run_a"] == f"al-seed{r['seed_a']}" and r["run_b"] == f"bp-seed{r['seed_b']}"
        ao, bo = cases[(2, 0, 1).index(r["seed_a"])]
        assert (r["a_only"], r["b_only"]) == (ao, bo)
        assert r["p"] == pytest.approx(known[(ao, bo)], rel=1e-12)
        assert r["better"] == ("A" if known[(ao, bo)] < 0.05 else NO_DIFFERENCE)
    (c,) = m["combined"]
    assert c["paired_by"] == "seed" and c["n_pairs"] == 3 and c["significant"] == 2 and c["a_better"] == 2
    assert (c["a_only"], c["b_only"]) == (27, 3) and c["better"] == NO_DIFFERENCE  # not every pair agrees
    lines = verdicts.accuracy_lines(m)
    assert len(lines) == 4 and "al-seed0 vs bp-seed0" in lines[0] and "p = 0.109" in lines[0]
    assert lines[-1].lstrip().startswith("combined AL/BP (3 pair(s), paired by seed)") and "no pooled test" in lines[-1]
    # every pair significant the same way: the combined verdict follows
    ca, cb = _pair_correct(10, 0)
    m = verdicts.accuracy_pairs([_run("a0", "al", 0, ca), _run("a1", "al", 1, ca)],
                                [_run("b0", "bp", 0, cb), _run("b1", "bp", 1, cb)])
    assert m["combined"][0]["better"] == "A" and m["combined"][0]["significant"] == 2


def test_seed_pairing_rules_and_methods():
    assert verdicts.seed_pairs([0, 1, 2], [2, 1]) == ([(1, 1), (2, 0)], "seed")
    assert verdicts.seed_pairs([5, 3], [1, 2, 9]) == ([(1, 0), (0, 1)], "sorted order")
    ca, cb = _pair_correct(3, 1)
    m = verdicts.accuracy_pairs([_run("x", "al", 0, ca), _run("y", "al", 1, ca)], [_run("z", "al", 7, cb)])
    assert m["combined"][0]["paired_by"] == "sorted order" and [r["run_a"] for r in m["pairs"]] == ["x"]
    # sides holding two methods: AL with AL, BP with BP
    side_a = [_run("e1/al-seed0", "al", 0, ca), _run("e1/bp-seed0", "bp", 0, cb)]
    side_b = [_run("e2/al-seed0", "al", 0, cb), _run("e2/bp-seed0", "bp", 0, ca)]
    m = verdicts.accuracy_pairs(side_a, side_b)
    assert [(r["run_a"], r["run_b"]) for r in m["pairs"]] == [("e1/al-seed0", "e2/al-seed0"),
                                                               ("e1/bp-seed0", "e2/bp-seed0")]
    assert [(c["method_a"], c["n_pairs"]) for c in m["combined"]] == [("al", 1), ("bp", 1)]
