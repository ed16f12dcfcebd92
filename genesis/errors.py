"""The one exception type that means "the user asked for something impossible"."""

from __future__ import annotations


class GenesisError(Exception):
    """Bad input from the user: a malformed file, a missing folder, an unknown trait.

    The CLI prints the message as one line and exits with code 2; library callers can
    catch it to tell input problems apart from bugs.
    """


class NotFound(GenesisError):
    """Something asked for by name or id does not exist (a memory, an agent); a server
    answers it with 404."""
