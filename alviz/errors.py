"""The one exception type for mistakes a user can fix (bad arguments, files, data).

The CLI turns a `UserError` into a one-line message and exit status 2. Anything else is a bug in
alviz and keeps its traceback. This module knows nothing about the CLI or about torch.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for: say what was received and what is allowed."""

    exit_code = 2


def choice_error(what: str, received, allowed) -> UserError:
    """`unknown <what> 'x'; allowed: a, b, c` -- the house style for a bad name."""
    allowed = ", ".join(str(a) for a in allowed)
    return UserError(f"unknown {what} {received!r}; allowed: {allowed}")


def refuse_pickle(head: bytes, where, expected: str, lead: str = "") -> None:
    """Raise a UserError if `head` (a file's first bytes) is a Python pickle or a zip of pickles
    (a `torch.save` file). alviz never unpickles anything: loading a pickle can run any code."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        kind = "a Python pickle"
    elif head[:4] == b"PK\x03\x04":
        kind = "a zip archive (a torch.save file holds pickles)"
    else:
        return
    raise UserError(f"{where}: {lead}is {kind}, which alviz refuses to load (unpickling can run code); "
                    f"expected {expected}")
