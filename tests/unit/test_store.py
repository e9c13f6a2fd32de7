"""The Responses API's store: SQLite rows by owner and id, bounded by age and size, on a
hand-moved clock (nothing sleeps)."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import sqlite3
import stat
from pathlib import Path

import msgspec
import pytest
from conftest import FakeClock

from gearshift.config_checks import ConfigError
from gearshift.serve.store import (
    DAY,
    MIB,
    NullStore,
    SqliteStore,
    StoredResponse,
    StoreError,
    StoreSpec,
    default_path,
    open_store,
    owner_of,
)

ALICE = owner_of("sk-alice")
BOB = owner_of("sk-bob")


def stored(text: str = "hello", created: float = 1000.0) -> StoredResponse:
    return StoredResponse(
        response={"id": "resp_1", "object": "response", "output": [{"type": "message"}]},
        input_items=[{"type": "message", "role": "user", "content": text}],
        conversation=[
            {"role": "user", "content": text},
            {"role": "assistant", "content": "hi"},
        ],
        created=created,
    )


def noise(n: int, seed: int = 0) -> str:
    """``n`` characters that barely compress, so that encoded sizes are predictable."""
    return base64.b64encode(random.Random(seed).randbytes(n * 3 // 4)).decode()


def rows(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT owner, id FROM responses ORDER BY created").fetchall()


async def test_put_get_delete_roundtrip(tmp_path: Path) -> None:
    store = SqliteStore.open(StoreSpec(path=str(tmp_path / "r.sqlite3")))
    try:
        await store.put(ALICE, "resp_1", stored())
        assert await store.get(ALICE, "resp_1") == stored()
        assert await store.get(ALICE, "resp_2") is None
        assert await store.delete(ALICE, "resp_1")
        assert await store.get(ALICE, "resp_1") is None
        assert not await store.delete(ALICE, "resp_1")
    finally:
        await store.close()


async def test_a_put_replaces_the_same_id(tmp_path: Path) -> None:
    store = SqliteStore.open(StoreSpec(path=str(tmp_path / "r.sqlite3")))
    await store.put(ALICE, "resp_1", stored("first"))
    await store.put(ALICE, "resp_1", stored("second"))
    got = await store.get(ALICE, "resp_1")
    assert got is not None
    assert got.input_items[0]["content"] == "second"
    await store.close()


async def test_another_owners_id_is_not_found(tmp_path: Path) -> None:
    store = SqliteStore.open(StoreSpec(path=str(tmp_path / "r.sqlite3")))
    await store.put(ALICE, "resp_1", stored("alice's"))
    assert await store.get(BOB, "resp_1") is None
    assert not await store.delete(BOB, "resp_1")
    await store.put(BOB, "resp_1", stored("bob's"))  # the same id, a row of its own
    alice, bob = await store.get(ALICE, "resp_1"), await store.get(BOB, "resp_1")
    assert alice is not None
    assert alice.input_items[0]["content"] == "alice's"
    assert bob is not None
    assert bob.input_items[0]["content"] == "bob's"
    await store.close()


def test_owner_is_a_stable_digest_never_the_key() -> None:
    assert owner_of("sk-alice") == ALICE
    assert ALICE != BOB
    assert "alice" not in ALICE
    assert len(ALICE) == 32
    assert int(ALICE, 16) >= 0
    assert owner_of("") == "anonymous"


async def test_expired_rows_are_invisible_at_once_and_swept_later(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    clock = FakeClock()
    store = SqliteStore.open(StoreSpec(path=str(path), max_age=3600), clock=clock.now)
    await store.put(ALICE, "old", stored())
    clock.advance(1800)
    await store.put(ALICE, "new", stored())
    clock.advance(1800)  # "old" is exactly max_age old now
    assert await store.get(ALICE, "old") is None
    assert await store.get(ALICE, "new") is not None
    assert rows(path) == [(ALICE, "old"), (ALICE, "new")]  # invisible, not yet deleted
    assert not await store.delete(ALICE, "old")
    assert rows(path) == [(ALICE, "new")]  # a write sweeps (a minute has passed)
    clock.advance(3600)
    await store.sweep()
    assert rows(path) == []
    await store.close()


async def test_the_oldest_rows_are_evicted_over_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    clock = FakeClock()
    store = SqliteStore.open(StoreSpec(path=str(path), max_bytes=MIB), clock=clock.now)
    for i in range(30):  # ~80 KB each encoded: 2.4 MB written in all
        await store.put(ALICE, f"resp_{i}", stored(noise(45_000, seed=i)))
        clock.advance(1)
    await store.sweep()
    with sqlite3.connect(path) as conn:
        total = conn.execute("SELECT sum(size) FROM responses").fetchone()[0]
    kept = [rid for _, rid in rows(path)]
    assert total <= MIB
    assert len(kept) >= 10
    assert kept == [f"resp_{i}" for i in range(30 - len(kept), 30)]  # the newest, in order
    assert await store.get(ALICE, "resp_0") is None
    assert await store.get(ALICE, "resp_29") is not None
    await store.close()


async def test_writes_evict_on_their_own(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    clock = FakeClock()
    store = SqliteStore.open(StoreSpec(path=str(path), max_bytes=MIB), clock=clock.now)
    for i in range(60):
        await store.put(ALICE, f"resp_{i}", stored(noise(45_000, seed=i)))
        clock.advance(1)
    with sqlite3.connect(path) as conn:
        total = conn.execute("SELECT sum(size) FROM responses").fetchone()[0]
    assert total <= MIB + MIB // 32 + 100_000  # soft: checked after every max_bytes / 32
    await store.close()


async def test_a_response_over_a_tenth_of_max_bytes_is_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore.open(StoreSpec(path=str(tmp_path / "r.sqlite3"), max_bytes=MIB))
    with caplog.at_level(logging.WARNING, logger="gearshift.store"):
        await store.put(ALICE, "resp_big", stored(noise(MIB // 8)))
    assert await store.get(ALICE, "resp_big") is None
    [record] = caplog.records
    assert "resp_big" in record.getMessage()
    assert "not stored" in record.getMessage()
    await store.close()


async def test_a_response_json_cannot_hold_is_not_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore.open(StoreSpec(path=str(tmp_path / "r.sqlite3")))
    odd = StoredResponse(response={"id": object()}, input_items=[], conversation=[], created=0)
    with caplog.at_level(logging.WARNING, logger="gearshift.store"):
        await store.put(ALICE, "resp_odd", odd)
    assert await store.get(ALICE, "resp_odd") is None
    assert ["not stored" in r.getMessage() for r in caplog.records] == [True]
    await store.close()


async def test_a_disabled_store_keeps_nothing() -> None:
    store = open_store(StoreSpec(enabled=False))
    assert isinstance(store, NullStore)
    await store.put(ALICE, "resp_1", stored())
    assert await store.get(ALICE, "resp_1") is None
    assert not await store.delete(ALICE, "resp_1")
    await store.close()


async def test_two_workers_on_one_file_see_each_others_rows(tmp_path: Path) -> None:
    spec = StoreSpec(path=str(tmp_path / "r.sqlite3"))
    one, two = SqliteStore.open(spec), SqliteStore.open(spec)
    await one.put(ALICE, "resp_1", stored("from one"))
    await two.put(ALICE, "resp_2", stored("from two"))
    assert await two.get(ALICE, "resp_1") == stored("from one")
    assert await one.get(ALICE, "resp_2") == stored("from two")
    assert await two.delete(ALICE, "resp_1")
    assert await one.get(ALICE, "resp_1") is None
    with sqlite3.connect(spec.path or "") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    await one.close()
    await two.close()


async def test_two_workers_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    spec = StoreSpec(path=str(tmp_path / "r.sqlite3"), max_bytes=MIB)
    one, two = SqliteStore.open(spec), SqliteStore.open(spec)
    await asyncio.gather(
        *(
            store.put(ALICE, f"{n}_{i}", stored(noise(2000, i)))
            for i in range(50)
            for n, store in (("one", one), ("two", two))
        )
    )
    for i in range(50):
        assert await one.get(ALICE, f"two_{i}") == stored(noise(2000, i))
        assert await two.get(ALICE, f"one_{i}") == stored(noise(2000, i))
    await one.close()
    await two.close()


async def test_rows_outlive_a_restart(tmp_path: Path) -> None:
    spec = StoreSpec(path=str(tmp_path / "r.sqlite3"))
    store = SqliteStore.open(spec)
    await store.put(ALICE, "resp_1", stored())
    await store.close()
    assert await store.get(ALICE, "resp_1") is None  # closed: finds nothing, raises nothing
    await store.put(ALICE, "resp_2", stored())
    await store.close()
    again = SqliteStore.open(spec)
    assert await again.get(ALICE, "resp_1") == stored()
    assert await again.get(ALICE, "resp_2") is None
    await again.close()


async def test_in_memory() -> None:
    store = open_store(StoreSpec(path=":memory:"))
    await store.put(ALICE, "resp_1", stored())
    assert await store.get(ALICE, "resp_1") == stored()
    await store.close()
    other = open_store(StoreSpec(path=":memory:"))  # a store of its own
    assert await other.get(ALICE, "resp_1") is None
    await other.close()


async def test_the_default_path_is_a_private_file_under_the_state_directory(
    tmp_path: Path,
) -> None:
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    path = default_path(environ)
    assert path == tmp_path / "state" / "gearshift" / "responses.sqlite3"
    assert default_path({"XDG_STATE_HOME": "relative"}).parts[-4:] == (
        ".local",
        "state",
        "gearshift",
        "responses.sqlite3",
    )
    await SqliteStore.open(StoreSpec(), environ=environ).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("case", ["directory", "under-a-file", "missing-dir", "not-sqlite"])
def test_a_file_that_cannot_be_opened_is_a_clear_error(tmp_path: Path, case: str) -> None:
    path = {
        "directory": tmp_path,
        "under-a-file": tmp_path / "file" / "r.sqlite3",
        "missing-dir": tmp_path / "nowhere" / "r.sqlite3",
        "not-sqlite": tmp_path / "notes.txt",
    }[case]
    (tmp_path / "file").write_text("x")
    (tmp_path / "notes.txt").write_bytes(b"these are not the rows you are looking for\n" * 200)
    with pytest.raises(StoreError, match=r"\$\.store\.path: cannot open the response store") as e:
        SqliteStore.open(StoreSpec(path=str(path)))
    assert str(path) in str(e.value)
    assert isinstance(e.value, ConfigError)  # the CLI reports it as a configuration error


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (name TEXT)")
    with pytest.raises(StoreError, match="not a gearshift response store"):
        SqliteStore.open(StoreSpec(path=str(path)))


def test_a_corrupt_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(noise(3000, i),) for i in range(50)])
    data = bytearray(path.read_bytes())
    data[5000:9000] = b"\xff" * 4000  # pages of the table overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(path)):
        SqliteStore.open(StoreSpec(path=str(path)))


async def test_a_corrupt_row_reads_as_not_found_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.sqlite3"
    store = SqliteStore.open(StoreSpec(path=str(path)))
    await store.put(ALICE, "resp_1", stored())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE responses SET blob = x'00ff'")
    with caplog.at_level(logging.WARNING, logger="gearshift.store"):
        assert await store.get(ALICE, "resp_1") is None
        assert await store.get(ALICE, "resp_1") is None  # dropped: no second warning
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "corrupt" in record.getMessage()
    assert record.exc_info is None
    await store.close()


async def test_a_failed_read_is_not_found_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.sqlite3"
    store = SqliteStore.open(StoreSpec(path=str(path)))
    await store.put(ALICE, "resp_1", stored())
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE responses")
    with caplog.at_level(logging.WARNING, logger="gearshift.store"):
        assert await store.get(ALICE, "resp_1") is None
        assert not await store.delete(ALICE, "resp_1")
        await store.put(ALICE, "resp_2", stored())  # not stored, and not raised either
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3
    assert all(r.exc_info is None for r in caplog.records)
    assert "unreadable" in caplog.records[0].getMessage()
    await store.close()


@pytest.mark.parametrize(
    "raw",
    [
        {"max_bytes": 1000},
        {"max_bytes": 1 << 50},
        {"max_age": 0},
        {"max_age": float("inf")},
        {"path": ""},
        {"size": 1},
    ],
)
def test_the_settings_are_strict_and_bounded(raw: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(raw, StoreSpec)


def test_the_settings_defaults() -> None:
    spec = msgspec.toml.decode(b"max_age = 86400\n", type=StoreSpec)
    assert spec == StoreSpec(max_age=DAY)
    assert StoreSpec().max_age == 30 * DAY
    assert StoreSpec().max_bytes == 256 * MIB
