"""Where the OpenAI Responses API's state lives: stored responses, by owner and id.

A response created with ``store`` true is kept so that ``previous_response_id`` can continue
its conversation and ``GET`` / ``DELETE /v1/responses/{id}`` and ``…/input_items`` can find
it. ``ResponseStore`` is the seam (a shared backend such as Redis can follow);
``SqliteStore`` keeps rows in one SQLite file that every worker process opens (WAL, a busy
timeout), and ``NullStore`` is what ``store.enabled = false`` gives.

- **Owner.** Every row belongs to ``owner_of(presented key)``, a digest, never the key. An id
  of another owner is not found, exactly as an unknown or expired one is.
- **Age.** A row older than ``max_age`` (on the injected clock, from when it was stored) is
  invisible at once; the rows are deleted by a sweep that runs with writes at most once a
  minute, and at open.
- **Size.** The encoded rows (JSON, zlib) are kept under ``max_bytes``: the oldest are
  evicted. Each worker checks the total after every ``max_bytes / 32`` it wrote, so the bound
  is soft by that much per worker. One response over ``max_bytes / 10`` is not stored.
- **Threads.** All SQLite work runs on one thread per store with its own connection; the
  event loop only waits for it.
- **Failures.** A file that cannot be opened, is not SQLite, is corrupt or holds something
  else: ``StoreError`` (a ``ConfigError``) at open, naming the path. Later, a read or write
  that fails is one WARNING line and "not found" (or "not stored"): never an exception
  into the request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import msgspec

from gearshift.config_checks import ConfigError
from gearshift.sqlite_wal import switch_to_wal

log = logging.getLogger("gearshift.store")

T = TypeVar("T")
Clock = Callable[[], float]

DAY = 86_400.0
MIB = 1 << 20
SCHEMA = 1  # PRAGMA user_version of a store this module wrote
BUSY_TIMEOUT = 5.0  # seconds a worker waits for another's write lock
EXPIRE_EVERY = 60.0  # seconds between deletions of expired rows (they are invisible anyway)
COLUMNS = ["owner", "id", "created", "size", "blob"]


class StoreSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[store]``: the Responses API's stored responses. ``path``: the SQLite file (default
    ``$XDG_STATE_HOME/gearshift/responses.sqlite3``, else ``~/.local/state/…``), or
    ``":memory:"`` (this process only, gone at exit). ``max_age``: seconds a response stays
    retrievable (OpenAI keeps them 30 days); ``max_bytes``: the encoded responses kept in
    all, oldest evicted first."""

    enabled: bool = True
    path: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    max_age: Annotated[float, msgspec.Meta(gt=0, le=366 * DAY)] = 30 * DAY
    max_bytes: Annotated[int, msgspec.Meta(ge=MIB, le=1 << 40)] = 256 * MIB


class StoreError(ConfigError):
    """The store cannot be used; the message names its path."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response: the Response object, the input items of its request, and the
    chat messages of the whole conversation up to and including its answer (the history
    the next request continues). ``created``: Unix seconds, the caller's."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]]
    created: float


class ResponseStore(Protocol):
    """Stored responses by owner and id. ``get`` answers None for an unknown id, an expired
    one and another owner's alike; ``delete`` answers whether a visible row went. Neither
    raises on a storage failure (they log it)."""

    async def put(self, owner: str, response_id: str, stored: StoredResponse) -> None: ...

    async def get(self, owner: str, response_id: str) -> StoredResponse | None: ...

    async def delete(self, owner: str, response_id: str) -> bool: ...

    async def close(self) -> None: ...


def owner_of(presented_key: str) -> str:
    """The owner of what a request stores: a stable digest of the proxy key it presented
    (``"anonymous"`` for none), the same in every worker and across restarts. The key
    itself is never stored."""
    if not presented_key:
        return "anonymous"
    data = presented_key.encode("utf-8", "surrogateescape")
    return hashlib.blake2b(data, digest_size=16, person=b"gearshift-owner").hexdigest()


def default_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/gearshift/responses.sqlite3``, else under ``~/.local/state``."""
    state = environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "gearshift" / "responses.sqlite3"


def open_store(
    spec: StoreSpec, clock: Clock = time.time, environ: Mapping[str, str] | None = None
) -> ResponseStore:
    """The store ``spec`` asks for: ``NullStore`` when disabled, else ``SqliteStore.open``."""
    if not spec.enabled:
        return NullStore()
    return SqliteStore.open(spec, clock, environ)


class NullStore(ResponseStore):
    """``store.enabled = false``: nothing is kept, nothing is found."""

    async def put(self, owner: str, response_id: str, stored: StoredResponse) -> None:
        return None

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        return None

    async def delete(self, owner: str, response_id: str) -> bool:
        return False

    async def close(self) -> None:
        return None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StoredResponse)

_CREATE = (
    "CREATE TABLE responses (owner TEXT NOT NULL, id TEXT NOT NULL, created REAL NOT NULL,"
    " size INTEGER NOT NULL, blob BLOB NOT NULL, PRIMARY KEY (owner, id))",
    # Covers the sweep: expiry by age, and the running total of sizes from the newest.
    "CREATE INDEX responses_age ON responses (created, size)",
    f"PRAGMA user_version = {SCHEMA}",
)
_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
_PUT = "INSERT OR REPLACE INTO responses (owner, id, created, size, blob) VALUES (?, ?, ?, ?, ?)"
_GET = "SELECT blob FROM responses WHERE owner = ? AND id = ? AND created > ?"
_DELETE = "DELETE FROM responses WHERE owner = ? AND id = ? AND created > ?"
_DROP = "DELETE FROM responses WHERE owner = ? AND id = ?"
_EXPIRE = "DELETE FROM responses WHERE created <= ?"
_TOTAL = "SELECT total(size) FROM responses"
# Keep the newest rows whose sizes add up to at most max_bytes; delete the rest.
_EVICT = (
    "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM (SELECT rowid, sum(size) OVER"
    " (ORDER BY created DESC, rowid DESC) AS kept FROM responses) WHERE kept > ?)"
)


class SqliteStore(ResponseStore):
    """Stored responses in one SQLite file (or ``:memory:``), shared by the worker processes
    that open it. Build it with ``open``; its connection lives on its own thread."""

    def __init__(self, spec: StoreSpec, where: str, clock: Clock) -> None:
        self._spec = spec
        self._where = where  # the path as shown in messages
        self._clock = clock
        self._largest = spec.max_bytes // 10
        self._evict_every = spec.max_bytes // 32
        self._written = 0  # bytes written since the total was last checked (store thread)
        self._expired_at = float("-inf")  # when expired rows were last deleted (store thread)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gearshift-store")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    def open(
        cls, spec: StoreSpec, clock: Clock = time.time, environ: Mapping[str, str] | None = None
    ) -> SqliteStore:
        """Open (or create) the store ``spec.path`` names and sweep it. Blocks while it
        opens (at start-up); raises ``StoreError`` naming the path when the file cannot be
        opened or created, is not SQLite, fails SQLite's integrity check or holds anything
        but a gearshift store. ``clock``: wall-clock seconds shared by every worker and
        restart (``time.time``; not the app's monotonic ``Clock.now``). ``environ``: for the
        default path (default ``os.environ``)."""
        if spec.path == ":memory:":
            target, where = ":memory:", "':memory:'"
        else:
            path = (
                Path(spec.path).expanduser()
                if spec.path is not None
                else default_path(os.environ if environ is None else environ)
            )
            target, where = str(path), repr(str(path))
        store = cls(spec, where, clock)
        try:
            if target != ":memory:":
                _prepare(Path(target), create_dir=spec.path is None)
            store._executor.submit(store._connect, target, clock()).result()
        except (OSError, sqlite3.Error) as exc:
            store._executor.shutdown()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreError(
                f"$.store.path: cannot open the response store {where}: {reason}"
            ) from None
        except BaseException:
            store._executor.shutdown()
            raise
        return store

    async def put(self, owner: str, response_id: str, stored: StoredResponse) -> None:
        """Keep ``stored`` (replacing a row of the same owner and id). Not kept, with one
        WARNING: a response over ``max_bytes / 10`` encoded, or a failed write. ``stored``
        is encoded on the store's thread: leave it unchanged until this returns."""
        if self._closed:
            log.warning("response %r not stored: the store is closed", response_id)
            return
        await self._run(self._put, owner, response_id, stored, self._clock())

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """The response, or None: unknown, expired, another owner's, or unreadable."""
        if self._closed:
            return None
        return await self._run(self._get, owner, response_id, self._clock())

    async def delete(self, owner: str, response_id: str) -> bool:
        """Delete the response; False when ``get`` would not have found it."""
        if self._closed:
            return False
        return await self._run(self._delete, owner, response_id, self._clock())

    async def sweep(self) -> None:
        """Delete expired rows and evict the oldest over ``max_bytes`` now (writes do this
        on their own from time to time)."""
        if not self._closed:
            await self._run(self._sweep_now, self._clock())

    async def close(self) -> None:
        """Close the connection and stop the thread; later calls find and keep nothing."""
        if self._closed:
            return
        self._closed = True
        await self._run(self._disconnect)
        self._executor.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # Everything below runs on the store's thread.

    def _connect(self, target: str, now: float) -> None:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            mode = switch_to_wal(conn, BUSY_TIMEOUT)
            if mode not in ("wal", "memory"):  # a file system without shared memory (NFS)
                log.warning(
                    "store %s: journal mode %s, not WAL (one worker only)", self._where, mode
                )
            # WAL-safe: a process crash loses nothing, a power cut at most the last writes.
            conn.execute("PRAGMA synchronous = NORMAL")
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"the file is corrupt ({problem})")
            _ensure_schema(conn)
            self._conn = conn
            self._sweep_now(now)
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _put(self, owner: str, response_id: str, stored: StoredResponse, now: float) -> None:
        try:
            blob = zlib.compress(_encoder.encode(stored), 1)
        except (TypeError, msgspec.EncodeError) as exc:  # a value JSON cannot hold
            log.warning("response %r not stored: %s", response_id, exc)
            return
        if len(blob) > self._largest:
            log.warning(
                "response %r not stored: %d bytes encoded, over the %d a response may take "
                "(store.max_bytes / 10)",
                response_id,
                len(blob),
                self._largest,
            )
            return
        conn = self._connection()
        try:
            conn.execute(_PUT, (owner, response_id, now, len(blob), blob))
            self._written += len(blob)
            self._sweep(conn, now)
        except sqlite3.Error as exc:
            log.warning("response %r not stored in %s: %s", response_id, self._where, exc)

    def _get(self, owner: str, response_id: str, now: float) -> StoredResponse | None:
        conn = self._connection()
        try:
            row = conn.execute(_GET, (owner, response_id, now - self._spec.max_age)).fetchone()
        except sqlite3.Error as exc:
            log.warning("response %r unreadable in %s: %s", response_id, self._where, exc)
            return None
        if row is None:
            return None
        try:
            stored: StoredResponse = _decoder.decode(zlib.decompress(row[0]))
        except (zlib.error, TypeError, msgspec.DecodeError) as exc:
            # A corrupt row is dropped, so that it costs one warning, not one per read.
            log.warning("response %r corrupt in %s, dropped: %s", response_id, self._where, exc)
            with suppress(sqlite3.Error):  # then it stays, invisible once it expires
                conn.execute(_DROP, (owner, response_id))
            return None
        return stored

    def _delete(self, owner: str, response_id: str, now: float) -> bool:
        conn = self._connection()
        try:
            gone = conn.execute(_DELETE, (owner, response_id, now - self._spec.max_age))
            self._sweep(conn, now)
        except sqlite3.Error as exc:
            log.warning("response %r not deleted from %s: %s", response_id, self._where, exc)
            return False
        return gone.rowcount > 0

    def _sweep_now(self, now: float) -> None:
        self._expired_at = float("-inf")
        self._written = self._evict_every
        try:
            self._sweep(self._connection(), now)
        except sqlite3.Error as exc:
            log.warning("store %s: sweep failed: %s", self._where, exc)

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete expired rows (at most once every EXPIRE_EVERY), and evict the oldest
        while over max_bytes (after every max_bytes / 32 written here)."""
        if now - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = now
            conn.execute(_EXPIRE, (now - self._spec.max_age,))
        if self._written >= self._evict_every:
            self._written = 0
            if conn.execute(_TOTAL).fetchone()[0] > self._spec.max_bytes:
                evicted = conn.execute(_EVICT, (self._spec.max_bytes,)).rowcount
                log.info("store %s: %d oldest responses evicted (max_bytes)", self._where, evicted)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:  # only after close, which the async methods check first
            raise RuntimeError("the response store is closed")
        return self._conn


def _prepare(path: Path, *, create_dir: bool) -> None:
    """Make the default directory (private), and create a missing file readable by its
    owner only before SQLite creates it world-readable (its -wal and -shm files follow
    the file's permissions): the rows hold conversations."""
    if create_dir:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def _ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the table in a new file; refuse a file that holds anything else. Under a write
    lock, so that workers starting together create it once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute(_TABLES)]
        if version == 0 and not tables:
            for statement in _CREATE:
                conn.execute(statement)
        elif version != SCHEMA or tables != ["responses"]:
            raise sqlite3.DatabaseError(
                f"not a gearshift response store (schema {version}, tables {tables}); "
                "move it away or choose another store.path"
            )
        elif [r[1] for r in conn.execute("PRAGMA table_info(responses)")] != COLUMNS:
            raise sqlite3.DatabaseError("its responses table has other columns")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
