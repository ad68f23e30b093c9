"""Streaming activations to ``.npy`` files: the inner loop that runs a model over chosen samples in
batches and writes each hooked layer's rows into its file as they come.

Each layer's file gets its .npy header and full size up front, and rows go through a staging
buffer of about 1 MiB per layer, written at their offsets with one file write per full buffer
(``_NpyWriter``). On the CPU the hooks copy their rows straight into those buffers and the
buffers are written between batches; on a GPU the hooks start asynchronous copies to the host
and a writer thread waits for them and writes while the next batch is computed, so the GPU is not
stopped between batches (its queue holds a few batches). Memory stays flat however many samples;
nothing accumulates in lists.

What this is not: no folders, manifests, caching or locking (``runs``); no layer names
(``layers``).
"""
from __future__ import annotations

import errno
import os
import queue
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from numpy.lib import format as npformat
from torch import nn

from ..checkpoint import WRITE_CHUNK
from .hooks import capture


def _batches(x: torch.Tensor, idx: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of x[idx] in order; a slice when idx is every row (no copy), else a gather per
    batch (memory stays one batch however many samples)."""
    full = len(idx) == len(x) and bool(np.all(idx == np.arange(len(x))))
    t_idx = None if full else torch.from_numpy(np.asarray(idx, np.int64))
    for start in range(0, len(idx), batch_size):
        if full:
            yield x[start:start + batch_size]
        else:
            yield x.index_select(0, t_idx[start:start + batch_size])


STAGE_BYTES = WRITE_CHUNK  # rows are gathered into about this many bytes per file write


class _NpyWriter:
    """One .npy file of `n` rows, filled through a staging buffer.

    The header and the file's full size are written up front: ``posix_fallocate`` where the
    file system supports it (the blocks are reserved now, so a full disk fails at the start
    rather than half-way, and each later write has less per-page work), else a sparse
    ``ftruncate``. Rows are copied into a staging buffer of about ``STAGE_BYTES`` (at least one
    batch), ``rows(start, count)`` handing out the slots, and each full buffer is written at its
    offset with ``pwrite`` in pieces of at most ``checkpoint.WRITE_CHUNK`` (a batch larger than
    that, e.g. a flattened map, still goes in 1 MiB pieces). Measured here: writing 20 MB in
    256 KB pieces into a sparse file costs the kernel about 1.7x the CPU time of 1 MiB pieces into
    an allocated one, and single writes of 2 MB or more cost 8x (see ``checkpoint.write_synced``).
    Rows are written with file writes, not stored through a shared mapping: stores into a fresh
    mapping fault in every page (about 4x slower per MB here) and keep every written page in the
    process's resident set, so memory would grow with the number of samples; file writes go to
    the page cache and the process stays flat."""

    def __init__(self, path: Path, n: int, row_shape: tuple, dtype: np.dtype, batch_rows: int = 1):
        self.path = path
        self.n = int(n)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(d) for d in row_shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        try:
            with os.fdopen(os.dup(self._fd), "wb", buffering=0) as fh:
                npformat.write_array_header_1_0(fh, {"descr": npformat.dtype_to_descr(self.dtype),
                                                     "fortran_order": False, "shape": (self.n,) + self.row_shape})
                self.offset = fh.tell()
            _reserve(self._fd, self.offset + self.n * self.row_bytes)
        except OSError as e:  # say which file (a full disk: the CLI's one-line error names it)
            os.close(self._fd)
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        except BaseException:
            os.close(self._fd)
            raise
        cap = max(int(batch_rows), STAGE_BYTES // max(self.row_bytes, 1), 1)
        self._alloc(min(cap, max(self.n, 1)))
        self._start = 0  # file row of the stage's first row
        self._fill = 0  # rows staged

    def rows(self, start: int, count: int) -> torch.Tensor:
        """A writable (count,) + row_shape tensor view of the staging buffer for rows [start, start+count)
        of the file; what is put there is written at the next flush (when the buffer is full, when
        rows are not the next ones in order, or at close)."""
        if start < 0 or count < 0 or start + count > self.n:
            raise ValueError(f"{self.path.name}: rows {start}:{start + count} outside 0:{self.n}")
        if self._fill and (start != self._start + self._fill or self._fill + count > len(self._stage)):
            self.flush()
        if not self._fill:
            self._start = start
            if count > len(self._stage):
                self._alloc(count)
        view = self._stage_t[self._fill:self._fill + count]
        self._fill += count
        return view

    def _alloc(self, rows: int) -> None:
        self._stage = np.empty((rows,) + self.row_shape, self.dtype)
        self._stage_t = torch.from_numpy(self._stage)  # the same memory, sliced by `rows`

    def write(self, start: int, arr: np.ndarray) -> None:
        """Put `arr` at rows [start, start + len(arr)) (through the staging buffer)."""
        if arr.dtype != self.dtype or arr.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of {arr.dtype} {arr.shape[1:]}, expected "
                             f"{self.dtype} {self.row_shape}")
        self.rows(start, len(arr)).numpy()[...] = arr

    def flush(self) -> None:
        """Write the staged rows at their offset and empty the buffer."""
        if not self._fill:
            return
        buf = memoryview(self._stage[:self._fill]).cast("B")
        pos = self.offset + self._start * self.row_bytes
        self._fill = 0
        try:
            while len(buf):
                piece = buf[:WRITE_CHUNK]
                k = os.pwrite(self._fd, piece, pos) if hasattr(os, "pwrite") else _seek_write(self._fd, piece, pos)
                buf, pos = buf[k:], pos + k
        except OSError as e:  # say which file (EFBIG, ENOSPC, EIO: the CLI's one-line error names it)
            raise OSError(e.errno, e.strerror or str(e), str(self.path)) from None

    def close(self, *, flush: bool = True) -> None:
        """Flush (unless `flush` is False: the rows are being thrown away) and close the file."""
        if self._fd < 0:
            return
        try:
            if flush:
                self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1


def _reserve(fd: int, size: int) -> None:
    """Give the file `size` bytes: allocated blocks where the file system can, else a hole."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", -1)):
                raise
    os.ftruncate(fd, size)


def _seek_write(fd: int, buf, pos: int) -> int:
    os.lseek(fd, pos, os.SEEK_SET)
    return os.write(fd, buf)


class _Drain:
    """A background thread that writes batches to their files while the next batch is computed
    (used when the model runs on a GPU, whose forward pass does not need the CPU cores).

    Items are `(event, start, [(writer, tensor), ...])`; on a GPU the thread first waits for
    `event` (recorded after the forward pass, so the asynchronous copies are done) instead of the
    main thread stopping the GPU every batch. The queue is bounded: memory stays a few batches. A
    write error is raised in the main thread at the next `put` or at `close`."""

    def __init__(self, maxsize: int = 3):
        self.q: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="alviz-extract-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue  # keep draining so that put() never blocks for ever
            event, start, parts = item
            try:
                if event is not None:
                    event.synchronize()
                for writer, t in parts:
                    writer.write(start, t.numpy())
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def close(self, *, raise_error: bool = True) -> None:
        self.q.put(None)
        self.thread.join()
        if raise_error and self.error is not None:
            raise self.error


def extract_arrays(model: nn.Module, x: torch.Tensor, idx: np.ndarray, names: list[str], folder: Path, *,
                   pool: str = "gap", dtype: str = "float32", batch_size: int = 256,
                   device: torch.device | str = "cpu", writer_thread: bool | None = None) -> dict[str, tuple]:
    """The inner loop: run `model` over x[idx] in batches and stream each layer of `names` into
    `folder/<name>.npy` (created). Returns name -> row shape stored. `writer_thread`: write from a
    background thread (None: when `device` is not the CPU).

    On the CPU each hook copies its rows straight into the file's staging buffer (`_NpyWriter.rows`:
    that copy is the detached copy `capture` would make, with no tensor allocated per batch) and
    full buffers are written in this thread: a writer thread would only compete with the
    forward pass for the same cores (measured: no faster with torch's 2 threads on 2 cores). On a
    GPU the hooks start asynchronous copies to the host and a writer thread (`_Drain`) waits for
    them and writes, so the GPU is never stopped between batches."""
    dev = torch.device(device)
    np_dtype = np.dtype(dtype)
    t_dtype = getattr(torch, dtype)
    cuda = dev.type == "cuda"
    threaded = dev.type != "cpu" if writer_thread is None else bool(writer_thread)
    writers: dict[str, _NpyWriter] = {}
    pos = 0
    seen: set[str] = set()

    def writer(name: str, a: torch.Tensor) -> _NpyWriter:
        w = writers.get(name)
        if w is None:
            w = writers[name] = _NpyWriter(folder / f"{name}.npy", len(idx), tuple(a.shape[1:]), np_dtype,
                                           batch_rows=batch_size)
        return w

    def sink(name: str, a: torch.Tensor) -> None:  # CPU: the hook's copy goes into the file's buffer
        writer(name, a).rows(pos, len(a)).copy_(a)
        seen.add(name)

    drain = _Drain() if threaded else None
    ok = False
    try:
        with torch.no_grad(), capture(model, names, pool=pool, dtype=t_dtype, non_blocking=cuda,
                                      sink=None if threaded else sink) as acts:
            for xb in _batches(x, idx, batch_size):
                acts.clear()
                seen.clear()
                model(xb.to(dev, non_blocking=cuda))
                missing = [n for n in names if n not in (acts if threaded else seen)]
                if missing:
                    raise RuntimeError(f"layer {missing[0]!r} was not computed by the forward pass")
                if threaded:
                    event = None
                    if cuda:
                        event = torch.cuda.Event()
                        event.record()
                    drain.put((event, pos, [(writer(n, acts[n]), acts[n]) for n in names]))
                pos += len(xb)
        ok = True
    finally:
        errors: list[BaseException] = []
        if drain is not None:
            try:
                drain.close(raise_error=ok)
            except BaseException as e:  # noqa: BLE001 - the writer thread's error; files still get closed
                errors.append(e)
        for w in writers.values():
            try:
                w.close(flush=ok and not errors)
            except BaseException as e:  # noqa: BLE001 - every file is closed; the first error is raised
                errors.append(e)
        if errors and ok:
            raise errors[0]
    if pos != len(idx):
        raise RuntimeError(f"wrote {pos} rows of {len(idx)}")
    return {n: writers[n].row_shape for n in names}
