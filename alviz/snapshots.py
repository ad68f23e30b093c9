"""Snapshot specs: which epochs of a run keep their weights (`--snapshots`, config key `snapshots`).

    none (default)     no snapshots; only the final checkpoint
    0,1,2,5,10,20      exactly these epochs (0 is the initialisation, before any step)
    every:N            0, N, 2N, ... and the last epoch
    log                0, 1, 2, 4, 8, 16, ... and the last epoch

A snapshot is `RUN/snapshots/epoch-NNNN.safetensors`: the model's weights only (no optimiser state),
written in the same journaled commit as that epoch's checkpoint (`alviz.checkpoint`); the
initialisation is written with epoch 1's. This module parses specs and names files; it does not
read or write them.
"""

from __future__ import annotations

import re

from .errors import UserError

FOLDER = "snapshots"
ALLOWED = ("a list of epochs like 0,1,2,5,10,20 (0 = the initialisation), every:N with N >= 1 "
           "(0, N, 2N, ... and the last epoch), log (0, 1, 2, 4, 8, ... and the last epoch), or none")


def _bad(spec, why: str = "") -> UserError:
    return UserError(f"snapshots: received {spec!r}{why}; allowed: {ALLOWED}")


def normalize(spec) -> str | None:
    """The canonical text of a spec (`None` for no snapshots): 'log', 'every:N' or a sorted list
    '0,2,5'. Accepts a string, an integer or a list of integers (a YAML file may hold either)."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, bool):
        raise _bad(spec)
    if isinstance(spec, int):
        spec = str(spec)
    if isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(e, int) and not isinstance(e, bool) for e in spec):
            raise _bad(spec)
        spec = ",".join(str(e) for e in spec)
    if not isinstance(spec, str):
        raise _bad(spec)
    t = spec.strip().lower().replace(" ", "")
    if t in ("", "none", "null", "no", "off"):
        return None
    if t == "log":
        return "log"
    m = re.fullmatch(r"every:(\d+)", t)
    if m:
        if int(m.group(1)) < 1:
            raise _bad(spec, " (N must be at least 1)")
        return f"every:{int(m.group(1))}"
    if re.fullmatch(r"\d+(,\d+)*,?", t):
        return ",".join(str(e) for e in sorted({int(p) for p in t.split(",") if p}))
    if re.fullmatch(r"[+-]?\d+(,[+-]?\d+)*,?", t):
        raise _bad(spec, " (epochs are >= 0)")
    raise _bad(spec)


def epochs(spec, total: int) -> list[int]:
    """The epochs (0..total) that spec `spec` keeps in a run of `total` epochs, ascending; a listed
    epoch beyond `total` is an error."""
    s = normalize(spec)
    if s is None:
        return []
    if s == "log":
        out, e = {0, total}, 1
        while e < total:
            out.add(e)
            e *= 2
        return sorted(out)
    if s.startswith("every:"):
        n = int(s[6:])
        return sorted(set(range(0, total + 1, n)) | {total})
    listed = [int(p) for p in s.split(",")]
    late = [e for e in listed if e > total]
    if late:
        raise UserError(f"snapshots: received {spec!r}, which lists epoch {late[0]} but the run trains "
                        f"{total} epoch(s); allowed: epochs 0..{total}")
    return listed


def file_name(epoch: int) -> str:
    """`epoch-0005.safetensors`: the file of the snapshot of `epoch` inside RUN/snapshots/."""
    return f"epoch-{epoch:04d}.safetensors"


def epoch_of(name: str) -> int | None:
    """The epoch of a snapshot file name, or None if `name` is not one."""
    m = re.fullmatch(r"epoch-(\d{4,})\.safetensors", name)
    return int(m.group(1)) if m else None


__all__ = ["normalize", "epochs", "file_name", "epoch_of", "FOLDER", "ALLOWED"]
