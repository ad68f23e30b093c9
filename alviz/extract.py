"""Hidden-layer extraction: a layer catalogue, forward hooks in a `with` block, and activation sets
streamed to `.npy` memmaps.

What this is:

- ``layer_catalogue(model)``: the extractable layers of an AL or BP model, each with its role
  (encoder / bridge / decoder / head), its position along the inference path and a ``match`` key
  that is identical for aligned AL and BP layers (see below).
- ``capture(model, layers)``: a context manager that registers forward hooks and always removes
  them (also when the forward raises). Each hook stores a detached copy of its module's output,
  moved off the GPU, so a later in-place op cannot change it::

      with alviz.capture(model, ["block1", "bridge2"]) as acts:
          model(x)
      acts["block1"]        # CPU tensor: output of the last call of that module

- ``extract_run(run_dir, ...)``: streams every requested layer of a trained run, over a seeded
  stratified sample of one split, into ``RUN/activations/<dataset-slug>-<split>/<layer>.npy``
  (header and full size written first, then filled batch by batch, so memory stays flat however
  many samples), with ``labels.npy``, ``ids.npy`` and a ``manifest.json``.
  ``load_activations(folder)`` reads such a set back, validated, as read-only memmaps.

What this is not: no separability measures, no t-SNE, no plots, no training; it never changes a
model's weights and reads no pickle.

Layer catalogue (L components; positions count along the inference path; ``match = "p<position>"``)::

    AL  block{k}    encoder  s_k = f_k(s_{k-1})                 position k
        bridge{k}   bridge   b_k(s_k), k < L: an early exit,    position k + 0.5, on_path false
        bridge{L}   bridge   b_L(s_L)                           position L + 1
        decoder{k}  decoder  h_k(...) along h_1(...h_L(b_L))    position 2L + 2 - k
    BP  block{k}    encoder  same encoders                      position k
        head{j}     head     model.head[j-1], j = 1..L+1        position L + j

so BP ``head1`` joins AL ``bridge{L}`` and BP ``head{j}`` (j >= 2) joins AL ``decoder{L-j+2}``.

How AL's off-path layers are captured: ``model(x)`` runs f_1..f_L, b_L and h_L..h_1 once each,
so it computes every on-path layer exactly once. The early-exit bridges b_k (k < L) are not on
that path; when one is requested, ``capture`` adds a hook on block k that evaluates
``model.bridges[k-1]`` on the live output s_k right there (on the device, before any pooling),
and the bridge's own hook stores it. One ``model(x)`` therefore fills every requested layer; we
do not call ``model.exits(x)``, which would run each decoder once per exit (a hook keeps the
output of a module's *last* call, which in ``exits`` is also the inference path, but it costs
L times the decoder work).

Streaming: each layer's file gets its .npy header and full size up front, and rows go through
a staging buffer of about 1 MiB per layer, written at their offsets with one file write per full
buffer (``_NpyWriter``). On the CPU the hooks copy their rows straight into those buffers and
the buffers are written between batches; on a GPU the hooks start asynchronous copies to the
host and a writer thread waits for them and writes while the next batch is computed, so the GPU
is not stopped between batches (its queue holds a few batches). Memory stays flat however many
samples; nothing accumulates in lists. The set is written into a temporary folder and renamed
into place when complete, with ``manifest.json`` written last, so a crash never leaves a set
that looks complete.

Reuse: a folder is reused when its manifest holds the same ``SETTING_KEYS`` (format, sha256 of
model.safetensors, data set (npz: absolute path and sha256 of the file), split, test_fraction,
max_samples as asked, sample seed, dtype, pool) and at least the requested layers, and it passes
``load_activations``; otherwise (a stale or invalid set, or ``force``) it is extracted again and
replaced. A folder there without a manifest is not ours: it is an error unless ``force``.

``manifest.json`` (format ``alviz-activations/1``): the ``SETTING_KEYS`` above, ``n_samples``,
``sampling``, ``labels_file``, ``ids_file`` (file names in the folder), ``layers`` (a list, in
catalogue order, of ``{name, role, position, on_path, match, file, shape: [N, D],
output_shape: per-sample shape before pooling}``), ``dataset_name`` (as given), ``num_classes``,
``class_names``, ``method``, ``arch``, ``seed``, ``epoch``, ``checkpoint``, ``batch_size``,
``device``, ``seconds``, ``alviz_version``, ``torch_version``, ``created``. ``load_activations``
refuses file names that leave the folder (absolute, ``..``, sub-folders, links out) and checks
every shape and dtype against the .npy headers.

Pooling of convolutional maps (``pool``): ``gap`` (default) averages each channel of a 4-D map
over its spatial positions, one value per channel. It keeps files small (CNN block 1 on MNIST:
32 values instead of 25,088 per sample) and makes layers of different spatial size comparable in
the distance measures, which would otherwise be dominated by the layers with most positions.
``flatten`` keeps every value. Vectors are stored as they are.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import queue
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from numpy.lib import format as npformat
from torch import nn

from . import __version__
from .checkpoint import WRITE_CHUNK, fsync_path, read_json
from .errors import UserError, choice_error

FORMAT = "alviz-activations/1"
MANIFEST = "manifest.json"
LABELS_FILE = "labels.npy"
IDS_FILE = "ids.npy"
ACTIVATIONS_DIR = "activations"
DTYPES = ("float32", "float16")
POOLS = ("gap", "flatten")
SPLITS = ("train", "test", "all")
SAMPLE_SEED = 0  # sample selection never depends on the run: every run of an experiment shares it
# settings that decide whether an existing activation set can be reused
SETTING_KEYS = ("format", "checkpoint_sha256", "dataset", "data_sha256", "split", "test_fraction",
                "max_samples", "sample_seed", "dtype", "pool")


# --------------------------------------------------------------------------- layer catalogue

@dataclass(frozen=True)
class LayerInfo:
    """One extractable layer: its name, module and place along the inference path."""

    name: str
    role: str  # encoder / bridge / decoder / head (or "module" for other nets)
    position: float  # int on the inference path; k + 0.5 for AL's early-exit bridges
    on_path: bool
    match: str  # identical for aligned AL and BP layers
    module: nn.Module = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "position": self.position,
                "on_path": self.on_path, "match": self.match}


def _pos_key(position) -> str:
    return f"p{position:g}"


def layer_catalogue(model: nn.Module) -> list[LayerInfo]:
    """The layers of an AL or BP model, sorted by position (see the module docstring)."""
    method = getattr(model, "method", None)
    L = len(model.blocks) if hasattr(model, "blocks") else 0
    out: list[LayerInfo] = []

    def add(name, role, position, module, on_path=True):
        out.append(LayerInfo(name, role, position, on_path, _pos_key(position), module))

    if method == "al":
        for k in range(1, L + 1):
            add(f"block{k}", "encoder", k, model.blocks[k - 1])
            if k < L:
                add(f"bridge{k}", "bridge", k + 0.5, model.bridges[k - 1], on_path=False)
        add(f"bridge{L}", "bridge", L + 1, model.bridges[L - 1])
        for k in range(L, 0, -1):
            add(f"decoder{k}", "decoder", 2 * L + 2 - k, model.decoders[k - 1])
    elif method == "bp":
        for k in range(1, L + 1):
            add(f"block{k}", "encoder", k, model.blocks[k - 1])
        for j in range(1, len(model.head) + 1):
            add(f"head{j}", "head", L + j, model.head[j - 1])
    else:
        raise UserError(f"no layer catalogue for a {type(model).__name__}; alviz knows AL and BP models "
                        "(for another module, pass its submodule names to capture)")
    return sorted(out, key=lambda e: e.position)


def select_layers(model: nn.Module, layers) -> list[LayerInfo]:
    """Validate `layers` (names; None: all) against the model's catalogue; the chosen entries in
    catalogue order. An unknown name is a UserError that lists the valid ones."""
    if getattr(model, "method", None) in ("al", "bp"):
        cat = layer_catalogue(model)
    else:  # any other module: its named submodules, in definition order
        cat = [LayerInfo(n, "module", i, True, _pos_key(i), m)
               for i, (n, m) in enumerate(model.named_modules()) if n]
        if layers is None:
            raise UserError(f"name the layers to capture of a {type(model).__name__}; valid: "
                            f"{', '.join(e.name for e in cat)}")
    if layers is None:
        return cat
    if isinstance(layers, str):
        layers = [layers]
    wanted = [str(n).strip() for n in layers if str(n).strip()]
    valid = [e.name for e in cat]
    unknown = [n for n in wanted if n not in valid]
    if unknown:
        raise UserError(f"unknown layer(s) {', '.join(map(repr, unknown))}; valid layers: {', '.join(valid)}")
    if not wanted:
        raise UserError(f"no layer named; valid layers: {', '.join(valid)}")
    return [e for e in cat if e.name in set(wanted)]


def parse_layers(spec: str | None) -> list[str] | None:
    """`--layers block1,bridge2` -> ['block1', 'bridge2']; None or empty -> None (all)."""
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise UserError(f"--layers must be comma-separated layer names; received {spec!r}")
    return names


# --------------------------------------------------------------------------- hooks

def _pool_cast(t: torch.Tensor, pool: str | None, dtype: torch.dtype | None) -> tuple[torch.Tensor, bool]:
    """`t` detached, pooled and cast as asked, on its own device; and whether the result is a
    fresh tensor (True) or may still share memory with `t` (False)."""
    t = t.detach()
    fresh = False
    if pool is not None and t.dim() != 2:
        if pool == "gap" and t.dim() == 4:
            t = t.mean(dim=(2, 3))
            fresh = True
        else:
            t = t.flatten(1)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
        fresh = True
    return t, fresh


def _store(t: torch.Tensor, pool: str | None, dtype: torch.dtype | None, non_blocking: bool) -> torch.Tensor:
    """A detached copy of `t` on the CPU, pooled and cast as asked (the work is done on `t`'s
    device, so a GPU ships only the pooled, cast values)."""
    t, fresh = _pool_cast(t, pool, dtype)
    if t.device.type != "cpu":
        return t.to("cpu", non_blocking=non_blocking)  # always a new tensor
    return t if fresh else t.clone()


@contextmanager
def capture(model: nn.Module, layers: Iterable[str] | str | None = None, *, pool: str | None = None,
            dtype: torch.dtype | None = None, non_blocking: bool = False,
            sink: Callable[[str, torch.Tensor], None] | None = None) -> Iterator[dict]:
    """Forward hooks on `layers` (names from `layer_catalogue`; None: all) for the `with` block.

    Yields a dict name -> CPU tensor holding the output of that module's most recent call (after
    one ``model(x)``: that forward's output). The hooks are removed when the block ends, raising
    or not. `pool`: None keeps the output's shape; "gap" or "flatten" make it (batch, features)
    (see the module docstring). `dtype` casts on the model's device. `non_blocking`: GPU copies are
    asynchronous; the caller must synchronise (``torch.cuda.synchronize()``) before reading.
    For AL's early-exit bridges see the module docstring: one ``model(x)`` computes them too.

    `sink(name, tensor)`: instead of storing a copy, each hook hands its module's output, pooled
    and cast, still on the model's device and possibly sharing the module's memory, to `sink`,
    which must copy what it keeps before returning (a later in-place op may change it); the
    yielded dict then stays empty. `extract_arrays` uses this to copy rows straight into its files'
    staging buffers on the CPU.
    """
    if pool is not None and pool not in POOLS:
        raise choice_error("pool", pool, POOLS)
    targets = select_layers(model, layers)
    acts: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name):
        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                raise TypeError(f"layer {name!r} returned a {type(output).__name__}, not a tensor")
            if sink is not None:
                sink(name, _pool_cast(output, pool, dtype)[0])
            else:
                acts[name] = _store(output, pool, dtype, non_blocking)
        return hook

    def bridge_runner(bridge):
        def hook(module, inputs, output):
            with torch.no_grad():
                bridge(output)  # its own hook stores b_k(s_k)
        return hook

    try:
        for e in targets:
            handles.append(e.module.register_forward_hook(hook_for(e.name)))
        if getattr(model, "method", None) == "al":
            L = len(model.blocks)
            for e in targets:
                m = re.fullmatch(r"bridge(\d+)", e.name)
                if m and int(m.group(1)) < L:
                    k = int(m.group(1))
                    handles.append(model.blocks[k - 1].register_forward_hook(bridge_runner(model.bridges[k - 1])))
        yield acts
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def describe_layers(model: nn.Module, input_shape) -> list[dict]:
    """The catalogue as dicts, with each layer's output shape per sample (a forward pass of zeros)
    and the number of values stored per sample under each pooling."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    try:
        with capture(model) as acts:
            model(torch.zeros((2,) + tuple(input_shape), device=dev))
    finally:
        model.train(was)
    rows = []
    for e in layer_catalogue(model):
        shape = list(acts[e.name].shape[1:])
        flat = int(np.prod(shape))
        rows.append({**e.to_dict(), "shape": shape,
                     "stored": {"gap": shape[0] if len(shape) == 3 else flat, "flatten": flat}})
    return rows


# --------------------------------------------------------------------------- sample selection

def select_samples(y: np.ndarray, max_samples: int | None, log: Callable = print, what: str = "the split") -> np.ndarray:
    """Row indices (sorted) of a seeded (seed 0) stratified sample of `max_samples` of the labels
    `y`; all rows when None. Depends only on `y`, so every run of an experiment gets the same."""
    from .embed import stratified_sample

    n = len(y)
    if max_samples is None:
        return np.arange(n)
    if max_samples > n:
        log(f"asked for {max_samples} samples but {what} holds {n}; using all {n}")
        return np.arange(n)
    return stratified_sample(np.asarray(y), max_samples, seed=SAMPLE_SEED)


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


# --------------------------------------------------------------------------- writing

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
        while len(buf):
            piece = buf[:WRITE_CHUNK]
            k = os.pwrite(self._fd, piece, pos) if hasattr(os, "pwrite") else _seek_write(self._fd, piece, pos)
            buf, pos = buf[k:], pos + k

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


# --------------------------------------------------------------------------- run -> activation set

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
        from .checkpoint import read_config

        dataset = read_config(run_dir).dataset
    return Path(run_dir) / ACTIVATIONS_DIR / f"{dataset_slug(dataset)}-{split}"


def _dataset_identity(name: str) -> tuple[str, str | None]:
    """(dataset key, sha256 of its file): npz files by absolute path and content, others by name."""
    from .checkpoint import sha256_file
    from .data import check_name

    check_name(name)
    if not name.startswith("npz:"):
        return name, None
    p = Path(name[4:]).expanduser()
    if not p.is_file():
        raise UserError(f"{name}: file not found")
    return f"npz:{p.resolve()}", sha256_file(p)


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
        return "stale: the checkpoint changed since it was extracted (model.safetensors sha256 differs)"
    diff = [k for k in SETTING_KEYS if manifest.get(k) != settings[k]]
    if diff:
        what = ", ".join(f"{k} {manifest.get(k)!r} -> {settings[k]!r}" for k in diff)
        return f"stale: other settings ({what})"
    return None


def _existing(final: Path, settings: dict, names: list[str], force: bool) -> tuple[bool, str]:
    """(reusable?, why) for the folder `final`."""
    if not final.exists() and not final.is_symlink():
        return False, ""
    if final.is_symlink() or not final.is_dir() or not (final / MANIFEST).is_file():
        if not force:
            raise UserError(f"{final} exists but is not an alviz activation set (no {MANIFEST}); move it "
                            "away, or give --force to replace it")
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
    extra = len(have.layers) - len(names)
    more = f", and {extra} more" if extra > 0 else ""
    return True, (f"reusing {final} (same checkpoint and settings; it holds the {len(names)} requested "
                  f"layer(s){more}); --force extracts again")


def extract_run(run_dir, *, dataset=None, split="test", layers=None, max_samples=None, dtype="float32",
                pool="gap", batch_size=256, force=False, device="cpu", log=print, data_dir=None) -> Path:
    """Extract the hidden layers of a trained run into `RUN/activations/<dataset-slug>-<split>/`
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
    """
    with _run_lock(run_dir):
        return _extract_run(run_dir, dataset=dataset, split=split, layers=layers, max_samples=max_samples,
                            dtype=dtype, pool=pool, batch_size=batch_size, force=force, device=device, log=log,
                            data_dir=data_dir)


@contextmanager
def _run_lock(run_dir):
    """Exclusive `fcntl.flock` on the run folder itself (no file is created) for the block."""
    import fcntl

    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # not a folder: _extract_run says what is wrong
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _extract_run(run_dir, *, dataset, split, layers, max_samples, dtype, pool, batch_size, force, device, log,
                 data_dir) -> Path:
    _check_args(split, dtype, pool, batch_size, max_samples)
    if isinstance(layers, str):
        layers = parse_layers(layers)
    from .checkpoint import load_run, sha256_file
    from .data import load_dataset
    from .train import resolve_device

    dev = resolve_device(str(device))
    run = load_run(run_dir, dev)
    names = [e.name for e in select_layers(run.model, layers)]
    name = dataset or run.config.dataset
    key, data_sha = _dataset_identity(name)
    settings = {
        "format": FORMAT, "checkpoint_sha256": sha256_file(run.path / "model.safetensors"),
        "dataset": key, "data_sha256": data_sha, "split": split,
        "test_fraction": run.config.test_fraction, "max_samples": max_samples,
        "sample_seed": SAMPLE_SEED, "dtype": dtype, "pool": pool,
    }
    root = run.path / ACTIVATIONS_DIR
    final = root / f"{dataset_slug(name)}-{split}"
    _clean_leftovers(root)
    reuse, why = _existing(final, settings, names, force)
    if reuse:
        log(why)
        return final
    if why:
        log(f"{final}: {why}")

    data = load_dataset(name, data_dir=data_dir or run.config.data_dir, test_fraction=run.config.test_fraction,
                        preprocess=run.meta["preprocess"])
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
        shapes = extract_arrays(run.model, x, idx, names, tmp, pool=pool, dtype=dtype,
                                batch_size=batch_size, device=dev)
        seconds = time.perf_counter() - t0
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
            "sampling": "stratified (alviz.embed.stratified_sample, seed 0) of the split; all when "
                        "max_samples is null or at least the split's size",
            "labels_file": LABELS_FILE, "ids_file": IDS_FILE,
            "layers": entries,
            "dataset_name": name,
            "num_classes": n_cls, "class_names": run.meta.get("class_names"),
            "method": run.config.method, "arch": run.config.arch, "seed": run.config.seed,
            "epoch": run.meta.get("epoch"), "checkpoint": "model.safetensors",
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in final.iterdir())
    log(f"{final}: {len(idx)} samples x {len(names)} layer(s), {dtype}, pool {pool}, "
        f"{size / 2**20:.1f} MiB in {seconds:.1f}s")
    return final


# --------------------------------------------------------------------------- reading back

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


__all__ = ["LayerInfo", "layer_catalogue", "select_layers", "describe_layers", "capture", "parse_layers", "select_samples",
           "extract_arrays", "extract_run", "activation_dir", "dataset_slug", "load_activations",
           "Activations", "FORMAT", "DTYPES", "POOLS", "SPLITS"]
