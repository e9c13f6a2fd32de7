"""The inbound chat request: parsed once with orjson, checked cheaply, hints taken out.

Only what gearshift itself relies on is validated (types of the fields it reads or that an
upstream would choke on with a worse message); every other field passes through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gearshift.config import EFFORT_RANK, EFFORTS
from gearshift.errors import BadRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# field -> (accepted types, human name). bool is checked apart: it is an int to Python.
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "stream": ((bool,), "a boolean"),
    "max_tokens": ((int,), "an integer"),
    "max_completion_tokens": ((int,), "an integer"),
    "n": ((int,), "an integer"),
    "temperature": ((int, float), "a number"),
    "top_p": ((int, float), "a number"),
    "stream_options": ((dict,), "an object"),
    "tools": ((list,), "an array"),
    "response_format": ((dict,), "an object"),
    "stop": ((str, list), "a string or an array"),
    "user": ((str,), "a string"),
}
_NUMBERS_NOT_BOOL = frozenset({"max_tokens", "max_completion_tokens", "n", "temperature", "top_p"})


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may hold (``[server]`` settings): bounds on the work its parse and
    everything after it may cost. ``max_nesting`` stays well under the 255 levels orjson can
    encode, leaving room for the levels a translation adds."""

    max_messages: int = 10_000
    max_content_parts: int = 20_000
    max_nesting: int = 128


LIMITS = Limits()
_CARRY_MARK = b".gs1."  # providers.carry.MARK: a tool-call id that carries reasoning state


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request. ``body`` is the client's JSON minus the ``gearshift`` hints."""

    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    hints: dict[str, Any]
    # Some tool-call id carries reasoning state (``providers.carry``): adapters unwrap ids.
    carried: bool = False


def parse_chat(raw: bytes | bytearray, limits: Limits = LIMITS) -> ChatRequest:
    """Parse and check a ``/v1/chat/completions`` body; raise ``BadRequest`` naming the field.

    A body with far more messages or content parts than ``limits`` allow is refused before
    it is parsed: every message has a ``"role"`` key and every part a ``"type"``, and a key
    in a string is escaped (``\\"role\\"``), so counting those bytes (a C loop, 20 ms for
    30 MB) bounds the counts from above. A 31 MB body of a million tiny messages costs
    milliseconds instead of a second of parsing and hundreds of MB. (Twice the limit: the
    same keys may appear elsewhere, in tool schemas say; the exact counts follow the parse.)
    """
    # (A body too short to hold that many keys is not counted: most are a few kB.)
    size = len(raw)
    if size > 12 * limits.max_messages and raw.count(b'"role"') > 2 * limits.max_messages:
        raise _too_many("messages", limits.max_messages, '"role" keys')
    parts_keys = 2 * limits.max_content_parts + limits.max_messages
    if size > 6 * parts_keys and raw.count(b'"type"') > parts_keys:
        raise _too_many("content parts", limits.max_content_parts, '"type" keys')
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(
            "you must provide a model parameter (a non-empty string)",
            param="model",
            code="missing_required_parameter" if model is None else "invalid_type",
        )
    messages = body.get("messages")
    _check_messages(messages)
    assert isinstance(messages, list)
    if len(messages) > limits.max_messages:
        raise _too_many("messages", limits.max_messages)
    parts = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), list))
    if parts > limits.max_content_parts:
        raise _too_many("content parts", limits.max_content_parts)
    # Deeper than any real request: only a body with that many brackets is walked.
    if (
        size > 2 * limits.max_nesting
        and raw.count(b"[") + raw.count(b"{") > limits.max_nesting
        and _deeper(body, limits.max_nesting)
    ):
        raise BadRequest(
            f"The request body is nested more than {limits.max_nesting} levels deep.",
            code="nesting_too_deep",
        )
    for name, (types, what) in _FIELD_TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, types) or (name in _NUMBERS_NOT_BOOL and isinstance(value, bool)):
            raise BadRequest(
                f"Invalid type for '{name}': expected {what}, got {_json_type(value)}.",
                param=name,
                code="invalid_type",
            )

    effort = body.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in EFFORT_RANK):
        raise BadRequest(
            f"Invalid value for 'reasoning_effort': {effort!r}; expected one of "
            f"{', '.join(EFFORTS)}.",
            param="reasoning_effort",
            code="invalid_value",
        )
    stream = body.get("stream") is True
    options = body.get("stream_options")
    if options is not None and not stream:
        raise BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    hints = body.pop("gearshift", None)
    if hints is not None and not isinstance(hints, dict):
        raise BadRequest(
            "'gearshift' must be an object of routing hints.",
            param="gearshift",
            code="invalid_type",
        )
    return ChatRequest(
        body=body,
        model=model,
        stream=stream,
        client_wants_usage=bool(options and options.get("include_usage") is True),
        hints=hints or {},
        carried=_CARRY_MARK in raw,
    )


def _too_many(what: str, limit: int, keys: str = "") -> BadRequest:
    """``keys``: refused before parsing, for holding too many of those (in any place)."""
    has = f"more {keys} than twice" if keys else f"more {what} than"
    return BadRequest(
        f"The request has {has} gearshift's limit of {limit} {what} (server.max_"
        + what.replace(" ", "_")
        + ").",
        param="messages",
        code="too_many_" + what.replace(" ", "_"),
    )


_ORJSON_DEPTH = 254  # the most levels orjson.dumps encodes (255 raises "Recursion limit")


def _deeper(doc: object, limit: int) -> bool:
    """Whether ``doc`` nests arrays and objects more than ``limit`` levels. Asked of orjson,
    in C: ``doc`` wrapped in enough lists that one level too many cannot be encoded (a
    Python walk cost six times the parse on an ordinary 40 KB request with tools)."""
    wrapped = doc
    for _ in range(_ORJSON_DEPTH - limit):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except TypeError:  # orjson.JSONEncodeError: "Recursion limit reached"
        return True
    return False


def _check_messages(messages: object) -> None:
    if messages is None:
        raise BadRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise BadRequest(
            f"Invalid type for 'messages': expected an array, got {_json_type(messages)}.",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        raise BadRequest(
            "'messages' must contain at least one message.", param="messages", code="empty_array"
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadRequest(
                f"Invalid type for '{where}': expected an object, got {_json_type(message)}.",
                param=where,
                code="invalid_type",
            )
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(
                f"Invalid value for '{where}.role': {role!r}; expected one of "
                f"{', '.join(sorted(ROLES))}.",
                param=f"{where}.role",
                code="invalid_value",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(
                f"Invalid type for '{where}.content': expected a string or an array of parts, "
                f"got {_json_type(content)}.",
                param=f"{where}.content",
                code="invalid_type",
            )
        if content is None and role in ("user", "system", "developer"):
            raise BadRequest(
                f"Missing required parameter: '{where}.content'.",
                param=f"{where}.content",
                code="missing_required_parameter",
            )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def content_text(content: object) -> tuple[str, bool]:
    """A message's text (string, or the text parts joined) and whether it carries an image."""
    if isinstance(content, str):
        return content, False
    if not isinstance(content, list):
        return "", False
    texts: list[str] = []
    image = False
    for part in content:
        if isinstance(part, dict):
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in ("image_url", "input_image", "image"):
                image = True
    return "\n".join(texts), image
