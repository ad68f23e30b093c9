"""The on-disk activation set: its format (file names, manifest keys, dtypes) and its validated
reader, ``load_activations(folder)``, which returns read-only memmaps.

``manifest.json`` (format ``alviz-activations/1``): the ``SETTING_KEYS`` (format, sha256 of
model.safetensors, data set (npz: absolute path and sha256 of the file), split, test_fraction,
max_samples as asked, sample seed, dtype, pool), ``n_samples``, ``sampling``, ``labels_file``,
``ids_file`` (file names in the folder), ``layers`` (a list, in catalogue order, of ``{name,
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

from ..checkpoint import read_json
from ..errors import UserError, choice_error


FORMAT = "alviz-activations/1"
MANIFEST = "manifest.json"
LABELS_FILE = "labels.npy"
IDS_FILE = "ids.npy"
ACTIVATIONS_DIR = "activations"
DTYPES = ("float32", "float16")
SPLITS = ("train", "test", "all")
SAMPLE_SEED = 0  # sample selection never depends on the run: every run of an experiment shares it
# settings that decide whether an existing activation set can be reused
SETTING_KEYS = ("format", "checkpoint_sha256", "dataset", "data_sha256", "split", "test_fraction",
                "max_samples", "sample_seed", "dtype", "pool")


@dataclass
class Activations:
    """An activation set read back: `layers` maps name -> read-only (N, D) memmap."""

    folder: Path
    manifest: dict
    labels: np.ndarray
    ids: np.ndarray
    layers: dict[str, np.ndarray]

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


def _np_load(path: Path, where: str, mmap_mode=None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{where}: {path.name} is missing") from None
    except ValueError as e:
        if "pickle" in str(e) or "Python objects" in str(e):  # numpy's message suggests loading it unsafely
            raise UserError(f"{where}: {path.name} holds pickled Python objects, which alviz refuses to load "
                            "(unpickling can run code); expected a numeric .npy array") from None
        raise UserError(f"{where}: {path.name} is not a readable .npy file ({str(e).splitlines()[0][:120]})") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{where}: {path.name} is not a readable .npy file ({str(e).splitlines()[0][:120]})") from None


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
        raise UserError(f"{where}: format {got!r}; expected {FORMAT!r}")
    for k in ("dtype", "pool", "n_samples", "labels_file", "ids_file", "layers"):
        if k not in manifest:
            raise UserError(f"{where}: missing key {k!r}")
    if manifest["dtype"] not in DTYPES:
        raise UserError(f"{where}: dtype {manifest['dtype']!r}; allowed: {', '.join(DTYPES)}")
    n = manifest["n_samples"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"{where}: n_samples must be a count; received {n!r}")
    entries = manifest["layers"]
    if not isinstance(entries, list):
        raise UserError(f"{where}: layers must be a list; received {type(entries).__name__}")

    labels = _np_load(_inside(folder, manifest["labels_file"], where), where)
    ids = _np_load(_inside(folder, manifest["ids_file"], where), where)
    for what, arr in (("labels", labels), ("ids", ids)):
        if arr.shape != (n,) or arr.dtype.kind not in "iu":
            raise UserError(f"{where}: {what} must be {n} integers; the file holds {arr.dtype} {arr.shape}")

    layers: dict[str, np.ndarray] = {}
    dtype = np.dtype(manifest["dtype"])
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or "file" not in e or "shape" not in e:
            raise UserError(f"{where}: every layer needs name, file and shape; received {e!r}")
        name = e["name"]
        if name in layers:
            raise UserError(f"{where}: layer {name!r} is listed twice")
        arr = _np_load(_inside(folder, e["file"], where), where, mmap_mode="r")
        shape = e["shape"]
        if not isinstance(shape, list) or tuple(arr.shape) != tuple(shape) or arr.dtype != dtype:
            raise UserError(f"{where}: layer {name!r} should be {manifest['dtype']} {shape} but "
                            f"{e['file']} holds {arr.dtype} {list(arr.shape)}")
        if arr.shape[0] != n:
            raise UserError(f"{where}: layer {name!r} has {arr.shape[0]} rows; n_samples is {n}")
        layers[name] = arr
    return Activations(folder, manifest, labels, ids, layers)
