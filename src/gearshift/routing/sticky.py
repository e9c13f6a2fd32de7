"""Sticky routing: a conversation's turns stay on the model that served its last turn.

A provider's prompt cache only hits on the model (and deployment) that saw the prompt's
prefix before, so moving a conversation between equally good models throws its cache away.
``Sessions`` remembers, per conversation, the label of the model that last answered it;
``policy.plan(…, prefer=label)`` puts that model first when it still meets the request
(tier, capabilities, context window), else plans as usual ("moved").

The session key, first found:

1. the header ``x-gearshift-session``;
2. the chat body's ``prompt_cache_key`` (the inbound Responses / Messages decoders set it);
3. its ``user``;
4. a digest of the conversation's opening: the messages up to and including the first user
   message, each bounded (head, tail and length), so that every later turn of the same
   conversation, which repeats them, has the same key. A first turn (nothing after that
   user message) is recorded but has no previous model: an entry under its key belongs to
   another conversation that began the same way (the same question asked again, a batch
   of identical requests), which has no cache of this one to keep. The same holds for a
   key from ``user``, which names a person, not a conversation: their new conversation is
   routed afresh, and its later turns stay where its first went.

Every key is scoped to the proxy key that asks (``owner``, a digest): two teams that send
the same ``user`` or open with the same prompt never share a session, nor learn from a
decision header that the other had one.

Keys are 128-bit BLAKE2b digests, tagged by where they came from: no user id or prompt text
is kept, and a key's memory does not depend on what the client sent. The map is an LRU
ordered by the last answer (``put``), which is also expiry order: the least recently
answered session is both the first to expire and the first evicted. Per process: with
``serve --workers N`` a conversation sticks per worker.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from gearshift.config import StickySpec

HEADER = "x-gearshift-session"
# How much of a client-given key is hashed: longer keys sharing this prefix share a session.
_KEY_CHARS = 512
# The opening's bounds: messages looked at, content parts per message, and characters kept
# from the head and from the tail of each text (with its length: a change in the middle of a
# long system prompt still changes the key when it changes the length).
_OPENING_MESSAGES = 16
_OPENING_PARTS = 16
_EDGE = 1024


class Sessions:
    """Conversation key → the label of the model that last answered it, for ``ttl`` seconds
    after that answer, at most ``max_sessions`` of them.

    Counters: ``found`` (``get`` returned a model), ``missing`` (it did not: never seen,
    forgotten or expired), ``expired`` (forgotten for age), ``evicted`` (forgotten for room).
    Disabled (``enabled = false``): ``key`` is always None and nothing is stored.
    """

    __slots__ = (
        "_clock",
        "_map",
        "enabled",
        "evicted",
        "expired",
        "found",
        "max_sessions",
        "missing",
        "ttl",
    )

    def __init__(self, spec: StickySpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = spec.enabled
        self.ttl = spec.ttl
        self.max_sessions = spec.max_sessions
        self._clock = clock
        self._map: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key → (label, expiry)
        self.found = self.missing = self.expired = self.evicted = 0

    def __len__(self) -> int:
        return len(self._map)

    def find(
        self, body: Mapping[str, Any], headers: Mapping[str, str], owner: str = ""
    ) -> tuple[str | None, str | None]:
        """The request's session key and the label of the model that answered the session
        last (``key`` then ``get``; a first turn keyed by its opening or by ``user`` has
        none). ``owner``: who is asking (a digest of the proxy key): sessions are never
        shared between keys."""
        key, later = self._key(body, headers, owner)
        return key, self.get(key) if later else None

    def key(
        self, body: Mapping[str, Any], headers: Mapping[str, str], owner: str = ""
    ) -> str | None:
        """The request's session key (see the module docstring), or None when stickiness is
        off or the request has nothing to key on. Reads bounded prefixes only."""
        return self._key(body, headers, owner)[0]

    def _key(
        self, body: Mapping[str, Any], headers: Mapping[str, str], owner: str
    ) -> tuple[str | None, bool]:
        """The key, and whether a previous turn may exist. False for a first turn keyed by
        its opening or by ``user``: those name a person or a prompt, not a conversation, and
        a new conversation is routed afresh (the session header and ``prompt_cache_key``
        are the client's own word: always looked up)."""
        if not self.enabled:
            return None, False
        value = headers.get(HEADER)
        if value:
            return _digest(b"h", value, owner), True
        value = body.get("prompt_cache_key")
        if isinstance(value, str) and value:
            return _digest(b"k", value, owner), True
        value = body.get("user")
        if isinstance(value, str) and value:
            return _digest(b"u", value, owner), _later(body.get("messages"))
        return _opening(body.get("messages"), owner)

    def get(self, key: str | None) -> str | None:
        """The label of the model that last answered session ``key``, if within ``ttl``."""
        if key is None:
            return None
        entry = self._map.get(key)
        if entry is not None:
            if entry[1] > self._clock():
                self.found += 1
                return entry[0]
            del self._map[key]
            self.expired += 1
        self.missing += 1
        return None

    def put(self, key: str, label: str) -> None:
        """Session ``key`` was just answered by the model ``label``: remember it for ``ttl``
        seconds from now, as the most recently answered session."""
        now = self._clock()
        entries = self._map
        entries[key] = (label, now + self.ttl)
        entries.move_to_end(key)
        # The front is the least recently answered: drop what has expired, then what
        # does not fit. Each entry is dropped at most once: amortised O(1).
        while entries:
            first = next(iter(entries.values()))
            if first[1] > now and len(entries) <= self.max_sessions:
                break
            if first[1] > now:
                self.evicted += 1
            else:
                self.expired += 1
            entries.popitem(last=False)


def opening_key(messages: object, owner: str = "") -> str | None:
    """The digest of a conversation's opening: its messages up to and including the first
    user message (system and developer prompts, any prefilled turns), each reduced to role,
    length, and the head and tail of its text. None when there are no messages."""
    return _opening(messages, owner)[0]


def _later(messages: object) -> bool:
    """Whether messages follow the first user message (a later turn of a conversation)."""
    if not isinstance(messages, list):
        return False
    for i, message in enumerate(messages[:_OPENING_MESSAGES]):
        if isinstance(message, dict) and message.get("role") == "user":
            return len(messages) > i + 1
    return len(messages) > _OPENING_MESSAGES


def _opening(messages: object, owner: str = "") -> tuple[str | None, bool]:
    """``opening_key``, and whether messages follow the opening (a later turn)."""
    if not isinstance(messages, list) or not messages:
        return None, False
    h = hashlib.blake2b(b"c\x00" + _utf8(owner), digest_size=16)
    seen = 0
    for message in messages[:_OPENING_MESSAGES]:
        seen += 1
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        h.update(b"\x00r" + (_utf8(role) if isinstance(role, str) else b"?"))
        _feed(h, message.get("content"))
        if role == "user":
            break
    return h.hexdigest(), len(messages) > seen


def _feed(h: Any, content: object) -> None:
    """``content`` into ``h``, bounded: text (or each text part, image URL) by its edges."""
    if isinstance(content, str):
        _edges(h, content)
    elif isinstance(content, list):
        for part in content[:_OPENING_PARTS]:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            h.update(b"\x00p" + (_utf8(kind) if isinstance(kind, str) else b"?"))
            value = part.get("text")
            if not isinstance(value, str):
                image = part.get("image_url")
                value = image.get("url") if isinstance(image, dict) else image
            if isinstance(value, str):
                _edges(h, value)  # a data URL's tail tells images apart


def _edges(h: Any, text: str) -> None:
    h.update(b"\x00t%d\x00" % len(text))
    if len(text) <= 2 * _EDGE:
        h.update(_utf8(text))
    else:
        h.update(_utf8(text[:_EDGE]))
        h.update(_utf8(text[-_EDGE:]))


def _digest(tag: bytes, value: str, owner: str = "") -> str:
    data = _utf8(owner) + b"\x00" + _utf8(value[:_KEY_CHARS])
    return hashlib.blake2b(tag + b"\x00" + data, digest_size=16).hexdigest()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # whatever a header or body held


__all__ = ["HEADER", "Sessions", "opening_key"]
