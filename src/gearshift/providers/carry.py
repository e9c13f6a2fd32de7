"""Reasoning state carried through a client that speaks OpenAI chat, inside tool-call ids.

In a tool loop a reasoning model needs back what it produced with its tool calls: Anthropic
its thinking blocks with their signatures, complete and unmodified; Gemini 3 and later the
``thoughtSignature`` of each ``functionCall`` part (a 400 without it); OpenAI's Responses API
its reasoning items (better answers with them; gearshift stores nothing upstream). OpenAI
chat has no slot for any of them, and its clients send back exactly two things of an
assistant turn: its text and its tool calls, ids included. So gearshift keeps the state
*in the tool-call id* it hands the client: ``<upstream id>.gs1.<state>``, the state being
base64url of a zlib'd JSON object naming the upstream model (``m``) and holding what that
model needs (``a``: Anthropic thinking blocks; ``g``: a Gemini thought signature; ``o``:
OpenAI Responses reasoning items with their encrypted content). Stateless: no store to
share between workers or to lose on a restart, nothing kept after the conversation ends.

Every adapter unwraps the ids it sends upstream (to the original id, never longer than the
provider's own), and puts the state back only for the model that made it: a thought
signature is not valid for another model (Gemini answers 400, Anthropic drops the block).
A malformed or oversized state is ignored, never an error: the id is the client's to send.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

MARK = ".gs1."
MARK_BYTES = MARK.encode()
_MAX_STATE = 256 << 10  # bytes of JSON one id's state may inflate to
_MAX_REQUEST = 4 << 20  # ... and all the ids of one request together (``Budget``)


class Budget:
    """What the states of one request may inflate to, all ids together: the ids are the
    client's, and a few hundred small ones must not become gigabytes (state past the budget
    is ignored, as a malformed one is)."""

    __slots__ = ("left",)

    def __init__(self, total: int = _MAX_REQUEST) -> None:
        self.left = total


def wrap(call_id: str, model: str, state: Mapping[str, Any]) -> str:
    """``call_id`` carrying ``state`` for ``model`` (its upstream id)."""
    raw = orjson.dumps({"m": model, **state})
    blob = base64.urlsafe_b64encode(zlib.compress(raw, 6)).rstrip(b"=").decode()
    return f"{call_id}{MARK}{blob}"


def unwrap(call_id: str, budget: Budget | None = None) -> tuple[str, dict[str, Any] | None]:
    """The original id and the state it carries (None: none, unreadable, or past the
    request's ``budget``: pass one ``Budget`` for all the ids of a request)."""
    head, sep, blob = call_id.partition(MARK)
    if not sep:
        return call_id, None
    limit = _MAX_STATE if budget is None else min(_MAX_STATE, budget.left)
    if limit <= 0:
        return head, None
    try:
        packed = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, limit)
        if budget is not None:
            budget.left -= len(raw)
        if inflate.unconsumed_tail or not inflate.eof:
            return head, None
        state = orjson.loads(raw)
    except (binascii.Error, ValueError, zlib.error, orjson.JSONDecodeError):
        return head, None
    if not isinstance(state, dict) or not isinstance(state.get("m"), str):
        return head, None
    return head, state


def plain_id(call_id: Any) -> Any:
    """``call_id`` without any carried state (anything not a string unchanged)."""
    if isinstance(call_id, str) and MARK in call_id:
        return call_id.partition(MARK)[0]
    return call_id


def plain_messages(messages: Any) -> Any:
    """``messages`` with every tool-call id unwrapped (assistant ``tool_calls[].id`` and tool
    ``tool_call_id``), for an upstream that takes no carried state; new dicts only where an
    id changes."""
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        if isinstance(m, dict):
            calls = m.get("tool_calls")
            if isinstance(calls, list) and any(
                isinstance(c, dict) and MARK in str(c.get("id", "")) for c in calls
            ):
                m = {
                    **m,
                    "tool_calls": [
                        {**c, "id": plain_id(c.get("id"))} if isinstance(c, dict) else c
                        for c in calls
                    ],
                }
            ref = m.get("tool_call_id")
            if isinstance(ref, str) and MARK in ref:
                m = {**m, "tool_call_id": plain_id(ref)}
        out.append(m)
    return out


__all__ = ["MARK", "MARK_BYTES", "Budget", "plain_id", "plain_messages", "unwrap", "wrap"]
