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
