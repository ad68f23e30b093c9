"""bench/tf_anchor.py and bench/bench_anchor.py (issue 19's anchor) without TensorFlow: the TensorFlow
script imports and prepares its data with numpy alone; the driver speaks to a stand-in worker,
scales partial epochs to whole ones and divides by the TensorFlow way's times. TensorFlow itself is
never needed here, and nothing is timed against a bound."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def test_tf_anchor_imports_without_tensorflow_and_prepares_data_as_the_authors(tmp_path):
    from bench import tf_anchor

    x = (np.arange(3 * 784).reshape(3, 784) % 256).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 3, 9]))
    xs, ys = tf_anchor.load_data(str(tmp_path / "d.npz"))
    assert xs.shape == (3, 28, 28, 1) and xs.dtype == np.float32 and ys.shape == (3, 10)
    # scaled to [0, 1], then the mean image subtracted (MNIST/main.py's data_fetching)
    np.testing.assert_allclose(xs.reshape(3, 784), x / 255.0 - (x / 255.0).mean(0), atol=1e-6)
    assert ys.argmax(1).tolist() == [0, 3, 9] and ys.sum() == 3


def _fake_tf_python(tmp_path: Path) -> str:
    """A stand-in for the TensorFlow environment's Python: answers every epoch with 1 s of wall clock."""
    code = ("import json, sys\n"
            "print(json.dumps({'ready': True, 'tensorflow': 'stand-in'}), flush=True)\n"
            "for line in sys.stdin:\n"
            "    b, s = map(int, line.split())\n"
            "    print(json.dumps({'wall_s': 1.0, 'cpu_s': 1.0, 'steps': s, 'images': s * b}), flush=True)\n")
    (tmp_path / "fake.py").write_text(code)
    sh = tmp_path / "python"
    sh.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "fake.py"}"\n')
    sh.chmod(sh.stat().st_mode | stat.S_IEXEC)
    return str(sh)


def test_anchor_driver_scales_partial_epochs_and_divides_by_tf(tmp_path):
    from bench.bench_anchor import run, table

    lines: list[str] = []
    # the paper's MLP, one step of 256 of the split's 4,000 images per epoch: an epoch is 16 such steps
    res = run(_fake_tf_python(tmp_path), "mlp", [1], [256], 1, ["tf", "alviz_exact"], images=256,
              echo=lines.append)
    eps = [json.loads(s) for s in lines]
    assert [(e["rep"], e["way"]) for e in eps] == [(0, "tf"), (0, "alviz_exact"), (1, "tf"), (1, "alviz_exact")]
    for e in eps:
        assert e["images"] == 256 and e["wall_s"] == pytest.approx(e["measured_wall_s"] * 16)
    (row,) = res["rows"]
    assert row["tf"]["wall_s"]["all"] == [16.0]
    alviz = eps[3]["wall_s"]
    assert row["alviz_exact"]["wall_s"]["all"] == [alviz]
    assert row["alviz_exact"]["vs_tf"]["median"] == pytest.approx(alviz / 16.0)
    assert res["tf"]["tensorflow"] == "stand-in"
    t = table(res)
    assert "| threads | batch | tf | alviz_exact | alviz_exact / tf |" in t and "| 1 | 256 | 16.00 [16.00-16.00] |" in t
