"""Bounded reading of files a user may receive: raw bytes, JSON and YAML, and OSErrors as one line.

Every reader here
- refuses what is not a regular file (a FIFO, a device, a socket, a folder, or a link to one)
  before opening it, opens without blocking and checks the open descriptor again;
- with `inside=FOLDER`, refuses a path whose real location is outside FOLDER (a link out of a run);
- caps the size before reading (a file that claims or holds more is refused, not read);
- caps the nesting depth and the node count of what it parses; for YAML the count is of the
  expanded document, so an alias bomb is refused after reading a few hundred bytes;
- refuses pickles by name, and raises only `UserError`s naming the file (a missing file stays a
  FileNotFoundError: the caller knows what a missing file means).
Values are never formatted into a message unbounded (`describe`). This module does not know what
the files mean: the structure of each kind of file is `alviz.schema`'s business.
"""

from __future__ import annotations

import errno
import json
import os
import reprlib
import stat
from pathlib import Path

import yaml

from .errors import UserError, refuse_pickle

MAX_DEPTH = 64  # nesting of lists / mappings; alviz's own files nest at most 4 deep
MAX_NODES = 4_000_000  # values in one parsed document (a 64 MiB JSON file holds at most ~32 M)
YAML_MAX_NODES = 200_000  # a config file; counted after expanding aliases
JSON_BYTES = 64 << 20
YAML_BYTES = 1 << 20

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 4
_REPR.maxlevel = 2


def describe(value) -> str:
    """A short repr of any value, however big or deep (for error messages)."""
    try:
        return _REPR.repr(value)
    except RecursionError:  # pragma: no cover - reprlib stops at maxlevel
        return f"a {type(value).__name__}"


def memory_cap() -> int:
    """Half this machine's memory: no single file is read into memory past it."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 << 30


def os_error(path, err: OSError, verb: str = "read") -> UserError:
    """The one-line UserError for an OSError on `path`: `cannot <verb> <path>: <why>`."""
    why = err.strerror or str(err) or type(err).__name__
    if err.errno == errno.ENAMETOOLONG:
        why += " (a file name or path is longer than this file system allows)"
    return UserError(f"cannot {verb} {path}: {why}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def check_inside(path, folder) -> None:
    """UserError unless `path`, links resolved, lies inside `folder` (links resolved)."""
    try:
        real, root = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot resolve the path ({e})") from None
    if real != root and root not in real.parents:
        raise UserError(f"{path} is a link to {real}, outside {folder}; alviz never follows a link out of "
                        "its folder: replace the link with the file itself")


def regular_file(path, what: str, inside=None) -> os.stat_result:
    """`os.stat` of `path` if it is a regular file (links followed, and inside `inside` if given);
    else a UserError. FileNotFoundError is left to the caller."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise os_error(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} is {_kind(st.st_mode)}, not a regular file; expected {what}")
    if inside is not None:
        check_inside(path, inside)
    return st


def read_bytes(path, what: str, *, limit: int, inside=None) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (a larger file is refused)."""
    regular_file(path, what, inside)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise os_error(path, e) from None
    try:
        st = os.fstat(fd)  # the file opened may not be the file checked (a swap in between)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path} is {_kind(st.st_mode)}, not a regular file; expected {what}")
        if st.st_size > limit:
            raise UserError(f"{path} is {st.st_size} bytes; {what} may be at most {limit} bytes")
        chunks, left = [], limit + 1
        while left > 0:
            block = os.read(fd, min(left, 1 << 20))
            if not block:
                break
            chunks.append(block)
            left -= len(block)
        data = b"".join(chunks)
    except OSError as e:
        raise os_error(path, e) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UserError(f"{path} holds more than {limit} bytes; {what} may be at most {limit} bytes")
    return data


def check_tree(obj, where, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """UserError if the parsed value `obj` nests deeper than `max_depth` or holds more than
    `max_nodes` values (checked without recursion; shared sub-objects count every time)."""
    stack, nodes = [(obj, 0)], 0
    while stack:
        v, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise UserError(f"{where}: holds more than {max_nodes} values; refused")
        if isinstance(v, (list, tuple, dict)):
            if depth >= max_depth:
                raise UserError(f"{where}: nested more than {max_depth} levels deep; refused")
            items = v.values() if isinstance(v, dict) else v
            if isinstance(v, dict):
                stack.extend((k, depth + 1) for k in v)
            stack.extend((c, depth + 1) for c in items)


def parse_json(raw: bytes, where, what: str):
    """JSON from bytes, nesting and size bounded; a pickle is refused by name."""
    refuse_pickle(raw[:8], where, what)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be {what}; refused") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, a 5,000-digit number, bad UTF-8
        raise UserError(f"{where}: not valid JSON ({str(e).splitlines()[0][:120] if str(e) else 'bad value'})") from None
    check_tree(obj, where)
    return obj


def read_json(path, what: str, *, limit: int = JSON_BYTES, inside=None):
    """Parse the JSON file `path` (a regular file of at most `limit` bytes)."""
    return parse_json(read_bytes(path, what, limit=limit, inside=inside), path, what)


def _yaml_size(text: str, where) -> None:
    """Walk the YAML events (no recursion, nothing built): refuse a document nested deeper than
    MAX_DEPTH or whose aliases expand to more than YAML_MAX_NODES values."""
    anchors: dict[str, int] = {}
    stack: list[list] = []  # per open collection: [anchor, nodes inside]
    total = 0

    def add(n: int) -> None:
        nonlocal total
        total += n
        if stack:
            stack[-1][1] += n
        if total > YAML_MAX_NODES:
            raise UserError(f"{where}: expands to more than {YAML_MAX_NODES} values (YAML aliases?); refused")

    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, yaml.AliasEvent):
                if ev.anchor not in anchors:
                    return  # an undefined alias: safe_load reports it
                add(anchors[ev.anchor])
            elif isinstance(ev, yaml.ScalarEvent):
                add(1)
                if ev.anchor:
                    anchors[ev.anchor] = 1
            elif isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(stack) >= MAX_DEPTH:
                    raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep; refused")
                stack.append([ev.anchor, 1])
            elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                anchor, n = stack.pop()
                if anchor:
                    anchors[anchor] = n
                add(n)
    except yaml.YAMLError:
        return  # safe_load reports the syntax error with its position


def parse_yaml(raw: bytes, where, what: str):
    """YAML from bytes with `yaml.safe_load` (no Python object is ever built), bounded."""
    refuse_pickle(raw[:8], where, what)
    try:
        text = raw.decode("utf-8")
        _yaml_size(text, where)
        obj = yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be {what}; refused") from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, TypeError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(f"{where}: not a valid YAML file ({first})") from None
    check_tree(obj, where, max_nodes=YAML_MAX_NODES)
    return obj


def read_yaml(path, what: str, *, limit: int = YAML_BYTES, inside=None):
    """Parse the YAML file `path` (a regular file of at most `limit` bytes)."""
    return parse_yaml(read_bytes(path, what, limit=limit, inside=inside), path, what)


def refuse_foreign(path, is_own, what: str) -> None:
    """Before writing `path`: a UserError if something is there that is not alviz's own output of
    this kind (`is_own(first_bytes) -> bool`), or is not a regular file. Nothing there: fine."""
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        return
    if p.is_symlink() or not p.is_file():
        raise UserError(f"{p} exists and is not a regular file; alviz will not write {what} over it: "
                        "choose another path")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        raise os_error(p, e) from None
    if not is_own(head):
        raise UserError(f"{p} exists and is not {what} written by alviz; alviz will not overwrite it: "
                        "choose another path, or remove it first")


__all__ = ["read_bytes", "read_json", "read_yaml", "parse_json", "parse_yaml", "check_tree", "check_inside",
           "regular_file", "os_error", "describe", "memory_cap", "refuse_foreign", "MAX_DEPTH", "JSON_BYTES",
           "YAML_BYTES"]
