"""The exact-match response cache of chat completions: the same request (model or tier,
messages, tools, response format and every parameter that changes the answer) from the same
proxy key gets the stored answer — whole, or replayed as the same stream — at no cost.

Opt in with ``[cache] enabled = true``; a request may say ``x-gearshift-cache: skip`` (no
lookup, nothing stored) or ``refresh`` (no lookup, the new answer stored). A request whose
``temperature`` is not 0 (absent means the provider's default, 1) is cached only with
``any_temperature``: its answers are meant to differ. Entries belong to the proxy key that
made them (``shared`` to share them), expire after ``ttl`` and live in the ``[state]``
backend (bounded there: in-process by ``max_entries`` and ``max_bytes``; in Redis by its own
memory policy). An answer larger than ``max_entry_bytes`` is not stored.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from gearshift.governance.spec import CacheSpec
from gearshift.governance.state import State, StateUnavailable

HEADER = "x-gearshift-cache"
# What does not change the answer: how it is delivered, who asked, bookkeeping.
_IGNORED = frozenset(
    {
        "stream", "stream_options", "user", "metadata", "store", "service_tier",
        "prompt_cache_key", "safety_identifier", "gearshift",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored answer: the model and provider that gave it, its token counts (for the
    baseline it saved), and the bytes the client got (JSON, or the SSE stream)."""

    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    body: bytes

    def encode(self) -> bytes:
        head = orjson.dumps([self.model, self.provider, self.prompt_tokens, self.completion_tokens])
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        head, sep, body = data.partition(b"\n")
        try:
            model, provider, prompt, completion = orjson.loads(head)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
        if not sep or not isinstance(model, str) or not isinstance(provider, str):
            return None
        return cls(model, provider, int(prompt), int(completion), body)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the cache does for one request: its key, whether to look it up and whether to
    store the answer."""

    key: str
    read: bool
    write: bool


def plan_lookup(
    spec: CacheSpec,
    body: Any,
    header: str | None,
    *,
    stream: bool,
    owner: str,
    form: str = "chat",
) -> Lookup | None:
    """The cache's part in this request, or None (off, skipped, or not cacheable).
    ``form``: the API the client speaks (an entry holds the bytes it got: a chat answer is
    never replayed to a Messages client)."""
    if not spec.enabled or not isinstance(body, dict):
        return None
    mode = (header or "use").strip().lower()
    if mode == "skip":
        return None
    temperature = body.get("temperature")
    if not spec.any_temperature and temperature != 0:
        return None
    kept = {k: v for k, v in body.items() if k not in _IGNORED}
    try:
        canonical = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    digest = hashlib.sha256(canonical).hexdigest()
    scope = "shared" if spec.shared else owner
    key = f"cache:{scope}:{form}:{'s' if stream else 'w'}:{digest}"
    return Lookup(key, read=mode != "refresh", write=True)


class ResponseCache:
    """Entries in a ``State``; a state error is a miss (and nothing stored), never a failed
    request: the cache only ever saves work."""

    def __init__(self, state: State, spec: CacheSpec) -> None:
        self._state = state
        self.spec = spec
        self.errors = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def store(self, key: str, entry: Entry) -> None:
        """``put`` in a task: the answer is on its way meanwhile."""
        task = asyncio.get_running_loop().create_task(self.put(key, entry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the stores under way (at shutdown; tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def get(self, key: str) -> Entry | None:
        try:
            data = await self._state.get(key)
        except StateUnavailable:
            self.errors += 1
            return None
        return Entry.decode(data) if data is not None else None

    async def put(self, key: str, entry: Entry) -> None:
        if len(entry.body) > self.spec.max_entry_bytes:
            return
        try:
            await self._state.put(key, entry.encode(), self.spec.ttl)
        except StateUnavailable:
            self.errors += 1


__all__ = ["HEADER", "Entry", "Lookup", "ResponseCache", "plan_lookup"]
