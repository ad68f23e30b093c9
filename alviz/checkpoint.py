"""Run directories on disk: safetensors weights, YAML config, JSON metadata; atomic and pickle-free.

A run directory holds
    config.yaml               the resolved TrainConfig (enough, with meta.json, to rebuild the model)
    model.safetensors         weights
    train_state.safetensors   optimiser state, for --resume
    meta.json                 epoch, data preprocessing, classes, per-epoch history, status
    summary.csv               one row per epoch (a readable copy of meta.json's history)

Saving is journaled: every file of a checkpoint is first written to `.staging/`, fsynced, then the
marker `.staging/COMPLETE` is written; only then are the files moved into place. Whoever opens a
run first finishes an interrupted move (roll forward) or drops an incomplete staging folder, so a
crash at any moment leaves one whole checkpoint: the previous one or the new one. A save that
fails (disk full, permissions) drops its staging folder and raises a UserError saying the
previous checkpoint is kept. Each safetensors file records the sha256 of its tensors in its
header, checked on reading (corruption is an error); pickles are refused. Nothing here trains or evaluates.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import config as config_mod
from . import safeio, schema
from .errors import UserError, refuse_pickle

FORMAT = "alviz-run/1"
FILES = ("config.yaml", "model.safetensors", "train_state.safetensors", "meta.json", "summary.csv")
STAGING = ".staging"
COMPLETE = "COMPLETE"


# --------------------------------------------------------------------------- atomic file helpers

def fsync_path(path: Path) -> None:
    """fsync a file or folder by path; best effort (some file systems refuse folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


WRITE_CHUNK = 1 << 20


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Create `path` holding `data`, written in pieces of at most WRITE_CHUNK bytes, and fsync it.

    Why pieces: on Linux with large page-cache folios (ext4, kernel 6.x) one write of several MB
    into a new file cost this machine 8x the CPU time of the same bytes in 1 MiB writes (14 ms
    against 1.8 ms for 6 MB, measured); smaller pieces are never slower."""
    view = memoryview(data).cast("B")
    with open(path, "wb", buffering=0) as fh:
        while len(view):
            view = view[fh.write(view[:WRITE_CHUNK]):]
        os.fsync(fh.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def check_writable_dir(path, what: str = "--out") -> Path:
    """`path` as a Path if it is, or can be created as, a folder this process can write to (nothing
    is created); else a UserError naming the obstacle."""
    p = Path(path)
    q = p
    while not (q.exists() or q.is_symlink()) and q != q.parent:
        q = q.parent
    if not q.is_dir():
        raise UserError(f"{what} {p}: {q} is a file, not a folder; choose a folder you can write to")
    if not os.access(q, os.W_OK | os.X_OK):
        raise UserError(f"{what} {p}: {q} is not writable by this user; choose a folder you can write to")
    return p


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- test-only faults

FAULT_ENV = "ALVIZ_FAULT"


def fault(point: str, number: int, k: int = 1) -> None:
    """TEST-ONLY fault injection (tests/test_crash.py); a no-op unless $ALVIZ_FAULT is set.

    ALVIZ_FAULT="<point>:<number>[:<k>][:sigint]" kills this process with SIGKILL (with the
    suffix `:sigint`, sends it SIGINT as Ctrl-C would) when the code reaches <point> for <number>:
    `save:staged:E` after epoch E's files are staged (before the COMPLETE marker),
    `save:complete:E` after the marker, `save:moving:E[:K]` after the K-th file (default 1) is
    moved into the run directory, `step:N` after the optimiser step of training step N (counted
    from 1 over the whole run; alviz.train). Never set it outside tests.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    sig = signal.SIGKILL
    if parts[-1] == "sigint":
        sig, parts = signal.SIGINT, parts[:-1]
    nums = [int(p) for p in parts if p.isdigit()]
    where = ":".join(p for p in parts if not p.isdigit())
    if where == point and nums and nums[0] == number and (nums[1] if len(nums) > 1 else 1) == k:
        os.kill(os.getpid(), sig)


# --------------------------------------------------------------------------- journal

def _move_staged(run: Path, epoch: int | None = None) -> None:
    moved = 0
    for name in FILES:
        src = run / STAGING / name
        if src.exists():
            os.replace(src, run / name)
            moved += 1
            if epoch is not None:
                fault("save:moving", epoch, moved)
    fsync_path(run)


def refuse_link(path: Path) -> None:
    """alviz never follows a link it did not make out of a run: a link named like its own files is an error."""
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link (to {os.readlink(path)}); alviz never follows links out of a "
                        "run folder: remove the link")


def recover(run_dir: str | os.PathLike) -> None:
    """Finish or drop an interrupted save in `run_dir` (see the module docstring)."""
    run = Path(run_dir)
    staging = run / STAGING
    refuse_link(staging)
    if not staging.is_dir():
        return
    if (staging / COMPLETE).is_file():
        _move_staged(run)
    shutil.rmtree(staging, ignore_errors=True)


def _commit(run: Path, files: dict[str, bytes], epoch: int | None = None) -> None:
    staging = run / STAGING
    refuse_link(staging)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in files.items():
        write_synced(staging / name, data)
    fsync_path(staging)
    if epoch is not None:
        fault("save:staged", epoch)
    write_bytes_atomic(staging / COMPLETE, b"ok\n")
    if epoch is not None:
        fault("save:complete", epoch)
    _move_staged(run, epoch)
    shutil.rmtree(staging, ignore_errors=True)


class SaveFailed(UserError, OSError):
    """A checkpoint could not be written (disk full, permissions); the message says what is kept.
    A UserError (one line, exit 2 through the CLI) and, as the failure it reports, an OSError."""


def _save_failed(run: Path, epoch: int, err: OSError) -> SaveFailed:
    """The one-line error of a save that failed with `err`; drops a staging folder that never
    became complete, so the previous checkpoint stays the run's checkpoint."""
    what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    if (run / STAGING / COMPLETE).is_file():
        return SaveFailed(f"{run}: could not finish installing the checkpoint of epoch {epoch} ({what}); it is "
                         "complete in .staging and is installed the next time the run is opened")
    shutil.rmtree(run / STAGING, ignore_errors=True)
    try:
        kept = read_json(run / "meta.json", "JSON written by alviz").get("epoch")
    except (OSError, UserError, AttributeError):
        kept = None
    prev = (f"the previous checkpoint (epoch {kept}) is kept" if kept is not None
            else "no earlier checkpoint exists")
    return SaveFailed(f"{run}: could not write the checkpoint of epoch {epoch} ({what}); {prev}; "
                     "make room or fix the folder, then continue with --resume")


# --------------------------------------------------------------------------- tensors <-> bytes

def _tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of `tensors` (CPU, contiguous), in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the tensor's memory, not a copy
    return h.hexdigest()


def _state_to_safetensors(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes whose header records `tensors_sha256` (checked on reading: a flipped bit in
    the data is an error, not silently different weights)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return st_save(tensors, metadata={**metadata, "tensors_sha256": _tensors_sha256(tensors)})


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], bytes]:
    """(tensors, header metadata, the file's bytes) of a run's safetensors file: a regular file
    inside its run, no larger than half the memory, header bounded, tensors_sha256 checked."""
    try:
        data = safeio.read_bytes(path, "a safetensors file written by alviz", limit=safeio.memory_cap(),
                                 inside=path.parent)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; the run directory is incomplete") from None
    refuse_pickle(data[:8], path, "a safetensors file written by alviz", lead="not a valid safetensors file: it ")
    try:
        n = int.from_bytes(data[:8], "little")
        if len(data) < 8 or n > len(data) - 8:
            raise ValueError(f"the header claims {n} bytes; the file holds {max(len(data) - 8, 0)}")
        header = safeio.parse_json(data[8:8 + n], path, "a safetensors header")
        tensors = st_load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError, UserError) as e:
        raise UserError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:120]}); "
                        "alviz only reads weights written as safetensors") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    meta = meta or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise UserError(f"{path}: not a valid safetensors file (its __metadata__ is not a mapping of text)")
    if "tensors_sha256" in meta and _tensors_sha256(tensors) != meta["tensors_sha256"]:
        raise UserError(f"{path}: corrupted: its tensors differ from the sha256 recorded in its header when "
                        "alviz saved it; restore the file from a copy, or retrain")
    return tensors, meta, data


def optimizer_to_bytes(opt: torch.optim.Optimizer, epoch: int) -> bytes:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    meta = {"format": FORMAT, "epoch": str(epoch), "param_groups": json.dumps(groups),
            "scalars": json.dumps(scalars)}
    return _state_to_safetensors(tensors, meta)


def optimizer_from_file(opt: torch.optim.Optimizer, path: Path) -> int:
    tensors, meta, _ = _read_safetensors(path)
    try:
        groups = safeio.parse_json(meta["param_groups"].encode(), path, "optimiser settings")
        scalars = safeio.parse_json(meta.get("scalars", "{}").encode(), path, "optimiser settings")
        state: dict[int, dict] = {}
        for key, v in tensors.items():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
        for key, v in scalars.items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = v
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        opt.load_state_dict({"state": state, "param_groups": groups})
        return int(meta["epoch"])
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise UserError(f"{path}: optimiser state does not match this model ({str(e)[:200]})") from None


# --------------------------------------------------------------------------- runs

def save_checkpoint(run_dir, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    cfg, meta: dict, history: list[dict]) -> None:
    """Write a whole checkpoint (weights, optimiser, config, meta, summary) in one journaled commit."""
    run = Path(run_dir)
    epoch = int(meta.get("epoch", 0))
    weights = _state_to_safetensors(model.state_dict(), {"format": FORMAT, "epoch": str(epoch)})
    files = {
        "config.yaml": config_mod.dump_yaml(cfg).encode(),
        "model.safetensors": weights,
        "meta.json": json.dumps({**meta, "format": FORMAT, "history": history,
                                 "weights_sha256": hashlib.sha256(weights).hexdigest()},
                                indent=1).encode(),
        "summary.csv": summary_csv(history).encode(),
    }
    if optimizer is not None:
        files["train_state.safetensors"] = optimizer_to_bytes(optimizer, epoch)
    try:
        _commit(run, files, epoch)
    except OSError as e:  # disk full, permissions, ...: the previous checkpoint is still whole
        raise _save_failed(run, epoch, e) from None


def summary_csv(history: list[dict]) -> str:
    if not history:
        return ""
    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def is_run_dir(path) -> bool:
    p = Path(path)
    return (p / "config.yaml").is_file() and ((p / "meta.json").is_file() or (p / STAGING).is_dir())


def read_config(run_dir):
    run = Path(run_dir)
    return config_mod.load_config(run / "config.yaml")


def read_json(path, what: str):
    """Parse a JSON file alviz wrote, boundedly (alviz.safeio: a regular file, size and nesting
    capped, a pickle refused by name); FileNotFoundError is left to the caller, which knows what
    a missing file means."""
    return safeio.read_json(path, what)


def read_meta(run_dir) -> dict:
    """meta.json of `run_dir`, checked whole against `schema.META` and across its fields."""
    run = Path(run_dir)
    p = run / "meta.json"
    try:
        meta = safeio.read_json(p, "JSON written by alviz", inside=run)
    except FileNotFoundError:
        raise UserError(f"{p}: file not found; is {run} an alviz run directory?") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{p}: not an alviz run (format "
                        f"{safeio.describe(meta.get('format')) if isinstance(meta, dict) else None}, expected {FORMAT!r})")
    for key in ("input_shape", "num_classes", "preprocess", "epoch"):
        if key not in meta:
            raise UserError(f"{p}: missing key {key!r}")
    schema.check(meta, schema.META, p)
    _check_meta(meta, p)
    return meta


def _check_meta(meta: dict, p: Path) -> None:
    """What the schema cannot say: preprocessing statistics per input feature (or channel), finite,
    with positive spreads; a history row per epoch."""
    def bad(key, value, allowed):
        raise UserError(f"{p}: {key} is {safeio.describe(value)}; allowed: {allowed}")

    shape, pre = meta["input_shape"], meta["preprocess"]
    n_stats = shape[0] if pre.get("image") else int(torch.Size(shape).numel())
    for key, node in (("mean", schema.Num()), ("std", schema.Num(positive=True))):
        v = pre.get(key)
        if not (isinstance(v, list) and len(v) == n_stats):
            bad(f"preprocess.{key}", v, f"a list of {n_stats} numbers")
        schema.check(v, schema.List(node, text=f"a list of {n_stats} {node.text}s"), f"{p}: preprocess.{key}")
    if pre.get("input_shape") != shape or not isinstance(pre.get("image"), bool):
        bad("preprocess", {k: pre.get(k) for k in ("input_shape", "image")},
            f"input_shape {shape} (as meta.json's) and image true or false")
    pm = pre.get("pixel_max")
    if not (pm is None or (isinstance(pm, (int, float)) and not isinstance(pm, bool) and 0 < pm < float("inf"))):
        bad("preprocess.pixel_max", pm, "null or a positive number")
    if not isinstance(pre.get("per_image_standardize", False), bool):
        bad("preprocess.per_image_standardize", pre["per_image_standardize"], "true or false")
    hist = meta.get("history")
    if hist is not None and len(hist) != meta["epoch"]:
        bad("history", hist, f"one row per epoch trained ({meta['epoch']})")


def check_run_dir(run_dir) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run directory not found: {run}")
    if os.access(run, os.W_OK):
        recover(run)
    if not (run / "config.yaml").is_file() or not (run / "meta.json").is_file():
        raise UserError(f"{run} is not an alviz run directory (needs config.yaml and meta.json)")
    return run


def load_weights(model: torch.nn.Module, run_dir, meta: dict | None = None) -> None:
    """Load model.safetensors of `run_dir` into `model`: it must fit the architecture and, if alviz
    wrote it, be the file meta.json records (`weights_sha256`: weights swapped in from another
    run are an error)."""
    path = Path(run_dir) / "model.safetensors"
    tensors, header, data = _read_safetensors(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or extra or bad:
        what = []
        if missing:
            what.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if extra:
            what.append(f"{len(extra)} unexpected tensor(s) e.g. {extra[0]}")
        if bad:
            k = bad[0]
            what.append(f"{len(bad)} of wrong shape e.g. {k} {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}")
        raise UserError(f"{path}: the weights do not match the architecture in config.yaml "
                        f"({'; '.join(what)})")
    meta = read_meta(run_dir) if meta is None else meta
    want = meta.get("weights_sha256")  # a file alviz wrote (tensors_sha256) must be this run's own;
    # a file re-saved by another tool (a new header) is the user's deliberate edit, as documented
    if want is not None and "tensors_sha256" in header and hashlib.sha256(data).hexdigest() != want:
        raise UserError(f"{path}: is not the file this run saved (its sha256 differs from meta.json's "
                        "weights_sha256): weights copied from another run? Restore the run's own file, or retrain")
    model.load_state_dict(tensors)


def dump_yaml(data) -> str:
    return yaml.safe_dump(data, sort_keys=False)


# --------------------------------------------------------------------------- loading a whole run

class Run:
    """A trained run read back from disk: the model (in eval mode), its config and its metadata."""

    def __init__(self, path: Path, model: torch.nn.Module, config, meta: dict):
        self.path, self.model, self.config, self.meta = path, model, config, meta

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, method={self.config.method!r}, arch={self.config.arch!r}, epoch={self.meta['epoch']})"


def load_run(run_dir, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model of `run_dir` from its config.yaml, meta.json and model.safetensors alone."""
    from .models import create_model  # models sit left of checkpoints in the flow; import late for speed

    run = check_run_dir(run_dir)
    cfg = read_config(run)
    meta = read_meta(run)
    try:
        model = create_model(cfg, tuple(meta["input_shape"]), int(meta["num_classes"]))
    except (TypeError, ValueError) as e:
        raise UserError(f"{run}: cannot build the model its config describes ({e})") from None
    load_weights(model, run, meta)
    model.eval()
    return Run(run, model.to(device), cfg, meta)


def check_finite_weights(model: torch.nn.Module, where) -> None:
    """UserError if any weight of `model` is NaN or inf (its outputs would mean nothing)."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserError(f"{where}: weight {name} holds NaN or inf values (the run diverged); its outputs "
                            "mean nothing: retrain with a lower --lr")
