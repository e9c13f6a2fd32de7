"""Switching a new SQLite file to WAL while another process holds it (both embedded stores
open their file this way when workers start together)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gearshift.sqlite_wal import switch_to_wal


def _held(path: str) -> sqlite3.Connection:
    """Another process half-way through creating the file: it holds the write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE t (a)")
    return other


def test_the_switch_waits_out_a_connection_that_holds_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "new.sqlite3")
    other = _held(path)
    opener = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        opener.execute("PRAGMA journal_mode = WAL")  # what a worker met at start-up
    pauses: list[float] = []

    def sleep(seconds: float) -> None:  # the other process finishes while this one waits
        pauses.append(seconds)
        if len(pauses) == 3:
            other.execute("COMMIT")

    assert switch_to_wal(opener, 5.0, sleep) == "wal"
    assert pauses == [0.005, 0.01, 0.02]
    assert other.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
    opener.close()
    other.close()


def test_the_switch_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "new.sqlite3")
    other = _held(path)
    opener = sqlite3.connect(path, timeout=0, isolation_level=None)
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        switch_to_wal(opener, 1.0, sleep, now=lambda: clock[0])
    assert 1.0 <= clock[0] < 1.2  # pauses of at most 0.1 s, then the error
    opener.close()
    other.close()


def test_a_file_that_is_not_sqlite_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"not a database, just some text that is long enough " * 40)
    conn = sqlite3.connect(str(path), timeout=0, isolation_level=None)

    def sleep(seconds: float) -> None:
        raise AssertionError("not tried again")

    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        switch_to_wal(conn, 5.0, sleep)
    conn.close()


def test_workers_opening_one_new_response_store_at_once_all_open_it(tmp_path: Path) -> None:
    """``serve --workers N`` with a new ``store.path``: every worker starts."""
    path = tmp_path / "responses.sqlite3"
    code = (
        "import asyncio\n"
        "from gearshift.serve.store import SqliteStore, StoreSpec\n"
        f"store = SqliteStore.open(StoreSpec(path={str(path)!r}))\n"
        "asyncio.run(store.close())\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
             for _ in range(6)]  # fmt: skip
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
