"""The on-disk activation set: its format (file names, manifest keys, dtypes) and its validated
reader, ``load_activations(folder)``, which returns read-only memmaps.

``manifest.json`` (format ``alviz-activations/1``): the ``SETTING_KEYS`` (format, sha256 of
model.safetensors, data set (npz: absolute path and sha256 of the file), split, test_fraction,
max_samples as asked, sample seed, dtype, pool), ``n_samples``, ``sampling``, ``labels_file``,
``ids_file`` (file names in the folder), ``pred_file``, ``conf_file`` (the run's own prediction
per sample: int64 argmax of the class scores and float32 softmax probability of that class, in
the row order of ``ids``; absent from sets written before alviz stored them), ``layers`` (a list, in catalogue order, of ``{name,
role, position, on_path, match, file, shape: [N, D], output_shape: per-sample shape before
pooling}``), ``dataset_name`` (as given), ``num_classes``, ``class_names``, ``method``, ``arch``,
``seed``, ``epoch``, ``checkpoint``, ``batch_size``, ``device``, ``seconds``, ``alviz_version``,
``torch_version``, ``created``. ``load_activations`` refuses file names that leave the folder
(absolute, ``..``, sub-folders, links out) and checks every shape and dtype against the .npy
headers. No pickle is ever loaded.

What this is not: no extraction (``runs``), no writing (``writer``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import schema
from ..checkpoint import read_json
from ..errors import UserError, choice_error
from ..npyfile import load_npy
from ..safeio import describe


FORMAT = "alviz-activations/1"
MANIFEST = "manifest.json"
LABELS_FILE = "labels.npy"
IDS_FILE = "ids.npy"
PRED_FILE = "pred.npy"
CONF_FILE = "conf.npy"
ACTIVATIONS_DIR = "activations"
DTYPES = ("float32", "float16")
SPLITS = ("train", "test", "all")
SAMPLE_SEED = 0  # sample selection never depends on the run: every run of an experiment shares it
# settings that decide whether an existing activation set can be reused
SETTING_KEYS = ("format", "checkpoint_sha256", "dataset", "data_sha256", "split", "test_fraction",
                "max_samples", "sample_seed", "dtype", "pool")


@dataclass
class Activations:
    """An activation set read back: `layers` maps name -> read-only (N, D) memmap; `pred` (int64)
    and `conf` (float32) are the run's own prediction and its softmax confidence per sample, in
    the row order of `ids` (None for a set written before alviz stored them)."""

    folder: Path
    manifest: dict
    labels: np.ndarray
    ids: np.ndarray
    layers: dict[str, np.ndarray]
    pred: np.ndarray | None = None
    conf: np.ndarray | None = None

    def info(self, name: str) -> dict:
        """The manifest entry of layer `name` (role, position, on_path, match, shape, ...)."""
        for e in self.manifest["layers"]:
            if e["name"] == name:
                return e
        raise choice_error("layer", name, list(self.layers))

    def __repr__(self) -> str:
        return (f"Activations({str(self.folder)!r}, n={len(self.labels)}, "
                f"layers={list(self.layers)})")


def _inside(folder: Path, rel, where: str) -> Path:
    """`folder/rel` if `rel` is a plain file name that stays inside `folder`; else a UserError."""
    if not isinstance(rel, str) or not rel:
        raise UserError(f"{where}: file names must be non-empty strings; received {rel!r}")
    bad = (os.path.isabs(rel) or "/" in rel or "\\" in rel or rel in (".", "..")
           or Path(rel).is_absolute())
    p = folder / rel
    if not bad:
        try:
            bad = p.resolve().parent != folder.resolve()
        except OSError:
            bad = True
    if bad:
        raise UserError(f"{where}: file {rel!r} is not inside the activation folder {folder}; a manifest may "
                        "only name files in its own folder")
    return p


def load_activations(folder) -> Activations:
    """Read and validate an activation set (a folder written by `extract_run`)."""
    folder = Path(folder)
    where = str(folder / MANIFEST)
    if not folder.is_dir():
        raise UserError(f"activation folder not found: {folder}")
    try:
        manifest = read_json(folder / MANIFEST, "JSON written by alviz extract")
    except FileNotFoundError:
        raise UserError(f"{where}: not found; {folder} is not an activation set (run alviz extract)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise UserError(f"{where}: format {describe(got)}; expected {FORMAT!r}")
    schema.check(manifest, schema.MANIFEST, where)
    n = manifest["n_samples"]

    labels = load_npy(_inside(folder, manifest["labels_file"], where), where)
    ids = load_npy(_inside(folder, manifest["ids_file"], where), where)
    for what, arr in (("labels", labels), ("ids", ids)):
        if arr.shape != (n,) or arr.dtype.kind not in "iu":
            raise UserError(f"{where}: {what} must be {n} integers; the file holds {arr.dtype} {arr.shape}")
    n_cls = manifest.get("num_classes", schema.MAX_CLASSES)
    if n and (int(labels.min()) < 0 or int(labels.max()) >= n_cls):
        raise UserError(f"{where}: labels must be 0..{n_cls - 1}; labels.npy holds {int(labels.min())}.."
                        f"{int(labels.max())}")

    pred = conf = None
    if ("pred_file" in manifest) != ("conf_file" in manifest):
        raise UserError(f"{where}: pred_file and conf_file come together; received only one of them")
    if "pred_file" in manifest:
        pred = load_npy(_inside(folder, manifest["pred_file"], where), where)
        conf = load_npy(_inside(folder, manifest["conf_file"], where), where)
        if pred.shape != (n,) or pred.dtype != np.int64:
            raise UserError(f"{where}: pred must be {n} int64 class indices; the file holds {pred.dtype} {pred.shape}")
        if conf.shape != (n,) or conf.dtype != np.float32:
            raise UserError(f"{where}: conf must be {n} float32 probabilities; the file holds {conf.dtype} {conf.shape}")
        n_cls = manifest.get("num_classes")
        if n and (pred.min() < 0 or (isinstance(n_cls, int) and pred.max() >= n_cls)):
            raise UserError(f"{where}: pred holds class {int(pred.min() if pred.min() < 0 else pred.max())}; "
                            f"allowed: 0..{(n_cls - 1) if isinstance(n_cls, int) else 'C-1'}")
        # NaN is what a diverged model predicts (its activations are refused by the analysis, which
        # names the layer); anything else must be a probability
        known = conf[~np.isnan(conf)]
        if n and known.size and not (np.isfinite(known).all() and known.min() >= 0 and known.max() <= 1):
            raise UserError(f"{where}: conf must hold probabilities in [0, 1] (or NaN, a diverged model's); the "
                            "file holds values outside it")

    layers: dict[str, np.ndarray] = {}
    dtype = np.dtype(manifest["dtype"])
    for e in manifest["layers"]:
        name = e["name"]
        if name in layers:
            raise UserError(f"{where}: layer {name!r} is listed twice")
        arr = load_npy(_inside(folder, e["file"], where), where, mmap=True)
        shape = e["shape"]
        if tuple(arr.shape) != tuple(shape) or arr.dtype != dtype:
            raise UserError(f"{where}: layer {name!r} should be {manifest['dtype']} {shape} but "
                            f"{e['file']} holds {arr.dtype} {list(arr.shape)}")
        if arr.shape[0] != n:
            raise UserError(f"{where}: layer {name!r} has {arr.shape[0]} rows; n_samples is {n}")
        layers[name] = arr
    return Activations(folder, manifest, labels, ids, layers, pred, conf)
