"""Switching an embedded SQLite file to WAL when several worker processes open it at once.

Both embedded stores (``serve/store.py``: stored responses; ``learn/outcomes.py``: the
outcome store) are one file that every worker opens at start-up. Switching a new file to
WAL needs it alone, and SQLite answers SQLITE_BUSY at once, without the busy timeout, when
two connections would otherwise wait on each other's locks; a few short tries let the first
opener finish. Once the file is in WAL (kept in the file), the switch takes no lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

FIRST_PAUSE = 0.005
LONGEST_PAUSE = 0.1


def switch_to_wal(
    conn: sqlite3.Connection,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
) -> str:
    """``PRAGMA journal_mode = WAL`` on ``conn``, tried again while another connection
    holds the file, for up to ``timeout`` seconds; the journal mode SQLite reports (not
    "wal" on a file system without shared memory). Other errors, and SQLITE_BUSY after
    ``timeout``, are raised."""
    deadline = now() + timeout
    pause = FIRST_PAUSE
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or now() >= deadline:
                raise
        sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)
