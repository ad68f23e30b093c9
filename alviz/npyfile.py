"""Validated `.npy` and `.npz` reading: every header is checked before an array is made.

A header's shape x dtype must account for the file's (or the zip member's) exact size, so a
2 kB file that claims terabytes is refused instead of allocating; the dtype must be a plain
number (bool, int, uint, float: no objects, no records, no pickles); an alviz file must be in C
order (alviz never writes Fortran order, and a memory map of one would be read permuted), while
a user's `.npz` may be in either order (numpy reads both correctly). The whole of an `.npz` is
capped by `safeio.memory_cap()` before anything is decompressed. Failures are `UserError`s that
name the file. This module knows nothing about what the arrays mean.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from . import safeio
from .errors import UserError

KINDS = "biuf"
NPZ_KINDS = "biufcUS"  # no objects, records or pickles; the data reader explains other mistakes
MAX_ITEMSIZE = 16
_MAGIC = b"\x93NUMPY"


def read_header(fh, where, kinds: str = KINDS) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of the `.npy` stream `fh`, checked; `kinds`: the
    numpy dtype kinds allowed (a user's npz may hold strings, which its reader then explains).
    Messages start with `where` (e.g. "DIR/manifest.json: labels.npy")."""
    fmt = np.lib.format
    head = fh.read(8)
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        raise UserError(f"{where} holds pickled Python objects, which alviz refuses to load (unpickling can run "
                        "code); expected a numeric .npy array")
    if head[:6] != _MAGIC or len(head) < 8:
        raise UserError(f"{where} is not a readable .npy file (no NUMPY magic)")
    major = head[6]
    try:
        if major == 1:
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif major == 2:
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"format version {major}.{head[7]} (alviz reads 1.0 and 2.0)")
    except (ValueError, TypeError, SyntaxError, OverflowError, MemoryError, RecursionError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(f"{where} is not a readable .npy file (its header: {why})") from None
    if dtype.hasobject:
        raise UserError(f"{where} holds pickled Python objects, which alviz refuses to load (unpickling "
                        "can run code); expected a numeric array")
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.itemsize > MAX_ITEMSIZE:
        raise UserError(f"{where} is not a plain numeric array (dtype {safeio.describe(str(dtype))}); allowed: "
                        "bool, integer or float arrays")
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise UserError(f"{where} is not a readable .npy file (shape {safeio.describe(shape)})")
    return tuple(shape), bool(fortran), dtype, fh.tell()


def _nbytes(shape, dtype: np.dtype) -> int:
    n = dtype.itemsize
    for s in shape:
        n *= s  # Python ints: no overflow
    return n


def check_size(shape, dtype, offset: int, size: int, where) -> None:
    """UserError unless the header's shape x dtype fills exactly `size - offset` bytes."""
    need = _nbytes(shape, dtype)
    if offset + need != size:
        raise UserError(f"{where} is not a readable .npy file (its header claims shape {safeio.describe(list(shape))} "
                        f"of {dtype}, {need} bytes, but it holds {max(size - offset, 0)}: truncated or altered)")


def load_npy(path, where=None, *, mmap: bool = False, inside=None) -> np.ndarray:
    """A `.npy` file alviz wrote (activations, labels, caches): C order, numeric, the right size.
    `mmap`: a read-only memory map instead of reading it into memory."""
    path = Path(path)
    name = f"{where}: {path.name}" if where else str(path)
    try:
        st = safeio.regular_file(path, "a .npy array", inside)
        if not mmap and st.st_size > safeio.memory_cap():
            raise UserError(f"{name} is {st.st_size} bytes, more than half this machine's memory")
        with open(path, "rb") as fh:
            shape, fortran, dtype, offset = read_header(fh, name)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise UserError(f"{name} is missing") from None
    except OSError as e:
        raise safeio.os_error(path, e) from None
    if fortran:
        raise UserError(f"{name} is stored in Fortran order; alviz writes C order only, so it is not alviz's "
                        "file: delete it and let alviz write it again")
    check_size(shape, dtype, offset, size, name)
    try:
        if mmap and _nbytes(shape, dtype) > 0:
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="C")
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{name} is not a readable .npy file ({str(e).splitlines()[0][:120]})") from None


def load_npz(path, where) -> dict[str, np.ndarray]:
    """The arrays of a user's `.npz` file, every member's header checked against its size and the
    whole capped by `safeio.memory_cap()` before anything is decompressed."""
    path = Path(path)
    safeio.regular_file(path, "a .npz file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise safeio.os_error(path, e) from None
    if magic[:1] in (b"\x80", b"("):
        raise UserError(f"{where}: is a Python pickle, which alviz refuses to load; save plain numeric arrays "
                        "with numpy.savez")
    if magic != b"PK\x03\x04":
        raise UserError(f"{where}: not a readable .npz file (no zip header); save arrays with numpy.savez")
    cap = safeio.memory_cap()
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 64:
                raise UserError(f"{where}: holds {len(infos)} members; an .npz of x, y, x_test, y_test has at most 4")
            total = sum(i.file_size for i in infos)
            if total > cap:
                raise UserError(f"{where}: its arrays would take {total} bytes, more than half this machine's memory")
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                mwhere = f"{where}: array {safeio.describe(name)}"
                with zf.open(info) as member:
                    shape, _, dtype, offset = read_header(member, mwhere, NPZ_KINDS)
                check_size(shape, dtype, offset, info.file_size, mwhere)
            with np.load(path, allow_pickle=False) as z:
                for k in z.files:
                    arrays[k] = z[k]
    except UserError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise UserError(f"{where}: holds pickled Python objects, which alviz refuses to load; save plain "
                            "numeric arrays with numpy.savez") from None
        raise UserError(f"{where}: not a readable .npz file ({str(e).splitlines()[0][:120]})") from None
    except (OSError, zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as e:
        raise UserError(f"{where}: not a readable .npz file ({type(e).__name__}: {str(e)[:120]})") from None
    return arrays


__all__ = ["read_header", "check_size", "load_npy", "load_npz", "KINDS"]
