"""Locks between alviz processes: one writer per run, and readers that wait for a writer.

`hold(path)` takes an exclusive `fcntl.flock` on a folder itself (no file is created) or on a lock
file, and is re-entrant within a process (a second `hold` of the same folder from the same
process nests instead of dead-locking: flock locks belong to an open file, not to a process).
`run_writer(run)` is the one-writer-per-run lock of training: the lock file `RUN/.writer.lock`
records the holder's process id, and a second writer fails at once with
"run X is being trained by process N". Locks die with their process (a SIGKILL frees them);
network file systems may not honour flock. This module knows nothing about what is locked.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

WRITER_LOCK = ".writer.lock"

_held: dict[tuple, list] = {}  # (st_dev, st_ino) -> [fd, depth]
_guard = threading.RLock()


def _open(path: Path, *, folder: bool) -> int:
    if folder:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags, 0o644)


@contextmanager
def hold(path, *, folder: bool = True, wait: bool = True, on_wait=None, busy=None):
    """Hold an exclusive flock on `path` (a folder, or with `folder=False` a lock file created if
    missing) for the block. Busy: with `wait`, call `on_wait()` and wait; else raise `busy()`."""
    fd = _open(Path(path), folder=folder)
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    with _guard:
        entry = _held.get(key)
        if entry is not None:  # this process holds it already: nest
            os.close(fd)
            entry[1] += 1
            fd = None
    if fd is not None:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise busy() if busy else UserError(f"{path} is locked by another process")
                if on_wait:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        with _guard:
            _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                os.close(entry[0])  # closing the descriptor releases the lock


def holder(run) -> str:
    """The process id recorded in RUN/.writer.lock ('?' if none can be read)."""
    try:
        with open(Path(run) / WRITER_LOCK, "rb") as fh:
            text = fh.read(32).decode("ascii", "replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


def _busy(run):
    return UserError(f"run {run} is being trained by process {holder(run)}; wait for it to finish (or stop it), "
                     "or train into another --out")


def check_no_writer(run) -> None:
    """UserError if another process holds the writer lock of `run` (nothing is created)."""
    lock = Path(run) / WRITER_LOCK
    if not lock.is_file() or lock.is_symlink():
        return
    try:
        with hold(lock, folder=False, wait=False, busy=lambda: _busy(run)):
            pass
    except OSError:  # cannot open the lock file (permissions): no writer can hold it either
        return


@contextmanager
def run_writer(run):
    """The writer lock of the run folder `run` (created if missing) for the block; another
    process holding it is a UserError naming its process id."""
    run = Path(run)
    created = not (run.exists() or run.is_symlink())
    run.mkdir(parents=True, exist_ok=True)
    lock = run / WRITER_LOCK
    with hold(lock, folder=False, wait=False, busy=lambda: _busy(run)):
        try:
            with open(lock, "w", encoding="ascii") as fh:  # truncating keeps the locked inode
                fh.write(f"{os.getpid()}\n")
        except OSError:
            pass
        try:
            yield
        finally:
            if created and [q.name for q in run.iterdir()] == [WRITER_LOCK]:  # nothing was saved: leave nothing
                lock.unlink(missing_ok=True)
                run.rmdir()


__all__ = ["hold", "run_writer", "check_no_writer", "holder", "WRITER_LOCK"]
