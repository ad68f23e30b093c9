"""Extraction of a trained run: ``extract_run(run_dir, ...)`` streams every requested layer, over
a seeded stratified sample of one split, into ``RUN/activations/<dataset-slug>-<split>/`` with
``labels.npy``, ``ids.npy`` and a ``manifest.json`` (format: ``store``).

The set is written into a temporary folder and renamed into place when complete, with
``manifest.json`` written last, so a crash never leaves a set that looks complete. Two processes
extracting from one run take turns (an flock on the run folder).

Reuse: a folder is reused when its manifest holds the same ``SETTING_KEYS`` and at least the
requested layers, and it passes ``load_activations``; otherwise (a stale or invalid set, or
``force``) it is extracted again and replaced. A folder there without a manifest is not ours:
it is an error unless ``force``.

What this is not: no hooks (``hooks``), no file streaming (``writer``), no measures.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__, locks
from ..checkpoint import fsync_path, refuse_link
from ..errors import UserError, choice_error
from ..sampling import stratified_sample
from .hooks import POOLS, describe_layers
from .layers import layer_catalogue, parse_layers, select_layers
from .store import (ACTIVATIONS_DIR, CONF_FILE, DTYPES, FORMAT, IDS_FILE, LABELS_FILE, MANIFEST, PRED_FILE,
                    SAMPLE_SEED, SETTING_KEYS, SPLITS, load_activations)
from .writer import Predictions, extract_arrays


def select_samples(y: np.ndarray, max_samples: int | None, log: Callable = print, what: str = "the split") -> np.ndarray:
    """Row indices (sorted) of a seeded (seed 0) stratified sample of `max_samples` of the labels
    `y`; all rows when None. Depends only on `y`, so every run of an experiment gets the same."""

    n = len(y)
    if max_samples is None:
        return np.arange(n)
    if max_samples > n:
        log(f"asked for {max_samples} samples but {what} holds {n}; using all {n}")
        return np.arange(n)
    return stratified_sample(np.asarray(y), max_samples, seed=SAMPLE_SEED)


def dataset_slug(dataset: str) -> str:
    """Folder-name form of a data set: `mnist5k`; `npz:path/to/my.npz` -> `npz-my-<8 hex of its
    absolute path>` (two files of the same name never share a folder)."""
    if dataset.startswith("npz:"):
        p = Path(dataset[4:]).expanduser()
        h = hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:8]
        base = f"npz-{p.stem}-{h}"
    else:
        base = dataset
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".") or "data"


def activation_dir(run_dir, dataset: str | None = None, split: str = "test") -> Path:
    """`RUN/activations/<dataset-slug>-<split>` (dataset None: the run's own)."""
    if dataset is None:
        from ..checkpoint import read_config

        dataset = read_config(run_dir).dataset
    return Path(run_dir) / ACTIVATIONS_DIR / f"{dataset_slug(dataset)}-{split}"


def _dataset_identity(name: str) -> tuple[str, str | None]:
    """(dataset key, sha256 of its file): npz files by absolute path and content, others by name."""
    from ..checkpoint import sha256_file
    from ..data import check_name

    check_name(name)
    if not name.startswith("npz:"):
        return name, None
    p = Path(name[4:]).expanduser()
    if not p.is_file():
        raise UserError(f"{name}: file not found")
    return f"npz:{p.resolve()}", sha256_file(p)


_LAST_DATA: dict = {}  # the last data set loaded: {key: Data}


def _dataset(name: str, data_sha: str | None, data_dir, test_fraction: float, preprocess: dict):
    """`load_dataset` with the last result kept: the snapshots of a run (and the runs of an
    experiment) are extracted one after another from the same data, whose loading (mnist5k: about
    5 s of CPU) would otherwise dominate. Keyed by name, the npz file's sha256, folder, split
    fraction and preprocessing; one data set is kept at a time."""
    from ..data import load_dataset

    key = (name, data_sha, str(data_dir), float(test_fraction), json.dumps(preprocess, sort_keys=True))
    if key not in _LAST_DATA:
        _LAST_DATA.clear()
        _LAST_DATA[key] = load_dataset(name, data_dir=data_dir, test_fraction=test_fraction, preprocess=preprocess)
    return _LAST_DATA[key]


def _positive(what: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{what} must be a positive integer; received {value!r}")


def _check_args(split, dtype, pool, batch_size, max_samples) -> None:
    if split not in SPLITS:
        raise choice_error("split", split, SPLITS)
    if dtype not in DTYPES:
        raise choice_error("dtype", dtype, DTYPES)
    if pool not in POOLS:
        raise choice_error("pool", pool, POOLS)
    _positive("batch size", batch_size)
    if max_samples is not None:
        _positive("max samples", max_samples)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_leftovers(root: Path) -> None:
    """Drop temporary folders of extractions whose process is gone (a crash, a kill -9)."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = re.match(r"^\.(?:tmp|old)-(\d+)-", p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def _install(tmp: Path, final: Path) -> None:
    """Move the finished folder `tmp` into place, replacing `final` if present."""
    if final.exists() or final.is_symlink():
        trash = final.with_name(f".old-{os.getpid()}-{final.name}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)
    else:
        os.replace(tmp, final)
    fsync_path(final.parent)


def _stale_reason(manifest: dict, settings: dict) -> str | None:
    if manifest.get("checkpoint_sha256") != settings["checkpoint_sha256"]:
        return "stale: the checkpoint changed since it was extracted (the sha256 of its weights file differs)"
    diff = [k for k in SETTING_KEYS if manifest.get(k) != settings[k]]
    if diff:
        what = ", ".join(f"{k} {manifest.get(k)!r} -> {settings[k]!r}" for k in diff)
        return f"stale: other settings ({what})"
    return None


def _existing(final: Path, settings: dict, names: list[str], force: bool,
              predictions: bool = False) -> tuple[bool, str]:
    """(reusable?, why) for the folder `final`."""
    if not final.exists() and not final.is_symlink():
        return False, ""
    if final.is_symlink() or not final.is_dir() or not (final / MANIFEST).is_file():
        if not force:
            raise UserError(f"{final} exists but is not an alviz activation set (no {MANIFEST}); move it "
                            "away, or replace it with `alviz extract RUN --force`")
        return False, "--force: replacing it"
    if force:
        return False, "--force: extracting again"
    try:
        have = load_activations(final)
    except UserError as e:
        return False, f"not a valid activation set ({e})"
    reason = _stale_reason(have.manifest, settings)
    if reason:
        return False, reason
    missing = [n for n in names if n not in have.layers]
    if missing:
        return False, f"holds other layers (not {', '.join(missing)})"
    if predictions and have.pred is None:
        return False, "written before alviz stored each sample's prediction (pred.npy, conf.npy)"
    extra = len(have.layers) - len(names)
    more = f", and {extra} more" if extra > 0 else ""
    return True, (f"reusing {final} (same checkpoint and settings; it holds the {len(names)} requested "
                  f"layer(s){more}); `alviz extract RUN --force` extracts again")


def extract_run(run_dir, *, dataset=None, split="test", layers=None, max_samples=None, dtype="float32",
                pool="gap", batch_size=256, force=False, device="cpu", log=print, data_dir=None,
                predictions=False, epoch=None) -> Path:
    """Extract the hidden layers of a trained run into `RUN/activations/<dataset-slug>-<split>/`
    (with `epoch`, the weights of that epoch, a snapshot: `.../<dataset-slug>-<split>-epochNNNN/`)
    and return that folder.

    `dataset`: None for the run's own, or any registered name / `npz:PATH` (preprocessed with the
    run's own preprocessing). `split`: train, test or all. `layers`: names (or a comma-separated
    string); None: all of `layer_catalogue`. `max_samples`: a seeded stratified sample (seed 0)
    of the split, the same for every run; None or more than the split: all of it. `dtype`:
    float32 or float16. `pool`: gap or flatten for 4-D maps. A set extracted before from the same
    checkpoint with the same settings (and at least these layers) is reused unless `force`; a
    stale one is replaced. `data_dir`: where torchvision data sets live (default: the run's).
    Two processes extracting from one run take turns (an flock on the run folder), so the second
    reuses the first one's set instead of replacing it while it is read.

    Every set written now also holds the run's own prediction per sample (``pred.npy``, int64,
    argmax of the class scores; ``conf.npy``, float32, softmax probability of that class), from
    the same forward pass. `predictions`: when True, a set written before that change (no
    ``pred.npy``) is extracted again; when False it is reused as it is.
    """
    with run_lock(run_dir):
        return _extract_run(run_dir, dataset=dataset, split=split, layers=layers, max_samples=max_samples,
                            dtype=dtype, pool=pool, batch_size=batch_size, force=force, device=device, log=log,
                            data_dir=data_dir, predictions=predictions, epoch=epoch)


@contextmanager
def run_lock(run_dir):
    """Exclusive flock on the run folder itself (no file is created) for the block; re-entrant in
    one process (`locks.hold`), so an analysis can hold it from extraction until it has read the
    set, and a second process (another analysis, with other settings) waits instead of replacing
    the set under it."""
    if not Path(run_dir).is_dir():  # not a folder: _extract_run says what is wrong
        yield
        return
    with locks.hold(run_dir):
        yield


def _extract_run(run_dir, *, dataset, split, layers, max_samples, dtype, pool, batch_size, force, device, log,
                 data_dir, predictions=False, epoch=None) -> Path:
    _check_args(split, dtype, pool, batch_size, max_samples)
    if isinstance(layers, str):
        layers = parse_layers(layers)
    from ..checkpoint import load_run, sha256_file, weights_file
    from ..data import changed_since_training
    from ..train import resolve_device

    dev = resolve_device(str(device))
    run = load_run(run_dir, dev, epoch=epoch)
    weights = weights_file(run.path, epoch, run.meta)
    names = [e.name for e in select_layers(run.model, layers)]
    name = dataset or run.config.dataset
    key, data_sha = _dataset_identity(name)
    settings = {
        "format": FORMAT, "checkpoint_sha256": sha256_file(weights),
        "dataset": key, "data_sha256": data_sha, "split": split,
        "test_fraction": run.config.test_fraction, "max_samples": max_samples,
        "sample_seed": SAMPLE_SEED, "dtype": dtype, "pool": pool,
    }
    root = run.path / ACTIVATIONS_DIR
    final = root / (f"{dataset_slug(name)}-{split}" + ("" if epoch is None else f"-epoch{epoch:04d}"))
    refuse_link(root)  # never write (or read) through a link out of the run
    _clean_leftovers(root)
    reuse, why = _existing(final, settings, names, force, predictions)
    if reuse:
        log(why)
        return final
    if why:
        log(f"{final}: {why}")

    data = _dataset(name, data_sha, data_dir or run.config.data_dir, run.config.test_fraction,
                    run.meta["preprocess"])
    warning = changed_since_training(run.meta, name, data)
    if warning:
        log(warning)
    n_cls = int(run.meta["num_classes"])
    if data.num_classes > n_cls:
        raise UserError(f"{name} has labels up to {data.num_classes - 1} but the model knows {n_cls} classes "
                        f"(0..{n_cls - 1})")
    x, y, ids = data.split(split)
    if len(y) == 0:
        raise UserError(f"the {split} split of {name} holds no samples; choose another --split")
    y_np = y.numpy()
    idx = select_samples(y_np, max_samples, log, f"the {split} split of {name}")
    described = {r["name"]: r for r in describe_layers(run.model, run.meta["input_shape"])}

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-{final.name}-", dir=root))
    try:
        import time

        t0 = time.perf_counter()
        preds = Predictions(len(idx))
        shapes = extract_arrays(run.model, x, idx, names, tmp, pool=pool, dtype=dtype,
                                batch_size=batch_size, device=dev, predictions=preds)
        seconds = time.perf_counter() - t0
        np.save(tmp / PRED_FILE, preds.pred)
        np.save(tmp / CONF_FILE, preds.conf)
        np.save(tmp / LABELS_FILE, y_np[idx].astype(np.int64))
        np.save(tmp / IDS_FILE, np.asarray(ids)[idx].astype(np.int64))
        entries = []
        for e in layer_catalogue(run.model):
            if e.name in shapes:
                entries.append({**e.to_dict(), "file": f"{e.name}.npy", "shape": [len(idx), *shapes[e.name]],
                                "output_shape": described[e.name]["shape"]})
        manifest = {
            **settings,
            "n_samples": int(len(idx)),
            "sampling": "stratified (alviz.sampling.stratified_sample, seed 0) of the split; all when "
                        "max_samples is null or at least the split's size",
            "labels_file": LABELS_FILE, "ids_file": IDS_FILE, "pred_file": PRED_FILE, "conf_file": CONF_FILE,
            "layers": entries,
            "dataset_name": name,
            "num_classes": n_cls, "class_names": run.meta.get("class_names"),
            "method": run.config.method, "arch": run.config.arch, "seed": run.config.seed,
            "epoch": run.epoch, "checkpoint": weights.relative_to(run.path).as_posix(),
            "batch_size": batch_size, "device": str(dev), "seconds": round(seconds, 3),
            "alviz_version": __version__, "torch_version": torch.__version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        for f in tmp.iterdir():
            fsync_path(f)
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:  # last: a set without it is not a set
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        fsync_path(tmp)
        _install(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(final)) from None  # name the set being written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in final.iterdir())
    log(f"{final}: {len(idx)} samples x {len(names)} layer(s), {dtype}, pool {pool}, "
        f"{size / 2**20:.1f} MiB in {seconds:.1f}s")
    return final
