"""Identifiers gearshift makes up: request ids and the ids of the answers it writes itself.

``uuid.uuid4()`` reads 16 bytes from the OS and builds a UUID object for every request (about
1.4 µs and a system call). An id only needs to be unique, not secret: a random prefix drawn
once per process (a forked worker draws its own) and a counter give the same 32 hex
characters for a fifth of the cost.
"""

from __future__ import annotations

import itertools
import os

_prefix = ""
_counter = itertools.count()


def _reseed() -> None:
    global _prefix, _counter
    _prefix, _counter = os.urandom(8).hex(), itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """32 hex characters, unique across processes and restarts: 16 random (per process), then
    a counter."""
    return f"{_prefix}{next(_counter):016x}"


__all__ = ["new_id"]
