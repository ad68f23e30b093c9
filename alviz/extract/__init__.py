"""Hidden-layer extraction: a layer map, forward hooks in a ``with`` block, and activation sets
streamed to ``.npy`` files.

One file per job, in the order the data flows::

    layers.py   the layer map: names, roles, positions on the inference path, AL/BP ``match`` keys
    hooks.py    ``capture(model, layers)``: forward hooks, always removed; pooling; AL's exits
    writer.py   ``extract_arrays``: batches through the model, rows streamed into .npy files
    store.py    the activation set's format and its validated reader, ``load_activations``
    runs.py     ``extract_run``: one run's set under RUN/activations/ (samples, cache, lock, manifest)

Usage::

    with alviz.capture(model, ["block1", "bridge2"]) as acts:
        model(x)
    folder = alviz.extract.extract_run("checkpoints/mlp-mnist5k-relu/al-seed0")
    acts = alviz.extract.load_activations(folder)      # acts.layers["block1"]: (N, D) memmap

What this is not: no separability measures, no t-SNE, no plots, no training; it never changes a
model's weights and reads no pickle.
"""
from __future__ import annotations

from .hooks import POOLS, capture, describe_layers
from .layers import LayerInfo, layer_catalogue, parse_layers, select_layers
from .runs import activation_dir, dataset_slug, extract_run, select_samples
from .store import DTYPES, FORMAT, SPLITS, Activations, load_activations
from .writer import extract_arrays

__all__ = ["LayerInfo", "layer_catalogue", "select_layers", "describe_layers", "capture", "parse_layers", "select_samples",
           "extract_arrays", "extract_run", "activation_dir", "dataset_slug", "load_activations",
           "Activations", "FORMAT", "DTYPES", "POOLS", "SPLITS"]
