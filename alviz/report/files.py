"""The report's file plumbing: JSON and CSV text (NaN-safe), folder-safe slugs, the per-experiment
lock, atomic ``.npy`` writes, and the content hashes that key the measure and t-SNE caches.

What this is not: no decisions about which files a report holds (``analysis``, ``document``),
no measuring, no drawing.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..checkpoint import write_bytes_atomic


def _nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating,)):
        return _nan_to_none(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def to_json(obj) -> str:
    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        return _nan_to_none(o)

    return json.dumps(clean(obj), indent=1, allow_nan=False)


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return "nan" if not math.isfinite(v) else repr(float(v))
    return str(v)


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c in columns])
    return buf.getvalue()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


@contextmanager
def locked(folder: Path, log=print):
    """Exclusive ``fcntl.flock`` on ``folder/.lock`` for the block (waits for another holder)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{folder}: another alviz analyze is writing here; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def hash_arrays(*parts) -> str:
    """blake2b of arrays (dtype, shape and bytes, streamed in row chunks) and JSON-able settings."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray):
            a = p if p.ndim else p.reshape(1)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            step = max(1, (8 << 20) // max(a[:1].nbytes, 1))
            for s in range(0, len(a), step):
                h.update(np.ascontiguousarray(a[s:s + step]).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def prune_cache(folder: Path, prefix: str, keep: str) -> None:
    """Drop stale cache entries ``prefix*`` other than ``keep`` (inputs changed since)."""
    for p in folder.glob(prefix + "*"):
        if p.name != keep and not p.name.startswith("."):
            p.unlink(missing_ok=True)
