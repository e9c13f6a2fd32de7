"""The outcome store: recorded requests, the answers a shadow comparison got for them, and
their labels (the application's feedback, a judge's verdict). Embedded SQLite by default,
one file every worker opens (WAL, a busy timeout), bounded by age and size; ``OutcomeStore``
is the interface a shared backend would implement.

- **A row** is one recorded request: its body (redacted per ``[learn] redact``; then with
  the classifier's features, which the text gives otherwise), the decision (tier, score),
  who answered and what it cost, and for a shadow comparison the reference model's answer
  and cost.
- **Labels**: ``weak_suffices`` (1: the cheaper answer was acceptable; 0: it was not), with
  where it came from. Feedback (``POST /gearshift/feedback``) outranks a judge: a judge's
  verdict never replaces feedback. Feedback on a request that was not recorded is kept in
  its own table (the application said something; there is nothing to refit from).
- **Export** (``rows``/``export``): labeled rows in the routing-dev schema (``id``,
  ``prompt``, ``weak_score``, ``strong_score``, ``weak_suffices`` …) plus the whole
  ``request`` and its ``tier``, which ``gearshift calibrate`` reads.
- **Threads**: all SQLite work on one thread per store; the event loop only waits for it.
  Rows recorded while a write is under way go in the next one, in one transaction (WAL,
  ``synchronous=NORMAL``). A failed write is one WARNING line, never an exception into a
  request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from gearshift.config_checks import ConfigError
from gearshift.learn.spec import LearnSpec
from gearshift.sqlite_wal import switch_to_wal

log = logging.getLogger("gearshift.learn")
T = TypeVar("T")
SCHEMA = 2
# Columns added since schema 1 (a store of that version gains them when opened).
_ADDED = {
    2: ("redact", "judged_at", "judge_cost_usd", "verdict", "judge_failures", "cluster"),
}
BUSY_TIMEOUT = 5.0
EXPIRE_EVERY = 60.0
MAX_JUDGE_FAILURES = 3


@dataclass(slots=True)
class Outcome:
    """One recorded request (``kind``: ``shadow`` with a reference answer, or ``record``)."""

    request_id: str
    at: float
    kind: str
    key: str
    tier: str
    score: str
    model: str
    model_tier: str
    request: dict[str, Any]
    features: dict[str, float]
    answer: str | None
    cost_usd: float
    served_is_weak: bool = True  # the answer the client got came from the cheaper model
    reference: str | None = None
    reference_tier: str | None = None
    reference_answer: str | None = None
    reference_cost_usd: float | None = None
    weak_suffices: int | None = None
    label_source: str | None = None  # "feedback" or "judge"
    reason: str | None = None
    redact: str = "none"  # how the request and answers were stored ([learn] redact)
    judged_at: float | None = None
    judge_cost_usd: float = 0.0
    verdict: str | None = None  # the judge's: "agree" (both orders), "split", "invalid"…
    judge_failures: int = 0  # judge calls that failed on this row (after 3 it is left)
    cluster: str | None = None  # its task cluster, named before any redaction (report.py)


_COLUMNS = [f for f in Outcome.__dataclass_fields__]
_JSON = {"request", "features"}


class OutcomeStore(Protocol):
    """What the server (``record``, ``feedback``) and the loop's commands (the rest, run on
    the store's own thread by ``run``/``call``) need of a store; a shared backend would
    implement it as ``SqliteOutcomes`` does."""

    async def record(self, outcome: Outcome) -> None: ...

    async def feedback(
        self, request_id: str, key: str, good: bool, score: float | None, note: str
    ) -> bool:
        """Store the application's verdict; True when it labels a recorded request (of the
        same proxy key)."""
        ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T | None: ...

    def call(self, fn: Callable[..., T], *args: Any) -> T: ...

    def outcomes(
        self, *, labeled: bool | None = None, newest: int | None = None
    ) -> Iterator[Outcome]: ...

    def to_judge(self, *, again: bool = False, limit: int | None = None) -> list[Outcome]: ...

    def label_now(
        self,
        request_id: str,
        weak_suffices: bool | None,
        reason: str,
        *,
        verdict: str = "agree",
        cost_usd: float = 0.0,
    ) -> bool: ...

    def judge_spent(self, cost_usd: float) -> None: ...

    def judge_spent_since(self, since: float) -> float: ...

    def judge_failed(self, request_id: str) -> None: ...

    def lease(self, name: str, holder: str, seconds: float) -> bool: ...

    def release(self, name: str, holder: str) -> None: ...

    async def close(self) -> None: ...


def default_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gearshift" / "outcomes.sqlite3"


class SqliteOutcomes:
    """``OutcomeStore`` in one SQLite file (or ``:memory:``); build it with ``open``."""

    def __init__(self, spec: LearnSpec, where: str, clock: Callable[[], float]) -> None:
        self._spec = spec
        self._where = where
        self._clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gearshift-outcomes")
        self._conn: sqlite3.Connection | None = None
        self._expired_at = float("-inf")
        self._closed = False
        self._total = 0  # the rows' size, kept up to date between scans (``_bound``)
        self._next: tuple[list[Outcome], asyncio.Future[None]] | None = None
        self._writing = False

    @classmethod
    def open(
        cls,
        spec: LearnSpec,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> SqliteOutcomes:
        """Open (or create) the store ``spec.store`` names; ``ConfigError`` naming the path
        when it cannot be opened or holds something else."""
        if spec.store == ":memory:":
            target, where = ":memory:", "':memory:'"
        else:
            path = (
                Path(spec.store).expanduser()
                if spec.store
                else default_path(os.environ if environ is None else environ)
            )
            target, where = str(path), repr(str(path))
        store = cls(spec, where, clock)
        try:
            if target != ":memory:":
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            store._executor.submit(store._connect, target).result()
        except (OSError, sqlite3.Error) as exc:
            store._executor.shutdown()
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(
                f"$.learn.store: cannot open the outcome store {where}: {reason}"
            ) from None
        return store

    def _connect(self, target: str) -> None:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT, isolation_level=None)
        if target != ":memory:":
            try:
                switch_to_wal(conn, BUSY_TIMEOUT)
            except BaseException:
                conn.close()
                raise
            # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a power cut may
            # lose the last rows, never the file (sqlite.org/pragma.html#pragma_synchronous).
            conn.execute("PRAGMA synchronous=NORMAL")
        # Created or upgraded in one write transaction: processes (workers) opening the same
        # file at once see it whole, in its old or its new form.
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._setup(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        conn.execute("COMMIT")
        self._conn = conn
        self._total = self._size()

    def _setup(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and version not in (1, SCHEMA):
            raise sqlite3.DatabaseError("not a gearshift outcome store (or another version)")
        if "outcomes" in tables and version < SCHEMA:
            have = {r[1] for r in conn.execute("PRAGMA table_info(outcomes)")}
            for column in _ADDED[2]:
                if column not in have:
                    conn.execute(f"ALTER TABLE outcomes ADD COLUMN {column}")
            # How a row of schema 1 was redacted, from what it holds: "drop" left no answer,
            # "hash" a digest in its place.
            conn.execute(
                "UPDATE outcomes SET judge_cost_usd = 0.0, judge_failures = 0, redact = CASE "
                "WHEN answer IS NULL THEN 'drop' "
                "WHEN answer GLOB 'sha256:*' AND length(answer) = 71 THEN 'hash' "
                "ELSE 'none' END"
            )
        cols = ", ".join(
            f"{c} {'PRIMARY KEY' if c == 'request_id' else ''}".strip() for c in _COLUMNS
        )
        conn.execute(f"CREATE TABLE IF NOT EXISTS outcomes ({cols}, size INTEGER)")
        conn.execute("CREATE INDEX IF NOT EXISTS outcomes_at ON outcomes (at)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS feedback "
            "(request_id TEXT, key TEXT, at REAL, good INTEGER, score REAL, note TEXT)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id)")
        conn.execute("CREATE TABLE IF NOT EXISTS judge_costs (at REAL, cost REAL)")
        conn.execute("CREATE INDEX IF NOT EXISTS judge_costs_at ON judge_costs (at)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT, until REAL)"
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA}")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T | None:
        if self._closed:
            return None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            log.warning("outcome store %s: %s", self._where, exc)
            return None

    async def record(self, outcome: Outcome) -> None:
        """Store ``outcome``; rows that arrive while a write is under way go together in the
        next one (one transaction), so a busy proxy writes in batches."""
        if self._closed:
            return
        batch = self._next
        if batch is None:
            batch = self._next = ([], asyncio.get_running_loop().create_future())
        batch[0].append(outcome)  # (before a write can take the batch to the store's thread)
        if not self._writing:
            self._write_next()
        await asyncio.shield(batch[1])

    def _write_next(self) -> None:
        batch = self._next
        assert batch is not None
        self._next = None
        self._writing = True
        done = asyncio.get_running_loop().run_in_executor(
            self._executor, self._record_many, batch[0]
        )
        done.add_done_callback(lambda future: self._written(batch[1], future))

    def _written(self, waiting: asyncio.Future[None], future: asyncio.Future[None]) -> None:
        self._writing = False
        error = None if future.cancelled() else future.exception()
        if error is not None:
            log.warning("outcome store %s: %s", self._where, error)
        if not waiting.done():
            waiting.set_result(None)
        if self._next is not None and not self._closed:
            self._write_next()

    def _record_many(self, outcomes: list[Outcome]) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN")
        try:
            for outcome in outcomes:
                self._insert(outcome)
            self._bound()
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._total = self._size()
            raise
        self._conn.execute("COMMIT")

    def record_now(self, outcome: Outcome) -> None:
        """(On the store's thread, or in a command.)"""
        self._insert(outcome)
        self._bound()

    def _insert(self, outcome: Outcome) -> None:
        assert self._conn is not None
        values = [
            orjson.dumps(getattr(outcome, c)) if c in _JSON else getattr(outcome, c)
            for c in _COLUMNS
        ]
        size = sum(len(v) for v in values if isinstance(v, bytes | str))
        self._total += size
        marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
        self._conn.execute(
            f"INSERT OR REPLACE INTO outcomes ({', '.join(_COLUMNS)}, size) VALUES ({marks})",
            [*values, size],
        )
        # Feedback that came before the row (its shadow call was still running) labels it now.
        early = self._conn.execute(
            "SELECT good, note FROM feedback WHERE request_id = ? AND key = ? "
            "ORDER BY at DESC LIMIT 1",
            (outcome.request_id, outcome.key),
        ).fetchone()
        if early is not None and outcome.served_is_weak:
            self._label_feedback(outcome.request_id, bool(early[0]), early[1])

    def _bound(self) -> None:
        """Rows older than ``max_age`` deleted (at most once a minute); the oldest evicted
        while the rows' total size (a running total, summed from the table again each
        minute and after an eviction) is over ``max_bytes``."""
        assert self._conn is not None
        now = self._clock()
        if now - self._expired_at >= EXPIRE_EVERY:
            # (Also where the running total learns of other processes' rows.)
            self._expired_at = now
            self._conn.execute("DELETE FROM outcomes WHERE at < ?", (now - self._spec.max_age,))
            self._conn.execute("DELETE FROM feedback WHERE at < ?", (now - self._spec.max_age,))
            self._total = self._size()
        if self._total > self._spec.max_bytes:
            self._conn.execute(
                "DELETE FROM outcomes WHERE request_id IN (SELECT request_id FROM outcomes "
                "ORDER BY at LIMIT MAX(1, (SELECT COUNT(*) FROM outcomes) / 10))"
            )
            self._total = self._size()

    def _size(self) -> int:
        assert self._conn is not None
        (total,) = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM outcomes").fetchone()
        return int(total)

    async def feedback(
        self, request_id: str, key: str, good: bool, score: float | None, note: str
    ) -> bool:
        found = await self._run(self._feedback, request_id, key, good, score, note)
        return bool(found)

    def _feedback(
        self, request_id: str, key: str, good: bool, score: float | None, note: str
    ) -> bool:
        assert self._conn is not None
        if self._spec.redact != "none" and note:  # (the application's words, redacted too)
            note = "sha256:" + hashlib.sha256(note.encode()).hexdigest()
            note = note if self._spec.redact == "hash" else ""
        self._conn.execute(
            "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?)",
            (request_id, key, self._clock(), int(good), score, note),
        )
        row = self._conn.execute(
            "SELECT served_is_weak FROM outcomes WHERE request_id = ? AND key = ?",
            (request_id, key),
        ).fetchone()
        if row is None or not row[0]:
            # Not recorded; or the client's answer came from the stronger model, and a
            # verdict on it says nothing of the cheaper one.
            return False
        self._label_feedback(request_id, good, note)
        return True

    def _label_feedback(self, request_id: str, good: bool, note: str) -> None:
        # The verdict is on the cheaper answer the client got: whether it sufficed.
        assert self._conn is not None
        self._conn.execute(
            "UPDATE outcomes SET weak_suffices = ?, label_source = 'feedback', reason = ? "
            "WHERE request_id = ?",
            (int(good), note or ("the application said good" if good else "said bad"), request_id),
        )

    def label_now(
        self,
        request_id: str,
        weak_suffices: bool | None,
        reason: str,
        *,
        verdict: str = "agree",
        cost_usd: float = 0.0,
    ) -> bool:
        """A judge's verdict (``weak_suffices`` None: no label, as for a split verdict);
        never over the application's feedback. True when written."""
        assert self._conn is not None
        cur = self._conn.execute(
            "UPDATE outcomes SET weak_suffices = ?, label_source = ?, reason = ?, "
            "judged_at = ?, judge_cost_usd = judge_cost_usd + ?, verdict = ? "
            "WHERE request_id = ? AND (label_source IS NULL OR label_source = 'judge')",
            (
                None if weak_suffices is None else int(weak_suffices),
                None if weak_suffices is None else "judge",
                reason, self._clock(), cost_usd, verdict, request_id,
            ),
        )  # fmt: skip
        return cur.rowcount > 0

    def to_judge(self, *, again: bool = False, limit: int | None = None) -> list[Outcome]:
        """Shadow pairs with both answers in text, not labeled by feedback, not yet judged
        (``again``: judged ones too, and those left after failures), oldest first; those a
        judge call failed on come last, and after ``MAX_JUDGE_FAILURES`` not at all."""
        assert self._conn is not None
        where = (
            "kind = 'shadow' AND redact = 'none' AND answer IS NOT NULL "
            "AND reference_answer IS NOT NULL AND (label_source IS NULL OR label_source = 'judge')"
        )
        if not again:
            where += f" AND judged_at IS NULL AND judge_failures < {MAX_JUDGE_FAILURES}"
        query = (
            f"SELECT {', '.join(_COLUMNS)} FROM outcomes WHERE {where} ORDER BY judge_failures, at"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [self._outcome(values) for values in self._conn.execute(query)]

    def judge_failed(self, request_id: str) -> None:
        assert self._conn is not None
        self._conn.execute(
            "UPDATE outcomes SET judge_failures = judge_failures + 1 WHERE request_id = ?",
            (request_id,),
        )

    def release(self, name: str, holder: str) -> None:
        assert self._conn is not None
        self._conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease(self, name: str, holder: str, seconds: float) -> bool:
        """Whether ``holder`` has (took or renewed) the lease ``name`` for ``seconds``: one
        process of those sharing the store does a background job."""
        assert self._conn is not None
        now = self._clock()
        self._conn.execute(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "holder = excluded.holder, until = excluded.until "
            "WHERE leases.until < ? OR leases.holder = excluded.holder",
            (name, holder, now + seconds, now),
        )
        row = self._conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
        return row is not None and row[0] == holder

    def judge_spent(self, cost_usd: float) -> None:
        """What a judge's calls cost (labeled or not: the budget counts every call)."""
        assert self._conn is not None
        self._conn.execute("INSERT INTO judge_costs VALUES (?, ?)", (self._clock(), cost_usd))
        self._conn.execute("DELETE FROM judge_costs WHERE at < ?", (self._clock() - 40 * 86_400,))

    def judge_spent_since(self, since: float) -> float:
        """What judge calls cost since ``since`` (a wall time)."""
        assert self._conn is not None
        (total,) = self._conn.execute(
            "SELECT COALESCE(SUM(cost), 0) FROM judge_costs WHERE at >= ?", (since,)
        ).fetchone()
        return float(total)

    @staticmethod
    def _outcome(values: Any) -> Outcome:
        pairs = zip(_COLUMNS, values, strict=True)
        doc = {c: orjson.loads(v) if c in _JSON else v for c, v in pairs}
        return Outcome(**doc)

    def outcomes(
        self, *, labeled: bool | None = None, newest: int | None = None
    ) -> Iterator[Outcome]:
        """Every stored row, oldest first (``labeled``: only those with or without a label;
        ``newest``: only the most recent so many)."""
        assert self._conn is not None
        where = ""
        if labeled is not None:
            where = f" WHERE weak_suffices IS {'NOT ' if labeled else ''}NULL"
        query = f"SELECT {', '.join(_COLUMNS)} FROM outcomes{where} ORDER BY at"
        if newest is not None:
            query = f"SELECT * FROM ({query} DESC LIMIT {int(newest)}) ORDER BY at"
        for values in self._conn.execute(query):
            yield self._outcome(values)

    def feedback_count(self) -> int:
        assert self._conn is not None
        return int(self._conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])

    async def close(self) -> None:
        """Rows still waiting for a write are written, then the file is closed."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        pending, self._next = self._next, None
        if pending is not None:
            try:
                await loop.run_in_executor(self._executor, self._record_many, pending[0])
            except sqlite3.Error as exc:
                log.warning("outcome store %s: %s", self._where, exc)
            if not pending[1].done():
                pending[1].set_result(None)
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown()

    def close_now(self) -> None:
        self._closed = True
        self._executor.submit(self._close).result()
        self._executor.shutdown()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T | None:
        """``fn(*args)`` on the store's thread, awaited (None after a SQLite error, logged)."""
        return await self._run(fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the store's thread, waited for (commands: judge, export)."""
        return self._executor.submit(fn, *args).result()


def routing_row(o: Outcome) -> dict[str, Any]:
    """A labeled row in the routing-dev schema, with its whole request (``calibrate``)."""
    messages = o.request.get("messages") if isinstance(o.request, dict) else None
    users = [m for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
    prompt = _text(users[-1]) if users else ""
    previous = _text(users[-2]) if len(users) > 1 else None
    weak, strong = (o.model, o.reference) if o.served_is_weak else (o.reference, o.model)
    ok = bool(o.weak_suffices)
    return {
        "id": f"store/{o.request_id}",
        "category": f"store-{o.tier}",
        "prompt": prompt,
        "previous_user_turn": previous,
        "weak_model": weak,
        "strong_model": strong,
        "weak_score": 1.0 if ok else 0.0,
        "strong_score": 1.0,
        "score_scale": o.label_source or "",
        "weak_suffices": ok,
        "tier": "light" if ok else "frontier",
        "request": o.request,
        "reason": o.reason,
    }


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


__all__ = ["Outcome", "OutcomeStore", "SqliteOutcomes", "default_path", "routing_row"]
